//! Where a deploy's time goes on the hosts: the remote commands it makes are
//! counted (a change that adds round trips shows here), and checks read the
//! Docker Engine API through the SSH connection instead of starting a docker
//! or compose program for each attempt.

use crate::harness::app::Behaviour;
use crate::harness::deployment::{Deployment, Setup};

/// An http check through an SSH tunnel and an exec check in the api's
/// container (the seed's kind of check: wget from inside it).
const CHECKS: &str = r#"
[verify]
timeout = "20s"

[[verify.checks]]
name = "api health"
type = "http"
url = "http://127.0.0.1:{API_PORT}/cgi-bin/health"

[[verify.checks]]
name = "api answers inside"
type = "exec"
service = "api"
command = ["wget", "-q", "-O", "-", "http://127.0.0.1:8000/version"]
"#;

/// The first host's check `name` in a JSON summary.
fn check(summary: &serde_json::Value, name: &str) -> serde_json::Value {
    let checks = summary["hosts"][0]["checks"].as_array().expect("checks");
    let found = checks.iter().find(|c| c["name"] == name);
    found.unwrap_or_else(|| panic!("no check {name} in {summary}")).clone()
}

#[test]
fn a_one_host_deploy_makes_six_remote_commands_on_compose_v1() {
    let d = Deployment::new(
        Setup {
            compose: "v1",
            extra: CHECKS.into(),
            ..Setup::default()
        },
        &Behaviour::version("A"),
    );
    d.deploy(&[], 0);
    d.app.commit(&Behaviour::version("B"));
    let (run, summary) = d.deploy_json(&[], 0);
    // preflight, lock + live state, stage, build, switch, record + prune + unlock;
    // the checks use a tunnel and the Engine API, not commands.
    assert_eq!(summary["hosts"][0]["remote_commands"], 6, "{}", run.stdout);
    let exec = check(&summary, "api answers inside");
    assert_eq!(exec["ok"], true, "{exec}");
    assert!(exec["detail"].as_str().unwrap().contains("exit 0: B"), "{exec}");

    // People see the count with -vv.
    d.app.commit(&Behaviour::version("C"));
    let run = d.deploy(&["-vv"], 0);
    assert!(run.stdout.contains("6 remote commands"), "{}", run.all());
}

#[test]
fn without_the_engine_api_the_checks_use_the_cli_and_say_so_with_v() {
    let d = Deployment::new(
        Setup {
            extra: CHECKS.into(),
            // The host forwards no unix socket: the Engine API cannot be reached.
            sshd_extra: "AllowStreamLocalForwarding no\n".into(),
            ..Setup::default()
        },
        &Behaviour::version("A"),
    );
    let run = d.deploy(&["-v"], 0);
    assert!(
        run.stderr.contains("the Docker Engine API is not reachable") && run.stderr.contains("using the docker CLI"),
        "{}",
        run.all()
    );
    let quiet = d.deploy(&[], 0);
    assert!(
        !quiet.all().contains("Engine API"),
        "said only with -v: {}",
        quiet.all()
    );
    d.app.commit(&Behaviour::version("B"));
    let (_, summary) = d.deploy_json(&[], 0);
    let checks = summary["hosts"][0]["checks"].as_array().unwrap();
    assert!(checks.iter().all(|c| c["ok"] == true), "{summary}");
    let commands = summary["hosts"][0]["remote_commands"].as_u64().unwrap();
    assert!(commands > 6, "the CLI takes commands: {commands}");
}

/// `compose_ps` with no compose program started at check time: the build
/// resolved the release's services beside itself (`compose config` in the
/// build's command) and the checklist of that release takes them from there.
#[test]
fn compose_ps_of_the_release_just_built_starts_no_compose_on_the_host() {
    let d = Deployment::new(
        Setup {
            compose: "v1",
            extra: format!("{CHECKS}\n[[verify.checks]]\nname = \"containers up\"\ntype = \"compose_ps\"\n"),
            ..Setup::default()
        },
        &Behaviour::version("A"),
    );
    d.deploy(&[], 0);
    d.app.commit(&Behaviour::version("B"));
    let (run, summary) = d.deploy_json(&[], 0);
    let up = check(&summary, "containers up");
    assert_eq!(up["ok"], true, "{up}");
    for service in ["api:", "worker:", "redis:"] {
        assert!(up["detail"].as_str().unwrap().contains(service), "{service} in {up}");
    }
    // The same six commands as without the check: `compose config` (a Python
    // program's start on v1) is no longer one of them.
    assert_eq!(summary["hosts"][0]["remote_commands"], 6, "{}", run.stdout);
    // Its output held the variables' values: the temporary file is gone.
    let release = d.current().expect("a live release");
    let left: Vec<String> = std::fs::read_dir(d.app_path().join("releases").join(&release))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".deploy-services"))
        .collect();
    assert!(left.is_empty(), "{left:?}");

    // A checklist of a release not built in the run (verify) asks compose.
    let run = d.run(&["verify", "test", "--output", "json"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let summary: serde_json::Value = serde_json::from_str(run.stdout.lines().last().unwrap()).unwrap();
    let up = check(&summary, "containers up");
    assert_eq!(up["ok"], true, "{up}");
    assert!(up["detail"].as_str().unwrap().contains("worker:"), "{up}");
}
