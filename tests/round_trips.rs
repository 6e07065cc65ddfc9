//! Where a deploy's time goes on the hosts: the remote commands it makes are
//! counted (a change that adds round trips shows here), and checks read the
//! Docker Engine API through the SSH connection instead of starting a docker
//! or compose program for each attempt.

use crate::harness::app::Behaviour;
use crate::harness::deployment::{Deployment, Setup};

/// An http check through an SSH tunnel, an exec check in the api's
/// container (the seed's kind of check: wget from inside it) and a log check
/// of the lines since the release started.
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

[[verify.checks]]
name = "no refused connections"
type = "logs"
services = ["api", "worker"]
absent = "(?i)connection refused"
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
    // The first: compose is looked for afresh, and what was found kept in
    // `.deploy/` by a seventh command (the lock was taken while preflight
    // looked); the next deploys find it kept (else they would make seven too).
    let (run, summary) = d.deploy_json(&[], 0);
    assert_eq!(summary["hosts"][0]["remote_commands"], 7, "{}", run.stdout);
    assert!(d.app_path().join(".deploy/compose-detected").exists());
    d.app.commit(&Behaviour::version("B"));
    let (run, summary) = d.deploy_json(&[], 0);
    // preflight, lock + live state, stage, build, switch, record + prune + unlock;
    // the checks use a tunnel and the Engine API, not commands, and the log
    // check reads lines since the start the switch printed.
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
/// They are kept on the host (0600: the variables' values are in them), named
/// by what compose read: the next release of a changed commit with the same
/// compose files and variables starts no `compose config` (a Python program
/// on v1) at all; changed variables have compose resolve them again. A
/// checklist of a release the run did not build (`deploy verify`) takes them
/// as kept too; with none kept, it asks compose once and keeps them.
#[test]
fn compose_ps_of_the_release_just_built_starts_no_compose_on_the_host() {
    let (_bin, calls, sshd_extra) = crate::harness::noting_docker();
    let d = Deployment::new(
        Setup {
            compose: "v1",
            extra: format!("{CHECKS}\n[[verify.checks]]\nname = \"containers up\"\ntype = \"compose_ps\"\n"),
            sshd_extra,
            ..Setup::default()
        },
        &Behaviour::version("A"),
    );
    let configs = || {
        let said = std::fs::read_to_string(&calls).unwrap();
        let n = said
            .lines()
            .filter(|l| l.starts_with("compose") && l.split_whitespace().any(|w| w == "config"))
            .count();
        std::fs::write(&calls, "").unwrap();
        (n, said)
    };
    d.deploy(&[], 0);
    let (n, said) = configs();
    assert_eq!(n, 1, "the first release's services are resolved: {said}");
    // Kept in .deploy/services/ (0700), 0600, by a key of what compose read;
    // nothing of it in the release (a build context).
    let kept = || -> Vec<(String, u32)> {
        use std::os::unix::fs::PermissionsExt;
        let store = d.app_path().join(".deploy/services");
        assert_eq!(std::fs::metadata(&store).unwrap().permissions().mode() & 0o777, 0o700);
        let mut files: Vec<(String, u32)> = std::fs::read_dir(store)
            .unwrap()
            .map(Result::unwrap)
            .map(|e| {
                let mode = e.metadata().unwrap().permissions().mode() & 0o777;
                (e.file_name().to_string_lossy().into_owned(), mode)
            })
            .collect();
        files.sort();
        files
    };
    // What the live release holds beyond the commit's files and deploy's own.
    let in_release = || -> Vec<String> {
        let release = d.current().expect("a live release");
        let tracked = crate::harness::git(d.app.path(), &["ls-tree", "--name-only", "HEAD"]);
        let ours = [
            ".deploy-compose.yml",
            ".deploy-env",
            ".deploy-started",
            ".deploy-release.json",
        ];
        std::fs::read_dir(d.app_path().join("releases").join(release))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !tracked.lines().any(|t| t == n) && !ours.contains(&n.as_str()))
            .collect()
    };
    let first = kept();
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0].1, 0o600, "{first:?}");
    assert!(in_release().is_empty(), "{:?}", in_release());

    d.app.commit(&Behaviour::version("B"));
    let (run, summary) = d.deploy_json(&[], 0);
    let up = check(&summary, "containers up");
    assert_eq!(up["ok"], true, "{up}");
    for service in ["api:", "worker:", "redis:"] {
        assert!(up["detail"].as_str().unwrap().contains(service), "{service} in {up}");
    }
    // The same six commands as without the check, and no compose started for
    // the services: the code changed, not what compose reads.
    assert_eq!(summary["hosts"][0]["remote_commands"], 6, "{}", run.stdout);
    let (n, said) = configs();
    assert!(said.contains("up -d"), "the host ran the wrappers: {said}");
    assert_eq!(n, 0, "{said}");
    assert_eq!(kept(), first);
    assert!(in_release().is_empty(), "{:?}", in_release());

    // Another variable for compose: resolved again.
    let toml = d.app.path().join("deploy.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    assert!(text.contains("vars = { "), "{text}");
    std::fs::write(&toml, text.replace("vars = { ", "vars = { FEATURE = \"on\", ")).unwrap();
    d.app.commit(&Behaviour::version("C"));
    let (_, summary) = d.deploy_json(&[], 0);
    assert_eq!(check(&summary, "containers up")["ok"], true, "{summary}");
    let (n, said) = configs();
    assert_eq!(n, 1, "{said}");
    let now = kept();
    assert_eq!(now.len(), 2, "{now:?}");
    assert!(now.contains(&first[0]), "{now:?}");

    // A checklist of a release not built in the run (verify; a rollback's
    // the same way) takes the services as kept for what compose reads...
    let verify = || {
        let run = d.run(&["verify", "test", "--output", "json"]);
        assert_eq!(run.code, 0, "{}", run.all());
        let summary: serde_json::Value = serde_json::from_str(run.stdout.lines().last().unwrap()).unwrap();
        let up = check(&summary, "containers up");
        assert_eq!(up["ok"], true, "{up}");
        assert!(up["detail"].as_str().unwrap().contains("worker:"), "{up}");
        configs()
    };
    let (n, said) = verify();
    assert_eq!(n, 0, "{said}");
    assert_eq!(kept(), now);
    // ... and, with none kept, asks compose, which keeps them for the next one.
    std::fs::remove_dir_all(d.app_path().join(".deploy/services")).unwrap();
    let (n, said) = verify();
    assert_eq!(n, 1, "{said}");
    let again = kept();
    assert_eq!(again.len(), 1, "{again:?}");
    assert!(
        now.contains(&again[0]),
        "the same key as the build's: {again:?} {now:?}"
    );
    assert_eq!(verify().0, 0);
}

/// The content tags of a release each host builds itself are made through
/// the Engine API: the host's `docker` here notes every call and refuses to
/// tag, and the deploy still names every built image by its content. Its
/// switch finds those images there before `up`, and the services on them
/// after it, through the API too: no `docker image inspect`, no `docker ps`.
/// Without a `compose_ps` check, no `compose config` runs beside the build.
#[test]
fn content_tags_are_made_through_the_engine_api() {
    let (_bin, calls, sshd_extra) = crate::harness::noting_docker();
    let d = Deployment::new(
        Setup {
            extra: CHECKS.into(),
            sshd_extra,
            ..Setup::default()
        },
        // A version no other test builds (see `unchanged_images_keep_their_containers`).
        &Behaviour::version("api-tags-A"),
    );
    d.deploy(&[], 0);
    let first = d.current().expect("a live release");
    // Only the api changes.
    let mut slow = Behaviour::version("api-tags-A");
    slow.slow_start_secs = 1;
    d.app.commit(&slow);
    std::fs::write(&calls, "").unwrap();
    let run = d.deploy(&["-v"], 0);
    assert!(!run.all().contains("using the docker CLI"), "{}", run.all());
    let calls = std::fs::read_to_string(&calls).unwrap();
    assert!(
        calls.contains("compose") && calls.contains("build") && calls.contains("up -d"),
        "the host ran the wrapper: {calls}"
    );
    let cli = |prefixes: &[&str]| calls.lines().any(|l| prefixes.iter().any(|p| l.starts_with(p)));
    assert!(!cli(&["tag ", "image tag"]), "{calls}");
    assert!(!cli(&["image inspect", "inspect ", "ps ", "container ls"]), "{calls}");
    // No `compose_ps` check: the build resolves no services for one.
    assert!(
        !calls
            .lines()
            .any(|l| l.starts_with("compose") && l.split_whitespace().any(|w| w == "config")),
        "{calls}"
    );

    let live = d.current().expect("a live release");
    assert_ne!(live, first);
    let images = d.release_images(&live);
    assert!(
        !images.is_empty() && images.iter().all(|i| i.contains(":sha-")),
        "{images:?}"
    );
    // The api changed and the worker did not: a new tag for one, the same for the other.
    let before = d.release_images(&first);
    let named = |v: &[String], service: &str| v.iter().find(|i| i.contains(service)).cloned().unwrap();
    assert_ne!(named(&images, "-api:"), named(&before, "-api:"));
    assert_eq!(named(&images, "-worker:"), named(&before, "-worker:"));
    assert!(d.images().contains(&named(&images, "-api:")), "{:?}", d.images());
    assert_eq!(d.version().as_deref(), Some("api-tags-A"));
}

/// Pruning finds the build tags of the releases it removes through the
/// Engine API (no `docker image ls` on the host); the removal itself stays in
/// the host's command, which runs only while the lock is ours.
#[test]
fn pruning_lists_the_images_to_remove_through_the_engine_api() {
    let (_bin, calls, sshd_extra) = crate::harness::noting_docker();
    let d = Deployment::new(
        Setup {
            sshd_extra,
            app_extra: "keep_releases = 1".into(),
            ..Setup::default()
        },
        // Versions no other test builds (see `unchanged_images_keep_their_containers`).
        &Behaviour::version("prune-api-A"),
    );
    let mut ids = Vec::new();
    for v in ["prune-api-A", "prune-api-B", "prune-api-C"] {
        if v != "prune-api-A" {
            d.app.commit(&Behaviour::version(v));
        }
        std::fs::write(&calls, "").unwrap();
        let (run, _) = d.deploy_json(&["-v"], 0);
        ids.push(d.current().unwrap());
        assert!(!run.all().contains("the host lists them"), "{}", run.all());
        // Listed while the release was switched and verified, not after.
        assert!(!run.all().contains("listing them now"), "{}", run.all());
        let listed = run
            .stdout
            .lines()
            .filter(|l| {
                l.contains("to prune after a successful deploy, listed through the Engine API during the switch")
            })
            .collect::<Vec<_>>();
        match v {
            "prune-api-C" => assert!(
                listed.len() == 1 && listed[0].contains(&format!("release(s) {}", ids[0])),
                "{}",
                run.stdout
            ),
            _ => assert_eq!(listed, Vec::<&str>::new(), "nothing to prune yet"),
        }
    }
    // The newest and the one it replaced are kept: the first was pruned by the last deploy.
    assert_eq!(d.releases(), ids[1..].to_vec());
    let images = d.images();
    assert!(
        !images.iter().any(|i| i.ends_with(ids[0].as_str())),
        "images of pruned {} remain: {images:?}",
        ids[0]
    );
    // The api changed at each release: the first release's content tag went too.
    let api = |id: &str| d.release_images(id).into_iter().find(|i| i.contains("-api:")).unwrap();
    assert!(
        images.contains(&api(&ids[2])) && images.contains(&api(&ids[1])),
        "{images:?}"
    );
    assert_eq!(
        images.iter().filter(|i| i.contains("-api:sha-")).count(),
        2,
        "only the kept releases' api content tags: {images:?}"
    );
    let calls = std::fs::read_to_string(&calls).unwrap();
    let cli = |prefixes: &[&str]| calls.lines().any(|l| prefixes.iter().any(|p| l.starts_with(p)));
    assert!(cli(&["image rm"]), "the host removed them: {calls}");
    assert!(!cli(&["image ls", "images", "image list"]), "{calls}");
}

/// A deploy connects while it makes its plan (git2's start-up is tens of
/// milliseconds); one refused before it starts, for a dirty tree, closes the
/// connections it began, and the start is still the first thing it says.
#[test]
fn a_deploy_refused_before_it_starts_closes_the_connections_it_began() {
    let d = Deployment::new(Setup::default(), &Behaviour::version("A"));
    let (run, _) = d.deploy_json(&[], 0);
    let first: serde_json::Value = serde_json::from_str(run.stdout.lines().next().unwrap()).unwrap();
    assert_eq!(first["event"], "start", "{}", run.stdout);
    let live = d.current();
    assert!(live.is_some());

    // Logins as sshd logged them: the refused deploy did connect.
    let logins = || {
        std::fs::read_to_string(d.host.dir.path().join("sshd.log"))
            .unwrap_or_default()
            .matches("Accepted publickey")
            .count()
    };
    let before = logins();
    std::fs::write(d.app.path().join("api/www/version"), "dirty\n").unwrap();
    let run = d.deploy(&[], 1);
    assert!(run.all().contains("api/www/version"), "{}", run.all());
    assert_eq!(logins(), before + 1, "it connected while it made its plan");
    assert!(!d.host.ssh_clients_running(), "an ssh process is left");
    assert_eq!(d.current(), live);
    assert!(!d.locked());
}
