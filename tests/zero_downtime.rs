//! `app.zero_downtime`: behind a reverse proxy (Caddy, as in the demo), a
//! prober asks for /version every 20 ms during the whole deploy. A start-first
//! switch fails no request, on compose v1 and v2, with the readiness of a
//! healthcheck or of the service's http checks; a release that is never ready
//! is removed while the old one keeps answering; a rollback goes the same way;
//! a service that cannot run twice is refused before anything happens.

use std::time::Instant;

use crate::harness::app::{AppRepo, Behaviour, Health};
use crate::harness::deployment::{Deployment, Setup};
use crate::harness::prober::{failures, slowest, Prober};
use crate::harness::{open_tempdir, Following, Test};

/// The checklist: every container up, and the api's health through the proxy
/// (`service = "api"`: the check that says a new api container without a
/// healthcheck is ready).
const CHECKS: &str = r#"
[verify]
timeout = "{TIMEOUT}"

[[verify.checks]]
name = "containers up"
type = "compose_ps"

[[verify.checks]]
name = "api health"
type = "http"
service = "api"
url = "http://127.0.0.1:{API_PORT}/cgi-bin/health"
"#;

/// `[app] zero_downtime` by healthcheck, or by the http checks on port 8000.
fn listed(healthcheck: bool) -> String {
    match healthcheck {
        true => "zero_downtime = [\"api\"]".into(),
        false => "zero_downtime = [{ service = \"api\", port = 8000 }]".into(),
    }
}

/// A proxied app (A live), with `api` listed unless `zero_downtime` is false.
fn live_a(compose: &'static str, healthcheck: bool, zero_downtime: bool, timeout: &str) -> Deployment {
    live(
        compose,
        zero_downtime,
        timeout,
        &Behaviour {
            healthcheck,
            ..Behaviour::proxied("A")
        },
    )
}

/// A proxied app with `a` live (its version "A").
fn live(compose: &'static str, zero_downtime: bool, timeout: &str, a: &Behaviour) -> Deployment {
    live_with(compose, zero_downtime, timeout, a, String::new())
}

/// [`live`] with more lines for the host's sshd_config.
fn live_with(
    compose: &'static str,
    zero_downtime: bool,
    timeout: &str,
    a: &Behaviour,
    sshd_extra: String,
) -> Deployment {
    let d = Deployment::new(
        Setup {
            compose,
            app_extra: if zero_downtime {
                listed(a.healthcheck)
            } else {
                String::new()
            },
            extra: CHECKS.replace("{TIMEOUT}", timeout),
            sshd_extra,
            ..Default::default()
        },
        a,
    );
    d.deploy(&[], 0);
    assert_eq!(d.version().as_deref(), Some("A"));
    d
}

/// B: boots for 4 s (refusing connections meanwhile), then healthy: longer
/// than the prober waits for an answer (2 s), so a switch that leaves no
/// container to answer while B boots fails requests.
fn slow_b(healthcheck: bool) -> Behaviour {
    Behaviour {
        healthcheck,
        slow_start_secs: 4,
        ..Behaviour::proxied("B")
    }
}

