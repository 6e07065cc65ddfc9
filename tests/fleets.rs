//! Fleets: six sshd hosts, each its own path and compose project, worked on in
//! parallel and in rolling batches; one version at the end, whatever happens.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::app::{Behaviour, Health};
use crate::harness::fleet::{checks, FleetSetup, TestFleet};
use crate::harness::{wait_for, Following};

fn summary(events: &[serde_json::Value]) -> &serde_json::Value {
    let last = events.last().expect("events");
    assert_eq!(last["event"], "summary");
    last
}

/// Every lock was taken before any host changed, and no step changed a host before that.
fn locks_before_changes(events: &[serde_json::Value], hosts: usize) {
    let changing = ["fetch", "upload", "build", "switch"];
    let first_change = events
        .iter()
        .position(|e| e["event"] == "step" && changing.contains(&e["step"].as_str().unwrap_or("")));
    let locks_done: Vec<usize> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| e["event"] == "step" && e["step"] == "lock" && e["status"] == "done")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(locks_done.len(), hosts, "every host locked");
    if let Some(first) = first_change {
        assert!(
            locks_done.iter().all(|&i| i < first),
            "a host changed before every lock was taken"
        );
    }
}

#[test]
fn six_hosts_in_parallel_switch_and_verify_and_a_worker_host_runs_no_api() {
    let fleet = TestFleet::new(
        FleetSetup {
            hosts: 6,
            parallel: Some(6),
            services: vec![(5, vec!["worker", "redis"])],
            extra: checks("20s"),
            ..Default::default()
        },
        &Behaviour::version("A"),
    );
    fleet.deploy(&[], 0);
    fleet.app.commit(&Behaviour::version("B"));
    let (_, events) = fleet.deploy(&[], 0);
    locks_before_changes(&events, 6);
    let s = summary(&events);
    assert_eq!(s["result"], "ok");
    for i in 0..6 {
        let host = &s["hosts"][i];
        assert_eq!(host["outcome"], "deployed", "{host}");
        assert_eq!(fleet.history(i).len(), 2, "history on host {i}");
        assert!(!fleet.locked(i));
        if i < 5 {
            assert_eq!(fleet.version(i).as_deref(), Some("B"), "host {i}");
        }
    }
    // The worker-only host: no api container, and the api check skipped it.
    assert!(
        fleet.containers_of(5, "api").is_empty(),
        "a worker-only host runs the api"
    );
    assert!(!fleet.containers_of(5, "worker").is_empty());
    let checks = s["hosts"][5]["checks"].as_array().unwrap();
    let api = checks.iter().find(|c| c["name"] == "api health").unwrap();
    assert_eq!(api["skipped"], true, "{api}");
    assert_eq!(
        checks.iter().find(|c| c["name"] == "containers up").unwrap()["ok"],
        true
    );
}

/// `hosts` hosts on A, then a deploy of B in batches of `batch` whose health
/// fails on host `flagged` (from 0) only: rolled back, exit 3.
fn failing_roll_out(
    hosts: usize,
    batch: usize,
    flagged: usize,
) -> (TestFleet, crate::harness::Run, Vec<serde_json::Value>) {
    let fleet = TestFleet::new(
        FleetSetup {
            hosts,
            batch: Some(batch),
            vars: vec![(flagged, "FAIL_HEALTH", "1")],
            extra: checks("4s"),
            ..Default::default()
        },
        &Behaviour::version("A"),
    );
    fleet.deploy(&[], 0);
    let mut b = Behaviour::version("B");
    b.health = Health::FailsWhereFlagged;
    fleet.app.commit(&b);
    let (run, events) = fleet.deploy(&[], 3);
    (fleet, run, events)
}

#[test]
fn a_failure_in_a_later_batch_puts_every_switched_host_back() {
    let (fleet, run, events) = failing_roll_out(6, 2, 4);
    locks_before_changes(&events, 6);
    let s = summary(&events);
    assert_eq!(s["result"], "rolled_back", "{}", run.all());
    assert!(
        s["error"]
            .as_str()
            .unwrap()
            .contains(&format!("127.0.0.1:{}", fleet.hosts[4].ssh.port)),
        "host 5 is named: {s}"
    );
    // Batches of two: hosts 1-4 were verified on B before host 5 switched.
    let verified_b: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["event"] == "check" && e["name"] == "api health" && e["ok"] == true)
        .collect();
    assert!(verified_b.len() >= 4, "hosts 1-4 verified before batch 3");
    for i in 0..6 {
        assert_eq!(fleet.version(i).as_deref(), Some("A"), "host {} is back on A", i + 1);
        assert_eq!(
            s["hosts"][i]["outcome"],
            "rolled_back",
            "host {}: {}",
            i + 1,
            s["hosts"][i]
        );
        assert!(
            !s["hosts"][i]["rollback_checks"].as_array().unwrap().is_empty(),
            "host {} re-verified",
            i + 1
        );
        assert_eq!(fleet.history(i).last().unwrap()["outcome"], "rolled_back");
        assert!(!fleet.locked(i));
    }
}

