//! The corpus of real compose shapes (tests/fixtures/): each is deployed,
//! redeployed with a change and rolled back, its checklist green every time,
//! plus what that shape must get right.

use std::process::Command;
use std::time::Duration;

use crate::harness::deployment::{Deployment, Setup};
use crate::harness::images;
use crate::harness::{http_get, sh, wait_for};

/// Deploy, change `api/version` to B and deploy, roll back to A: each exits 0
/// with every check passed, and the api answers the version live.
fn lifecycle(d: &Deployment) -> (String, String) {
    let (_, first) = d.deploy_json(&[], 0);
    all_checks_passed(&first);
    assert_eq!(d.version().as_deref(), Some("A"));
    let a = d.current().unwrap();
    d.app.commit_file("api/version", "B\n", "version B");
    let (run_b, second) = d.deploy_json(&[], 0);
    all_checks_passed(&second);
    assert_eq!(d.version().as_deref(), Some("B"), "{}\n{}", run_b.all(), d.explain());
    let b = d.current().unwrap();
    let (_, back) = json(d, &["rollback", "test"], 0);
    all_checks_passed(&back);
    assert_eq!(d.current().as_deref(), Some(a.as_str()));
    assert_eq!(d.version().as_deref(), Some("A"));
    (a, b)
}

/// `deploy <args> --output json`, requiring `code`; the summary.
fn json(d: &Deployment, args: &[&str], code: i32) -> (crate::harness::Run, serde_json::Value) {
    let mut all = args.to_vec();
    all.extend(["--output", "json"]);
    let run = d.run(&all);
    assert_eq!(run.code, code, "{args:?}: {}", run.all());
    let last = run.stdout.lines().last().expect("a summary");
    let summary: serde_json::Value = serde_json::from_str(last).unwrap();
    (run, summary)
}

fn all_checks_passed(summary: &serde_json::Value) {
    let checks = summary["hosts"][0]["checks"].as_array().expect("checks ran");
    assert!(!checks.is_empty(), "{summary}");
    for c in checks {
        assert_eq!(c["ok"], true, "{c}");
    }
}

fn check<'a>(summary: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    summary["hosts"][0]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name}: {summary}"))
}

/// Containers of the deployment's project running `service` (not one-offs).
fn running(d: &Deployment, service: &str) -> usize {
    sh(Command::new("docker").args([
        "ps",
        "-q",
        "--filter",
        &format!("label=com.docker.compose.project={}", d.project),
        "--filter",
        &format!("label=com.docker.compose.service={service}"),
        "--filter",
        "label=com.docker.compose.oneoff=False",
    ]))
    .lines()
    .count()
}

fn one_shot_shape(compose: &'static str) {
    let d = Deployment::fixture(
        "migrate",
        Setup {
            compose,
            ..Setup::default()
        },
    );
    let (_, summary) = d.deploy_json(&[], 0);
    let detail = check(&summary, "containers")["detail"].as_str().unwrap().to_string();
    assert!(
        detail.contains("migrate: completed") && detail.contains("seed: completed"),
        "{detail}"
    );
    assert!(
        check(&summary, "migrated")["detail"]
            .as_str()
            .unwrap()
            .contains("migrated to A"),
        "{summary}"
    );
    // Leftover `compose run` containers (one running, one failed) are not the release's.
    for cmd in ["exec sleep 600", "exit 3"] {
        sh(Command::new("docker").args([
            "run",
            "-d",
            "--label",
            &format!("com.docker.compose.project={}", d.project),
            "--label",
            "com.docker.compose.service=migrate",
            "--label",
            "com.docker.compose.oneoff=True",
            images::BUSYBOX,
            "sh",
            "-c",
            cmd,
        ]));
    }
    let verify = d.run(&["verify", "test"]);
    assert_eq!(verify.code, 0, "one-off containers count: {}", verify.all());
    assert!(verify.stdout.contains("migrate: completed"), "{}", verify.stdout);

    d.app.commit_file("api/version", "B\n", "version B");
    let (_, summary) = d.deploy_json(&[], 0);
    all_checks_passed(&summary);
    assert_eq!(d.version().as_deref(), Some("B"), "migrate ran before the api");
    let (_, back) = json(&d, &["rollback", "test"], 0);
    all_checks_passed(&back);
    assert_eq!(d.version().as_deref(), Some("A"));

    // A one-shot that exits non-zero fails the checklist, its log as evidence.
    d.app.commit_file("api/seed-exit", "3\n", "seed fails");
    let (run, summary) = d.deploy_json(&[], 3);
    let detail = check(&summary, "containers")["detail"].as_str().unwrap().to_string();
    assert!(detail.contains("seed: failed (Exited (3)"), "{detail}\n{}", run.all());
    let logs = &summary["hosts"][0]["evidence"]["logs"]["seed"];
    assert!(
        logs.to_string().contains("seeding B"),
        "the seed's lines are evidence: {summary}"
    );
}

#[test]
fn a_one_shot_migration_runs_before_the_api_and_counts_as_completed_v2() {
    one_shot_shape("v2");
}

#[test]
fn a_one_shot_migration_runs_before_the_api_and_counts_as_completed_v1() {
    one_shot_shape("v1");
}

#[test]
fn healthchecks_are_waited_for_and_an_unhealthy_service_fails_with_its_health_log() {
    let d = Deployment::fixture("healthcheck", Setup::default());
    lifecycle(&d);
    d.app.commit_file("api/health", "fail\n", "an unhealthy api");
    let (run, summary) = d.deploy_json(&[], 3);
    let detail = check(&summary, "containers")["detail"].as_str().unwrap().to_string();
    assert!(detail.contains("api: unhealthy"), "{detail}\n{}", run.all());
    let health = summary["hosts"][0]["evidence"]["health"].to_string();
    assert!(health.contains("exit 1"), "the health log is evidence: {summary}");
    assert_eq!(d.version().as_deref(), Some("A"), "the healthy release is back");
}

