//! `deploy` side by side with the floor, the manual script and Ansible, on one
//! test bed, interleaved, with medians. Run by `scripts/bench.sh`, which
//! installs what it needs and writes BENCHMARKS.md; see that file.
//!
//! Arguments: `--hosts 1,4,16` (fleet sizes), `--runs 5` (runs per cell),
//! `--one-host-runs 10` (the variants' 1-host cells: twice `--runs` unless
//! given; a run there takes a few seconds),
//! `--lag-runs 5`, `--out PATH` (the report), `--logs DIR` (keep every run's
//! output and deploy's events with their arrival times; `BENCH_TRACE=1` adds
//! the baselines' per-step times), `--smoke` (1 host, 1 run, a report under
//! target/ instead: the CI run that keeps this harness alive),
//! `--only-zero-downtime` (only `deploy`'s zero-downtime comparison, whose
//! section it writes into the report in place, leaving the rest as it was),
//! `--only-variants` (only the variants: compose v1/v2, http/exec checks, the
//! minimal playbook, deploy's per-step table; spliced in the same way),
//! `--only-build-once` (only `[build] on` compared on 16 hosts with engines
//! of their own, or `--hosts N`; spliced in the same way).

#[path = "../../tests/harness/mod.rs"]
mod harness;

mod bed;
mod build_once;
mod measure;
mod report;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bed::{Bed, Checks, Compose, Hosts, Tool, TOOLS, VARIANT_TOOLS};
use harness::prober::{Probe, Prober};
use measure::{run_phase, timed, wait_for_phase, Sample, PROBE_LATE, PROBE_LIMIT};

/// What a run changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    /// The api's page changed: a new commit, the api rebuilt and replaced.
    Api,
    /// The same commit again.
    Nothing,
}

impl Change {
    pub fn name(self) -> &'static str {
        match self {
            Change::Api => "api changed",
            Change::Nothing => "no change",
        }
    }
}

struct Options {
    sizes: Vec<usize>,
    runs: usize,
    /// Runs per 1-host cell of the variants (`None`: twice `runs`).
    one_host_runs: Option<usize>,
    lag_runs: usize,
    help_runs: usize,
    out: PathBuf,
    /// Where each run's output goes; a temporary directory unless given.
    logs: Option<PathBuf>,
    smoke: bool,
    /// Only the zero-downtime comparison, spliced into the report.
    zero_downtime_only: bool,
    /// Only the variants, spliced into the report.
    variants_only: bool,
    build_once_only: bool,
}

