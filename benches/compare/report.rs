//! BENCHMARKS.md, written from one run's results: nothing in it is typed by hand.

use std::fmt::Write;
use std::path::Path;
use std::process::Command;

use crate::bed::{Tool, TOOLS};
use crate::measure::median;
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
        "Every run starts with the push and ends when the last check passed on the last host.\n"
    );
    let _ = writeln!(s, "- **floor**: `git push`, then the commands of `bench/steps.sh` (fetch and check out the commit, `docker compose build`, `up -d`, then the checklist: 4 containers running, `/health` 200 through the proxy polled every 100 ms, `redis-cli ping` from the worker, no `connection refused` in the logs since the switch) run directly on every host at once, as `deploytest`, no SSH. The least any tool could take.");
    let _ = writeln!(s, "- **manual**: `git push`, then `bench/manual.sh`: the same commands, one `ssh host '...'` line each, host after host, a new connection per line.");
    let _ = writeln!(s, "- **ansible**: `git push`, then `bench/ansible/deploy.yml`: the same commands as `command`/`shell` tasks and `uri` with `until`/`retries`/`delay: 0.1` for the health check; forks = N, pipelining on, ControlPersist 60 s, no fact gathering.");
    let _ = writeln!(s, "- **deploy**: `deploy bench --output json` with the same four checks (health through an SSH tunnel): push with git2, lock, fetch into the host's mirror and export a release directory, build (skipped when the tree and variables equal the live release's: its images are reused), switch (containers whose image did not change are kept; the api by `up -d`, as the others do: the start-first switch is measured on its own below), verify, record history, prune (during the checks), unlock.\n");

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
    let _ = writeln!(s, "```\nbash scripts/bench.sh            # N = 1, 4, 16; 5 runs; rewrites BENCHMARKS.md (about 30 min here)\nbash scripts/bench.sh --smoke    # N = 1, one run, report under target/ (what CI runs)\nbash scripts/bench.sh --only-zero-downtime   # only the zero-downtime section, rewritten in place\n```");
    s
}

/// Marks the zero-downtime section, which `--only-zero-downtime` rewrites alone.
const SECTION_START: &str =
    "<!-- zero-downtime section: scripts/bench.sh writes it; --only-zero-downtime rewrites it alone -->";
const SECTION_END: &str = "<!-- end of the zero-downtime section -->";

/// `existing` (BENCHMARKS.md) with its zero-downtime section replaced by this
/// run's (or inserted before "## More figures").
pub fn splice_zero_downtime(existing: &str, r: &Results) -> String {
    let section = zero_downtime_section(r, true);
    match (existing.find(SECTION_START), existing.find(SECTION_END)) {
        (Some(a), Some(b)) if a < b => format!(
            "{}{}\n{}",
            &existing[..a],
            section.trim_start_matches('\n'),
            &existing[b + SECTION_END.len()..].trim_start_matches('\n')
        ),
        _ => match existing.find("\n## More figures") {
            Some(at) => format!("{}{section}\n{}", &existing[..at], &existing[at + 1..]),
            None => format!("{existing}{section}"),
        },
    }
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
         `up -d` (off) or start-first (`zero_downtime = [\"api\"]`: a new container beside the old one, the old \
         one stopped once the new one is healthy). A prober asks the first host's proxy for `/health` every 20 ms, \
         one request at a time; a probe fails without a 200 within 1 s (Caddy holds a request for up to 5 s while \
         it retries, so a gap shows as slow answers as well as failures). The window is the first host's switch, \
         from its start to the api check passing; the switch time is that host's `switch` step (with \
         `zero_downtime` it includes waiting for the new container's healthcheck, interval 500 ms, and the old \
         api's 0.5 s drain on SIGTERM).\n",
        r.runs
    );
    let _ = writeln!(
        s,
        "| hosts | zero_downtime | failed probes in the switch, per run | of them unanswered in 1 s | probes in the switch (median) | slowest answer, ms (median of runs) | control: failed probes during the build (nothing switches), per run | switch on host 1, s (median) | new api started → old removed, s (median) |"
    );
    let _ = writeln!(s, "|---:|---|---|---:|---:|---:|---|---:|---:|");
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
                "| {n} | {} | {:?} | {} | {:.0} | {:.0} | {:?} | {:.2} | {} |",
                if on { "on" } else { "off" },
                runs.iter().map(|x| x.failed).collect::<Vec<_>>(),
                runs.iter().map(|x| x.unanswered).sum::<usize>(),
                m(&|x| x.probes as f64),
                m(&|x| x.slowest_ms as f64),
                runs.iter().map(|x| x.failed_build).collect::<Vec<_>>(),
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
    let on: Vec<usize> = r
        .switches
        .iter()
        .filter(|((_, on), _)| *on)
        .flat_map(|(_, runs)| runs.iter().map(|x| x.failed))
        .collect();
    let _ = writeln!(
        s,
        "\nTarget: zero failed probes during the switch with `zero_downtime` on: {} failed in {} runs, {}.",
        on.iter().sum::<usize>(),
        on.len(),
        if !on.is_empty() && on.iter().all(|&f| f == 0) {
            "met"
        } else {
            "**not met**"
        }
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
