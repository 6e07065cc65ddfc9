//! One pipeline for every change to a live release: `deploy rollback` is
//! verified, locked, interruptible and fleet-wide like `deploy up`; the live
//! release is read under the lock; locks are guarded; read-only commands keep
//! working with a host down; releases carry their own record of how to run.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use deploy::config::Config;
use deploy::lock::{self, Acquired, LockInfo, LockKind};
use deploy::release::Layout;
use deploy::remote::ssh::SshRemote;
use deploy::remote::{Cmd, Remote};

use crate::harness::app::{Behaviour, Health};
use crate::harness::deployment::{Deployment, Setup};
use crate::harness::fleet::{FleetSetup, TestFleet};
use crate::harness::sshd::SshHost;
use crate::harness::{git, open_tempdir, sh, wait_for, wait_until, Following};

const CHECKS: &str = r#"
[verify]
timeout = "5s"
interval = "100ms"
max_interval = "500ms"

[[verify.checks]]
name = "api health"
type = "http"
service = "api"
url = "http://{{API_BIND}}:{{API_PORT}}/cgi-bin/health"
"#;

/// The same checks for a one-host [`Deployment`].
const ONE_HOST_CHECKS: &str = r#"
[verify]
timeout = "5s"
interval = "100ms"
max_interval = "500ms"

[[verify.checks]]
name = "containers up"
type = "compose_ps"

[[verify.checks]]
name = "api health"
type = "http"
url = "http://127.0.0.1:{API_PORT}/cgi-bin/health"
"#;

fn summary(events: &[serde_json::Value]) -> &serde_json::Value {
    let last = events.last().expect("events");
    assert_eq!(last["event"], "summary", "{last}");
    last
}

fn some(v: &str, n: usize) -> Vec<Option<String>> {
    vec![Some(v.to_string()); n]
}

/// Waits until every host's api answers `version`.
fn wait_for_versions(fleet: &TestFleet, version: &str) {
    let want = some(version, fleet.hosts.len());
    wait_until(
        &format!("every api to answer {version}"),
        Duration::from_secs(20),
        || fleet.versions(),
        |seen| *seen == want,
        |seen| format!("; they answer {seen:?}"),
    );
}

#[test]
fn rollback_runs_the_checklist_and_puts_every_host_back_when_the_target_fails_it() {
    let fleet = TestFleet::new(
        FleetSetup {
            hosts: 2,
            extra: CHECKS.into(),
            ..Default::default()
        },
        &Behaviour::version("A"),
    );
    fleet.deploy(&[], 0);
    let a = fleet.currents();
    // B fails its checks: the deploy puts A back; B's release stays kept.
    let mut b = Behaviour::version("B");
    b.health = Health::Fails;
    fleet.app.commit(&b);
    let (_, events) = fleet.deploy(&[], 3);
    let b_id = summary(&events)["release"].as_str().unwrap().to_string();
    assert_eq!(fleet.currents(), a);
    fleet.app.commit(&Behaviour::version("C"));
    fleet.deploy(&[], 0);
    let c = fleet.currents();

    // Back to the newest release that went live on every host: A (B never passed).
    let run = fleet.run(&["rollback", "test"]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.stdout.contains("check api health passed"),
        "the checks on the target are printed:\n{}",
        run.all()
    );
    assert_eq!(fleet.currents(), a);
    let versions = fleet.versions();
    if versions != some("A", 2) {
        // Seen once under load: say everything the hosts know.
        for i in 0..2 {
            let state = fleet.hosts[i].ssh.app_path().join(".deploy");
            for e in std::fs::read_dir(&state).into_iter().flatten().flatten() {
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                eprintln!("host {i} {}:\n{text}", e.path().display());
            }
        }
    }
    assert_eq!(versions, some("A", 2), "{}", run.all());

    // To B, which fails its checks: every host goes back to A, where it was, verified.
    let (run, events) = fleet.json(&["rollback", "test", "--to", &b_id], 3);
    let s = summary(&events);
    assert_eq!(s["result"], "rolled_back", "{}", run.all());
    assert_eq!(s["release"], b_id.as_str());
    for h in s["hosts"].as_array().unwrap() {
        assert_eq!(h["outcome"], "rolled_back", "{h}");
        assert!(
            h["checks"].as_array().unwrap().iter().any(|c| c["ok"] == false),
            "the failed check is in the summary: {h}"
        );
        let after = h["rollback_checks"].as_array().unwrap();
        assert!(!after.is_empty() && after.iter().all(|c| c["ok"] == true), "{h}");
        assert!(h["evidence"].is_object(), "evidence of the failure: {h}");
    }
    assert_eq!(fleet.currents(), a);
    assert_eq!(fleet.versions(), some("A", 2));
    for (i, was) in a.iter().enumerate() {
        let last = fleet.history(i).pop().unwrap();
        assert_eq!(last["release"], b_id.as_str());
        assert_eq!(last["outcome"], "rolled_back");
        assert_eq!(last["to"], was.as_deref().unwrap());
        assert!(!fleet.locked(i));
    }

    // --no-verify skips the checklist and says so.
    let c_id = c[0].clone().unwrap();
    let (_, events) = fleet.json(&["rollback", "test", "--to", &c_id, "--no-verify"], 0);
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "warning" && e["message"].as_str().unwrap_or("").contains("--no-verify")),
        "{events:?}"
    );
    assert!(!events.iter().any(|e| e["event"] == "check"));
    assert_eq!(fleet.currents(), c);
    // Without checks nothing waited for the api to listen after `up -d`.
    wait_for_versions(&fleet, "C");
}