fn options() -> Options {
    let mut o = Options {
        sizes: vec![1, 4, 16],
        runs: 5,
        one_host_runs: None,
        lag_runs: 5,
        help_runs: 20,
        out: harness::repo_root().join("BENCHMARKS.md"),
        logs: None,
        smoke: false,
        zero_downtime_only: false,
        variants_only: false,
        build_once_only: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--hosts" => o.sizes = value().split(',').map(|s| s.parse().expect("a host count")).collect(),
            "--runs" => o.runs = value().parse().expect("a number of runs"),
            "--one-host-runs" => o.one_host_runs = Some(value().parse().expect("a number of runs")),
            "--lag-runs" => o.lag_runs = value().parse().expect("a number of runs"),
            "--out" => o.out = PathBuf::from(value()),
            "--logs" => o.logs = Some(PathBuf::from(value())),
            "--smoke" => {
                o.smoke = true;
                o.sizes = vec![1];
                o.runs = 1;
                o.one_host_runs = Some(1);
                o.lag_runs = 1;
                o.help_runs = 3;
                o.out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-smoke.md");
            }
            "--only-zero-downtime" => o.zero_downtime_only = true,
            "--only-build-once" => {
                o.build_once_only = true;
                if !std::env::args().any(|a| a == "--hosts") {
                    o.sizes = vec![16];
                }
            }
            "--only-variants" => {
                o.variants_only = true;
                if !std::env::args().any(|a| a == "--hosts") {
                    o.sizes = vec![1, 4];
                }
            }
            // `cargo bench` passes --bench to every bench target.
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    o
}

/// Right after a `deploy` run with exec checks (nothing else of the bench
/// runs then): the engine's own time for the checklist's exec commands on
/// the first host, `reps` rounds (see [`bed::engine_execs`]): what an
/// attempt costs the engine alone, and each of the three when they run at
/// once as one host's checklist runs them.
fn settled_execs(results: &mut Results, bed: &Bed, key: (Compose, usize), reps: usize) {
    let execs = bed::engine_execs(&bed.sites[0].project, reps);
    let into = results.engine_execs.entry(key).or_default();
    into.alone_ms.extend(execs.alone_ms);
    into.together_ms.extend(execs.together_ms);
}

/// A check event of a check that passed at its first attempt: its name and
/// time (ms), that attempt's.
fn first_pass(e: &serde_json::Value) -> Option<(&str, Option<f64>)> {
    (e["event"] == "check" && e["ok"] == true && e["attempts"] == 1)
        .then(|| (e["name"].as_str().unwrap_or("?"), e["elapsed_ms"].as_f64()))
}

/// The exec checks' attempts (ms) in a run's events: those that passed at
/// the first attempt (the api's health and the two Redis pings).
fn exec_attempts(sample: &Sample) -> Vec<f64> {
    sample
        .events()
        .iter()
        .filter_map(|(_, e)| first_pass(e))
        .filter(|(name, _)| bed::is_exec_check(name))
        .filter_map(|(_, ms)| ms)
        .collect()
}

/// Everything measured, for the report.
#[derive(Default)]
pub struct Results {
    /// (tool, hosts, change) → wall seconds of each run.
    pub wall: BTreeMap<(Tool, usize, Change), Vec<f64>>,
    /// hosts → peak RSS (KiB) of each deploy run.
    pub rss: BTreeMap<usize, Vec<u64>>,
    /// Health-detection lag of each run, ms.
    pub lag_ms: Vec<f64>,
    /// (rollback seconds, the changed deploy's seconds) per run, 1 host.
    pub rollback: Vec<(f64, f64)>,
    /// Failed probes on host 1 during each changed deploy's build and switch, per fleet size.
    pub failed_build: BTreeMap<usize, Vec<usize>>,
    pub failed_switch: BTreeMap<usize, Vec<usize>>,
    /// Probes sent during builds (to show the count is not zero for want of probes).
    pub probes_build: usize,
    /// Failed probes on host 1 during a whole changed run, per tool and size.
    pub failed_run: BTreeMap<(Tool, usize), Vec<usize>>,
    /// (hosts, zero_downtime on) → each changed deploy's switch on the first host.
    pub switches: BTreeMap<(usize, bool), Vec<SwitchRun>>,
    /// `deploy --help`, ms.
    pub help_ms: Vec<f64>,
    /// The variants: (compose, checks, hosts, tool) → wall seconds of each changed run.
    pub variants: BTreeMap<(Compose, Checks, usize, Tool), Vec<f64>>,
    /// (compose, checks, hosts) → deploy's steps: name → ms on each host of each run
    /// (checks as "check: NAME", their time when they passed at the first attempt).
    pub steps: BTreeMap<(Compose, Checks, usize), BTreeMap<String, Vec<f64>>>,
    /// Step names in the order they first came (the per-step table's rows).
    pub step_order: Vec<String>,
    /// (compose, checks, hosts) → remote commands per host, each host of each run.
    pub remote_commands: BTreeMap<(Compose, Checks, usize), Vec<f64>>,
    /// The api's build started at each of [`bed::BUILD_PHASES`] of the
    /// second (see [`bed::build_phases`]).
    pub build_phases: Option<bed::BuildPhases>,
    /// What the SSH handshake and a master's first command cost here (see
    /// [`bed::ssh_costs`]): beside the variants, whose connect step it explains.
    pub ssh_costs: Option<bed::SshCosts>,
    /// (compose, hosts) → the floor's `compose build` per host, ms (from its trace).
    pub plain_build_ms: BTreeMap<(Compose, usize), Vec<f64>>,
    /// (compose, hosts) → the floor's `compose up -d` per host, ms (from its trace).
    pub plain_up_ms: BTreeMap<(Compose, usize), Vec<f64>>,
    /// The floor's two Redis checks, one `docker exec` each (with the
    /// `docker ps` that finds the container), ms, by compose and host count.
    pub floor_exec_ms: BTreeMap<(Compose, usize), Vec<f64>>,
    /// (compose, hosts) → right after each exec-checks run of `deploy`: the
    /// engine's own time for the checklist's exec commands on the first
    /// host's containers (see [`bed::engine_execs`]).
    pub engine_execs: BTreeMap<(Compose, usize), bed::EngineExecs>,
    /// (compose, hosts) → right after that, `deploy verify` of the same
    /// hosts (no deploy running): each exec check's attempt, ms.
    pub settled_verify_ms: BTreeMap<(Compose, usize), Vec<f64>>,
    /// (compose, checks, hosts) → peak RSS of deploy, KiB.
    pub variant_rss: BTreeMap<(Compose, Checks, usize), Vec<u64>>,
    pub runs: usize,
    /// Runs per 1-host cell of the variants.
    pub one_host_runs: usize,
    pub sizes: Vec<usize>,
    pub started: String,
    pub took: Duration,
    /// /proc/loadavg's first figure when the run started and when it ended.
    pub load: (String, String),
}

/// One changed deploy seen through the first host's proxy, probed every 20 ms.
#[derive(Debug, Clone, Copy)]
pub struct SwitchRun {
    /// Failed probes from the switch's start to the api check passing.
    pub failed: usize,
    /// Of those, the ones that got no answer within [`PROBE_LIMIT`] (the
    /// rest got an error status).
    pub unanswered: usize,
    /// Probes in that window answered 200, but after over [`PROBE_LATE`];
    /// the slowest of them, ms.
    pub late: usize,
    pub slowest_late_ms: Option<u64>,
    /// Failed probes during the first host's build, when nothing switches
    /// (a control: what the machine's load alone does to answers), and probes then.
    pub failed_build: usize,
    pub probes_build: usize,
    /// Probes answered late during that build.
    pub late_build: usize,
    /// Probes sent in that window.
    pub probes: usize,
    /// The slowest probe answer in that window, ms.
    pub slowest_ms: u64,
    /// Failed probes during the whole run.
    pub failed_run: usize,
    /// The switch step on the first host, ms.
    pub switch_ms: u64,
    /// With zero_downtime: from the new container's start to the old one's removal, ms.
    pub replace_ms: Option<u64>,
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs bench targets
    // too, without it (scripts/test.sh passes `--test-threads 3`): a
    // half-hour benchmark is not a test.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("benches/compare: run by `cargo bench` (scripts/bench.sh), not by `cargo test`");
        return;
    }
    let o = options();
    if o.build_once_only {
        let hosts = *o.sizes.iter().max().expect("a fleet size");
        let section = build_once::run(hosts, o.runs);
        let before = std::fs::read_to_string(&o.out).unwrap_or_default();
        std::fs::write(
            &o.out,
            report::splice(&before, build_once::START, build_once::END, &section),
        )
        .expect("write the report");
        eprintln!("bench: wrote {}", o.out.display());
        return;
    }
    let began = Instant::now();
    let deploy_bin = PathBuf::from(env!("CARGO_BIN_EXE_deploy"));
    let max = *o.sizes.iter().max().expect("a fleet size");
    let dangling_before = bed::dangling_images();
    eprintln!("bench: starting {max} sshd hosts");
    let hosts = Hosts::start(max);
    let tmp_logs = harness::open_tempdir();
    let logs = o.logs.clone().unwrap_or_else(|| tmp_logs.path().to_path_buf());
    std::fs::create_dir_all(&logs).expect("logs dir");
    // A bed per tool and compose: the main tables run v2; the variants v1 too.
    let mut kinds: Vec<(Tool, Compose)> = Vec::new();
    if o.zero_downtime_only {
        kinds.push((Tool::Deploy, Compose::V2));
    }
    if !o.zero_downtime_only && !o.variants_only {
        kinds.extend(TOOLS.iter().map(|&t| (t, Compose::V2)));
    }
    if !o.zero_downtime_only {
        for c in [Compose::V2, Compose::V1] {
            for &t in &VARIANT_TOOLS {
                if !kinds.contains(&(t, c)) {
                    kinds.push((t, c));
                }
            }
        }
    }
    let subnets = bed::free_subnets(kinds.len() * max);
    let mut beds: Vec<Bed> = kinds
        .iter()
        .zip(subnets.chunks(max))
        .map(|(&(t, c), nets)| Bed::new(t, c, &hosts, &o.sizes, nets))
        .collect();
    // The main tables' beds, in TOOLS order.
    let main: Vec<usize> = TOOLS
        .iter()
        .filter_map(|&t| beds.iter().position(|b| b.tool == t && b.compose == Compose::V2))
        .collect();
    let one_host_runs = o.one_host_runs.unwrap_or(2 * o.runs);
    let mut results = Results {
        runs: o.runs,
        one_host_runs,
        sizes: o.sizes.clone(),
        started: sh_out(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"])),
        load: (load_average(), String::new()),
        ..Results::default()
    };
    let runner = Runner {
        deploy: deploy_bin.clone(),
        hosts: &hosts,
        logs,
        masters: tempfile::Builder::new()
            .prefix("bench-cp-")
            .tempdir_in("/tmp")
            .expect("tempdir"),
        last_log: Default::default(),
    };

    // Every tool puts its first release on every host (not measured).
    eprintln!("bench: first release on {max} hosts with every tool");
    for bed in &beds {
        let sha = bed.head();
        runner.run(bed, max, &sha, "setup", Checks::Http);
    }

    // The variants: every tool on compose v2 and v1, with http and with exec
    // checks, a changed commit each run, the tools' order turning.
    let runs_of = |n: usize| if n == 1 { one_host_runs } else { o.runs };
    let variant_runs = if o.zero_downtime_only {
        0
    } else {
        o.runs.max(one_host_runs)
    };
    if variant_runs > 0 && o.sizes.iter().any(|&n| n <= 4) {
        eprintln!(
            "bench: the api's build started at {} points of the second",
            bed::BUILD_PHASES.len()
        );
        results.build_phases = Some(bed::build_phases(if o.smoke { 1 } else { 3 }));
        eprintln!("bench: the SSH handshake and a master's first commands");
        results.ssh_costs = Some(bed::ssh_costs(
            &hosts.ssh[0],
            &hosts.known_hosts(),
            if o.smoke { 1 } else { 5 },
        ));
    }
    for iter in 0..variant_runs {
        for (k, &n) in o.sizes.iter().enumerate().filter(|(_, &n)| n <= 4 && iter < runs_of(n)) {
            for compose in [Compose::V2, Compose::V1] {
                // The smoke run keeps the harness alive, not the figures: exec checks only.
                let kinds: &[Checks] = if o.smoke {
                    &[Checks::Exec]
                } else {
                    &[Checks::Http, Checks::Exec]
                };
                for &checks in kinds {
                    for i in 0..VARIANT_TOOLS.len() {
                        let tool = VARIANT_TOOLS[(i + iter + k) % VARIANT_TOOLS.len()];
                        let b = beds
                            .iter()
                            .position(|b| b.tool == tool && b.compose == compose)
                            .expect("a bed per variant tool");
                        let sha = beds[b].change_api(None);
                        let bed = &beds[b];
                        let what = format!("variant-{}-{}", compose.name(), checks.name());
                        wait_for_phase(run_phase(iter, runs_of(n), &format!("{}/{n}/{what}", tool.name())));
                        let sample = runner.run(bed, n, &sha, &what, checks);
                        let wall = sample.wall.as_secs_f64();
                        results
                            .variants
                            .entry((compose, checks, n, tool))
                            .or_default()
                            .push(wall);
                        match tool {
                            Tool::Deploy => {
                                record_steps(&mut results, (compose, checks, n), &sample);
                                if checks == Checks::Exec {
                                    settled_execs(&mut results, bed, (compose, n), if o.smoke { 1 } else { 3 });
                                    let verified = runner.verify(bed, n, checks);
                                    let attempts = results.settled_verify_ms.entry((compose, n)).or_default();
                                    attempts.extend(exec_attempts(&verified));
                                }
                            }
                            Tool::Floor => {
                                let builds = runner.traced(" build -q");
                                results.plain_build_ms.entry((compose, n)).or_default().extend(builds);
                                let ups = runner.traced(" up -d");
                                results.plain_up_ms.entry((compose, n)).or_default().extend(ups);
                                if checks == Checks::Exec {
                                    // The Redis checks: one `docker exec` each, no retry loop.
                                    let execs = runner.traced("| grep -q PONG");
                                    results.floor_exec_ms.entry((compose, n)).or_default().extend(execs);
                                }
                            }
                            _ => {}
                        }
                        eprintln!(
                            "bench: variants run {} · {n} hosts · {} · {} checks · {:<11} {wall:>6.2} s",
                            iter + 1,
                            compose.name(),
                            checks.name(),
                            tool.name()
                        );
                    }
                }
            }
        }
    }

    let main_runs = if o.zero_downtime_only || o.variants_only {
        0
    } else {
        o.runs
    };
    for iter in 0..main_runs {
        for (k, &n) in o.sizes.iter().enumerate() {
            // The order of the tools turns from one round to the next.
            let order: Vec<usize> = (0..TOOLS.len()).map(|i| main[(i + iter + k) % TOOLS.len()]).collect();
            let shas: BTreeMap<usize, String> = order.iter().map(|&t| (t, beds[t].change_api(None))).collect();
            for &t in &order {
                let bed = &beds[t];
                let site = &bed.sites[0];
                wait_for_phase(run_phase(iter, o.runs, &format!("{}/{n}/changed", bed.tool.name())));
                // This section's probes fail without a 200 within 1 s, as they
                // always have (its figures compare with earlier runs).
                let prober = Prober::every(site.api_port, "/health", Duration::from_millis(50), PROBE_LATE);
                let sample = runner.run(bed, n, &shas[&t], "changed", Checks::Http);
                let probes = prober.finish();
                let failed_probes = probes.iter().filter(|p| failed(p)).count();
                results.failed_run.entry((bed.tool, n)).or_default().push(failed_probes);
                record(&mut results, bed.tool, n, Change::Api, &sample);
                eprintln!(
                    "bench: run {} · {n} hosts · api changed · {:<7} {:>6.2} s · failed probes {failed_probes}",
                    iter + 1,
                    bed.tool.name(),
                    sample.wall.as_secs_f64()
                );
                if bed.tool == Tool::Deploy {
                    let host = format!("{}:{}", hosts.ssh[0].addr, hosts.ssh[0].port);
                    let window = |step: &str| {
                        let at = |status: &str| {
                            sample.event_at(|e| {
                                e["event"] == "step"
                                    && e["host"] == host.as_str()
                                    && e["step"] == step
                                    && e["status"] == status
                            })
                        };
                        (at("started").expect("step started"), at("done").expect("step done"))
                    };
                    let count = |(from, to): (Instant, Instant)| {
                        probes
                            .iter()
                            .filter(|p| p.at >= from && p.at <= to && failed(p))
                            .count()
                    };
                    let build = window("build");
                    // The switch, until the new release answers: from `switch` started
                    // to its api health check passing on this host.
                    let (switch_started, switch_done) = window("switch");
                    let switched = (
                        switch_started,
                        sample
                            .event_at(|e| {
                                e["event"] == "check"
                                    && e["host"] == host.as_str()
                                    && e["name"] == "api health"
                                    && e["ok"] == true
                            })
                            .unwrap_or(switch_done),
                    );
                    results.probes_build += probes.iter().filter(|p| p.at >= build.0 && p.at <= build.1).count();
                    results.failed_build.entry(n).or_default().push(count(build));
                    results.failed_switch.entry(n).or_default().push(count(switched));
                    if n == 1 {
                        let rb = runner.rollback(bed);
                        results
                            .rollback
                            .push((rb.wall.as_secs_f64(), sample.wall.as_secs_f64()));
                        eprintln!("bench: run {} · rollback {:.2} s", iter + 1, rb.wall.as_secs_f64());
                        // Back to the new release, so the no-change run finds it live.
                        runner.run(bed, n, &shas[&t], "forward", Checks::Http);
                    }
                }
            }
            for &t in &order {
                let bed = &beds[t];
                wait_for_phase(run_phase(iter, o.runs, &format!("{}/{n}/unchanged", bed.tool.name())));
                let sample = runner.run(bed, n, &shas[&t], "unchanged", Checks::Http);
                record(&mut results, bed.tool, n, Change::Nothing, &sample);
                eprintln!(
                    "bench: run {} · {n} hosts · no change  · {:<7} {:>6.2} s",
                    iter + 1,
                    bed.tool.name(),
                    sample.wall.as_secs_f64()
                );
            }
        }
    }

    // Health-detection lag: the api starts serving 2 s after its container;
    // the prober asks the proxy every 5 ms for the new release's page. These
    // runs switch by `up -d`: with zero_downtime the switch itself waits
    // until the new container is ready.
    let bed = beds
        .iter_mut()
        .find(|b| b.tool == Tool::Deploy && b.compose == Compose::V2)
        .unwrap();
    for i in 0..if o.zero_downtime_only || o.variants_only {
        0
    } else {
        o.lag_runs
    } {
        let sha = bed.change_api(Some(2));
        let marker = bed.marker();
        let prober = Prober::every(bed.sites[0].api_port, "/", Duration::from_millis(5), PROBE_LIMIT);
        let sample = runner.run(bed, 1, &sha, "lag", Checks::Http);
        let probes = prober.finish();
        // When the answer came: through the proxy a probe can be held while
        // Caddy retries, so the time it was sent is not when the api answered.
        let first = probes
            .iter()
            .find(|p| p.ok() && p.body.contains(marker.as_str()))
            .expect("the new release answered");
        let healthy = first.at + first.took;
        let reported = sample
            .event_at(|e| e["event"] == "check" && e["name"] == "api health" && e["ok"] == true)
            .expect("api health passed");
        let lag = reported.saturating_duration_since(healthy).as_secs_f64() * 1000.0
            - healthy.saturating_duration_since(reported).as_secs_f64() * 1000.0;
        eprintln!("bench: lag run {} · {lag:.0} ms", i + 1);
        results.lag_ms.push(lag);
    }

    // The zero-downtime switch: the same changed deploy with the api switched
    // by `up -d` and start-first, alternating, probed through the first host's
    // proxy every 20 ms.
    for (k, &n) in o.sizes.iter().enumerate() {
        for i in 0..if o.variants_only { 0 } else { o.runs } {
            let modes = if (i + k) % 2 == 0 { [false, true] } else { [true, false] };
            for on in modes {
                let sha = bed.change_api(None);
                let what = if on { "zero-downtime-on" } else { "zero-downtime-off" };
                let config = if on {
                    bed.zero_downtime_file(n)
                } else {
                    bed.hosts_file(n)
                };
                let prober = Prober::every(bed.sites[0].api_port, "/health", Duration::from_millis(20), PROBE_LIMIT);
                let sample = runner.run_config(bed, n, &config, what);
                let probes = prober.finish();
                let run = switch_run(
                    &sample,
                    &probes,
                    &format!("{}:{}", hosts.ssh[0].addr, hosts.ssh[0].port),
                    &sha,
                );
                eprintln!(
                    "bench: {what} run {} · {n} hosts · failed probes in the switch {} of {} ({} unanswered; {} answered late, after over {} s; slowest {} ms) · in the build {} of {} · switch {} ms",
                    i + 1,
                    run.failed,
                    run.probes,
                    run.unanswered,
                    run.late,
                    PROBE_LATE.as_secs_f64(),
                    run.slowest_ms,
                    run.failed_build,
                    run.probes_build,
                    run.switch_ms
                );
                results.switches.entry((n, on)).or_default().push(run);
            }
        }
    }

    for _ in 0..if o.zero_downtime_only { 0 } else { o.help_runs } {
        let t = Instant::now();
        let out = Command::new(&deploy_bin).arg("--help").output().expect("deploy --help");
        assert!(out.status.success());
        results.help_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }

    drop(beds);
    bed::remove_dangling_images_since(&dangling_before);
    // Ansible's ssh masters outlive it by ControlPersist; not past the bench.
    for dir in std::fs::read_dir(runner.masters.path()).into_iter().flatten().flatten() {
        for socket in std::fs::read_dir(dir.path()).into_iter().flatten().flatten() {
            let _ = Command::new("ssh")
                .arg("-o")
                .arg(format!("ControlPath={}", socket.path().display()))
                .args(["-O", "exit", "x"])
                .output();
        }
    }
    results.took = began.elapsed();
    results.load.1 = load_average();
    let text = if o.zero_downtime_only {
        let before = std::fs::read_to_string(&o.out).unwrap_or_default();
        report::splice_zero_downtime(&before, &results)
    } else if o.variants_only {
        let before = std::fs::read_to_string(&o.out).unwrap_or_default();
        report::splice_variants(&before, &results)
    } else {
        // The build-once section comes from its own run: kept as it was.
        let before = std::fs::read_to_string(&o.out).unwrap_or_default();
        let text = report::render(&results, &deploy_bin);
        match (before.find(build_once::START), before.find(build_once::END)) {
            (Some(a), Some(b)) if a < b && !o.smoke => report::splice(
                &text,
                build_once::START,
                build_once::END,
                &before[a..b + build_once::END.len()],
            ),
            _ => text,
        }
    };
    std::fs::write(&o.out, text).expect("write the report");
    eprintln!(
        "bench: wrote {} in {:.0} s",
        o.out.display(),
        results.took.as_secs_f64()
    );
}

/// A probe that got no 200, or one later than the prober's limit (the
/// connect and each read get the limit apiece).
fn failed(p: &Probe) -> bool {
    !p.ok() || p.took > PROBE_LIMIT
}

/// A 200 within [`PROBE_LIMIT`], after over [`PROBE_LATE`].
fn late(p: &Probe) -> bool {
    !failed(p) && p.took > PROBE_LATE
}

/// What the first host's proxy answered during a changed deploy's switch.
fn switch_run(sample: &Sample, probes: &[Probe], host: &str, sha: &str) -> SwitchRun {
    let step = |status: &str| {
        sample
            .events()
            .into_iter()
            .find(|(_, e)| e["event"] == "step" && e["host"] == host && e["step"] == "switch" && e["status"] == status)
    };
    let (started, _) = step("started").unwrap_or_else(|| panic!("no switch of {sha} on {host}"));
    let (done_at, done) = step("done").unwrap_or_else(|| panic!("the switch of {sha} on {host} did not finish"));
    let until = sample
        .event_at(|e| e["event"] == "check" && e["host"] == host && e["name"] == "api health" && e["ok"] == true)
        .unwrap_or(done_at);
    let window: Vec<&Probe> = probes.iter().filter(|p| p.at >= started && p.at <= until).collect();
    let build = |status: &str| {
        sample.event_at(|e| e["event"] == "step" && e["host"] == host && e["step"] == "build" && e["status"] == status)
    };
    let built: Vec<&Probe> = match (build("started"), build("done")) {
        (Some(from), Some(to)) => probes.iter().filter(|p| p.at >= from && p.at <= to).collect(),
        _ => Vec::new(),
    };
    let replace_ms = sample
        .events()
        .into_iter()
        .find(|(_, e)| e["event"] == "start_first" && e["host"] == host && e["phase"] == "replaced")
        .and_then(|(_, e)| e["elapsed_ms"].as_u64());
    say_failed_probes(sample, probes, host, started);
    SwitchRun {
        failed: window.iter().filter(|p| failed(p)).count(),
        unanswered: window.iter().filter(|p| p.status.is_none()).count(),
        late: window.iter().filter(|p| late(p)).count(),
        slowest_late_ms: window
            .iter()
            .filter(|p| late(p))
            .map(|p| p.took.as_millis() as u64)
            .max(),
        failed_build: built.iter().filter(|p| failed(p)).count(),
        late_build: built.iter().filter(|p| late(p)).count(),
        probes_build: built.len(),
        probes: window.len(),
        slowest_ms: window.iter().map(|p| p.took.as_millis() as u64).max().unwrap_or(0),
        failed_run: probes.iter().filter(|p| failed(p)).count(),
        switch_ms: done["elapsed_ms"].as_u64().unwrap_or(0),
        replace_ms,
    }
}

/// deploy's step and check times, and its remote commands, from one run's events.
fn record_steps(results: &mut Results, key: (Compose, Checks, usize), sample: &Sample) {
    let events = sample.events();
    let steps = results.steps.entry(key).or_default();
    for (_, e) in &events {
        let (name, ms) = match e["event"].as_str() {
            Some("step") if e["status"] == "done" => {
                (e["step"].as_str().unwrap_or("?").to_string(), e["elapsed_ms"].as_f64())
            }
            Some("check") => match first_pass(e) {
                Some((name, ms)) => (format!("check: {name}"), ms),
                None => continue,
            },
            _ => continue,
        };
        if let Some(ms) = ms {
            if !results.step_order.contains(&name) {
                results.step_order.push(name.clone());
            }
            steps.entry(name).or_default().push(ms);
        }
    }
    // On each host, from its last check's answer to its closing command's
    // start (when deploy's events arrived here): what stands between them.
    let hosts: std::collections::BTreeSet<&str> = events.iter().filter_map(|(_, e)| e["host"].as_str()).collect();
    for host in hosts {
        let last_check = events
            .iter()
            .filter(|(_, e)| e["event"] == "check" && e["host"] == host)
            .map(|(t, _)| *t)
            .max();
        let closing = events
            .iter()
            .find(|(_, e)| {
                e["event"] == "step"
                    && e["host"] == host
                    && e["status"] == "started"
                    && ["confirm", "record", "prune", "unlock"].iter().any(|s| e["step"] == *s)
            })
            .map(|(t, _)| *t);
        if let (Some(checked), Some(closing)) = (last_check, closing) {
            let name = "last check → closing command".to_string();
            if !results.step_order.contains(&name) {
                results.step_order.push(name.clone());
            }
            let ms = closing.saturating_duration_since(checked).as_secs_f64() * 1000.0;
            steps.entry(name).or_default().push(ms);
        }
    }
    if let Some((_, summary)) = events.iter().find(|(_, e)| e["event"] == "summary") {
        for h in summary["hosts"].as_array().into_iter().flatten() {
            if let Some(k) = h["remote_commands"].as_f64() {
                results.remote_commands.entry(key).or_default().push(k);
            }
        }
    }
    results.variant_rss.entry(key).or_default().push(sample.max_rss_kib);
}

fn record(results: &mut Results, tool: Tool, n: usize, change: Change, sample: &Sample) {
    results
        .wall
        .entry((tool, n, change))
        .or_default()
        .push(sample.wall.as_secs_f64());
    if tool == Tool::Deploy {
        results.rss.entry(n).or_default().push(sample.max_rss_kib);
    }
}

struct Runner<'a> {
    deploy: PathBuf,
    hosts: &'a Hosts,
    logs: PathBuf,
    /// Ansible's ssh control sockets, a fresh directory per run.
    masters: tempfile::TempDir,
    /// The log of the last run.
    last_log: std::cell::RefCell<PathBuf>,
}