/// The `start_first` events' phases for `service`, in order.
fn phases(stdout: &str, service: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == "start_first" && e["service"] == service)
        .map(|e| e["phase"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// A good release replaces the old one start-first: no request fails, the new
/// release answers at the end, the old container is gone. Compose scales the
/// service up; which containers to replace, their state while they are
/// waited for, and the stop and removal go through the Engine API: the
/// host's `docker` (which notes its calls here) is never asked.
fn switches_without_a_failed_request(compose: &'static str, healthcheck: bool) {
    let (_bin, calls, sshd_extra) = crate::harness::noting_docker();
    let a = Behaviour {
        healthcheck,
        ..Behaviour::proxied("A")
    };
    let d = live_with(compose, true, "30s", &a, sshd_extra);
    let old = d.containers_of("api");
    assert_eq!(old.len(), 1, "{old:?}");
    d.app.commit(&slow_b(healthcheck));

    std::fs::write(&calls, "").unwrap();
    let prober = Prober::start(d.api_port, "/version");
    let (run, _) = d.deploy_json(&[], 0);
    let probes = prober.finish();
    let calls = std::fs::read_to_string(&calls).unwrap();
    assert!(calls.contains("up "), "the host ran the wrappers: {calls}");
    for cli in [
        "ps ",
        "inspect ",
        "image inspect",
        "stop ",
        "rm ",
        "logs ",
        "container ",
    ] {
        assert!(!calls.lines().any(|l| l.starts_with(cli)), "docker {cli}: {calls}");
    }

    assert!(
        probes.len() > 50,
        "the prober ran during the deploy: {} probes",
        probes.len()
    );
    assert_eq!(
        failures(&probes),
        Vec::<String>::new(),
        "failed requests of {}; the deploy said:\n{}",
        probes.len(),
        run.stdout
    );
    assert_eq!(probes.last().map(|p| p.body.as_str()), Some("B"));
    eprintln!(
        "zero_downtime ({compose}): 0 of {} requests failed, the slowest took {:?}",
        probes.len(),
        slowest(&probes)
    );
    assert_eq!(d.version().as_deref(), Some("B"));
    let now = d.containers_of("api");
    assert_eq!(now.len(), 1, "one api container at the end: {now:?}");
    assert!(!now.contains(&old[0]), "the old container is gone: {now:?}");
    assert_eq!(phases(&run.stdout, "api"), ["started", "ready", "replaced"]);
    let ready_when = if healthcheck { "healthcheck" } else { "http checks" };
    assert!(
        run.stdout.contains(&format!("\"ready_when\":\"{ready_when}\"")),
        "{}",
        run.stdout
    );
}

/// The lock broken (`--force`) while a start-first switch waits for the new
/// api: the switch's next command is refused on the host, and the run stops
/// as a switched host without the lock (exit 4, a person must look), never
/// as "nothing changed": its new container ran, the old one was replaced,
/// and the new release's files stay as evidence.
#[test]
fn a_lock_broken_during_a_start_first_switch_stops_it_as_switched() {
    let d = live_a("v2", false, true, "30s");
    d.app.commit(&slow_b(false));
    let mut run = Following::start(d.app.path(), &["test"]);
    run.until(|e| e["event"] == "start_first" && e["phase"] == "started");
    run.take_the_lock_away();
    let (code, events) = run.finish();
    assert_eq!(code, Some(4), "{events:?}");
    let summary = events.iter().find(|e| e["event"] == "summary").expect("a summary");
    let error = summary["error"].as_str().unwrap();
    assert!(
        error.contains("after this host's switch had begun") && error.contains("after switching"),
        "{error}"
    );
    assert!(!error.contains("still on its previous release"), "{error}");
    let release = events[0]["release"].as_str().unwrap().to_string();
    assert!(d.releases().contains(&release), "{release} kept: {:?}", d.releases());
    let status = d.run(&["lock", "test", "status"]);
    assert!(status.stdout.contains("FREEZE"), "{}", status.all());
    d.run(&["lock", "test", "release", "--force"]);
}

#[test]
fn a_healthy_release_replaces_the_old_one_without_a_failed_request_compose_v2() {
    switches_without_a_failed_request("v2", true);
}

#[test]
fn a_release_without_a_healthcheck_is_ready_when_its_http_checks_pass_compose_v1() {
    switches_without_a_failed_request("v1", false);
}

/// A release ready at once (no boot, http readiness): however soon deploy
/// finds it ready from the host, the old container serves on until the new
/// one has run for `SETTLE`, for a proxy that looked the new one up before
/// its network answered (see `deploy::activation::SETTLE`). The engine's own
/// events say so: the old container's first stop signal comes that long
/// after the new container's start, which nothing but that wait can make
/// true (without it: 28 ms here).
#[test]
fn a_release_ready_at_once_replaces_the_old_one_only_once_it_ran_a_while_compose_v2() {
    let d = live_a("v2", false, true, "30s");
    let old = d.containers_of("api");
    assert_eq!(old.len(), 1, "{old:?}");
    d.app.commit(&Behaviour::proxied("B"));
    let events = EngineEvents::follow(&d.project);
    let prober = Prober::start(d.api_port, "/version");
    let (run, _) = d.deploy_json(&[], 0);
    let probes = prober.finish();
    assert_eq!(failures(&probes), Vec::<String>::new(), "{}", run.stdout);
    assert_eq!(phases(&run.stdout, "api"), ["started", "ready", "replaced"]);
    assert_eq!(d.version().as_deref(), Some("B"));
    let new = d.containers_of("api");
    assert_eq!(new.len(), 1, "{new:?}");
    let started = events.first("start", &new[0]);
    let signalled = events.first("kill", &old[0]);
    eprintln!(
        "the new api started, the old one was signalled {:.3} s later",
        signalled - started
    );
    assert!(
        signalled - started >= deploy::activation::SETTLE.as_secs_f64(),
        "the old api was signalled {:.3} s after the new one started; the deploy said:\n{}",
        signalled - started,
        run.stdout
    );
}

/// Ctrl-C once the new container is ready, while the old one still serves
/// (its `drain`, and the settle): the new container is removed, the old one
/// was never stopped and answers, exit 130, as Ctrl-C while the new one is
/// waited for.
#[test]
fn ctrl_c_while_the_old_container_still_serves_removes_the_new_one() {
    let d = Deployment::new(
        Setup {
            compose: "v2",
            app_extra: "zero_downtime = [{ service = \"api\", port = 8000, drain = \"60s\" }]".into(),
            extra: CHECKS.replace("{TIMEOUT}", "30s"),
            ..Default::default()
        },
        &Behaviour::proxied("A"),
    );
    d.deploy(&[], 0);
    let old = d.containers_of("api");
    assert_eq!(old.len(), 1, "{old:?}");
    d.app.commit(&Behaviour::proxied("B"));
    let (code, events, _) = crate::harness::interrupt_json_at(d.app.path(), &["test"], |e| {
        e["event"] == "start_first" && e["phase"] == "ready"
    });
    assert_eq!(code, Some(130), "{events:?}");
    let said: Vec<&serde_json::Value> = events.iter().filter(|e| e["event"] == "start_first").collect();
    let phases: Vec<&str> = said.iter().filter_map(|e| e["phase"].as_str()).collect();
    assert_eq!(&phases[..3], ["started", "ready", "not_ready"], "{events:?}");
    assert!(
        said[2]["why"].as_str().unwrap_or_default().contains("interrupted"),
        "{}",
        said[2]
    );
    assert_eq!(d.containers_of("api"), old, "the old api was never stopped");
    assert_eq!(d.version().as_deref(), Some("A"));
}

/// The start and kill events of a compose project's containers, as this
/// machine's engine reports them from now on (`docker events`, followed:
/// its replay of past events keeps only the last few hundred).
struct EngineEvents {
    child: std::process::Child,
    file: tempfile::NamedTempFile,
}

impl EngineEvents {
    fn follow(project: &str) -> EngineEvents {
        let file = tempfile::NamedTempFile::new().unwrap();
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
            - 1.0;
        let child = std::process::Command::new("docker")
            .args(["events", "--since", &format!("{since:.3}")])
            .args(["--filter", &format!("label=com.docker.compose.project={project}")])
            .args(["--filter", "event=start", "--filter", "event=kill"])
            .args(["--format", "{{.TimeNano}} {{.Action}} {{.ID}}"])
            .stdout(file.reopen().unwrap())
            .spawn()
            .expect("docker events");
        EngineEvents { child, file }
    }

    /// When, by the engine's clock in seconds since the epoch, container
    /// `id` was first reported `action`.
    fn first(&self, action: &str, id: &str) -> f64 {
        let mut at = None;
        crate::harness::wait_for(
            &format!("the engine's {action} event of {id}"),
            std::time::Duration::from_secs(30),
            || {
                let text = std::fs::read_to_string(self.file.path()).unwrap_or_default();
                at = text.lines().find_map(|l| {
                    let mut w = l.split_whitespace();
                    let (nanos, what, of) = (w.next()?, w.next()?, w.next()?);
                    (what == action && of == id)
                        .then(|| nanos.parse::<u128>().ok())
                        .flatten()
                });
                at.is_some()
            },
        );
        at.unwrap() as f64 / 1e9
    }
}

impl Drop for EngineEvents {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Today's switch (`up -d` stops the old container, then starts the new one)
/// behind the same proxy: the failures are counted and shown, not judged
/// (`cargo test ... -- --nocapture` shows them).
#[test]
fn without_zero_downtime_the_switch_drops_requests_while_the_new_api_boots() {
    let d = live_a("v2", true, false, "30s");
    d.app.commit(&slow_b(true));
    let prober = Prober::start(d.api_port, "/version");
    d.deploy(&[], 0);
    let probes = prober.finish();
    assert!(probes.len() > 50, "{} probes", probes.len());
    assert_eq!(d.version().as_deref(), Some("B"));
    // The proxy holds a request for up to 5 s while it retries: a client
    // that waits longer than the prober would see fewer failures and long waits.
    eprintln!(
        "baseline without zero_downtime (plain up -d, api booting 4 s): {} of {} requests through the proxy failed (no 200 within 2 s), the slowest took {:?}",
        failures(&probes).len(),
        probes.len(),
        slowest(&probes)
    );
}

/// A live with `zero_downtime` (by healthcheck, or by http checks on port
/// 8000), then B committed, never ready (health 500); without `api`, the
/// host forwards no socket and its docker CLI does what the Engine API
/// would. The deployment and A's api container.
fn a_live_then_b_never_ready(
    compose: &'static str,
    healthcheck: bool,
    api: bool,
    timeout: &str,
) -> (Deployment, Vec<String>) {
    let a = Behaviour {
        healthcheck,
        ..Behaviour::proxied("A")
    };
    let sshd = if api { "" } else { "AllowStreamLocalForwarding no\n" };
    let d = live_with(compose, true, timeout, &a, sshd.to_string());
    let old = d.containers_of("api");
    d.app.commit(&Behaviour {
        healthcheck,
        health: Health::Fails,
        ..Behaviour::proxied("B")
    });
    (d, old)
}

/// B is never ready (health 500): exit 3, B's container removed, A never
/// stopped, and A answered every request after B was found unready; no
/// request failed at all.
fn a_release_never_ready_is_removed_and_the_old_one_keeps_serving(compose: &'static str, healthcheck: bool, api: bool) {
    let (d, old) = a_live_then_b_never_ready(compose, healthcheck, api, "6s");

    let prober = Prober::start(d.api_port, "/version");
    let (code, events) = d.deploy_timed(&[]);
    let probes = prober.finish();

    assert_eq!(code, 3, "{events:#?}");
    let unready = events
        .iter()
        .find(|(_, e)| e["event"] == "start_first" && e["phase"] == "not_ready")
        .unwrap_or_else(|| panic!("no not_ready event: {events:#?}"));
    let found_at: Instant = unready.0;
    assert_eq!(failures(&probes), Vec::<String>::new(), "of {}", probes.len());
    let after: Vec<&str> = probes
        .iter()
        .filter(|p| p.at >= found_at)
        .map(|p| p.body.as_str())
        .collect();
    assert!(!after.is_empty(), "probes after B was found unready");
    assert!(
        after.iter().all(|b| *b == "A"),
        "answers after B was found unready: {after:?}"
    );
    assert_eq!(d.containers_of("api"), old, "B's container removed, A's never touched");
    assert_eq!(d.version().as_deref(), Some("A"));

    let summary = &events.last().expect("a summary").1;
    assert_eq!(summary["event"], "summary");
    let host = &summary["hosts"][0];
    let error = host["error"].as_str().unwrap_or_default();
    assert!(error.contains("not ready"), "{error}");
    let evidence = &host["evidence"];
    if healthcheck {
        // Docker's own health log of the new container.
        let health = evidence["health"].as_object().expect("a health log");
        assert!(
            health.values().any(|v| v.to_string().contains("exit 1")),
            "{evidence:#}"
        );
    } else {
        assert!(error.contains("HTTP 500"), "the check's answer: {error}");
    }
    // The new container's own last lines (httpd's access log here).
    let logs = evidence["logs"].as_object().expect("log lines");
    assert!(
        logs.iter()
            .any(|(k, v)| k.contains("new container") && v.as_array().is_some_and(|l| !l.is_empty())),
        "{evidence:#}"
    );
}

#[test]
fn a_release_never_healthy_is_removed_and_the_old_one_keeps_serving_compose_v1_without_the_engine_api() {
    a_release_never_ready_is_removed_and_the_old_one_keeps_serving("v1", true, false);
}

#[test]
fn a_release_whose_http_check_fails_is_removed_and_the_old_one_keeps_serving_compose_v2() {
    a_release_never_ready_is_removed_and_the_old_one_keeps_serving("v2", false, true);
}

/// The new api container removed by something else (`docker rm -f`) while
/// the switch waits for it to be ready (it never would be): the switch
/// ends at its next look, naming the container gone (through the Engine API
/// and through the CLI), instead of waiting out
/// `verify.timeout` (60 s) on "no such container"; the old api serves on.
fn a_new_container_removed_while_waited_for_fails_at_once(compose: &'static str, healthcheck: bool, api: bool) {
    let (d, old) = a_live_then_b_never_ready(compose, healthcheck, api, "60s");
    let mut run = Following::start(d.app.path(), &["test"]);
    run.until(|e| e["event"] == "start_first" && e["phase"] == "started");
    let started = run.events.last().expect("the started event").clone();
    let new = started["new"][0].as_str().expect("a new container").to_string();
    // Held still meanwhile, so its next look comes after the removal ended
    // (not in the middle of it, when the container shows `removing`).
    run.signal("STOP");
    let removed = std::process::Command::new("docker")
        .args(["rm", "-f", &new])
        .output()
        .expect("docker rm");
    run.signal("CONT");
    assert!(removed.status.success(), "{removed:?}");
    let (code, events) = run.finish();
    assert_eq!(code, Some(3), "{events:#?}");
    let unready = events
        .iter()
        .find(|e| e["event"] == "start_first" && e["phase"] == "not_ready")
        .unwrap_or_else(|| panic!("no not_ready event: {events:#?}"));
    let why = unready["why"].as_str().unwrap_or_default();
    assert!(
        why.contains("no longer exists (removed by something else"),
        "the reason names the container gone: {why}"
    );
    assert!(!why.contains("not healthy within"), "{why}");
    assert_eq!(d.containers_of("api"), old, "A's container never touched");
    assert_eq!(d.version().as_deref(), Some("A"));
}

#[test]
fn a_new_container_removed_while_waited_for_fails_at_once_compose_v2() {
    a_new_container_removed_while_waited_for_fails_at_once("v2", true, true);
}

/// Without a healthcheck (ready when its http checks pass, which they never
/// would), and through the host's docker CLI.
#[test]
fn a_new_container_without_a_healthcheck_removed_while_waited_for_fails_at_once_compose_v1_without_the_engine_api() {
    a_new_container_removed_while_waited_for_fails_at_once("v1", false, false);
}

/// `deploy rollback` of a zero-downtime service goes through the same path:
/// A boots for 4 s too, and no request fails while it does.
#[test]
fn a_rollback_replaces_the_service_start_first_too() {
    let slow_a = Behaviour {
        slow_start_secs: 4,
        ..slow_b(true)
    };
    let d = live(
        "v2",
        true,
        "30s",
        &Behaviour {
            version: "A".into(),
            ..slow_a
        },
    );
    d.app.commit(&slow_b(true));
    d.deploy(&[], 0);
    assert_eq!(d.version().as_deref(), Some("B"));

    let prober = Prober::start(d.api_port, "/version");
    let run = d.run(&["rollback", "test", "--output", "json"]);
    let probes = prober.finish();
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(probes.len() > 20, "{} probes", probes.len());
    assert_eq!(failures(&probes), Vec::<String>::new(), "of {}", probes.len());
    assert_eq!(d.version().as_deref(), Some("A"));
    assert_eq!(phases(&run.stdout, "api"), ["started", "ready", "replaced"]);
    assert_eq!(d.containers_of("api").len(), 1);
}

const REFUSED_CONFIG: &str = "[app]\nname = \"shop\"\nzero_downtime = [\"api\"]\n\n[environments.prod]\nhosts = [\"web1.example.com\"]\npath = \"/srv/shop\"\n";

/// `deploy check` on deploy.toml and a compose file beside it.
fn check_with(compose: &str) -> crate::harness::Run {
    let dir = open_tempdir();
    std::fs::write(dir.path().join("deploy.toml"), REFUSED_CONFIG).unwrap();
    std::fs::write(dir.path().join("docker-compose.yml"), compose).unwrap();
    Test::new().arg("check").current_dir(dir.path()).run()
}

#[test]
fn deploy_check_refuses_a_zero_downtime_service_that_publishes_ports_or_names_its_container() {
    let run = check_with("services:\n  api:\n    image: x\n    ports:\n      - \"127.0.0.1:8080:8000\"\n");
    assert_eq!(run.code, 2, "{}", run.all());
    for part in [
        "service `api` of docker-compose.yml publishes host ports (127.0.0.1:8080:8000)",
        "reverse proxy",
        "--> deploy.toml:3:",
    ] {
        assert!(run.stderr.contains(part), "`{part}` not in:\n{}", run.stderr);
    }

    let run = check_with("services:\n  api:\n    image: x\n    container_name: shop-api\n");
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(
        run.stderr
            .contains("service `api` of docker-compose.yml sets container_name `shop-api`"),
        "{}",
        run.stderr
    );

    let run = check_with("services:\n  web:\n    image: x\n");
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(
        run.stderr.contains("`api` is not a service of docker-compose.yml"),
        "{}",
        run.stderr
    );

    // Behind a proxy, as it should be.
    let run = check_with(
        "services:\n  proxy:\n    image: caddy\n    ports: [\"80:80\"]\n  api:\n    image: x\n    expose: [\"8000\"]\n",
    );
    assert_eq!(run.code, 0, "{}", run.all());
}

/// `deploy up` refuses it too, from the commit it would deploy, before it
/// connects to any host.
#[test]
fn deploy_up_refuses_it_before_touching_a_host() {
    let app = AppRepo::new(&Behaviour::version("A"));
    std::fs::write(
        app.path().join("deploy.toml"),
        "[app]\nname = \"shop\"\nzero_downtime = [\"api\"]\n\n[source]\nstrategy = \"upload\"\n\n[environments.prod]\nhosts = [{ address = \"127.0.0.1\", port = 1 }]\npath = \"/srv/shop\"\n",
    )
    .unwrap();
    let run = Test::new().args(["prod"]).current_dir(app.path()).run();
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(
        run.stderr
            .contains("service `api` of docker-compose.yml publishes host ports"),
        "{}",
        run.stderr
    );
    assert!(!run.all().contains("connect"), "no host was contacted: {}", run.all());
}

#[test]
fn config_refuses_zero_downtime_with_down_before_up_or_a_one_shot() {
    let dir = open_tempdir();
    let write_and_check = |app_extra: &str| {
        std::fs::write(
            dir.path().join("deploy.toml"),
            REFUSED_CONFIG.replace("zero_downtime = [\"api\"]", app_extra),
        )
        .unwrap();
        Test::new().arg("check").current_dir(dir.path()).run()
    };
    let run = write_and_check("zero_downtime = [\"api\"]\ndown_before_up = true");
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(run.stderr.contains("expected one of them"), "{}", run.stderr);
    let run = write_and_check("zero_downtime = [\"migrate\"]\none_shot = [\"migrate\"]");
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(run.stderr.contains("a one-shot service exits"), "{}", run.stderr);
    let run = write_and_check("zero_downtime = [{ service = \"api\", drian = \"5s\" }]");
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(run.stderr.contains("drian"), "{}", run.stderr);
}
