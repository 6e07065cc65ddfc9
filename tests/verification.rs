//! The checklist and automatic rollback against real sshd hosts, Docker and Redis.

use std::process::Command;

use crate::harness::app::{Behaviour, Health};
use crate::harness::deployment::{Deployment, Setup};
use crate::harness::sshd::{client_key, free_port, SshHost, USER};
use crate::harness::{open_tempdir, sh, Netns, Test};

const HEALTH: &str = r#"
[verify]
timeout = "40s"
interval = "200ms"
max_interval = "2s"

[[verify.checks]]
name = "containers up"
type = "compose_ps"

[[verify.checks]]
name = "api health"
type = "http"
url = "http://127.0.0.1:{API_PORT}/cgi-bin/health"
via = "ssh"
expect_status = [200]
"#;

fn setup(extra: &str) -> Setup {
    Setup {
        extra: format!("{HEALTH}{extra}"),
        ..Setup::default()
    }
}

/// Like [`setup`], but a failing health check gives up after 3 s: a 500 is final here.
fn quick_setup(extra: &str) -> Setup {
    let health = HEALTH.replace("expect_status = [200]", "expect_status = [200]\ntimeout = \"3s\"");
    Setup {
        extra: format!("{health}{extra}"),
        ..Setup::default()
    }
}

fn check<'a>(summary: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    summary["hosts"][0]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {summary}"))
}

#[test]
fn the_incident_redis_late_after_up_is_waited_for_not_rolled_back() {
    let d = Deployment::new(setup(""), &Behaviour::version("A"));
    d.deploy(&[], 0);
    let mut b = Behaviour::version("B");
    b.health = Health::UntilRedis;
    b.redis_delay_secs = 6;
    d.app.commit(&b);
    let (run, summary) = d.deploy_json(&[], 0);
    assert_eq!(summary["result"], "ok", "{}", run.all());
    let health = check(&summary, "api health");
    assert_eq!(health["ok"], true);
    assert!(
        health["attempts"].as_u64().unwrap() > 1,
        "health passed at once, Redis was not late: {health}"
    );
    assert!(health["elapsed_ms"].as_u64().unwrap() >= 3000, "{health}");
    assert_eq!(d.version().as_deref(), Some("B"));
    assert_eq!(d.history().last().unwrap()["outcome"], "deployed");
}

#[test]
fn a_release_answering_500_is_rolled_back_with_the_evidence() {
    let d = Deployment::new(quick_setup(""), &Behaviour::version("A"));
    d.deploy(&[], 0);
    let first = d.current().unwrap();
    let mut b = Behaviour::version("B");
    b.health = Health::Fails;
    d.app.commit(&b);

    let run = d.deploy(&[], 3);
    assert_eq!(d.version().as_deref(), Some("A"), "the previous release answers again");
    assert_eq!(d.current().as_deref(), Some(first.as_str()));
    let out = run.all();
    assert!(out.contains("HTTP 500"), "the failing answer is shown: {out}");
    assert!(
        out.contains("api B starting"),
        "the api's last log lines are shown: {out}"
    );
    let last = d.history().pop().unwrap();
    assert_eq!(last["outcome"], "rolled_back");
    assert_eq!(last["to"], first.as_str());

    // The same in JSON: evidence per host.
    d.app.commit(&b);
    let (_, summary) = d.deploy_json(&[], 3);
    assert_eq!(summary["result"], "rolled_back");
    let api_logs = summary["hosts"][0]["evidence"]["logs"]["api"].as_array().unwrap();
    assert!(
        api_logs.iter().any(|l| l.as_str().unwrap().contains("starting")),
        "{summary}"
    );
    assert!(check(&summary, "api health")["detail"]
        .as_str()
        .unwrap()
        .contains("HTTP 500"));
}