#[test]
fn services_of_inactive_profiles_are_neither_built_started_nor_checked() {
    let d = Deployment::fixture("profiles", Setup::default());
    lifecycle(&d);
    assert_eq!(running(&d, "worker"), 1, "the jobs profile is active");
    assert_eq!(running(&d, "debug"), 0);
    let debug_images = sh(Command::new("docker").args([
        "image",
        "ls",
        "-q",
        "--filter",
        &format!("reference={}-debug*", d.project),
    ]));
    assert!(debug_images.trim().is_empty(), "debug was built: {debug_images}");
}

#[test]
fn env_files_in_the_commit_and_a_shared_dot_env_reach_the_containers() {
    let d = Deployment::fixture("envfiles", Setup::default());
    std::fs::write(d.app.path().join(".env"), "GREETING=hello from .env\n").unwrap();
    let setup = d.run(&["setup", "test"]);
    assert_eq!(setup.code, 0, "{}", setup.all());
    lifecycle(&d);
    let body = |path: &str| http_get(d.api_port, path).map(|(_, b)| b.trim().to_string());
    assert_eq!(body("/greeting").as_deref(), Some("hello from .env"));
    assert_eq!(body("/from-env-file").as_deref(), Some("from api.env"));
}

#[test]
fn a_production_override_file_with_build_args_and_a_target() {
    let d = Deployment::fixture("overrides", Setup::default());
    lifecycle(&d);
    let body = |path: &str| http_get(d.api_port, path).map(|(_, b)| b.trim().to_string());
    assert_eq!(body("/flavor").as_deref(), Some("production"));
    assert_eq!(body("/stage").as_deref(), Some("prod"));
}

#[test]
fn an_image_only_service_is_not_built_pulled_or_removed() {
    let d = Deployment::fixture("image-only", Setup::default());
    let id = || sh(Command::new("docker").args(["image", "inspect", "-f", "{{.Id}}", images::REDIS]));
    let before = id();
    lifecycle(&d);
    // keep_releases = 1: pruning ran after every deploy.
    d.app.commit_file("api/version", "C\n", "version C");
    d.deploy(&[], 0);
    assert_eq!(id(), before, "the image stays, untouched");
    assert_eq!(running(&d, "cache"), 1);
    assert!(!d.images().iter().any(|i| i.contains("cache")), "{:?}", d.images());
}

#[test]
fn every_replica_must_run() {
    let d = Deployment::fixture("replicas", Setup::default());
    lifecycle(&d);
    assert_eq!(running(&d, "worker"), 2, "deploy.replicas");
    assert_eq!(running(&d, "poller"), 2, "scale");
    // One replica gone: the checklist says so.
    let poller = sh(Command::new("docker").args([
        "ps",
        "-q",
        "--filter",
        &format!("label=com.docker.compose.project={}", d.project),
        "--filter",
        "label=com.docker.compose.service=poller",
    ]));
    let victim = poller.lines().next().unwrap();
    sh(Command::new("docker").args(["rm", "-f", victim]));
    let verify = d.run(&["verify", "test"]);
    assert_eq!(verify.code, 6, "{}", verify.all());
    assert!(
        verify.stdout.contains("poller: 1 of 2 replicas running"),
        "{}",
        verify.stdout
    );
}

#[test]
fn a_fixed_container_name_works_for_a_plain_switch() {
    let d = Deployment::fixture("container-name", Setup::default());
    lifecycle(&d);
    let name = format!("shape-api-{}", d.api_port);
    let state = sh(Command::new("docker").args(["inspect", "-f", "{{.State.Running}}", &name]));
    assert_eq!(state.trim(), "true");
}

#[test]
fn data_on_a_named_volume_survives_deploys_and_both_kinds_of_rollback() {
    let d = Deployment::fixture("volume", Setup::default());
    d.deploy(&[], 0);
    let redis = |args: &[&str]| -> String {
        let container = d.container_of("redis").expect("redis runs");
        sh(Command::new("docker")
            .args(["exec", &container, "redis-cli"])
            .args(args))
        .trim()
        .to_string()
    };
    wait_for("redis to answer", Duration::from_secs(20), || {
        d.container_of("redis").is_some() && redis(&["ping"]) == "PONG"
    });
    assert_eq!(redis(&["set", "order:1", "paid"]), "OK");
    let kept = || redis(&["get", "order:1"]);

    // A new release (down_before_up: the old one is taken down first).
    d.app.commit_file("api/version", "B\n", "version B");
    d.deploy(&[], 0);
    wait_for("redis after the deploy", Duration::from_secs(20), || {
        redis(&["ping"]) == "PONG"
    });
    assert_eq!(kept(), "paid", "after a deploy");
    // A bad release, rolled back by itself.
    d.app.commit_file("api/health", "fail\n", "a bad release");
    d.deploy(&[], 3);
    wait_for("redis after the rollback", Duration::from_secs(20), || {
        redis(&["ping"]) == "PONG"
    });
    assert_eq!(kept(), "paid", "after an automatic rollback");
    // And `deploy rollback`.
    let run = d.run(&["rollback", "test"]);
    assert_eq!(run.code, 0, "{}", run.all());
    wait_for("redis after deploy rollback", Duration::from_secs(20), || {
        redis(&["ping"]) == "PONG"
    });
    assert_eq!(kept(), "paid", "after deploy rollback");
}
