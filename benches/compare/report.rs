//! BENCHMARKS.md, written from one run's results: nothing in it is typed by hand.

use std::fmt::Write;
use std::path::Path;
use std::process::Command;

use crate::bed::{Checks, Compose, Tool, TOOLS, VARIANT_TOOLS};
use crate::measure::{mean, median, PROBE_LATE, PROBE_LIMIT};
use crate::{field, version_of, Change, Results};

pub fn render(r: &Results, deploy_bin: &Path) -> String {
    let mut s = String::new();
    let root = crate::harness::repo_root();
    let commit = version_of("git", &["-C", root.to_str().unwrap(), "rev-parse", "--short", "HEAD"]);
    let dirty = Command::new("git")
        .arg("-C")
        .arg(&root)
        .args(["diff", "--quiet", "HEAD"])
        .status()
        .is_ok_and(|st| !st.success());
    let _ = writeln!(s, "# Benchmarks\n");
    let _ = writeln!(
        s,
        "Written by `scripts/bench.sh` (the harness in `benches/compare/`) on {}, from commit `{commit}`{}; \
         {} run(s) per cell, the tools interleaved, medians shown. The whole run took {:.0} min. \
         Do not edit the figures: run the script again.\n",
        r.started,
        if dirty { " with local changes" } else { "" },
        r.runs,
        r.took.as_secs_f64() / 60.0
    );

    let _ = writeln!(s, "## Machine and tools\n");
    let cpu = field(Path::new("/proc/cpuinfo"), "model name");
    let cores = version_of("nproc", &[]);
    let mem_kib: f64 = field(Path::new("/proc/meminfo"), "MemTotal")
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap_or(0.0);
    let os = field(Path::new("/etc/os-release"), "PRETTY_NAME=")
        .trim_matches('"')
        .to_string();
    let _ = writeln!(
        s,
        "- Machine: {cpu}, {cores} cores, {:.0} GiB, {os}, Linux {}",
        mem_kib / 1048576.0,
        version_of("uname", &["-r"])
    );
    let _ = writeln!(
        s,
        "- deploy: {} (release build, `{}`)",
        version_of(deploy_bin.to_str().unwrap(), &["--version"]),
        commit
    );
    let _ = writeln!(
        s,
        "- Ansible: {} ({})",
        version_of("/opt/deploy-bench-ansible/bin/ansible-playbook", &["--version"]),
        version_of("/opt/deploy-bench-ansible/bin/python", &["--version"])
    );
    let _ = writeln!(s, "- OpenSSH: {}", version_of("ssh", &["-V"]));
    let _ = writeln!(
        s,
        "- Docker engine: {}; Compose: {}",
        version_of("docker", &["version", "--format", "{{.Server.Version}}"]),
        version_of("docker", &["compose", "version"])
    );
    let _ = writeln!(s, "- git: {}", version_of("git", &["--version"]));
    let _ = writeln!(
        s,
        "\nEvery host is an sshd on 127.0.0.1 with its own host key and port, logging in the user `deploytest`; \
         all hosts share this machine's 2 cores and its one Docker engine, so N hosts build and start N copies of \
         the app on the same CPUs. Each tool has its own copy of the demo app (`demo/`: a Caddy reverse proxy in \
         front of a busybox httpd api, a worker, Redis), its own git remote, and on each host its own directory, \
         compose project and proxy port.\n"
    );

    let _ = writeln!(s, "## What each tool does\n");
    let _ = writeln!(
        s,
        "Every run starts with the push and ends when the last check passed on the last host. {}\n",
        phase_note("The runs of the main and variants tables")
    );
    let _ = writeln!(s, "- **floor**: `git push`, then the commands of `bench/steps.sh` (fetch and check out the commit, `docker compose build`, `up -d`, then the checklist: 4 containers running, `/health` 200 through the proxy polled every 100 ms, `redis-cli ping` from the worker, no `connection refused` in the logs since the switch) run directly on every host at once, as `deploytest`, no SSH. The least any tool could take.");
    let _ = writeln!(s, "- **manual**: `git push`, then `bench/manual.sh`: the same commands, one `ssh host '...'` line each, host after host, a new connection per line.");
    let _ = writeln!(s, "- **ansible**: `git push`, then `bench/ansible/deploy.yml`: the same commands as `command`/`shell` tasks and `uri` with `until`/`retries`/`delay: 0.1` for the health check; forks = N, pipelining on, ControlPersist 60 s, no fact gathering.");
    let _ = writeln!(s, "- **deploy**: `deploy bench --output json` with the same four checks (health through an SSH tunnel): push with git2, lock, fetch into the host's mirror and export a release directory, build (skipped when the tree and variables equal the live release's: its images are reused), switch (containers whose image did not change are kept; the api by `up -d`, as the others do: the start-first switch is measured on its own below), verify, then history, prune and unlock in one command.\n");

    let _ = writeln!(s, "## Wall time (seconds, median of {})\n", r.runs);
    let _ = writeln!(s, "| hosts | change | floor | manual | ansible | deploy |");
    let _ = writeln!(s, "|---:|---|---:|---:|---:|---:|");
    for &n in &r.sizes {
        for c in [Change::Api, Change::Nothing] {
            let cells: Vec<String> = TOOLS.iter().map(|&t| format!("{:.2}", med(r, t, n, c))).collect();
            let _ = writeln!(s, "| {n} | {} | {} |", c.name(), cells.join(" | "));
        }
    }

    let _ = writeln!(s, "\n## Ratios\n");
    let _ = writeln!(
        s,
        "Overhead = a tool's median minus the floor's median, same fleet and change. In the no-change rows \
         `deploy` builds nothing (its release equals the live one, whose images it reuses) while the floor, the \
         script and Ansible run `compose build`, which only hits the cache: those rows compare what each does when \
         nothing changed, not identical steps; the api-changed rows run the same steps.\n"
    );
    let _ = writeln!(s, "| hosts | change | deploy overhead (s) | ansible overhead (s) | manual overhead (s) | deploy overhead / ansible overhead | deploy / ansible | deploy / manual |");
    let _ = writeln!(s, "|---:|---|---:|---:|---:|---:|---:|---:|");
    for &n in &r.sizes {
        for c in [Change::Api, Change::Nothing] {
            let floor = med(r, Tool::Floor, n, c);
            let (d, a, m) = (
                med(r, Tool::Deploy, n, c),
                med(r, Tool::Ansible, n, c),
                med(r, Tool::Manual, n, c),
            );
            let _ = writeln!(
                s,
                "| {n} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
                c.name(),
                d - floor,
                a - floor,
                m - floor,
                (d - floor) / (a - floor),
                d / a,
                d / m
            );
        }
    }

    let _ = writeln!(s, "\n## Targets\n");
    let _ = writeln!(s, "| target | measured | met |");
    let _ = writeln!(s, "|---|---|---|");
    let yes = |ok: bool| if ok { "yes" } else { "**no**" };
    for c in [Change::Api, Change::Nothing] {
        let floor = med(r, Tool::Floor, 1, c);
        let ratio = (med(r, Tool::Deploy, 1, c) - floor) / (med(r, Tool::Ansible, 1, c) - floor);
        let what = match c {
            Change::Api => "api changed, same steps",
            Change::Nothing => "no change; deploy skips the build",
        };
        let _ = writeln!(
            s,
            "| overhead over the floor at 1 host ≤ 0.1 × Ansible's ({what}) | {ratio:.3} × | {} |",
            yes(ratio <= 0.1)
        );
    }
    let max = *r.sizes.iter().max().unwrap();
    if max > 1 && r.sizes.contains(&1) {
        let ratio = med(r, Tool::Deploy, max, Change::Nothing) / med(r, Tool::Deploy, 1, Change::Nothing);
        let floor = med(r, Tool::Floor, max, Change::Nothing) / med(r, Tool::Floor, 1, Change::Nothing);
        let _ = writeln!(
            s,
            "| {max} hosts ≤ 2 × the wall time of 1 host, no change | {ratio:.2} × (the floor's own: {floor:.2} ×; the hosts share 2 cores) | {} |",
            yes(ratio <= 2.0)
        );
    } else {
        let _ = writeln!(
            s,
            "| 16 hosts ≤ 2 × the wall time of 1 host, no change | not measured in this run | – |"
        );
    }
    let lag = median(&r.lag_ms);
    let _ = writeln!(
        s,
        "| health-detection lag, median ≤ 100 ms | {lag:.0} ms (of {}) | {} |",
        r.lag_ms.len(),
        yes(lag <= 100.0)
    );
    let rb = median(&r.rollback.iter().map(|x| x.0).collect::<Vec<_>>());
    let ch = median(&r.rollback.iter().map(|x| x.1).collect::<Vec<_>>());
    let _ = writeln!(
        s,
        "| rollback ≤ 0.2 × a changed deploy (1 host) | {rb:.2} s / {ch:.2} s = {:.2} × | {} |",
        rb / ch,
        yes(rb / ch <= 0.2)
    );
    let failed: usize = r.failed_build.values().flatten().sum();
    let _ = writeln!(
        s,
        "| zero failed probes during the build | {failed} failed of {} probes | {} |",
        r.probes_build,
        yes(failed == 0)
    );
    let rss_max = r.rss.get(&max).and_then(|v| v.iter().max()).copied().unwrap_or(0);
    let mb = rss_max as f64 * 1024.0 / 1e6;
    let _ = writeln!(
        s,
        "| peak RSS ≤ 30 MB at {max} host(s) | {mb:.1} MB | {} |",
        yes(mb <= 30.0)
    );

    s.push_str(&zero_downtime_section(r, false));
    s.push_str(&variants_section(r, false));

    let _ = writeln!(s, "\n## More figures\n");
    let _ = writeln!(
        s,
        "- `deploy --help` start-up: median {:.1} ms over {} runs.",
        median(&r.help_ms),
        r.help_ms.len()
    );
    for &n in &r.sizes {
        let rss = r.rss.get(&n).cloned().unwrap_or_default();
        let _ = writeln!(
            s,
            "- {n} host(s): peak RSS of `deploy` {:.1} MB (largest of {} runs); failed probes on the first host (one every 50 ms) during the build {:?}, during the switch (from its start to the api check passing) {:?}.",
            rss.iter().max().copied().unwrap_or(0) as f64 * 1024.0 / 1e6,
            rss.len(),
            r.failed_build.get(&n).cloned().unwrap_or_default(),
            r.failed_switch.get(&n).cloned().unwrap_or_default()
        );
    }
    let _ = writeln!(
        s,
        "- Failed probes on the first host during a whole changed run, per run:"
    );
    for &n in &r.sizes {
        let cells: Vec<String> = TOOLS
            .iter()
            .map(|&t| {
                format!(
                    "{} {:?}",
                    t.name(),
                    r.failed_run.get(&(t, n)).cloned().unwrap_or_default()
                )
            })
            .collect();
        let _ = writeln!(s, "  - {n} host(s): {}", cells.join(", "));
    }
    let _ = writeln!(s, "- Health-detection lag per run (ms): {:?}. The api of these releases starts serving 2 s after its container starts (switched by `up -d`); the lag is from the first answer of the new release through the proxy (probed every 5 ms; the time the answer came, since the proxy holds a request while it retries) to `deploy`'s `check` event for it.", r.lag_ms.iter().map(|x| x.round() as i64).collect::<Vec<_>>());
    let _ = writeln!(
        s,
        "- Rollback runs (rollback s, changed deploy s): {:?}.",
        r.rollback
            .iter()
            .map(|(a, b)| (round2(*a), round2(*b)))
            .collect::<Vec<_>>()
    );

    let _ = writeln!(s, "\n## Every run (seconds, in the order run)\n");
    let _ = writeln!(s, "| hosts | change | tool | runs |");
    let _ = writeln!(s, "|---:|---|---|---|");
    for &n in &r.sizes {
        for c in [Change::Api, Change::Nothing] {
            for &t in &TOOLS {
                let runs: Vec<String> = r
                    .wall
                    .get(&(t, n, c))
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .map(|x| format!("{x:.2}"))
                    .collect();
                let _ = writeln!(s, "| {n} | {} | {} | {} |", c.name(), t.name(), runs.join(", "));
            }
        }
    }
    let _ = writeln!(s, "\n## Run it\n");
    let _ = writeln!(s, "```\nbash scripts/bench.sh            # N = 1, 4, 16; 5 runs; rewrites BENCHMARKS.md (about 30 min here)\nbash scripts/bench.sh --smoke    # N = 1, one run, report under target/ (what CI runs)\nbash scripts/bench.sh --only-zero-downtime   # only the zero-downtime section, rewritten in place\nbash scripts/bench.sh --only-variants        # only the variants section (N = 1, 4; --runs per 4-host cell, twice that per 1-host cell unless --one-host-runs), rewritten in place\nbash scripts/bench.sh --only-build-once --runs 3   # only the build-once section (16 hosts with engines of their own)\n```");
    s
}