#[test]
fn connection_refused_in_the_logs_fails_the_release() {
    let logs = "\n[[verify.checks]]\nname = \"no refused connections\"\ntype = \"logs\"\nservices = [\"api\", \"worker\"]\nabsent = \"(?i)connection refused\"\n";
    let d = Deployment::new(setup(logs), &Behaviour::version("A"));
    d.deploy(&[], 0);
    let mut b = Behaviour::version("B");
    b.worker_log = Some("Error 111 connecting to redis:6379. Connection refused.".into());
    d.app.commit(&b);
    let (run, summary) = d.deploy_json(&[], 3);
    let refused = check(&summary, "no refused connections");
    assert_eq!(refused["ok"], false, "{}", run.all());
    assert!(refused["detail"].as_str().unwrap().contains("Connection refused"));
    assert_eq!(check(&summary, "api health")["ok"], true, "health was fine");
    assert_eq!(d.version().as_deref(), Some("A"));

    // --no-rollback leaves it live and exits 6.
    d.app.commit(&b);
    d.deploy(&["--no-rollback"], 6);
    assert_eq!(d.version().as_deref(), Some("B"));
    assert_eq!(d.history().last().unwrap()["outcome"], "checks_failed");
}

#[test]
fn deploy_verify_passes_on_a_healthy_release_and_names_what_fails() {
    let redis = "\n[[verify.checks]]\nname = \"redis\"\ntype = \"redis\"\naddress = \"127.0.0.1:{REDIS_PORT}\"\nvia = \"ssh\"\ntimeout = \"2s\"\n\n[[verify.checks]]\nname = \"redis from inside\"\ntype = \"exec\"\nservice = \"redis\"\ncommand = [\"redis-cli\", \"ping\"]\ntimeout = \"2s\"\n";
    let d = Deployment::new(setup(redis), &Behaviour::version("A"));
    d.deploy(&[], 0);
    let ok = d.run(&["verify", "test"]);
    assert_eq!(ok.code, 0, "{}", ok.all());
    assert!(ok.all().contains("check redis passed"), "{}", ok.all());

    sh(Command::new("docker").args(["stop", "-t", "1", &format!("{}-redis-1", d.project)]));
    // A stopped Redis stays stopped: "containers up" would only wait out the
    // checklist's 40 s (the Redis checks give up after their own 2 s). The
    // api's check still has to pass within 5 s.
    let config = d.app.path().join("deploy.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("timeout = \"40s\""), "{text}");
    std::fs::write(&config, text.replace("timeout = \"40s\"", "timeout = \"5s\"")).unwrap();
    let failed = d.run(&["verify", "test"]);
    assert_eq!(failed.code, 6, "{}", failed.all());
    assert!(failed.all().contains("checks failed"), "{}", failed.all());
    for name in ["redis", "redis from inside", "containers up"] {
        assert!(
            failed.all().contains(&format!("check {name} FAILED")),
            "{name} is named: {}",
            failed.all()
        );
    }
    assert!(failed.all().contains("check api health passed"), "{}", failed.all());
}

#[test]
fn a_rollback_that_cannot_succeed_says_a_person_must_act() {
    let d = Deployment::new(quick_setup(""), &Behaviour::version("A"));
    d.deploy(&[], 0);
    let a = d.current().unwrap();
    // Someone removed A's images by hand: every tag of them.
    let mut images: Vec<String> = d.images().into_iter().filter(|i| i.ends_with(&a)).collect();
    images.extend(d.release_images(&a));
    assert!(!images.is_empty());
    sh(Command::new("docker").args(["image", "rm", "-f"]).args(&images));
    let mut b = Behaviour::version("B");
    b.health = Health::Fails;
    d.app.commit(&b);
    let run = d.deploy(&[], 4);
    assert!(run.all().contains("a person must look now"), "{}", run.all());
    assert!(run.all().contains("images of release"), "{}", run.all());
    assert_eq!(d.history().last().unwrap()["outcome"], "rollback_failed");

    // On a host's first deploy there is nothing to restore: also 4, said plainly.
    let fresh = Deployment::new(quick_setup(""), &b);
    let run = fresh.deploy(&[], 4);
    assert!(run.all().contains("first deploy"), "{}", run.all());
}