impl Runner<'_> {
    /// One release of `sha` to the first `n` hosts with `bed`'s tool and
    /// `checks`, timed from the push to the last check.
    fn run(&self, bed: &Bed, n: usize, sha: &str, what: &str, checks: Checks) -> Sample {
        let log = self.log(bed, n, what);
        let push = || {
            let mut c = Command::new("git");
            c.arg("-C").arg(bed.path()).args(["push", "-q", "origin", "main"]);
            c
        };
        let script = |name: &str| harness::repo_root().join("bench").join(name);
        // The baselines' variant (bench/steps.sh reads these); the floor runs
        // commands in containers the cheapest way, `docker exec`.
        let variant = |c: &mut Command, exec_via: &str| {
            c.env("COMPOSE", bed.compose.command())
                .env("CHECKS", checks.name())
                .env("EXEC_VIA", exec_via)
                .env("BENCH_TRACE", "1");
        };
        let commands = match bed.tool {
            Tool::Floor => {
                let mut c = Command::new("bash");
                c.arg(script("floor.sh")).arg(bed.hosts_file(n)).arg(sha);
                variant(&mut c, "docker");
                vec![push(), c]
            }
            Tool::Manual => {
                let mut c = Command::new("bash");
                c.arg(script("manual.sh"))
                    .arg(bed.hosts_file(n))
                    .arg(sha)
                    .arg(harness::sshd::client_key())
                    .arg(self.hosts.known_hosts());
                variant(&mut c, "compose");
                vec![push(), c]
            }
            Tool::Ansible | Tool::AnsibleMinimal => {
                // Each run starts with no master connection, as deploy's runs do;
                // within the run ControlPersist shares one per host.
                let masters = self.masters.path().join(format!("{:03}", self.seq()));
                std::fs::create_dir_all(&masters).expect("control path dir");
                let playbook = if bed.tool == Tool::Ansible {
                    "ansible/deploy.yml"
                } else {
                    "ansible/minimal.yml"
                };
                let vars = serde_json::json!({
                    "sha": sha,
                    "compose": bed.compose.command(),
                    "checks": checks.name(),
                });
                let mut c = Command::new("/opt/deploy-bench-ansible/bin/ansible-playbook");
                c.env("ANSIBLE_CONFIG", script("ansible/ansible.cfg"))
                    .env("ANSIBLE_SSH_CONTROL_PATH_DIR", &masters)
                    .arg("-i")
                    .arg(bed.hosts_file(n))
                    .arg("-f")
                    .arg(n.to_string())
                    .arg("-e")
                    .arg(vars.to_string())
                    .arg(script(playbook));
                vec![push(), c]
            }
            Tool::Deploy => {
                let mut c = Command::new(&self.deploy);
                c.current_dir(bed.path())
                    .arg("--config")
                    .arg(bed.deploy_config(n, checks))
                    .args(["bench", "--output", "json"]);
                vec![c]
            }
        };
        let sample = timed(commands, &log);
        self.last_log.replace(log);
        sample
    }

    /// The times (ms, one per host) of the floor's steps whose command holds
    /// `command` (` build -q`, ` up -d`) in the last run's log, from
    /// bench/steps.sh's trace.
    fn traced(&self, command: &str) -> Vec<f64> {
        let log = self.last_log.borrow().clone();
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(command))
            .filter_map(|l| l.strip_prefix("step ")?.split(" ms:").next()?.parse().ok())
            .collect()
    }

    /// `deploy verify bench` of the first `n` hosts, with `checks`.
    fn verify(&self, bed: &Bed, n: usize, checks: Checks) -> Sample {
        let mut c = Command::new(&self.deploy);
        c.current_dir(bed.path())
            .arg("--config")
            .arg(bed.deploy_config(n, checks))
            .args(["verify", "bench", "--output", "json"]);
        timed(vec![c], &self.log(bed, n, &format!("verify-{}", checks.name())))
    }

    /// `deploy --config CONFIG bench` to the first `n` hosts (the config names them).
    fn run_config(&self, bed: &Bed, n: usize, config: &Path, what: &str) -> Sample {
        let mut c = Command::new(&self.deploy);
        c.current_dir(bed.path())
            .arg("--config")
            .arg(config)
            .args(["bench", "--output", "json"]);
        timed(vec![c], &self.log(bed, n, what))
    }

    fn rollback(&self, bed: &Bed) -> Sample {
        let mut c = Command::new(&self.deploy);
        c.current_dir(bed.path())
            .arg("--config")
            .arg(bed.hosts_file(1))
            .args(["rollback", "bench", "--output", "json"]);
        timed(vec![c], &self.log(bed, 1, "rollback"))
    }

    fn log(&self, bed: &Bed, n: usize, what: &str) -> PathBuf {
        self.logs.join(format!(
            "{:03}-{}-{}-{n}-{what}.log",
            self.seq(),
            bed.tool.name(),
            bed.compose.name()
        ))
    }

    fn seq(&self) -> usize {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        SEQ.fetch_add(1, Ordering::SeqCst)
    }
}

