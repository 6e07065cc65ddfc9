//! The dead-man switch: a host that switched puts the release from before back
//! by itself when the run that switched it vanishes before confirming it.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::app::{Behaviour, Health};
use crate::harness::deployment::{Deployment, Setup};
use crate::harness::{wait_for, Following};

/// Whether a watchdog process runs for this host's app.
fn watchdog_running(d: &Deployment) -> bool {
    let pattern = format!("deploy-watchdog {}/.deploy/watchdog-", d.app_path().display());
    Command::new("pgrep")
        .arg("-f")
        .arg(pattern)
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn a_host_puts_the_release_back_when_its_deploy_vanishes_after_the_switch() {
    let d = Deployment::new(
        Setup {
            extra: r#"
[rollback]
confirm_timeout = "10s"

[verify]
timeout = "60s"

[[verify.checks]]
name = "api health"
type = "http"
url = "http://127.0.0.1:{API_PORT}/cgi-bin/health"
"#
            .into(),
            ..Setup::default()
        },
        &Behaviour::version("A"),
    );
    d.deploy(&[], 0);
    // The host's first deploy has nothing to go back to: no watchdog. The
    // second switches from a release, so it arms one, and confirms it at the end.
    d.app.commit(&Behaviour::version("A2"));
    let (run, _) = d.deploy_json(&[], 0);
    assert!(
        run.stdout.contains(r#""step":"confirm","status":"done""#),
        "the second deploy confirmed no watchdog: {}",
        run.all()
    );
    let a = d.current().unwrap();
    // A deploy that finishes confirms its host: no watchdog process or deadline is left.
    wait_for(
        "the watchdog of a finished deploy to end",
        Duration::from_secs(10),
        || !watchdog_running(&d),
    );
    let armed: Vec<String> = std::fs::read_dir(d.app_path().join(".deploy"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("watchdog-") && !n.ends_with(".log"))
        .collect();
    assert!(armed.is_empty(), "deadline files left armed: {armed:?}");
    assert!(!d.history().last().unwrap().to_string().contains("watchdog"));

    // B fails its checks, which would wait a minute: the deploy is killed
    // (SIGKILL: no cleanup of its own) right after the switch.
    d.app.commit(&Behaviour {
        health: Health::Fails,
        ..Behaviour::version("B")
    });
    let mut run = Following::start(d.app.path(), &["test"]);
    run.until(|e| e["step"] == "switch" && e["status"] == "done");
    run.signal("KILL");
    let _ = run.finish();
    let current = d.current();
    assert!(
        matches!(&current, Some(c) if *c != a),
        "the switch to B is not recorded: current is {current:?}"
    );
    let status = d.run(&["status", "test"]);
    assert!(status.stdout.contains("watchdog: armed by run"), "{}", status.all());
    // The bad release went live. `up -d` returns once B's container started,
    // not once its server listens: wait for B to answer. It does long before
    // the watchdog can put A2 back: the vanished run's lock keeper last moved
    // the deadline to confirm_timeout ahead at most a third of it before the
    // kill. (Should the watchdog win, this fails naming A2 as what answers.)
    d.wait_version("B");

    // Within confirm_timeout (and a little), the host is back on A by itself.
    wait_for("the host to put A2 back", Duration::from_secs(60), || {
        d.current().as_deref() == Some(a.as_str()) && d.version().as_deref() == Some("A2")
    });
    wait_for("the watchdog to finish", Duration::from_secs(30), || {
        !watchdog_running(&d)
    });
    let last = d.history().pop().unwrap();
    assert_eq!(last["outcome"], "reverted_by_watchdog", "{last}");
    assert_eq!(last["to"], a.as_str(), "{last}");
    assert!(!d.locked(), "the vanished run's lock is freed");
    // The vanished run's watchdog log (the confirmed one's says nothing).
    let log: String = std::fs::read_dir(d.app_path().join(".deploy"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect();
    assert!(log.contains("did not confirm in time"), "the watchdog's log: {log}");
    // The next deploy works as usual.
    d.app.commit(&Behaviour::version("C"));
    d.deploy(&[], 0);
    assert_eq!(d.version().as_deref(), Some("C"));
}