#[test]
fn json_output_is_one_object_per_line_ending_in_the_documented_summary() {
    let d = Deployment::new(setup(""), &Behaviour::version("A"));
    let (run, summary) = d.deploy_json(&[], 0);
    assert!(run.stdout.lines().count() > 3, "events come before the summary");
    // The schema of docs/json.md.
    for (key, kind) in [
        ("command", "string"),
        ("env", "string"),
        ("result", "string"),
        ("exit_code", "number"),
        ("release", "string"),
        ("commit", "string"),
        ("elapsed_ms", "number"),
        ("hosts", "array"),
    ] {
        assert_eq!(json_type(&summary[key]), kind, "summary.{key} in {summary}");
    }
    let host = &summary["hosts"][0];
    for (key, kind) in [
        ("host", "string"),
        ("release", "string"),
        ("outcome", "string"),
        ("elapsed_ms", "number"),
        ("checks", "array"),
    ] {
        assert_eq!(json_type(&host[key]), kind, "hosts[0].{key} in {host}");
    }
    for c in host["checks"].as_array().unwrap() {
        for (key, kind) in [
            ("name", "string"),
            ("type", "string"),
            ("ok", "bool"),
            ("skipped", "bool"),
            ("attempts", "number"),
            ("elapsed_ms", "number"),
            ("detail", "string"),
        ] {
            assert_eq!(json_type(&c[key]), kind, "check.{key} in {c}");
        }
    }
    assert_eq!(summary["exit_code"], 0);
    assert_eq!(summary["commit"].as_str().unwrap().len(), 40);
    let events: Vec<serde_json::Value> = run.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(events
        .iter()
        .any(|e| e["event"] == "step" && e["step"] == "build" && e["status"] == "done"));
    assert!(events
        .iter()
        .any(|e| e["event"] == "check" && e["name"] == "api health"));
}