/// Marks the zero-downtime section, which `--only-zero-downtime` rewrites alone.
const SECTION_START: &str =
    "<!-- zero-downtime section: scripts/bench.sh writes it; --only-zero-downtime rewrites it alone -->";
const SECTION_END: &str = "<!-- end of the zero-downtime section -->";

/// `existing` (BENCHMARKS.md) with its zero-downtime section replaced by this
/// run's (or inserted before "## More figures").
pub fn splice_zero_downtime(existing: &str, r: &Results) -> String {
    splice(existing, SECTION_START, SECTION_END, &zero_downtime_section(r, true))
}

/// Marks the variants section, which `--only-variants` rewrites alone.
const VARIANTS_START: &str = "<!-- variants section: scripts/bench.sh writes it; --only-variants rewrites it alone -->";
const VARIANTS_END: &str = "<!-- end of the variants section -->";

/// `existing` with its variants section replaced by this run's.
pub fn splice_variants(existing: &str, r: &Results) -> String {
    splice(existing, VARIANTS_START, VARIANTS_END, &variants_section(r, true))
}

/// `existing` with the part between `start` and `end` replaced by `section`
/// (which carries both markers), or `section` inserted before "## More figures".
pub fn splice(existing: &str, start: &str, end: &str, section: &str) -> String {
    match (existing.find(start), existing.find(end)) {
        (Some(a), Some(b)) if a < b => format!(
            "{}{}\n{}",
            &existing[..a],
            section.trim_start_matches('\n'),
            &existing[b + end.len()..].trim_start_matches('\n')
        ),
        _ => match existing.find("\n## More figures") {
            Some(at) => format!("{}{section}\n{}", &existing[..at], &existing[at + 1..]),
            None => format!("{existing}{section}"),
        },
    }
}