/// `deploy rollback --to <to>` with JSON output, SIGINT as soon as the first
/// host switched: its exit code, and every event it printed.
fn interrupt_after_first_switch(fleet: &TestFleet, to: &str) -> (Option<i32>, Vec<serde_json::Value>) {
    let first = format!("127.0.0.1:{}", fleet.hosts[0].ssh.port);
    let (code, events, sent) =
        crate::harness::interrupt_json_at(fleet.app.path(), &["rollback", "test", "--to", to], |e| {
            e["host"] == first.as_str() && e["step"] == "switch" && e["status"] == "done"
        });
    assert!(
        sent.elapsed() < Duration::from_secs(30),
        "stopping took {:?}",
        sent.elapsed()
    );
    // The second batch never switched.
    let second = format!("127.0.0.1:{}", fleet.hosts[1].ssh.port);
    assert!(
        !events
            .iter()
            .any(|e| e["host"] == second.as_str() && e["step"] == "switch"),
        "{events:?}"
    );
    (code, events)
}

#[test]
fn ctrl_c_during_a_rollback_puts_the_switched_host_back_and_frees_the_lock() {
    let fleet = TestFleet::new(
        FleetSetup {
            hosts: 2,
            batch: Some(1),
            extra: CHECKS.replace("timeout = \"5s\"", "timeout = \"60s\""),
            ..Default::default()
        },
        // A takes a minute to answer: its checks are still waiting when Ctrl-C comes.
        &Behaviour {
            slow_start_secs: 60,
            ..Behaviour::version("A")
        },
    );
    fleet.deploy(&["--no-verify"], 0);
    let a = fleet.current(0).unwrap();
    fleet.app.commit(&Behaviour::version("B"));
    fleet.deploy(&[], 0);
    let b = fleet.currents();
    // A went live unverified: a rollback does not pick it by itself.
    let (_, events) = fleet.json(&["rollback", "test"], 1);
    assert!(
        summary(&events)["error"]
            .as_str()
            .unwrap()
            .contains("no release older than"),
        "{events:?}"
    );

    let (code, events) = interrupt_after_first_switch(&fleet, &a);
    assert_eq!(code, Some(130), "{events:?}");
    let last = events.last().unwrap();
    assert_eq!(last["result"], "interrupted", "{last}");
    assert_eq!(fleet.currents(), b, "every host is on the release it was on");
    wait_for_versions(&fleet, "B");
    assert!(!fleet.locked(0) && !fleet.locked(1), "the lock is released");

    // When putting the switched host back fails, that is not a clean 130.
    let b_override = fleet.hosts[0]
        .ssh
        .app_path()
        .join("releases")
        .join(b[0].as_deref().unwrap())
        .join(".deploy-compose.yml");
    std::fs::remove_file(&b_override).unwrap();
    let (code, events) = interrupt_after_first_switch(&fleet, &a);
    assert_eq!(code, Some(4), "{events:?}");
    let last = events.last().unwrap();
    assert_eq!(last["result"], "rollback_failed", "{last}");
    assert!(
        last["error"].as_str().unwrap().contains("a person must look now"),
        "{last}"
    );
    assert!(!fleet.locked(0) && !fleet.locked(1), "the lock is released");
}