fn json_type(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "bool",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

/// A host in its own network namespace, running Redis on its own loopback
/// (with a password): reachable through SSH from the host, not directly.
#[test]
fn redis_on_the_hosts_loopback_is_checked_through_ssh_with_a_secret_password() {
    let ns = Netns::new();
    let host = SshHost::start_at(&ns.addr, Some(&ns.name));
    let port = free_port();
    let password = "pw-9c1d-never-shown";
    let mut redis = ns
        .command("/usr/bin/redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--requirepass",
            password,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    crate::harness::wait_for("redis in the namespace", std::time::Duration::from_secs(10), || {
        ns.command("redis-cli")
            .args(["-p", &port.to_string(), "-a", password, "--no-auth-warning", "ping"])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("PONG"))
    });
    let tmp = open_tempdir();
    let known = host.known_hosts_file(tmp.path());
    let config = |via: &str| {
        format!(
            "[app]\nname = \"ns\"\n[source]\nstrategy = \"upload\"\n[ssh]\nuser = \"{USER}\"\nport = {}\nidentity_file = \"{}\"\nknown_hosts_file = \"{}\"\n\
             [environments.test]\nhosts = [\"{}\"]\npath = \"/tmp\"\n[verify]\ntimeout = \"3s\"\n\
             [[verify.checks]]\nname = \"redis\"\ntype = \"redis\"\naddress = \"127.0.0.1:{port}\"\npassword = \"${{DT_REDIS_PASSWORD}}\"\nvia = \"{via}\"\n",
            host.port,
            client_key().display(),
            known.display(),
            ns.addr
        )
    };
    for (via, code) in [("ssh", 0), ("direct", 6)] {
        std::fs::write(tmp.path().join("deploy.toml"), config(via)).unwrap();
        for output in ["human", "json"] {
            let run = Test::new()
                .args(["verify", "test", "--output", output])
                .env("DT_REDIS_PASSWORD", password)
                .current_dir(tmp.path())
                .run();
            assert_eq!(run.code, code, "via {via}: {}", run.all());
            assert!(!run.all().contains(password), "the password was printed: {}", run.all());
        }
    }
    // A wrong password is refused by Redis, and the check says so.
    std::fs::write(tmp.path().join("deploy.toml"), config("ssh")).unwrap();
    let wrong = Test::new()
        .args(["verify", "test"])
        .env("DT_REDIS_PASSWORD", "wrong-password")
        .current_dir(tmp.path())
        .run();
    assert_eq!(wrong.code, 6, "{}", wrong.all());
    assert!(wrong.all().contains("AUTH"), "{}", wrong.all());
    let _ = redis.kill();
    let _ = redis.wait();
}

#[test]
fn secrets_appear_in_no_output_hooks_and_evidence_included() {
    let secret = "tok-5e3a-secret-value";
    let extra = "\n[[verify.checks]]\nname = \"token check\"\ntype = \"exec\"\nservice = \"api\"\ncommand = [\"sh\", \"-c\", \"echo denied for $0 >&2; exit 1\", \"${DT_TOKEN}\"]\ntimeout = \"5s\"\n\n\
         [[verify.checks]]\nname = \"api with token\"\ntype = \"http\"\nurl = \"http://127.0.0.1:{API_PORT}/version\"\nheaders = { Authorization = \"Bearer ${DT_TOKEN}\" }\n\n\
         [hooks]\npre_deploy = \"echo pre: $DT_TOKEN\"\non_failure = \"echo failed: $DT_TOKEN; echo again $DT_TOKEN >&2\"\n";
    let d = Deployment::new(quick_setup(extra), &Behaviour::version("A"));
    for output in ["human", "json"] {
        let run = Test::new()
            .args(["test", "--output", output, "-v"])
            .env("DT_TOKEN", secret)
            .current_dir(d.app.path())
            .run();
        // The token check always fails and this is the first deploy: nothing to restore.
        assert_eq!(run.code, 4, "{}", run.all());
        assert!(
            run.all().contains("denied for [redacted]"),
            "the evidence is shown, redacted: {}",
            run.all()
        );
        assert!(
            run.all().contains("pre: [redacted]"),
            "the hook ran and its output is shown, redacted: {}",
            run.all()
        );
        assert!(
            !run.all().contains(secret),
            "the secret was printed with --output {output}:\n{}",
            run.all()
        );
    }
}

/// Log patterns see each line as the container wrote it: `^` and `$` anchor to
/// the line, not to a "service | " prefix.
#[test]
fn log_patterns_match_the_line_as_the_container_wrote_it() {
    let d = Deployment::new(
        quick_setup(
            "[[verify.checks]]\nname = \"worker up\"\ntype = \"logs\"\nservices = [\"worker\"]\npresent = \"^worker [AB] started$\"\n\n[[verify.checks]]\nname = \"no errors\"\ntype = \"logs\"\nabsent = \"^ERROR\"\n",
        ),
        &Behaviour::version("A"),
    );
    let (_, summary) = d.deploy_json(&[], 0);
    assert_eq!(check(&summary, "worker up")["ok"], true, "{summary}");
    // A worker that logs an error at the start of a line fails the release.
    let mut b = Behaviour::version("B");
    b.worker_log = Some("ERROR cannot reach the database".into());
    d.app.commit(&b);
    let (_, summary) = d.deploy_json(&[], 3);
    let no_errors = check(&summary, "no errors");
    assert_eq!(no_errors["ok"], false, "{summary}");
    assert!(
        no_errors["detail"]
            .as_str()
            .unwrap()
            .contains("worker | ERROR cannot reach the database"),
        "the evidence keeps the service for people: {no_errors}"
    );
}
