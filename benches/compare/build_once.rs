//! `--only-build-once`: a fleet whose hosts each have a Docker engine of
//! their own (a second dockerd of this machine each, so no host shares
//! another's images or build cache), a changed commit (the api) each run:
//! `[build] on = "hosts"` (every host builds), `"first"` streamed over SSH,
//! `"first"` through a registry (Debian's docker-registry on loopback). The
//! three take turns; wall time, builds and what reached each host. Written
//! into BENCHMARKS.md in place of the previous build-once section.

use std::fmt::Write as _;
use std::time::Instant;

use crate::harness::app::Behaviour;
use crate::harness::engines::Registry;
use crate::harness::fleet::{checks, FleetSetup, TestFleet};
use crate::harness::images;
use crate::measure::median;

/// How the images are built and reach the hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    Hosts,
    Stream,
    Registry,
}

impl Way {
    fn name(self) -> &'static str {
        match self {
            Way::Hosts => "`on = \"hosts\"` (every host builds)",
            Way::Stream => "`on = \"first\"`, streamed over SSH",
            Way::Registry => "`on = \"first\"`, through a registry",
        }
    }

    fn toml(self, registry: u16) -> String {
        match self {
            Way::Hosts => "on = \"hosts\"".to_string(),
            Way::Stream => "on = \"first\"".to_string(),
            Way::Registry => format!("on = \"first\"\nregistry = \"127.0.0.1:{registry}/bench\""),
        }
    }
}

/// One changed deploy.
struct Measured {
    wall: f64,
    builds: usize,
    /// Bytes streamed to each receiving host (the stream only).
    streamed: Vec<u64>,
    /// The images step on each receiving host, ms.
    images_ms: Vec<f64>,
    /// Each build step, ms.
    build_ms: Vec<f64>,
}

/// Runs the comparison on `hosts` hosts, `runs` rounds; the section's text.
pub fn run(hosts: usize, runs: usize) -> String {
    let started = Instant::now();
    eprintln!("bench: build once: {hosts} hosts with engines of their own, a registry");
    let registry = Registry::start();
    let fleet = TestFleet::new(
        FleetSetup {
            hosts,
            own_engines: (0..hosts).collect(),
            extra: format!("{}\n[build]\non = \"hosts\"\n", checks("60s")),
            ..Default::default()
        },
        &Behaviour::version("A"),
    );
    for h in &fleet.hosts {
        // Every host can build (the base image a host would pull).
        h.engine.as_ref().expect("own engine").load_from_main(images::BUSYBOX);
    }
    fleet.deploy(&[], 0);
    let ways = [Way::Hosts, Way::Stream, Way::Registry];
    let mut measured: Vec<(Way, Measured)> = Vec::new();
    for round in 0..runs {
        for i in 0..ways.len() {
            let way = ways[(i + round) % ways.len()];
            set_build(&fleet, &way.toml(registry.port));
            let nonce = format!("{round}-{i}-{:?}\n", Instant::now());
            fleet
                .app
                .commit_file("api/www/bench.txt", &nonce, "bench: the api changes");
            let t = Instant::now();
            let (_, events) = fleet.deploy(&[], 0);
            let builder = events.last().expect("summary")["hosts"][0]["host"].clone();
            let m = Measured {
                wall: t.elapsed().as_secs_f64(),
                builds: events
                    .iter()
                    .filter(|e| e["event"] == "step" && e["step"] == "build" && e["status"] == "started")
                    .count(),
                streamed: per_host(&events, &builder, |e| {
                    (e["event"] == "transfer").then(|| e["total_bytes"].as_u64())?
                }),
                images_ms: per_host(&events, &builder, |e| {
                    (e["event"] == "step" && e["step"] == "images" && e["status"] == "done")
                        .then(|| e["elapsed_ms"].as_f64())?
                }),
                build_ms: events
                    .iter()
                    .filter(|e| e["event"] == "step" && e["step"] == "build" && e["status"] == "done")
                    .filter_map(|e| e["elapsed_ms"].as_f64())
                    .collect(),
            };
            eprintln!(
                "bench: build once round {} · {:<40} {:>6.2} s · {} build(s)",
                round + 1,
                way.name(),
                m.wall,
                m.builds
            );
            measured.push((way, m));
        }
    }
    section(hosts, runs, &ways, &measured, started.elapsed().as_secs_f64())
}

/// Per receiving host (not `builder`), the value `pick` takes from the last
/// event it takes one from.
fn per_host<T>(
    events: &[serde_json::Value],
    builder: &serde_json::Value,
    pick: impl Fn(&serde_json::Value) -> Option<T>,
) -> Vec<T> {
    let mut by_host = std::collections::BTreeMap::new();
    for e in events.iter().filter(|e| &e["host"] != builder) {
        if let Some(v) = pick(e) {
            by_host.insert(e["host"].to_string(), v);
        }
    }
    by_host.into_values().collect()
}