#[test]
fn a_rollback_picks_one_release_every_host_keeps_or_refuses() {
    let fleet = TestFleet::new(
        FleetSetup {
            hosts: 3,
            extra: CHECKS.into(),
            ..Default::default()
        },
        &Behaviour::version("A"),
    );
    fleet.deploy(&[], 0);
    let a = fleet.currents();
    fleet.app.commit(&Behaviour::version("B"));
    fleet.deploy(&[], 0);
    let b = fleet.currents();
    fleet.app.commit(&Behaviour::version("C"));
    fleet.deploy(&[], 0);
    // Host 3 no longer has B (pruned there, or it joined later).
    let b_id = b[0].clone().unwrap();
    std::fs::remove_dir_all(fleet.hosts[2].ssh.app_path().join("releases").join(&b_id)).unwrap();
    // Host 1's A was staged by an older deploy that wrote no record.
    let a_id = a[0].clone().unwrap();
    std::fs::remove_file(
        fleet.hosts[0]
            .ssh
            .app_path()
            .join("releases")
            .join(&a_id)
            .join(".deploy-release.json"),
    )
    .unwrap();

    let (run, events) = fleet.json(&["rollback", "test"], 0);
    assert_eq!(fleet.currents(), a, "one target for all: A\n{}", run.all());
    wait_for_versions(&fleet, "A");
    let said = |kind: &str, text: &str| {
        events
            .iter()
            .any(|e| e["event"] == kind && e["message"].as_str().unwrap_or("").contains(text))
    };
    let third = format!("127.0.0.1:{}", fleet.hosts[2].ssh.port);
    assert!(
        said("warning", &b_id) && said("warning", &third),
        "why not B is said: {events:?}"
    );
    assert!(said("warning", "no record"), "the missing record is said: {events:?}");

    // --to a release one host lacks: refused before anything changes, naming it.
    let histories: Vec<usize> = (0..3).map(|i| fleet.history(i).len()).collect();
    let (_, events) = fleet.json(&["rollback", "test", "--to", &b_id], 1);
    let error = summary(&events)["error"].as_str().unwrap().to_string();
    assert!(
        error.contains(&third) && error.contains("no host was changed"),
        "{error}"
    );
    assert!(!events.iter().any(|e| e["step"] == "switch"));
    assert_eq!(fleet.currents(), a);
    let after: Vec<usize> = (0..3).map(|i| fleet.history(i).len()).collect();
    assert_eq!(after, histories, "a refused rollback records nothing");
    assert!((0..3).all(|i| !fleet.locked(i)));

    // Every host already runs the release asked for: that is `deploy verify`.
    let (_, events) = fleet.json(&["rollback", "test", "--to", &a_id], 1);
    assert!(
        summary(&events)["error"].as_str().unwrap().contains("already runs"),
        "{events:?}"
    );

    // A mixed fleet: host 1 on a new release D, the others on A. Going back to
    // the newest release all keep (C) would move hosts 2 and 3 forward: refused.
    let first = format!("127.0.0.1:{}", fleet.hosts[0].ssh.port);
    fleet.app.commit(&Behaviour::version("D"));
    fleet.deploy(&["--hosts", &first], 0);
    let (_, events) = fleet.json(&["rollback", "test"], 1);
    let error = summary(&events)["error"].as_str().unwrap().to_string();
    assert!(error.contains("forward") && error.contains(&third), "{error}");
    // --to A moves host 1 only: the others are already there.
    let (_, events) = fleet.json(&["rollback", "test", "--to", &a_id], 0);
    let switched: Vec<&str> = events
        .iter()
        .filter(|e| e["step"] == "switch" && e["status"] == "done")
        .map(|e| e["host"].as_str().unwrap())
        .collect();
    assert_eq!(switched, vec![first.as_str()], "{events:?}");
    assert_eq!(fleet.currents(), a);
    wait_for_versions(&fleet, "A");

    // A host whose history is gone cannot vouch for any release.
    std::fs::write(fleet.hosts[1].ssh.app_path().join(".deploy/history.jsonl"), "").unwrap();
    let (_, events) = fleet.json(&["rollback", "test"], 1);
    assert!(
        summary(&events)["error"]
            .as_str()
            .unwrap()
            .contains("no release history"),
        "{events:?}"
    );
}

