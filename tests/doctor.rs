//! `deploy doctor`: the commit's compose files read against deploy.toml (the
//! seed's race, restart policies, healthchecks, tags, variables, services),
//! and with ENV each real sshd host: ssh, Docker, the socket, disk, clock,
//! the fetch URL from the host, the lock and the last release.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::harness::deployment::{Deployment, Setup};
use crate::harness::sshd::{SshHost, USER};
use crate::harness::{git, open_tempdir, sh, Run, Test};

/// The seed's compose file: api waits for nothing, Redis has no healthcheck.
const RACY: &str = "services:
  api:
    build: ./api
    depends_on: [redis]
    ports: [\"127.0.0.1:${API_PORT}:8000\"]
  redis:
    image: redis
";

/// The same app with every finding fixed.
const FIXED: &str = "services:
  api:
    build: ./api
    restart: unless-stopped
    depends_on:
      redis:
        condition: service_healthy
    ports: [\"127.0.0.1:${API_PORT}:8000\"]
    healthcheck:
      test: [\"CMD\", \"wget\", \"-q\", \"-O\", \"/dev/null\", \"http://127.0.0.1:8000/health\"]
  redis:
    image: redis:7.2
    restart: unless-stopped
    healthcheck:
      test: [\"CMD\", \"redis-cli\", \"ping\"]
";

/// deploy.toml whose check names `service` and whose prod defines `prod_vars`.
fn config(service: &str, prod_vars: &str) -> String {
    format!(
        "[app]\nname = \"shop\"\n\n[environments.prod]\nhosts = [\"web1.example.com\", \"web2.example.com\"]\npath = \"/srv/shop\"\nvars = {{ {prod_vars} }}\n\n\
         [environments.staging]\nhosts = [\"stage.example.com\"]\npath = \"/srv/shop\"\nvars = {{ API_PORT = \"8001\" }}\n\n\
         [[verify.checks]]\nname = \"ping\"\ntype = \"exec\"\nservice = \"{service}\"\ncommand = [\"redis-cli\", \"ping\"]\n"
    )
}

/// `deploy doctor <args> --output json` in `dir`, requiring `code`: the findings, and the summary.
fn doctor_json(dir: &Path, args: &[&str], code: i32) -> (Vec<Value>, Value) {
    let run = Test::new()
        .arg("doctor")
        .args(args.iter().copied())
        .args(["--output", "json"])
        .current_dir(dir)
        .run();
    assert_eq!(run.code, code, "doctor {args:?} exited {}:\n{}", run.code, run.all());
    let events: Vec<Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let (summary, findings) = events.split_last().expect("some output");
    assert_eq!(summary["event"], "summary", "{}", run.stdout);
    assert_eq!(summary["command"], "doctor");
    assert_eq!(summary["exit_code"], code);
    for f in findings {
        assert_eq!(f["event"], "finding", "only findings before the summary: {f}");
        assert!(["ok", "warn", "fail"].contains(&f["level"].as_str().unwrap()), "{f}");
        if f["level"] != "ok" {
            assert!(
                f["fix"].as_str().is_some_and(|x| !x.is_empty()),
                "every ! and ✗ has a fix: {f}"
            );
        }
    }
    (findings.to_vec(), summary.clone())
}

/// The findings of `check` (on `host`, where given).
fn of<'a>(findings: &'a [Value], check: &str) -> Vec<&'a Value> {
    findings.iter().filter(|f| f["check"] == check).collect()
}

/// The one finding of `check`, asserting its level.
fn one<'a>(findings: &'a [Value], check: &str, level: &str) -> &'a Value {
    let found = of(findings, check);
    assert_eq!(found.len(), 1, "one {check} finding expected: {found:#?}");
    assert_eq!(found[0]["level"], level, "{:#}", found[0]);
    found[0]
}

fn text(v: &Value, field: &str) -> String {
    v[field].as_str().unwrap_or_default().to_string()
}