/// How the compared runs are placed in the second (see `measure::run_phase`),
/// said of `runs` ("The runs of the main and variants tables", "This section's runs").
fn phase_note(runs: &str) -> String {
    format!(
        "{runs} start at points of the wall clock's second spread evenly over it, for every tool alike: round \
         i of N starts in the i-th N-th of the second, at a point drawn anew for each tool and run. On this \
         machine a build's time depends on where in the second it starts (*Build time by start phase*, in the \
         variants section), and tools that run at a steady pace would otherwise keep their phase: one tool's \
         builds could wait longer than another's, run after run."
    )
}

/// Every tool on compose v2 and v1, with http and with exec checks, and the
/// minimal playbook beside the full one; deploy's time step by step.
fn variants_section(r: &Results, alone: bool) -> String {
    let mut out = String::new();
    let s = &mut out;
    let _ = writeln!(
        s,
        "\n{VARIANTS_START}\n## Variants: compose v1 and v2, http and exec checks, a minimal playbook\n"
    );
    if r.variants.is_empty() {
        let _ = writeln!(s, "Not measured in this run.\n\n{VARIANTS_END}");
        return out;
    }
    let sizes: Vec<usize> = r.sizes.iter().copied().filter(|&n| n <= 4).collect();
    if alone {
        let root = crate::harness::repo_root();
        let commit = version_of("git", &["-C", root.to_str().unwrap(), "rev-parse", "--short", "HEAD"]);
        let _ = writeln!(
            s,
            "This section alone was written by `scripts/bench.sh --only-variants` on {}, from commit `{commit}`, \
             in {:.0} min, {} run(s) per 1-host cell and {} per cell of more hosts (1-host runs are the \
             shortest: more runs steady the medians, for every tool alike); the sections above come from \
             the runs they name (runs before commit fa69000 were not placed in the second so). {} \
             The machine is \
             shared: its load average was {} when this run started and {} when it ended (2 cores). \
             Compose: {} (v2) and {} (v1).\n",
            r.started,
            r.took.as_secs_f64() / 60.0,
            r.one_host_runs,
            r.runs,
            phase_note("This section's runs"),
            r.load.0,
            r.load.1,
            version_of("docker", &["compose", "version"]),
            version_of("docker-compose", &["version", "--short"])
        );
    } else {
        let _ = writeln!(
            s,
            "{} run(s) per 1-host cell here and {} per cell of more hosts (1-host runs are the shortest: \
             more runs steady the medians, for every tool alike).\n",
            r.one_host_runs, r.runs
        );
    }
    let _ = writeln!(
        s,
        "A changed commit every run (the api rebuilt and replaced), the tools' order turning from one run to \
         the next, medians. Each tool has a copy of the app per compose version. **http** checks: the checklist \
         above (health through the published port; `deploy` through an SSH tunnel). **exec** checks, the seed's \
         checklist: containers up, health by `wget` inside the api's container, Redis `PING` from the api (busybox \
         `nc`) and from the worker (`redis-cli`), no `connection refused` logged. The floor runs commands in \
         containers with `docker exec` (the cheapest way), Ansible with `compose exec -T` (what its users write), \
         `deploy` through the Engine API over the SSH connection. On compose v1, which has no `logs --since`, the \
         baselines read the services' whole logs. **ansible-min** is `bench/ansible/minimal.yml`: four tasks \
         (`git archive | tar`, `build`, `up -d`, `uri` until the api answers, every 0.1 s), no other check: it \
         does less than the others, which is the point of comparing with it.\n"
    );
    if let Some(b) = &r.build_phases {
        let _ = writeln!(s, "### Build time by start phase\n");
        let _ = writeln!(
            s,
            "The demo api's `docker compose build` (two `COPY` steps: new layers), its page changed each time as \
             a run's change does, started at {} points of the wall clock's second, the points taking turns, {} \
             time(s) each; {}. Medians. Why the compared runs start at points spread over the second.\n",
            crate::bed::BUILD_PHASES.len(),
            b.ms.first().map_or(0, Vec::len),
            b.engine
        );
        let heads: Vec<String> = crate::bed::BUILD_PHASES
            .iter()
            .map(|p| format!("at .{:02.0}", p * 100.0))
            .collect();
        let row = |v: &[Vec<f64>], f: &dyn Fn(f64) -> String| -> String {
            v.iter().map(|x| f(median(x))).collect::<Vec<_>>().join(" | ")
        };
        let _ = writeln!(s, "| started | {} |", heads.join(" | "));
        let _ = writeln!(s, "|---|{}", "---:|".repeat(heads.len()));
        let _ = writeln!(s, "| build (ms) | {} |", row(&b.ms, &|x| format!("{x:.0}")));
        let _ = writeln!(
            s,
            "| ended (ms from the nearest whole second) | {} |\n",
            row(&b.ended_at, &|x| format!("{x:+.0}"))
        );
    }
    if let Some(c) = &r.ssh_costs {
        let _ = writeln!(s, "### What an SSH connection costs here\n");
        let _ = writeln!(
            s,
            "The system's `ssh` (the program `deploy` connects with) to one of the hosts, {} time(s) each, medians. \
             `deploy`'s connect step is the first row's handshake and a master's start; its first commands wait \
             as the third row's first command does. `deploy` keeps the client's default key exchange, here \
             `{}` (post-quantum; newer OpenSSH picks another by default, not measured here); the second row is \
             what a classical one costs, for scale. The floor runs on the hosts themselves and pays none of it.\n",
            c.default_ms.len(),
            c.default_kex
        );
        let _ = writeln!(s, "| | ms |");
        let _ = writeln!(s, "|---|---:|");
        let _ = writeln!(
            s,
            "| `ssh host true`, default key exchange | {:.0} |",
            median(&c.default_ms)
        );
        let _ = writeln!(
            s,
            "| `ssh host true`, `curve25519-sha256` | {:.0} |",
            median(&c.curve_ms)
        );
        let _ = writeln!(
            s,
            "| a master connection (`ssh -M -f -N`, default key exchange) until it is in the background | {:.0} |",
            median(&c.master_ms)
        );
        let _ = writeln!(s, "| its first command, sent at once | {:.0} |", median(&c.first_ms));
        let _ = writeln!(s, "| its next command | {:.0} |", median(&c.next_ms));
        let _ = writeln!(
            s,
            "| a new master's first command, sent {} ms after the master went to the background | {:.0} |\n",
            crate::bed::FIRST_LATER.as_millis(),
            median(&c.first_later_ms)
        );
        let _ = writeln!(
            s,
            "Why a first command sent at once can be slower than one sent later (compare the third row with the \
             last): checked by hand on 2026-11-30, not by this run. The first command took 53-58 ms when sent at \
             once, 11-15 ms when sent 50, 100 or 300 ms after the master started (5 masters each), and 11-13 ms when \
             sent at once to an sshd given `TCP_NODELAY` through an `LD_PRELOAD` shim on `accept` (5 of 5). The \
             same shim on the client's `connect` changed nothing. That is consistent with sshd's Nagle algorithm \
             (OpenSSH leaves it on for sessions without a terminal) holding a reply until the client acknowledges \
             the login's last messages, which Linux delays by up to 40 ms; no packet capture was made. Client-side \
             `TCP_QUICKACK` was not tried: `ssh` owns that socket. `deploy`'s lock and preflight, its first \
             commands, pay it once per host.\n"
        );
    }
    let _ = writeln!(s, "### Wall time (seconds) and overhead over the floor\n");
    let _ = writeln!(
        s,
        "Overhead = a tool's median minus the floor's, same cell; the targets are judged on it. Target: deploy's \
         overhead ≤ 0.1 × Ansible's, for both playbooks. The last two columns are the same from the means: every \
         tool's runs start at phases spread evenly over the second (see above), so a mean is the expected time \
         over the build's sawtooth, where a median of few runs can fall on either side of it.\n"
    );
    let _ = writeln!(
        s,
        "| hosts | compose | checks | floor | ansible | ansible-min | deploy | deploy − floor | deploy overhead / ansible's | / ansible-min's | means: deploy − floor | means: / ansible's, / ansible-min's |"
    );
    let _ = writeln!(s, "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let runs_of = |c: Compose, k: Checks, n: usize, t: Tool| r.variants.get(&(c, k, n, t)).map_or(&[][..], |v| v);
    let vmed = |c: Compose, k: Checks, n: usize, t: Tool| median(runs_of(c, k, n, t));
    let vmean = |c: Compose, k: Checks, n: usize, t: Tool| mean(runs_of(c, k, n, t));
    let yes = |ok: bool| if ok { "" } else { " **missed**" };
    let mut missed = Vec::new();
    for &n in &sizes {
        for c in [Compose::V2, Compose::V1] {
            for k in [Checks::Http, Checks::Exec] {
                let [f, a, m, d] = VARIANT_TOOLS.map(|t| vmed(c, k, n, t));
                let (ra, rm) = ((d - f) / (a - f), (d - f) / (m - f));
                for (who, ratio) in [("ansible", ra), ("ansible-min", rm)] {
                    if ratio > 0.1 {
                        missed.push(format!(
                            "{n} host(s), {}, {} checks, against {who}: {ratio:.2} ×",
                            c.name(),
                            k.name()
                        ));
                    }
                }
                let [mf, ma, mm, md] = VARIANT_TOOLS.map(|t| vmean(c, k, n, t));
                let _ = writeln!(
                    s,
                    "| {n} | {} | {} | {f:.2} | {a:.2} | {m:.2} | {d:.2} | {:.2} | {ra:.2}{} | {rm:.2}{} | {:.2} | {:.2}, {:.2} |",
                    c.name(),
                    k.name(),
                    d - f,
                    yes(ra <= 0.1),
                    yes(rm <= 0.1),
                    md - mf,
                    (md - mf) / (ma - mf),
                    (md - mf) / (mm - mf)
                );
            }
        }
    }

    // Where deploy's time goes.
    let cols: Vec<(Compose, Checks, usize)> = sizes
        .iter()
        .flat_map(|&n| {
            [Compose::V2, Compose::V1]
                .into_iter()
                .flat_map(move |c| [Checks::Http, Checks::Exec].into_iter().map(move |k| (c, k, n)))
        })
        .collect();
    let _ = writeln!(s, "\n### Where deploy's time goes (ms)\n");
    let _ = writeln!(
        s,
        "Each step as `deploy` reports it (JSON `step` events, their `elapsed_ms`), on every host of every run: \
         the median, and at more than one host the largest in brackets. Steps overlap: the push runs while the \
         hosts fetch, the checks run at once. Confirm, record, prune and unlock are one command at the end: each of \
         their rows is that command's time (prune's only from the runs that pruned). A check's row is one attempt: its \
         time when it passed at the first. `last check → closing command` is the time on a host from its last check's \
         answer to the start of its closing command, as deploy's events arrived here (nothing else runs between \
         them since the images to prune are listed during the switch). `remote commands` is the number of \
         commands `deploy` ran on a host over SSH (from the JSON summary), engine API calls not counted.\n"
    );
    let head: Vec<String> = cols
        .iter()
        .map(|(c, k, n)| format!("{n} host(s) {} {}", c.name(), k.name()))
        .collect();
    let _ = writeln!(s, "| step | {} |", head.join(" | "));
    let _ = writeln!(s, "|---|{}", "---:|".repeat(cols.len()));
    let cell = |v: Option<&Vec<f64>>, n: usize| match v {
        Some(v) if !v.is_empty() => {
            let max = v.iter().cloned().fold(f64::MIN, f64::max);
            if n > 1 {
                format!("{:.0} ({max:.0})", median(v))
            } else {
                format!("{:.0}", median(v))
            }
        }
        _ => "–".into(),
    };
    for step in &r.step_order {
        let cells: Vec<String> = cols
            .iter()
            .map(|key| cell(r.steps.get(key).and_then(|m| m.get(step)), key.2))
            .collect();
        let _ = writeln!(s, "| {step} | {} |", cells.join(" | "));
    }
    let cells: Vec<String> = cols.iter().map(|key| cell(r.remote_commands.get(key), key.2)).collect();
    let _ = writeln!(s, "| **remote commands per host** | {} |", cells.join(" | "));
    let cells: Vec<String> = cols
        .iter()
        .map(|(c, _, n)| cell(r.plain_build_ms.get(&(*c, *n)), *n))
        .collect();
    let _ = writeln!(s, "| the floor's plain `compose build` | {} |", cells.join(" | "));
    let cells: Vec<String> = cols
        .iter()
        .map(|(c, _, n)| cell(r.plain_up_ms.get(&(*c, *n)), *n))
        .collect();
    let _ = writeln!(s, "| the floor's plain `compose up -d` | {} |", cells.join(" | "));
    let cells: Vec<String> = cols
        .iter()
        .map(|key| {
            let rss = r
                .variant_rss
                .get(key)
                .and_then(|v| v.iter().max())
                .copied()
                .unwrap_or(0);
            format!("{:.1} MB", rss as f64 * 1024.0 / 1e6)
        })
        .collect();
    let _ = writeln!(s, "| peak RSS of deploy (largest) | {} |", cells.join(" | "));

    // The overhead over the floor, taken apart.
    let _ = writeln!(s, "\n### Where the overhead over the floor goes (ms)\n");
    let _ = writeln!(
        s,
        "From the tables above, medians (of every host at more than one host), so the parts add up only \
         roughly: what `deploy` does that the floor does not (the SSH connection, preflight and lock before \
         staging; history, prune and unlock in one command at the end), what its build and switch take beyond \
         the floor's plain `compose build` and `up -d` (content tags, the image check, the watchdog, `current`), \
         and the rest of the overhead (fetch into the release directory, the checks against the floor's, \
         process start).\n"
    );
    let _ = writeln!(s, "| part | {} |", head.join(" | "));
    let _ = writeln!(s, "|---|{}", "---:|".repeat(cols.len()));
    let step_med = |key: &(Compose, Checks, usize), step: &str| {
        r.steps
            .get(key)
            .and_then(|m| m.get(step))
            .filter(|v| !v.is_empty())
            .map(|v| median(v))
    };
    let parts: Vec<[Option<f64>; 6]> = cols
        .iter()
        .map(|key @ (c, k, n)| {
            let before = ["connect", "preflight", "lock"]
                .iter()
                .map(|st| step_med(key, st))
                .sum::<Option<f64>>();
            let plain = |m: &std::collections::BTreeMap<(Compose, usize), Vec<f64>>| {
                m.get(&(*c, *n)).filter(|v| !v.is_empty()).map(|v| median(v))
            };
            let build = step_med(key, "build").zip(plain(&r.plain_build_ms)).map(|(d, f)| d - f);
            let switch = step_med(key, "switch").zip(plain(&r.plain_up_ms)).map(|(d, f)| d - f);
            let end = step_med(key, "unlock");
            let overhead = Some((vmed(*c, *k, *n, Tool::Deploy) - vmed(*c, *k, *n, Tool::Floor)) * 1000.0)
                .filter(|x| x.is_finite());
            let known = [before, build, switch, end].into_iter().sum::<Option<f64>>();
            let rest = overhead.zip(known).map(|(o, k)| o - k);
            [before, build, switch, end, rest, overhead]
        })
        .collect();
    for (i, name) in [
        "connect, preflight, lock (the floor has none)",
        "build − the floor's plain `compose build`",
        "switch − the floor's plain `up -d`",
        "history, prune, unlock: one command (the floor has none)",
        "the rest (fetch, checks, process start)",
        "**overhead over the floor** (wall, medians)",
    ]
    .iter()
    .enumerate()
    {
        let cells: Vec<String> = parts
            .iter()
            .map(|p| p[i].map_or_else(|| "–".to_string(), |x| format!("{x:.0}")))
            .collect();
        let _ = writeln!(s, "| {name} | {} |", cells.join(" | "));
    }
    let _ = writeln!(
        s,
        "\nWhat this bed does not show. At more than one host, every host's build, containers, checks \
         and `deploy`'s work on it share this machine's two cores and one engine: what `deploy` adds on a \
         host (SSH handshakes, `compose config` beside the build, the closing command) competes with the \
         other hosts' builds, which real hosts, each with its own CPUs, would not; so the 4-host cells vary \
         by seconds from one run to the next (see every run below). And every round trip crosses \
         loopback: on a link with a round-trip time of r, each remote command of `deploy` and each of its \
         Engine API requests that nothing else overlaps costs about r more (a switch's image checks \
         through the API are two such requests, where the docker CLI on the host took two program \
         starts, about 60 ms each here), and the floor, run on the hosts themselves, pays none of it.\n"
    );

    // The issue's other targets, from these runs.
    let _ = writeln!(s, "\n### Targets\n");
    let _ = writeln!(s, "| target | measured | met |");
    let _ = writeln!(s, "|---|---|---|");
    let met = |ok: bool| if ok { "yes" } else { "**no**" };
    let _ = writeln!(
        s,
        "| deploy's overhead ≤ 0.1 × Ansible's, every cell above (both playbooks) | {} | {} |",
        if missed.is_empty() {
            "all cells".to_string()
        } else {
            format!(
                "missed in {} of {}: {}",
                missed.len(),
                cols.len() * 2,
                missed.join("; ")
            )
        },
        met(missed.is_empty())
    );
    for c in [Compose::V2, Compose::V1] {
        for k in [Checks::Http, Checks::Exec] {
            if !sizes.contains(&1) {
                continue;
            }
            let (f, d) = (vmed(c, k, 1, Tool::Floor), vmed(c, k, 1, Tool::Deploy));
            let (mf, md) = (vmean(c, k, 1, Tool::Floor), vmean(c, k, 1, Tool::Deploy));
            let _ = writeln!(
                s,
                "| 1 host, {} {} checks: deploy ≤ floor + 0.25 s | medians {d:.2} s vs {f:.2} s + 0.25 s ({} by {:.2} s); means {md:.2} s vs {mf:.2} s ({} by {:.2} s) | {} |",
                c.name(),
                k.name(),
                if d > f + 0.25 { "over" } else { "within" },
                (d - f - 0.25).abs(),
                if md > mf + 0.25 { "over" } else { "within" },
                (md - mf - 0.25).abs(),
                met(d <= f + 0.25)
            );
        }
    }
    for c in [Compose::V2, Compose::V1] {
        let build = r
            .steps
            .iter()
            .filter(|((cc, _, n), _)| *cc == c && *n == 1)
            .flat_map(|(_, m)| m.get("build").cloned().unwrap_or_default())
            .collect::<Vec<f64>>();
        let plain = r.plain_build_ms.get(&(c, 1)).cloned().unwrap_or_default();
        if build.is_empty() || plain.is_empty() {
            continue;
        }
        let (b, p) = (median(&build), median(&plain));
        let _ = writeln!(
            s,
            "| 1 host, {}: deploy's build step ≤ a plain `compose build` + 100 ms | {b:.0} ms vs {p:.0} ms + 100 ms | {} |",
            c.name(),
            met(b <= p + 100.0)
        );
    }
    // Per host count: at more than one host, every host's checks share this
    // machine's two cores and one engine at once.
    let counts: std::collections::BTreeSet<usize> = r.steps.keys().map(|(_, _, n)| *n).collect();
    for n in counts {
        for c in [Compose::V2, Compose::V1] {
            let attempts: Vec<f64> = r
                .steps
                .iter()
                .filter(|((cc, k, nn), _)| *cc == c && *k == Checks::Exec && *nn == n)
                .flat_map(|(_, m)| {
                    m.iter()
                        .filter(|(name, _)| name.strip_prefix("check: ").is_some_and(crate::bed::is_exec_check))
                        .flat_map(|(_, v)| v.clone())
                })
                .collect();
            if attempts.is_empty() {
                continue;
            }
            let worst = attempts.iter().cloned().fold(f64::MIN, f64::max);
            // What the floor's own checks take on the same hosts, for scale.
            let floor = match r.floor_exec_ms.get(&(c, n)).filter(|v| !v.is_empty()) {
                Some(v) => format!(
                    "; for scale, the floor's Redis checks, each a `docker ps` that finds the container and a `docker exec` on the host itself: median {:.0} ms",
                    median(v)
                ),
                None => String::new(),
            };
            let settled = settled_execs(r, c, n);
            let _ = writeln!(
                s,
                "| {n} host(s), {}: an exec check's attempt ≤ 100 ms | in the deploys: median {:.0} ms, largest {worst:.0} ms (of {}){floor}{settled} | {} |",
                c.name(),
                median(&attempts),
                attempts.len(),
                met(median(&attempts) <= 100.0)
            );
        }
    }
    if !r.help_ms.is_empty() {
        let _ = writeln!(
            s,
            "| `deploy --help` ≤ 10 ms | median {:.1} ms over {} runs | {} |",
            median(&r.help_ms),
            r.help_ms.len(),
            met(median(&r.help_ms) <= 10.0)
        );
    }
    let _ = writeln!(s, "\nEvery run (seconds, in the order run):\n");
    let _ = writeln!(s, "| hosts | compose | checks | tool | runs |");
    let _ = writeln!(s, "|---:|---|---|---|---|");
    for ((c, k, n, t), v) in &r.variants {
        let runs: Vec<String> = v.iter().map(|x| format!("{x:.2}")).collect();
        let _ = writeln!(
            s,
            "| {n} | {} | {} | {} | {} |",
            c.name(),
            k.name(),
            t.name(),
            runs.join(", ")
        );
    }
    let _ = writeln!(s, "\n{VARIANTS_END}");
    out
}

/// The start-first switch against `up -d`, through the first host's proxy.
/// `alone`: written by `--only-zero-downtime`, so it says where it came from.
fn zero_downtime_section(r: &Results, alone: bool) -> String {
    let mut out = String::new();
    let s = &mut out;
    let _ = writeln!(s, "\n{SECTION_START}\n## Zero-downtime switch (through the proxy)\n");
    if alone {
        let root = crate::harness::repo_root();
        let commit = version_of("git", &["-C", root.to_str().unwrap(), "rev-parse", "--short", "HEAD"]);
        let _ = writeln!(
            s,
            "This section alone was written by `scripts/bench.sh --only-zero-downtime` on {}, from commit `{commit}`, \
             in {:.0} min; the sections above come from the run named at the top. The machine is shared: its load \
             average was {} when this run started and {} when it ended (2 cores).\n",
            r.started,
            r.took.as_secs_f64() / 60.0,
            r.load.0,
            r.load.1
        );
    }
    let _ = writeln!(
        s,
        "The same changed deploy of `deploy` ({} runs per row, on and off alternating), with the api switched by \
         `up -d` (off) or start-first (`zero_downtime = [{{ service = \"api\", port = 8000 }}]`: a new container beside the old one, the old \
         one stopped once the new one is ready). A prober asks the first host's proxy for `/health` every 20 ms, \
         one request at a time. A probe **fails** without a 200: an error status (Caddy answers 502 after its 5 s \
         of retries) or no answer (the connect and each read wait up to {} s). A 200 after more than {} s is \
         counted apart as **late**: behind this proxy a switch's gap shows mostly as late answers, so read the \
         two columns together. (Before 2026-11-30 a probe failed without a 200 within 1 s, so a late answer then \
         counted as failed.) The window is the first host's switch, \
         from its start to the api check passing; the switch time is that host's `switch` step (with \
         `zero_downtime` it includes waiting until the new container is ready, and has run for 1.25 s (deploy's \
         settle time, for a proxy that connected to it before its network answered: see the README), and the old \
         api's 0.5 s drain on SIGTERM). A run with failed or late probes prints them (with what the connection did) beside deploy's events and the \
         proxy's log on stderr. The benchmark's copies of the demo run without the api's healthcheck (dozens of idle copies \
         share two cores, and its exec every 500 ms in each loaded the machine past 50): a new container is \
         ready when deploy's `api health` http check passes against it, the path for apps without a healthcheck; \
         the tests cover the healthcheck path.\n",
        r.runs,
        PROBE_LIMIT.as_secs_f64(),
        PROBE_LATE.as_secs_f64()
    );
    let _ = writeln!(
        s,
        "| hosts | zero_downtime | failed probes in the switch, per run | late answers (over {} s) in the switch, per run | failed without any answer (all runs) | probes in the switch (median) | slowest answer, ms (median of runs) | control: failed / late probes during the build (nothing switches), per run | switch on host 1, s (median) | new api started → old removed, s (median) |",
        PROBE_LATE.as_secs_f64()
    );
    let _ = writeln!(s, "|---:|---|---|---|---:|---:|---:|---|---:|---:|");
    for &n in &r.sizes {
        for on in [false, true] {
            let runs = r.switches.get(&(n, on)).cloned().unwrap_or_default();
            let m = |f: &dyn Fn(&crate::SwitchRun) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
            let replace: Vec<f64> = runs
                .iter()
                .filter_map(|x| x.replace_ms)
                .map(|ms| ms as f64 / 1000.0)
                .collect();
            let _ = writeln!(
                s,
                "| {n} | {} | {:?} | {:?} | {} | {:.0} | {:.0} | {:?} / {:?} | {:.2} | {} |",
                if on { "on" } else { "off" },
                runs.iter().map(|x| x.failed).collect::<Vec<_>>(),
                runs.iter().map(|x| x.late).collect::<Vec<_>>(),
                runs.iter().map(|x| x.unanswered).sum::<usize>(),
                m(&|x| x.probes as f64),
                m(&|x| x.slowest_ms as f64),
                runs.iter().map(|x| x.failed_build).collect::<Vec<_>>(),
                runs.iter().map(|x| x.late_build).collect::<Vec<_>>(),
                m(&|x| x.switch_ms as f64 / 1000.0),
                if replace.is_empty() {
                    "–".to_string()
                } else {
                    format!("{:.2}", median(&replace))
                }
            );
        }
    }
    let _ = writeln!(
        s,
        "\nFailed probes during the whole run (push to last check), per run: {}.",
        r.sizes
            .iter()
            .flat_map(|&n| [false, true].map(|on| (n, on)))
            .map(|(n, on)| format!(
                "{n} host(s) {} {:?}",
                if on { "on" } else { "off" },
                r.switches
                    .get(&(n, on))
                    .map(|v| v.iter().map(|x| x.failed_run).collect::<Vec<_>>())
                    .unwrap_or_default()
            ))
            .collect::<Vec<_>>()
            .join("; ")
    );
    let on: Vec<&crate::SwitchRun> = r
        .switches
        .iter()
        .filter(|((_, on), _)| *on)
        .flat_map(|(_, runs)| runs.iter())
        .collect();
    let failed: usize = on.iter().map(|x| x.failed).sum();
    let late: usize = on.iter().map(|x| x.late).sum();
    let slowest_late = on.iter().filter_map(|x| x.slowest_late_ms).max();
    let met = |ok: bool| if !on.is_empty() && ok { "met" } else { "**not met**" };
    let _ = writeln!(
        s,
        "\nTargets, with `zero_downtime` on, in the switch:\n\n\
         - zero failed probes: {failed} failed in {} runs, {};\n\
         - and no probe answered late (the stricter reading; a request held over {} s is one a user notices): \
         {late} late in {} runs{}, {}.",
        on.len(),
        met(failed == 0),
        PROBE_LATE.as_secs_f64(),
        on.len(),
        slowest_late.map_or_else(String::new, |ms| format!(" (the slowest after {ms} ms)")),
        met(late == 0)
    );
    let _ = writeln!(s, "{SECTION_END}");
    out
}

fn med(r: &Results, t: Tool, n: usize, c: Change) -> f64 {
    median(r.wall.get(&(t, n, c)).map(Vec::as_slice).unwrap_or(&[]))
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// "; right after the runs, ..." for an exec target's row: the engine's own
/// exec of the checklist's commands on the first host (see
/// [`crate::bed::engine_execs`]); nothing where it was not measured.
fn settled_execs(r: &Results, c: Compose, n: usize) -> String {
    let Some(engine) = r.engine_execs.get(&(c, n)).filter(|e| !e.alone_ms.is_empty()) else {
        return String::new();
    };
    let verify = match r.settled_verify_ms.get(&(c, n)).filter(|v| !v.is_empty()) {
        Some(v) => format!(
            "; then `deploy verify` of the same host(s), its checklist alone over SSH with no deploy running: median {:.0} ms per exec attempt (each passed at its first, as above; of {})",
            median(v),
            v.len()
        ),
        None => String::new(),
    };
    format!(
        "; right after each run, the engine's own exec of the same commands on the first host (create, start, inspect on its socket; no SSH, no CLI): median {:.0} ms one at a time, {:.0} ms each when the three run at once as one host's checklist runs them{}{verify}",
        median(&engine.alone_ms),
        median(&engine.together_ms),
        if n > 1 {
            format!(" (here {n} hosts' checklists, {} execs, reach this one engine at once)", 3 * n)
        } else {
            String::new()
        }
    )
}