#[test]
fn a_deploy_that_waited_for_another_puts_back_what_that_one_made_live() {
    let wait = open_tempdir();
    let go = wait.path().join("go");
    let d = Deployment::new(
        Setup {
            extra: format!(
                "{ONE_HOST_CHECKS}\n[hooks]\npre_deploy = '[ -z \"$WAIT_FOR\" ] || {{ touch \"$WAIT_FOR.waiting\"; while [ ! -e \"$WAIT_FOR\" ]; do sleep 0.05; done; }}'\n"
            ),
            ..Setup::default()
        },
        &Behaviour::version("A"),
    );
    d.deploy(&[], 0);
    let b = d.app.commit(&Behaviour::version("B"));
    let c = d.app.commit(&Behaviour {
        health: Health::Fails,
        ..Behaviour::version("C")
    });

    // The second deploy (C) looks at the host, then waits in its hook...
    let second = Command::new(assert_cmd::cargo::cargo_bin("deploy"))
        .args(["test", "--rev", &c])
        .env("WAIT_FOR", &go)
        .env("NO_COLOR", "1")
        .current_dir(d.app.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the second deploy to wait in its hook", Duration::from_secs(30), || {
        wait.path().join("go.waiting").exists()
    });
    // ...while the first (B) goes through and makes B live.
    let run_b = d.deploy(&["--rev", &b], 0);
    let b_release = d.current().unwrap();
    assert_eq!(d.version().as_deref(), Some("B"), "{}\n{}", run_b.all(), d.explain());
    std::fs::write(&go, "").unwrap();
    let out = second.wait_with_output().unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(3), "{all}");
    assert_eq!(
        d.current().as_deref(),
        Some(b_release.as_str()),
        "B is what comes back: {all}"
    );
    assert_eq!(d.version().as_deref(), Some("B"));
    let last = d.history().pop().unwrap();
    assert_eq!(last["from"], b_release.as_str());
    assert_eq!(last["outcome"], "rolled_back");
}