/// An app repository with `compose` committed and `deploy_toml` beside it (untracked).
fn app(compose: &str, deploy_toml: &str) -> tempfile::TempDir {
    let dir = open_tempdir();
    git(dir.path(), &["init", "-q", "-b", "main"]);
    std::fs::write(dir.path().join(".git/info/exclude"), "deploy.toml\n").unwrap();
    std::fs::write(dir.path().join("docker-compose.yml"), compose).unwrap();
    git(dir.path(), &["add", "-A"]);
    git(dir.path(), &["commit", "-q", "-m", "the app"]);
    std::fs::write(dir.path().join("deploy.toml"), deploy_toml).unwrap();
    dir
}

#[test]
fn doctor_finds_the_seeds_race_in_the_commit_and_each_fix_clears_it() {
    let dir = app(RACY, &config("cache", ""));
    let (f, summary) = doctor_json(dir.path(), &[], 1);
    let race = one(&f, "depends_on", "fail");
    assert_eq!(race["service"], "api");
    assert!(
        text(race, "message").contains("api depends on redis without `condition: service_healthy`"),
        "{race}"
    );
    let fix = text(race, "fix");
    assert!(
        fix.contains(r#"["CMD","redis-cli","ping"]"#),
        "a Redis image gets redis-cli ping: {fix}"
    );
    assert!(
        fix.contains("`depends_on: {redis: {condition: service_healthy}}` under api"),
        "{fix}"
    );
    let restart: Vec<String> = of(&f, "restart").iter().map(|r| text(r, "service")).collect();
    assert_eq!(restart, ["api", "redis"]);
    let http = one(&f, "healthcheck", "warn");
    assert!(text(http, "message").contains("api serves HTTP (port 8000)"), "{http}");
    let tag = one(&f, "image_tag", "warn");
    assert!(text(tag, "message").contains("`redis` has no tag"), "{tag}");
    let missing = one(&f, "services", "fail");
    assert!(
        text(missing, "message").contains("check `ping` names service `cache`"),
        "{missing}"
    );
    assert!(text(missing, "fix").contains("api, redis"), "{missing}");
    let vars = of(&f, "variables");
    assert_eq!(vars.len(), 2, "prod lacks API_PORT, staging has it: {vars:#?}");
    assert_eq!(vars[0]["level"], "fail");
    assert!(
        text(vars[0], "message").contains("uses ${API_PORT}, which is not defined for prod"),
        "{}",
        vars[0]
    );
    assert!(text(vars[0], "fix").contains("[environments.prod] vars"), "{}", vars[0]);
    assert_eq!(vars[1]["level"], "ok");
    assert!(
        summary["error"].as_str().unwrap().starts_with("3 findings to fix"),
        "{summary}"
    );

    // For people: one line per finding, each with its mark; the summary last.
    let human = Test::new().arg("doctor").current_dir(dir.path()).run();
    assert_eq!(human.code, 1, "{}", human.all());
    let lines: Vec<&str> = human.stdout.lines().collect();
    let findings: Vec<&&str> = lines.iter().filter(|l| l.starts_with(['✓', '!', '✗'])).collect();
    assert_eq!(findings.len(), f.len(), "{}", human.stdout);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("✗ api depends on redis") && l.contains("; fix: give redis a healthcheck")),
        "{}",
        human.stdout
    );

    // Fixed in the working tree only: doctor reads the commit, which deploy deploys.
    std::fs::write(dir.path().join("docker-compose.yml"), FIXED).unwrap();
    std::fs::write(dir.path().join("deploy.toml"), config("redis", "API_PORT = \"8000\"")).unwrap();
    let (f, _) = doctor_json(dir.path(), &[], 1);
    one(&f, "depends_on", "fail");
    let uncommitted = of(&f, "source");
    assert!(
        uncommitted
            .iter()
            .any(|s| s["level"] == "warn" && text(s, "message").contains("uncommitted changes")),
        "{uncommitted:#?}"
    );

    git(dir.path(), &["commit", "-q", "-am", "healthchecks"]);
    let (f, summary) = doctor_json(dir.path(), &[], 0);
    let not_ok: Vec<&Value> = f.iter().filter(|x| x["level"] != "ok").collect();
    assert!(not_ok.is_empty(), "all fixed: {not_ok:#?}");
    assert!(summary.get("error").is_none(), "{summary}");
    // --rev reads an older commit: the race is back.
    let (f, _) = doctor_json(dir.path(), &["--rev", "HEAD~1"], 1);
    one(&f, "depends_on", "fail");
}

