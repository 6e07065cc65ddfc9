//! `[release]`: a command (a migration) run in the new release's image, against
//! the live project, after the build and before any host switches.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::app::Behaviour;
use crate::harness::deployment::{Deployment, Setup};
use crate::harness::sh;

/// Says which version it migrates to, and whether the live Redis answers on
/// the project's network.
const MIGRATE: &str = r#"
[release]
service = "api"
command = ["sh", "-c", "echo migrating to $(cat /www/version); if echo PING | nc -w 1 redis 6379 | grep -q PONG; then echo redis: PONG; else echo redis: unreachable; fi"]
timeout = "1m"

[verify]
timeout = "20s"

[[verify.checks]]
name = "api health"
type = "http"
url = "http://127.0.0.1:{API_PORT}/cgi-bin/health"
"#;

fn events(stdout: &str) -> Vec<serde_json::Value> {
    stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Replaces the `command = ...` line of `[release]` in deploy.toml.
fn set_command(d: &Deployment, command: &str, timeout: &str) {
    let path = d.app.path().join("deploy.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let text: Vec<String> = text
        .lines()
        .map(|l| {
            if l.starts_with("command = ") {
                format!("command = {command}")
            } else if l.starts_with("timeout = \"1m\"") {
                format!("timeout = \"{timeout}\"")
            } else {
                l.to_string()
            }
        })
        .collect();
    std::fs::write(&path, text.join("\n") + "\n").unwrap();
}

#[test]
fn a_release_command_runs_in_the_new_image_against_the_live_project_before_any_switch() {
    let d = Deployment::new(
        Setup {
            extra: MIGRATE.into(),
            ..Setup::default()
        },
        &Behaviour::version("A"),
    );
    let (run, _) = d.deploy_json(&[], 0);
    assert!(run.stdout.contains("migrating to A"), "{}", run.all());

    d.app.commit(&Behaviour::version("B"));
    let (run, summary) = d.deploy_json(&[], 0);
    let events = events(&run.stdout);
    let output: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "output")
        .map(|e| e["line"].as_str().unwrap())
        .collect();
    assert!(output.contains(&"migrating to B"), "the new image ran it: {output:?}");
    assert!(output.contains(&"redis: PONG"), "it reached the live Redis: {output:?}");
    let position = |step: &str, status: &str| {
        events
            .iter()
            .position(|e| e["step"] == step && e["status"] == status)
            .unwrap_or_else(|| panic!("no {step} {status}: {events:?}"))
    };
    assert!(
        position("release", "done") < position("switch", "started"),
        "it ran before the switch"
    );
    assert_eq!(summary["result"], "ok");
    let last = d.history().pop().unwrap();
    assert_eq!(last["release_command"]["codes"], serde_json::json!([0]), "{last}");
    let releases = d.run(&["releases", "test"]);
    assert!(releases.stdout.contains("release command on"), "{}", releases.all());

    // --dry-run shows it.
    d.app.commit(&Behaviour::version("C"));
    let dry = d.deploy(&["--dry-run"], 0);
    assert!(
        dry.all().contains("release command, before any host switches:") && dry.all().contains("run --rm --no-deps"),
        "{}",
        dry.all()
    );

    // A failing command: no switch, the staged release gone, its output in the summary.
    let live = d.current().unwrap();
    let kept = d.releases();
    let images = d.images();
    set_command(&d, r#"["sh", "-c", "echo doomed migration; exit 3"]"#, "1m");
    let (run, summary) = d.deploy_json(&[], 1);
    assert!(!run.stdout.contains("\"step\":\"switch\""), "{}", run.all());
    let error = summary["error"].as_str().unwrap();
    assert!(
        error.contains("exited with 3") && error.contains("doomed migration"),
        "{error}"
    );
    assert_eq!(d.current().as_deref(), Some(live.as_str()));
    assert_eq!(d.releases(), kept, "the staged release is removed");
    // With its images: the build's tags, and the content tags made for it
    // through the Engine API, which no override on the host names (it never
    // started); the live release's stay.
    assert_eq!(d.images(), images, "the staged release's images are removed");
    assert_eq!(d.version().as_deref(), Some("B"));
    let last = d.history().pop().unwrap();
    assert_eq!(last["outcome"], "failed");
    assert_eq!(last["release_command"]["codes"], serde_json::json!([3]), "{last}");

    // One that outlives its timeout is stopped, its container removed.
    set_command(&d, r#"["sleep", "600"]"#, "2s");
    let started = Instant::now();
    let (_, summary) = d.deploy_json(&[], 1);
    assert!(started.elapsed() < Duration::from_secs(60), "{:?}", started.elapsed());
    assert!(
        summary["error"].as_str().unwrap().contains("did not finish within"),
        "{summary}"
    );
    let left = sh(Command::new("docker").args(["ps", "-a", "-q", "--filter", &format!("name={}-release-", d.project)]));
    assert!(
        left.trim().is_empty(),
        "the release command's container is left: {left}"
    );
    assert_eq!(d.current().as_deref(), Some(live.as_str()));

    // A rollback never runs it: migrations must work with the release before.
    let run = d.run(&["rollback", "test", "--output", "json"]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(!run.stdout.contains("\"step\":\"release\""), "{}", run.stdout);
    assert_eq!(d.version().as_deref(), Some("A"));
}