#[test]
fn status_logs_releases_lock_and_exec_report_the_live_host_when_another_is_down() {
    let mut fleet = TestFleet::new(
        FleetSetup {
            hosts: 2,
            extra: CHECKS.into(),
            ..Default::default()
        },
        &Behaviour {
            worker_log: Some("hello from the worker".into()),
            ..Behaviour::version("version: A")
        },
    );
    fleet.deploy(&[], 0);
    let live = fleet.current(0).unwrap();
    let up = format!("127.0.0.1:{}", fleet.hosts[0].ssh.port);
    let down = format!("127.0.0.1:{}", fleet.hosts[1].ssh.port);
    fleet.hosts[1].ssh.stop();

    let commands: [(&[&str], &str); 5] = [
        (&["status", "test"], live.as_str()),
        (&["releases", "test"], live.as_str()),
        (&["logs", "test", "worker", "-n", "50"], "hello from the worker"),
        (&["lock", "test", "status"], "lock: free"),
        (
            &["exec", "test", "--service", "api", "--", "cat", "/www/version"],
            "version: A",
        ),
    ];
    for (args, shows) in commands {
        let run = fleet.run(args);
        assert_eq!(run.code, 1, "{args:?}: {}", run.all());
        let from_up: Vec<&str> = run
            .stdout
            .lines()
            .filter(|l| l.starts_with(&format!("[{up}]")))
            .collect();
        assert!(
            from_up.iter().any(|l| l.contains(shows)),
            "{args:?}: the live host's {shows:?} is printed:\n{}",
            run.all()
        );
        assert!(
            run.stdout
                .lines()
                .any(|l| l.starts_with(&down) && l.contains("unreachable")),
            "{args:?}: the dead host is named:\n{}",
            run.all()
        );
    }
    let (_, events) = fleet.json(&["status", "test"], 1);
    let hosts = summary(&events)["hosts"].as_array().unwrap().clone();
    assert_eq!(hosts.len(), 2, "{hosts:?}");
    assert_eq!(hosts[0]["outcome"], "ok");
    assert_eq!(hosts[1]["outcome"], "unreachable");
    assert!(
        hosts[1]["error"].as_str().unwrap().contains("Connection refused"),
        "{hosts:?}"
    );

    // setup and verify do what they can and name the host they could not reach.
    for args in [&["setup", "test"][..], &["verify", "test"]] {
        let (run, events) = fleet.json(args, 1);
        let hosts = summary(&events)["hosts"].as_array().unwrap().clone();
        assert_ne!(hosts[0]["outcome"], "unreachable", "{args:?}: {}", run.all());
        assert_eq!(hosts[1]["outcome"], "unreachable", "{args:?}: {}", run.all());
    }

    // A deploy, and a rollback, of the live host alone never need the other to answer.
    fleet.app.commit(&Behaviour::version("B"));
    fleet.deploy(&["--hosts", &up], 0);
    assert_eq!(fleet.version(0).as_deref(), Some("B"));
    fleet.json(&["rollback", "test", "--hosts", &up], 0);
    assert_eq!(fleet.version(0).as_deref(), Some("version: A"));
}

#[test]
fn a_manual_lock_stays_until_released_unless_it_has_a_ttl() {
    let d = Deployment::new(
        Setup {
            app_extra: "lock_timeout = \"2s\"".into(),
            ..Setup::default()
        },
        &Behaviour::version("A"),
    );
    d.deploy(&[], 0);
    let info = d.app_path().join(".deploy/lock/info.json");
    let field = |name: &str| -> u64 {
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&info).unwrap()).unwrap();
        v[name].as_u64().unwrap()
    };
    let host_now = || -> u64 { sh(Command::new("date").arg("+%s")).trim().parse().unwrap() };

    let held = d.run(&["lock", "test", "acquire", "--message", "freeze for the audit"]);
    assert_eq!(held.code, 0, "{}", held.all());
    assert_eq!(field("expires"), 0, "a manual lock never expires");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&info).unwrap().permissions().mode() & 0o777,
        0o600,
        "lock info is private"
    );
    let since = field("since");
    wait_for(
        "the lock to be older than lock_timeout",
        Duration::from_secs(10),
        || host_now() > since + 3,
    );
    let refused = d.deploy(&[], 5);
    assert!(
        refused.all().contains("freeze for the audit") && refused.all().contains("never expires"),
        "{}",
        refused.all()
    );
    let status = d.run(&["lock", "test", "status"]);
    assert!(
        status.stdout.contains("manual lock"),
        "the kind is shown: {}",
        status.all()
    );
    let released = d.run(&["lock", "test", "release"]);
    assert_eq!(released.code, 0, "{}", released.all());

    // With --ttl it expires, and the next deploy takes it over.
    let held = d.run(&["lock", "test", "acquire", "--ttl", "1s"]);
    assert_eq!(held.code, 0, "{}", held.all());
    let expires = field("expires");
    assert!(expires > 0);
    wait_for("the lock's ttl to pass", Duration::from_secs(10), || {
        host_now() > expires
    });
    let run = d.deploy(&[], 0);
    assert!(run.all().contains("took over an expired lock"), "{}", run.all());
    assert!(!d.locked());
}