/// The machine's load average over the last minute (it is shared).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

fn sh_out(cmd: &mut Command) -> String {
    cmd.output()
        .map(|o| {
            String::from_utf8_lossy(if o.stdout.is_empty() { &o.stderr } else { &o.stdout })
                .trim()
                .to_string()
        })
        .unwrap_or_else(|_| "not found".into())
}

/// The first line a version command prints.
pub fn version_of(program: &str, args: &[&str]) -> String {
    sh_out(Command::new(program).args(args))
        .lines()
        .next()
        .unwrap_or("not found")
        .to_string()
}

/// For the report: a file's first line matching `prefix`, after it.
pub fn field(path: &Path, prefix: &str) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(prefix)
                .map(|v| v.trim().trim_start_matches(':').trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// For a run with failed or late probes: each of them, and the first host's
/// step, switch and check events around them, in ms since its switch started
/// (on stderr, for finding out why).
fn say_failed_probes(sample: &Sample, probes: &[Probe], host: &str, switch_started: Instant) {
    let worth_saying = |p: &&Probe| failed(p) || late(p);
    if !probes.iter().any(|p| worth_saying(&p)) {
        return;
    }
    let at = |t: Instant| {
        t.saturating_duration_since(switch_started).as_millis() as i64
            - switch_started.saturating_duration_since(t).as_millis() as i64
    };
    let mut lines: Vec<(i64, String)> = probes
        .iter()
        .filter(worth_saying)
        .map(|p| {
            let what = match (failed(p), p.error) {
                (false, _) => "probe answered late".to_string(),
                (true, Some(error)) => format!("probe failed: {error}"),
                (true, None) => format!("probe failed: status {:?}", p.status),
            };
            let connect = p.connected_after.map_or_else(
                || "never connected".to_string(),
                |c| format!("connected after {} ms", c.as_millis()),
            );
            (at(p.at), format!("{what} after {} ms ({connect})", p.took.as_millis()))
        })
        .collect();
    for (t, e) in sample.events() {
        let mine = e["host"] == host;
        let what = match e["event"].as_str() {
            Some("step") if mine => format!("step {} {}", e["step"], e["status"]),
            Some("start_first") if mine => format!("start_first {} new {} old {}", e["phase"], e["new"], e["old"]),
            Some("check") if mine => format!("check {} ok {}", e["name"], e["ok"]),
            _ => continue,
        };
        lines.push((at(t), what));
    }
    lines.sort_by_key(|(t, _)| *t);
    let wall = std::time::SystemTime::now() - switch_started.elapsed();
    let unix = wall.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    eprintln!(
        "bench:   the switch started at {}.{:03} (Unix time)",
        unix.as_secs(),
        unix.subsec_millis()
    );
    for (t, what) in lines {
        eprintln!("bench:   {t:>6} ms  {what}");
    }
    // What the first host's proxy said meanwhile (its errors: why a request failed).
    let project = sample.events().into_iter().find_map(|(_, e)| {
        let new = e["new"].get(0)?.as_str()?.to_string();
        (e["event"] == "start_first" && e["host"] == host).then_some(())?;
        let (service, _) = new.rsplit_once(['-', '_'])?;
        Some(service.rsplit_once(['-', '_'])?.0.to_string())
    });
    if let Some(project) = project {
        let since = (unix.as_secs() - 5).to_string();
        for name in [format!("{project}-proxy-1"), format!("{project}_proxy_1")] {
            if let Ok(out) = Command::new("docker")
                .args(["logs", "--timestamps", "--since", &since, &name])
                .output()
            {
                if out.status.success() {
                    eprintln!(
                        "bench:   {name} said:\n{}{}",
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            }
        }
    }
}