/// A roll-out halted in its first batch leaves the release staged on the
/// hosts it never reached, their images named by content as on a switched
/// host: `deploy rollback --to` that release later keeps unchanged services.
#[test]
fn a_release_staged_on_hosts_a_halted_roll_out_never_reached_names_its_images_by_content() {
    let (fleet, run, events) = failing_roll_out(3, 1, 0);
    let s = summary(&events);
    let id = s["release"].as_str().unwrap().to_string();
    assert!(
        !events
            .iter()
            .any(|e| e["step"] == "switch" && e["host"] == s["hosts"][1]["host"]),
        "host 2 was not reached: {}",
        run.all()
    );
    for i in 1..3 {
        let text = std::fs::read_to_string(
            fleet.hosts[i]
                .ssh
                .app_path()
                .join("releases")
                .join(&id)
                .join(".deploy-compose.yml"),
        )
        .unwrap_or_else(|e| panic!("host {}: the staged release is kept: {e}", i + 1));
        let images: Vec<&str> = text.lines().filter(|l| l.contains("image:")).collect();
        assert!(
            !images.is_empty() && images.iter().all(|l| l.contains(":sha-")),
            "host {}: {text}",
            i + 1
        );
        assert!(!fleet.locked(i));
    }
}

#[test]
fn an_unreachable_host_at_preflight_changes_nothing() {
    let mut fleet = TestFleet::new(
        FleetSetup {
            hosts: 6,
            extra: checks("20s"),
            ..Default::default()
        },
        &Behaviour::version("A"),
    );
    // Host 4's server is gone.
    let gone = fleet.hosts.remove(3);
    let name = format!("127.0.0.1:{}", gone.ssh.port);
    drop(gone);
    let (run, events) = fleet.deploy(&[], 1);
    let s = summary(&events);
    assert!(
        s["error"].as_str().unwrap().contains(&name),
        "the host is named: {}",
        run.all()
    );
    for i in 0..5 {
        assert!(fleet.current(i).is_none(), "host {i} changed");
        assert!(
            !fleet.hosts[i].ssh.app_path().join("releases").exists(),
            "host {i} was staged"
        );
        assert!(!fleet.locked(i));
    }
    assert!(
        !events.iter().any(|e| e["step"] == "lock"),
        "no lock is taken when a host is unreachable"
    );
}

#[test]
fn a_host_cut_off_mid_deploy_does_not_hang_the_run_and_the_rest_go_back() {
    let extra = checks("8s");
    let fleet = TestFleet::new(
        FleetSetup {
            hosts: 6,
            parallel: Some(6),
            netns_host: Some(2),
            extra,
            ..Default::default()
        },
        &Behaviour::version("A"),
    );
    fleet.deploy(&[], 0);
    let mut b = Behaviour::version("B");
    b.health = Health::UntilRedis;
    b.redis_delay_secs = 3;
    fleet.app.commit(&b);
    let lost = format!("{}:{}", fleet.hosts[2].ssh.addr, fleet.hosts[2].ssh.port);
    let veth = format!("{}a", fleet.netns.as_ref().unwrap().name.replace("dtest", "dtv"));

    let started = Instant::now();
    let mut run = Following::start(fleet.app.path(), &["test"]);
    // The lost host never switching fails here (the run ends first).
    run.until(|e| e["event"] == "step" && e["step"] == "switch" && e["host"] == lost.as_str() && e["status"] == "done");
    // The switch happened; now the link goes down while the checks run.
    let status = Command::new("ip")
        .args(["link", "set", &veth, "down"])
        .status()
        .unwrap();
    assert!(status.success());
    let (code, events) = run.finish();
    let code = code.unwrap();
    assert!(code == 3 || code == 4, "exit {code}");
    assert!(
        started.elapsed() < Duration::from_secs(150),
        "the run took {:?}",
        started.elapsed()
    );
    let s = summary(&events);
    assert!(
        s["error"].as_str().unwrap().contains(&lost),
        "the lost host is named: {s}"
    );
    for i in [0, 1, 3, 4, 5] {
        if fleet.version(i).as_deref() != Some("A") {
            let ps = Command::new("docker")
                .args([
                    "ps",
                    "-a",
                    "--filter",
                    &format!("label=com.docker.compose.project={}", fleet.hosts[i].project),
                    "--format",
                    "{{.Names}} {{.Image}} {{.Status}} {{.Ports}}",
                ])
                .output()
                .unwrap();
            panic!(
                "host {i} is not back on A (current {:?}, api port {}):\n{}\n{s}",
                fleet.current(i),
                fleet.hosts[i].api_port,
                String::from_utf8_lossy(&ps.stdout)
            );
        }
        assert_eq!(s["hosts"][i]["outcome"], "rolled_back", "{}", s["hosts"][i]);
        assert!(!fleet.locked(i));
    }
    for (i, h) in fleet.hosts.iter().enumerate() {
        wait_for(&format!("no ssh process for host {i}"), Duration::from_secs(30), || {
            !h.ssh.ssh_clients_running()
        });
    }
}