/// `Host` of deploy.toml for a plain sshd host.
fn host_config(host: &SshHost, known_hosts: &Path) -> deploy::config::Host {
    let toml = format!(
        "[app]\nname = \"t\"\n{}\n[environments.test]\nhosts = [\"127.0.0.1\"]\npath = \"{}\"\n",
        host.ssh_toml(known_hosts, "strict"),
        host.app_path().display()
    );
    let config = Config::parse(Path::new("deploy.toml"), &toml).expect("valid config");
    config.environments["test"].hosts[0].clone()
}

/// A lock's info as a deploy writes it, with `token`.
fn info(token: &str) -> LockInfo {
    LockInfo {
        since: 0,
        expires: 0,
        token: token.into(),
        kind: LockKind::Deploy,
        holder: token.into(),
        message: "race".into(),
        commit: None,
    }
}

/// Two deployers that both find the lock expired race to take it over: exactly
/// one wins, every time; a host without flock(1) lets neither take it over.
#[test]
fn two_takeovers_of_an_expired_lock_never_both_win() {
    let host = SshHost::start();
    let tmp = open_tempdir();
    let cfg = host_config(&host, &host.known_hosts_file(tmp.path()));
    let layout = Layout::new(host.app_path().to_str().unwrap());
    // A PATH with what the lock scripts use, but no flock: the mkdir mutex.
    let bin = tmp.path().join("bin-without-flock");
    std::fs::create_dir(&bin).unwrap();
    for tool in [
        "sh", "mkdir", "chmod", "sed", "cat", "date", "stat", "mv", "rm", "rmdir", "dirname", "sleep", "printf",
    ] {
        if let Ok(path) = which(tool) {
            std::os::unix::fs::symlink(path, bin.join(tool)).unwrap();
        }
    }
    let expired = r#"mkdir -p "$1/lock" && printf '%s\n' '{"since":1,"expires":2,"token":"dead","kind":"deploy","holder":"ghost","message":"crashed"}' > "$1/lock/info.json""#;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let one = SshRemote::connect(&cfg).await.expect("connect");
        let two = SshRemote::connect(&cfg).await.expect("connect");
        for (path, rounds) in [(None, 25), (Some(bin.to_str().unwrap()), 25)] {
            for round in 0..rounds {
                one.check(
                    &Cmd::new("sh")
                        .arg("-c")
                        .arg(expired)
                        .arg("sh")
                        .arg(layout.state())
                        .into(),
                    None,
                )
                .await
                .unwrap();
                let acquire = |token: &str| {
                    let cmd = lock::acquire(&layout, &info(token), 60);
                    match path {
                        Some(p) => cmd.env("PATH", p),
                        None => cmd,
                    }
                };
                let (first, second) = (acquire("one").into(), acquire("two").into());
                let (a, b) = tokio::join!(one.check(&first, None), two.check(&second, None));
                let (a, b) = (
                    lock::parse_acquire(&a.unwrap().stdout),
                    lock::parse_acquire(&b.unwrap().stdout),
                );
                let won = |r: &Acquired| matches!(r, Acquired::Fresh | Acquired::TookOver(_));
                if path.is_some() {
                    // Without flock(1) an expired lock is never taken over: no winner, and both say why.
                    assert!(
                        matches!((&a, &b), (Acquired::Stuck(_), Acquired::Stuck(_))),
                        "round {round}: without flock nobody takes over: {a:?} / {b:?}"
                    );
                    continue;
                }
                assert!(
                    won(&a) ^ won(&b),
                    "round {round} (PATH {path:?}): exactly one may win: {a:?} / {b:?}"
                );
                let holder: serde_json::Value = serde_json::from_str(
                    &std::fs::read_to_string(host.app_path().join(".deploy/lock/info.json")).unwrap(),
                )
                .unwrap();
                assert_eq!(holder["token"], if won(&a) { "one" } else { "two" }, "round {round}");
                one.check(&lock::release(&layout, None).into(), None).await.unwrap();
            }
        }
        one.close().await.unwrap();
        two.close().await.unwrap();
    });
}