#[test]
fn init_ends_with_the_compose_part_of_doctor() {
    let dir = open_tempdir();
    std::fs::write(dir.path().join("docker-compose.yml"), RACY).unwrap();
    let run = Test::new().arg("init").current_dir(dir.path()).run();
    assert_eq!(
        run.code,
        0,
        "init wrote its file; findings do not fail it:\n{}",
        run.all()
    );
    assert!(run.stdout.contains("✗ api depends on redis"), "{}", run.stdout);
    assert!(run.stdout.contains("redis-cli"), "{}", run.stdout);
    assert!(
        run.stdout.contains("uses ${API_PORT}, which is not defined for prod"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("doctor: 2 to fix (✗)"), "{}", run.stdout);
}

/// deploy.toml's host key settings pointed at `known_hosts`.
fn with_known_hosts(d: &Deployment, known_hosts: &Path) {
    let path = d.app.path().join("deploy.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let re = regex::Regex::new(r#"known_hosts_file = "[^"]*""#).unwrap();
    let text = re.replace(
        &text,
        format!("known_hosts_file = \"{}\"", known_hosts.display()).as_str(),
    );
    std::fs::write(path, text.as_ref()).unwrap();
}

#[test]
fn doctor_with_an_environment_examines_each_host() {
    let d = Deployment::fixture("healthcheck", Setup::default());
    d.deploy(&[], 0);
    let live = d.current().expect("a live release");
    let (f, summary) = doctor_json(d.app.path(), &["test"], 0);
    for check in [
        "ssh",
        "docker",
        "docker_socket",
        "compose",
        "path",
        "git",
        "clock",
        "fetch_url",
        "lock",
        "last_release",
    ] {
        let found = one(&f, check, "ok");
        assert_eq!(found["host"], "127.0.0.1", "{found}");
    }
    let disks = of(&f, "disk");
    assert_eq!(disks.len(), 2, "the Docker data root and the path: {disks:#?}");
    assert!(disks.iter().all(|x| x["level"] == "ok"), "{disks:#?}");
    assert!(text(one(&f, "docker_socket", "ok"), "message").starts_with(&format!("{USER} reaches the Docker engine")));
    assert!(text(one(&f, "fetch_url", "ok"), "message").contains("branch main at"));
    let last = one(&f, "last_release", "ok");
    assert!(text(last, "message").contains(&live), "{last}");
    let ssh = one(&f, "ssh", "ok");
    assert!(text(ssh, "message").contains("(strict)"), "{ssh}");
    assert_eq!(summary["hosts"][0]["outcome"], "ok", "{summary}");
    assert_eq!(summary["hosts"][0]["release"], live.as_str(), "{summary}");

    // A deploy freeze is worth a look, not a failure.
    let lock = d.run(&["lock", "test", "acquire", "--message", "freeze for the audit"]);
    assert_eq!(lock.code, 0, "{}", lock.all());
    let (f, _) = doctor_json(d.app.path(), &["test"], 0);
    let held = one(&f, "lock", "warn");
    assert!(
        text(held, "message").contains("locked by hand") && text(held, "message").contains("freeze for the audit"),
        "{held}"
    );
    assert!(text(held, "fix").contains("deploy lock test release"), "{held}");
    assert_eq!(d.run(&["lock", "test", "release"]).code, 0);

    // A host whose key known_hosts lacks: ✗ with the command that fixes it.
    let empty = d.known.path().join("empty_known_hosts");
    std::fs::write(&empty, "").unwrap();
    with_known_hosts(&d, &empty);
    let (f, summary) = doctor_json(d.app.path(), &["test"], 1);
    let ssh = one(&f, "ssh", "fail");
    assert!(text(ssh, "message").contains("Host key verification failed"), "{ssh}");
    assert!(
        text(ssh, "fix").contains(&format!(
            "ssh-keyscan -p {} 127.0.0.1 >> {}",
            d.host.port,
            empty.display()
        )),
        "{ssh}"
    );
    assert_eq!(summary["hosts"][0]["outcome"], "unreachable", "{summary}");
    assert!(
        of(&f, "docker").is_empty(),
        "an unreachable host is not examined further"
    );
}

/// A tmpfs mounted for a test, unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn new(size: &str) -> SmallDisk {
        let dir = open_tempdir();
        sh(Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0755"), "tmpfs"])
            .arg(dir.path()));
        sh(Command::new("chown").arg(format!("{USER}:{USER}")).arg(dir.path()));
        SmallDisk { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn doctor_names_a_closed_socket_a_small_disk_a_skewed_clock_and_a_fetch_url_the_host_cannot_reach() {
    // A Docker socket the login user may not open (as when it is not in the
    // docker group), and a `date` an hour ahead: one kernel clock serves every
    // host here, so the host's clock is the one thing faked.
    let socket_dir = open_tempdir();
    let socket = socket_dir.path().join("docker.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    crate::harness::set_mode(&socket, 0o600);
    let fakebin = open_tempdir();
    std::fs::write(
        fakebin.path().join("date"),
        "#!/bin/sh\ncase \"$1\" in +%s) echo $(( $(/usr/bin/date +%s) + 3600 ));; *) exec /usr/bin/date \"$@\";; esac\n",
    )
    .unwrap();
    crate::harness::set_mode(&fakebin.path().join("date"), 0o755);
    let host = SshHost::start_with_config(&format!(
        "SetEnv DOCKER_HOST=unix://{} PATH={}:/usr/local/bin:/usr/bin:/bin\n",
        socket.display(),
        fakebin.path().display()
    ));
    let disk = SmallDisk::new("64m");
    let known = open_tempdir();
    let dir = app(FIXED, "");
    std::fs::write(
        dir.path().join("deploy.toml"),
        format!(
            "[app]\nname = \"shop\"\n\n[source]\nfetch_url = \"/nonexistent/shop.git\"\n\n{}\n[environments.test]\nhosts = [\"127.0.0.1\"]\npath = \"{}/app\"\nvars = {{ API_PORT = \"8000\" }}\n",
            host.ssh_toml(&host.known_hosts_file(known.path()), "strict"),
            disk.path().display()
        ),
    )
    .unwrap();
    let (f, summary) = doctor_json(dir.path(), &["test"], 1);
    let socket_finding = one(&f, "docker_socket", "fail");
    assert!(
        text(socket_finding, "message").contains(&format!(
            "{USER} cannot use the Docker socket (unix://{})",
            socket.display()
        )),
        "{socket_finding}"
    );
    assert!(
        text(socket_finding, "fix").contains(&format!("usermod -aG docker {USER}")),
        "{socket_finding}"
    );
    let small = one(&f, "disk", "warn");
    assert!(
        text(small, "message").starts_with("only 0.1 GB free on the app's path"),
        "{small}"
    );
    let clock = one(&f, "clock", "warn");
    // Read within one probe's round trip: an hour, give or take its length.
    let ahead = regex::Regex::new(r"^clock is (\d+)s ahead of this machine's").unwrap();
    let secs: i64 = ahead.captures(&text(clock, "message")).expect("clock is ...s ahead")[1]
        .parse()
        .unwrap();
    assert!((3590..=3610).contains(&secs), "{clock}");
    let fetch = one(&f, "fetch_url", "fail");
    assert!(
        text(fetch, "message").contains("the host cannot fetch /nonexistent/shop.git"),
        "{fetch}"
    );
    let path = one(&f, "path", "ok");
    assert!(text(path, "message").contains("can create it"), "{path}");
    assert_eq!(summary["hosts"][0]["outcome"], "failed", "{summary}");

    // The same, for people: the host's name on every host line.
    let human: Run = Test::new().args(["doctor", "test"]).current_dir(dir.path()).run();
    assert_eq!(human.code, 1);
    assert!(
        human
            .stdout
            .lines()
            .any(|l| l.starts_with(&format!("✗ [127.0.0.1] {USER} cannot use the Docker socket"))),
        "{}",
        human.stdout
    );
}