/// deploy.toml with its `[build]` table replaced.
fn set_build(fleet: &TestFleet, build: &str) {
    let path = fleet.app.path().join("deploy.toml");
    let text = std::fs::read_to_string(&path).expect("deploy.toml");
    let kept = text.split("\n[build]\n").next().expect("text").to_string();
    std::fs::write(&path, format!("{kept}\n[build]\n{build}\n")).expect("deploy.toml");
}

/// Start and end markers of the section, which `--only-build-once` rewrites alone.
pub const START: &str = "<!-- build-once section: scripts/bench.sh --only-build-once rewrites it -->";
pub const END: &str = "<!-- end of the build-once section -->";

fn section(hosts: usize, runs: usize, ways: &[Way], measured: &[(Way, Measured)], took: f64) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{START}\n## Build once: {hosts} hosts\n");
    let _ = writeln!(
        s,
        "Every host has a Docker engine of its own (a second dockerd of this machine each, vfs storage), \
         so no host shares another's images or build cache; `parallel = 4` (the default). A changed commit \
         each run (the api's files; the worker's image stays), {runs} rounds, the three ways taking turns. \
         The app is the test suite's: two built services FROM a 2 MB busybox image, so builds are a COPY each \
         and images small: this measures what build-once costs and saves in round trips and transfers, not \
         in compile time. A real app's build (minutes of CPU on each host with `on = \"hosts\"`) widens the \
         gap; bigger images widen the transfer.\n"
    );
    let _ = writeln!(
        s,
        "| how | builds per deploy | build step, median | wall time, median (min–max) | images step per receiving host, median | bytes streamed per receiving host |\n|---|---|---|---|---|---|"
    );
    for &way in ways {
        let runs: Vec<&Measured> = measured.iter().filter(|(w, _)| *w == way).map(|(_, m)| m).collect();
        let walls: Vec<f64> = runs.iter().map(|m| m.wall).collect();
        let builds: Vec<usize> = runs.iter().map(|m| m.builds).collect();
        let images: Vec<f64> = runs.iter().flat_map(|m| m.images_ms.iter().copied()).collect();
        let build: Vec<f64> = runs.iter().flat_map(|m| m.build_ms.iter().copied()).collect();
        let bytes: Vec<u64> = runs.iter().flat_map(|m| m.streamed.iter().copied()).collect();
        let min = walls.iter().copied().fold(f64::INFINITY, f64::min);
        let max = walls.iter().copied().fold(0.0, f64::max);
        let _ = writeln!(
            s,
            "| {} | {} | {:.2} s | {:.2} s ({min:.2}–{max:.2}) | {} | {} |",
            way.name(),
            builds.iter().map(|b| b.to_string()).collect::<Vec<_>>().join(", "),
            median(&build) / 1000.0,
            median(&walls),
            if images.is_empty() {
                "—".to_string()
            } else {
                format!("{:.2} s", median(&images) / 1000.0)
            },
            match (bytes.iter().min(), bytes.iter().max()) {
                (Some(a), Some(b)) => format!("{:.2}–{:.2} MB", *a as f64 / 1e6, *b as f64 / 1e6),
                _ => "—".to_string(),
            }
        );
    }
    let walls = |way: Way| -> Vec<f64> {
        measured
            .iter()
            .filter(|(w, _)| *w == way)
            .map(|(_, m)| m.wall)
            .collect()
    };
    let hosts_walls = walls(Way::Hosts);
    let spread =
        hosts_walls.iter().copied().fold(0.0, f64::max) - hosts_walls.iter().copied().fold(f64::INFINITY, f64::min);
    let (stream, registry) = (median(&walls(Way::Stream)), median(&walls(Way::Registry)));
    let base = median(&hosts_walls);
    let verdict = |x: f64| match (x - base).abs() <= spread {
        true => "within that spread",
        false => "beyond that spread",
    };
    let _ = writeln!(
        s,
        "\nWall time against `on = \"hosts\"`: streamed {:.2}× ({}), registry {:.2}× ({}), medians; \
         `on = \"hosts\"` varied by {spread:.2} s from run to run. What build-once removes is {} \
         builds' CPU on the hosts per deploy (the builds column), and what it guarantees is one set of image ids.\n\n\
         What this bed does not show: every \"host\" is on this machine, so the builds of `on = \"hosts\"` share \
         its two cores: on real hosts each builds on its own CPU, so this bed overstates `on = \"hosts\"`'s wall \
         time. And the transfers cross loopback: on a real network a stream sends each host's images through \
         this machine's uplink, so this bed understates a stream's (a registry sends them once). The ways take turns, so a build-once round after an \
         `on = \"hosts\"` round may send the worker's image too (each host's own build of it has its own id).",
        stream / base,
        verdict(stream),
        registry / base,
        verdict(registry),
        hosts - 1
    );
    let _ = writeln!(
        s,
        "\nThe images step of a receiving host is its pull (registry) or its `docker load` of the stream; \
         the first host's own images step (its push, or its `docker save` into a file on this machine) \
         comes before those. Measured in {took:.0} s, `bash scripts/bench.sh --only-build-once --runs {runs}`.\n{END}"
    );
    s
}