fn which(tool: &str) -> Result<String, ()> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map_err(|_| ())?;
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() && path.starts_with('/') {
        Ok(path)
    } else {
        Err(())
    }
}

/// A deploy whose lock is taken from it (or expires while it is stopped) stops
/// before its next change, says why, and leaves the live release alone.
#[test]
fn a_run_that_lost_its_lock_switches_nothing() {
    let d = Deployment::new(
        Setup {
            app_extra: "lock_timeout = \"3s\"".into(),
            ..Setup::default()
        },
        &Behaviour::version("A"),
    );
    d.deploy(&[], 0);
    let live = d.current().unwrap();
    let info = d.app_path().join(".deploy/lock/info.json");
    let building = || {
        std::fs::read_dir(d.app_path().join(".deploy"))
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .any(|e| e.file_name().to_string_lossy().starts_with("build-"))
            })
            .unwrap_or(false)
    };
    for (i, how) in ["taken", "asleep"].into_iter().enumerate() {
        d.app.commit(&Behaviour {
            slow_build_secs: 5,
            ..Behaviour::version(&format!("B{i}"))
        });
        let mut child = Command::new(assert_cmd::cargo::cargo_bin("deploy"))
            .args(["test", "--output", "json"])
            .current_dir(d.app.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_for("the build to start", Duration::from_secs(30), building);
        match how {
            // Someone breaks the lock and takes it.
            "taken" => {
                let text = std::fs::read_to_string(&info).unwrap();
                let token = serde_json::from_str::<serde_json::Value>(&text).unwrap()["token"]
                    .as_str()
                    .unwrap()
                    .to_string();
                std::fs::write(&info, text.replace(&token, "someone-else")).unwrap();
            }
            // The deployer is stopped (a laptop lid closed) past the lock's expiry.
            _ => {
                sh(Command::new("kill").args(["-STOP", &child.id().to_string()]));
                let expires: u64 = serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(&info).unwrap())
                    .unwrap()["expires"]
                    .as_u64()
                    .unwrap();
                wait_for("the lock to expire", Duration::from_secs(20), || {
                    sh(Command::new("date").arg("+%s")).trim().parse::<u64>().unwrap() > expires + 1
                });
                sh(Command::new("kill").args(["-CONT", &child.id().to_string()]));
            }
        }
        let mut out = String::new();
        std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(1), "{how}: {out}");
        let last: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
        let error = last["error"].as_str().unwrap();
        let why = if how == "taken" {
            "taken by someone else"
        } else {
            "expired"
        };
        assert!(
            error.contains(why) && error.contains("before the switch"),
            "{how}: {error}"
        );
        assert!(
            !out.contains("\"step\":\"switch\""),
            "{how}: a host switched without the lock"
        );
        assert_eq!(d.current().as_deref(), Some(live.as_str()), "{how}");
        assert_eq!(d.version().as_deref(), Some("A"), "{how}");
        let _ = std::fs::remove_dir_all(d.app_path().join(".deploy/lock"));
    }
}

/// Each release carries how to run it: renaming the compose file in a later
/// commit does not break going back to a release from before.
#[test]
fn a_release_is_put_back_with_its_own_compose_files() {
    let d = Deployment::new(
        Setup {
            extra: ONE_HOST_CHECKS.into(),
            ..Setup::default()
        },
        &Behaviour::version("A"),
    );
    d.deploy(&[], 0);
    let a = d.current().unwrap();
    d.app.commit(&Behaviour::version("B"));
    let config = d.app.path().join("deploy.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replacen("[app]\n", "[app]\ncompose_files = [\"compose.yaml\"]\n", 1),
    )
    .unwrap();
    git(d.app.path(), &["mv", "docker-compose.yml", "compose.yaml"]);
    git(d.app.path(), &["commit", "-qam", "rename the compose file"]);
    d.deploy(&[], 0);
    assert_eq!(d.version().as_deref(), Some("B"));

    let run = d.run(&["rollback", "test"]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(d.current().as_deref(), Some(a.as_str()));
    assert_eq!(d.version().as_deref(), Some("A"));
    // What reads the live release uses its record too.
    let verify = d.run(&["verify", "test"]);
    assert_eq!(verify.code, 0, "{}", verify.all());
    let logs = d.run(&["logs", "test", "api", "-n", "5"]);
    assert_eq!(logs.code, 0, "{}", logs.all());
    let record: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(d.app_path().join("releases").join(&a).join(".deploy-release.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(record["compose_files"], serde_json::json!(["docker-compose.yml"]));
    assert_eq!(record["project"], d.project.as_str());
}

/// A lock broken (and taken by someone else) while a batch is verified: the
/// next batch does not switch, the run says so and exits 4.
#[test]
fn a_lock_broken_between_batches_stops_the_next_switch() {
    let fleet = TestFleet::new(
        FleetSetup {
            hosts: 2,
            batch: Some(1),
            extra: CHECKS.replace("timeout = \"5s\"", "timeout = \"30s\""),
            ..Default::default()
        },
        &Behaviour::version("A"),
    );
    fleet.deploy(&[], 0);
    // B takes a few seconds to answer: batch 1's checks wait for it.
    fleet.app.commit(&Behaviour {
        slow_start_secs: 4,
        ..Behaviour::version("B")
    });
    let first = format!("127.0.0.1:{}", fleet.hosts[0].ssh.port);
    let mut run = Following::start(fleet.app.path(), &["test"]);
    run.until(|e| e["host"] == first.as_str() && e["step"] == "switch" && e["status"] == "done");
    run.take_the_lock_away();
    let (code, events) = run.finish();
    assert_eq!(code, Some(4), "{events:?}");
    let error = summary(&events)["error"].as_str().unwrap().to_string();
    assert!(
        error.contains("taken by someone else") && error.contains(&first),
        "{error}"
    );
    let second = format!("127.0.0.1:{}", fleet.hosts[1].ssh.port);
    // Its switch command checked the lock on the host and did nothing.
    assert!(
        !events
            .iter()
            .any(|e| e["host"] == second.as_str() && e["step"] == "switch" && e["status"] == "done"),
        "the second batch switched without the lock: {events:?}"
    );
    assert_eq!(fleet.version(1).as_deref(), Some("A"));
    // The freeze is still in place on both hosts.
    let status = fleet.run(&["lock", "test", "status"]);
    assert_eq!(status.stdout.matches("FREEZE").count(), 2, "{}", status.all());
}

/// A host whose docker does not answer (its logins get a `DOCKER_HOST` that
/// names a socket that is not there): preflight fails, exit 1, nothing
/// changed; the lock the run took while preflight looked is released again.
#[test]
fn a_preflight_that_fails_releases_the_lock_taken_meanwhile() {
    let d = Deployment::new(
        Setup {
            sshd_extra: "SetEnv DOCKER_HOST=unix:///nonexistent/docker.sock\n".into(),
            ..Setup::default()
        },
        &Behaviour::version("A"),
    );
    let run = d.run(&["test", "--output", "json"]);
    assert_eq!(run.code, 1, "{}", run.all());
    let events: Vec<serde_json::Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let error = summary(&events)["error"].as_str().unwrap_or_default().to_string();
    assert!(error.contains("preflight failed"), "{error}");
    // What preflight saw is kept, though: git is there, and not blamed.
    let host = summary(&events)["hosts"][0]["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(host.contains("docker does not answer"), "{host}");
    assert!(!host.contains("git is not installed"), "{host}");
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "step" && e["step"] == "lock" && e["status"] == "done"),
        "the lock was taken meanwhile: {events:#?}"
    );
    assert!(
        !d.app_path().join(".deploy/lock").exists(),
        "the lock is released: {}",
        run.all()
    );
    let status = d.run(&["lock", "test", "status"]);
    assert!(status.stdout.contains("lock: free"), "{}", status.all());
}
