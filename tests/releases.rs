//! `deploy <ENV>` against a real sshd host and the Docker engine: releases are
//! staged, built, switched and recorded; rollback, pruning, locks, failures,
//! Ctrl-C and --dry-run.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::app::Behaviour;
use crate::harness::deployment::{Deployment, Setup};
use crate::harness::{git, http_get, wait_for};

/// Deploy A, deploy B, roll back to A without building, then `--to` B.
fn core_scenario(setup: Setup) {
    let d = Deployment::new(setup, &Behaviour::version("A"));
    d.deploy(&[], 0);
    d.wait_version("A");
    let first = d.current().expect("current points at the first release");

    d.app.commit(&Behaviour::version("B"));
    d.deploy(&[], 0);
    d.wait_version("B");
    let second = d.current().unwrap();
    assert_ne!(first, second);
    assert_eq!(d.releases(), vec![first.clone(), second.clone()]);
    let history = d.history();
    assert_eq!(history.len(), 2, "{history:?}");
    assert_eq!(history[1]["release"], second.as_str());
    assert_eq!(history[1]["outcome"], "deployed");
    assert_eq!(history[1]["from"], first.as_str());

    // Rollback uses the images kept for A: nothing is built.
    let images_before = d.images();
    let rollback = d.run(&["rollback", "test"]);
    assert_eq!(rollback.code, 0, "{}", rollback.all());
    d.wait_version("A");
    assert_eq!(d.current().as_deref(), Some(first.as_str()));
    assert_eq!(d.images(), images_before, "rollback must not build or tag images");
    let last = d.history().pop().unwrap();
    assert_eq!(last["outcome"], "rollback");
    assert_eq!(last["from"], second.as_str());
    assert_eq!(last["to"], first.as_str());

    // --to reaches any kept release.
    let to = d.run(&["rollback", "test", "--to", &second]);
    assert_eq!(to.code, 0, "{}", to.all());
    d.wait_version("B");
    assert_eq!(d.current().as_deref(), Some(second.as_str()));

    // `releases` lists both, the live one marked.
    let releases = d.run(&["releases", "test"]);
    assert_eq!(releases.code, 0, "{}", releases.all());
    assert!(releases.stdout.contains(&format!("* {second}")), "{}", releases.stdout);
    assert!(releases.stdout.contains(&first), "{}", releases.stdout);
}

#[test]
fn core_scenario_git_strategy_compose_v2() {
    core_scenario(Setup {
        strategy: "git",
        compose: "v2",
        ..Setup::default()
    });
}

#[test]
fn core_scenario_upload_strategy_compose_v1() {
    core_scenario(Setup {
        strategy: "upload",
        compose: "v1",
        ..Setup::default()
    });
}

#[test]
fn the_old_release_serves_while_the_new_one_builds() {
    let d = Deployment::new(Setup::default(), &Behaviour::version("A"));
    d.deploy(&[], 0);
    // Nothing waited for A to listen (no checks): the probes below start once it does.
    d.wait_version("A");
    let mut b = Behaviour::version("B");
    b.slow_build_secs = 4;
    d.app.commit(&b);

    let done = Arc::new(AtomicBool::new(false));
    let seen: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
    let probe = {
        let (done, seen, port) = (done.clone(), seen.clone(), d.api_port);
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                let answer = http_get(port, "/version")
                    .filter(|(s, _)| *s == 200)
                    .map(|(_, b)| b.trim().to_string());
                seen.lock().unwrap().push(answer);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    d.deploy(&[], 0);
    done.store(true, Ordering::SeqCst);
    probe.join().unwrap();
    let seen = seen.lock().unwrap();
    let until_switch: Vec<&Option<String>> = seen.iter().take_while(|a| a.as_deref() != Some("B")).collect();
    // The build alone takes 4 s, so the probe must have answered many times before the switch.
    assert!(
        until_switch.len() >= 10,
        "only {} probes before the switch",
        until_switch.len()
    );
    let first_failure = until_switch.iter().position(|a| a.as_deref() != Some("A"));
    // The recreate during the switch itself may drop a probe; before it none may fail.
    if let Some(i) = first_failure {
        assert!(
            i + 10 >= until_switch.len(),
            "probe {i} of {} failed before the switch: {:?}",
            until_switch.len(),
            until_switch[i]
        );
    }
    d.wait_version("B");
}

#[test]
fn keep_releases_prunes_old_release_dirs_and_their_images() {
    let d = Deployment::new(
        Setup {
            app_extra: "keep_releases = 2".into(),
            ..Setup::default()
        },
        &Behaviour::version("A"),
    );
    let mut ids = Vec::new();
    for v in ["A", "B", "C", "D"] {
        if v != "A" {
            d.app.commit(&Behaviour::version(v));
        }
        d.deploy(&[], 0);
        ids.push(d.current().unwrap());
    }
    assert_eq!(d.releases(), ids[2..].to_vec());
    let images = d.images();
    for old in &ids[..2] {
        assert!(
            !images.iter().any(|i| i.ends_with(old.as_str())),
            "images of pruned {old} remain: {images:?}"
        );
    }
    for kept in &ids[2..] {
        assert!(
            images.iter().any(|i| i.ends_with(kept.as_str())),
            "images of kept {kept} are gone: {images:?}"
        );
        for named in d.release_images(kept) {
            assert!(images.contains(&named), "{named} of kept {kept} is gone: {images:?}");
        }
    }
    // Nothing else is left: no content tag only a pruned release named.
    for image in &images {
        assert!(
            ids[2..]
                .iter()
                .any(|k| image.ends_with(k.as_str()) || d.release_images(k).contains(image)),
            "{image} belongs to no kept release: {images:?}"
        );
    }
    d.wait_version("D");
}

/// Images are named by their content in each release: a release whose image of a
/// service did not change leaves that service's container running, and pruning
/// an old release never removes an image a kept release still names.
#[test]
fn unchanged_images_keep_their_containers_and_pruning_spares_shared_ones() {
    // A version no other test builds: the engine is shared, and twin builds
    // running at once can leave two images for one build step in its cache.
    unchanged_images_keep_their_containers("v2", "unchanged-A");
}

/// Compose v1 counts a built service's build directory in its config hash;
/// each release's directory is its own, yet unchanged services are kept.
#[test]
fn unchanged_images_keep_their_containers_on_compose_v1_too() {
    unchanged_images_keep_their_containers("v1", "unchanged-v1-A");
}

fn unchanged_images_keep_their_containers(compose: &'static str, version: &str) {
    let d = Deployment::new(
        Setup {
            compose,
            app_extra: "keep_releases = 2".into(),
            ..Setup::default()
        },
        &Behaviour::version(version),
    );
    d.deploy(&[], 0);
    let services = ["api", "worker", "redis"];
    let ids = || services.map(|s| d.container_of(s).unwrap_or_else(|| panic!("{s} runs")));
    let first = ids();
    let mut releases = vec![d.current().unwrap()];
    // The same commit twice more: new releases, the very same containers; the
    // third deploy prunes the first release, whose images the others share.
    for _ in 0..2 {
        let (run, _) = d.deploy_json(&[], 0);
        releases.push(d.current().unwrap());
        assert_eq!(
            ids(),
            first,
            "an unchanged release recreated containers:\n{}",
            run.all()
        );
        let events: Vec<serde_json::Value> = run.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        for e in &events {
            assert!(!(e["step"] == "prune" && e["status"] == "failed"), "prune failed: {e}");
        }
        // Nothing that goes into an image changed: no build ran.
        assert!(
            events
                .iter()
                .any(|e| e["event"] == "info" && e["message"].as_str().unwrap_or("").starts_with("nothing built")),
            "{}",
            run.stdout
        );
    }
    assert_eq!(d.releases(), releases[1..].to_vec());
    let kept = d.release_images(&releases[2]);
    assert_eq!(kept.len(), 2, "api and worker are built: {kept:?}");
    assert_eq!(kept, d.release_images(&releases[1]), "same content, same names");
    let images = d.images();
    for image in &kept {
        assert!(
            images.contains(image),
            "{image} was pruned though kept releases name it: {images:?}"
        );
    }
    assert!(
        !images.iter().any(|i| i.ends_with(releases[0].as_str())),
        "the pruned release's own tags remain: {images:?}"
    );
    assert_eq!(d.version().as_deref(), Some(version));

    // Only the api changes: only the api is rebuilt and replaced.
    let mut slow = Behaviour::version(version);
    slow.slow_start_secs = 1;
    d.app.commit(&slow);
    let (run, _) = d.deploy_json(&[], 0);
    assert!(!run.stdout.contains("nothing built"), "{}", run.stdout);
    let now = ids();
    assert_ne!(now[0], first[0], "the changed api was not replaced");
    assert_eq!(now[1..], first[1..], "the unchanged worker and redis were replaced");
    // And back: the api again, from the kept images, nothing else.
    let rollback = d.run(&["rollback", "test"]);
    assert_eq!(rollback.code, 0, "{}", rollback.all());
    let back = ids();
    assert_ne!(back[0], now[0]);
    assert_eq!(back[1..], first[1..]);
    d.wait_version(version);
}

#[test]
fn a_failing_build_or_an_unfetchable_commit_changes_nothing_live() {
    let d = Deployment::new(Setup::default(), &Behaviour::version("A"));
    d.deploy(&[], 0);
    let live = d.current().unwrap();
    let containers = d.containers();

    // A build that fails.
    std::fs::write(
        d.app.path().join("api/Dockerfile"),
        "FROM deploy-test/busybox:1\nRUN exit 3\n",
    )
    .unwrap();
    git(d.app.path(), &["commit", "-qam", "broken build"]);
    let run = d.deploy(&[], 1);
    assert!(run.all().contains("build"), "{}", run.all());
    assert_eq!(d.current().as_deref(), Some(live.as_str()));
    assert_eq!(d.containers(), containers, "live containers were touched");
    assert_eq!(d.version().as_deref(), Some("A"));
    assert_eq!(d.releases(), vec![live.clone()], "the failed release is removed");
    assert!(!d.locked());

    // A commit the host cannot fetch (never pushed).
    d.app.commit(&Behaviour::version("C"));
    let run = d.deploy(&["--no-push"], 1);
    assert!(run.all().contains("is not in"), "{}", run.all());
    assert_eq!(d.current().as_deref(), Some(live.as_str()));
    assert_eq!(d.containers(), containers);
    assert_eq!(d.version().as_deref(), Some("A"));
    assert_eq!(d.history().last().unwrap()["outcome"], "failed");
}

#[test]
fn a_second_deploy_meets_the_lock_and_expired_locks_are_taken_over() {
    let d = Deployment::new(Setup::default(), &Behaviour::version("A"));
    d.deploy(&[], 0);
    let mut b = Behaviour::version("B");
    b.slow_build_secs = 3;
    d.app.commit(&b);

    let first = Command::new(assert_cmd::cargo::cargo_bin("deploy"))
        .args(["test", "--message", "first deploy"])
        .current_dir(d.app.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the first deploy to take the lock", Duration::from_secs(30), || {
        d.locked()
    });
    let second = d.deploy(&[], 5);
    assert!(
        second.all().contains("first deploy"),
        "the holder is named: {}",
        second.all()
    );
    assert!(second.all().contains("locked by"), "{}", second.all());
    let out = first.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!d.locked(), "the lock is released");

    // An expired lock (its holder died) is taken over, with a warning.
    let lock = d.app_path().join(".deploy/lock");
    std::fs::create_dir_all(&lock).unwrap();
    std::fs::write(
        lock.join("info.json"),
        r#"{"since":1,"expires":2,"token":"x","kind":"deploy","holder":"ghost@gone","message":"crashed"}"#,
    )
    .unwrap();
    let run = d.deploy(&[], 0);
    assert!(
        run.all().contains("took over an expired lock held by ghost@gone"),
        "{}",
        run.all()
    );

    // A lock taken by hand blocks deploys until it is broken with --force.
    let held = d.run(&["lock", "test", "acquire", "--message", "maintenance"]);
    assert_eq!(held.code, 0, "{}", held.all());
    let status = d.run(&["lock", "test", "status"]);
    assert!(status.stdout.contains("maintenance"), "{}", status.all());
    d.deploy(&[], 5);
    std::fs::write(
        lock.join("info.json"),
        std::fs::read_to_string(lock.join("info.json"))
            .unwrap()
            .replace("manual:", "manual:someone-else-"),
    )
    .unwrap();
    let refused = d.run(&["lock", "test", "release"]);
    assert_eq!(
        refused.code,
        5,
        "another's lock is not released without --force: {}",
        refused.all()
    );
    let forced = d.run(&["lock", "test", "release", "--force"]);
    assert_eq!(forced.code, 0, "{}", forced.all());
    assert!(!d.locked());
    d.deploy(&[], 0);
}

#[test]
fn ctrl_c_during_the_build_leaves_the_old_release_serving() {
    let d = Deployment::new(Setup::default(), &Behaviour::version("A"));
    d.deploy(&[], 0);
    let live = d.current().unwrap();
    let mut b = Behaviour::version("B");
    b.slow_build_secs = 30;
    d.app.commit(&b);

    let child = Command::new(assert_cmd::cargo::cargo_bin("deploy"))
        .arg("test")
        .current_dir(d.app.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid_files = || {
        std::fs::read_dir(d.app_path().join(".deploy"))
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .any(|e| e.file_name().to_string_lossy().starts_with("build-"))
            })
            .unwrap_or(false)
    };
    wait_for("the build to start", Duration::from_secs(30), pid_files);
    std::thread::sleep(Duration::from_millis(500));
    let sent = Instant::now();
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(130), "{all}");
    assert!(
        sent.elapsed() < Duration::from_secs(20),
        "stopping took {:?}",
        sent.elapsed()
    );
    assert_eq!(d.current().as_deref(), Some(live.as_str()));
    assert_eq!(d.version().as_deref(), Some("A"));
    assert!(!d.locked(), "the lock is released");
    assert_eq!(d.releases(), vec![live], "the half-staged release is removed");
    assert!(!d.host.ssh_clients_running(), "an ssh process is left");
    assert!(!pid_files(), "the build is stopped");
}

#[test]
fn dry_run_changes_nothing() {
    let d = Deployment::new(Setup::default(), &Behaviour::version("A"));
    d.deploy(&[], 0);
    d.app.commit(&Behaviour::version("B"));
    let tree = || super::cli_check_support::tree(&d.app_path());
    let (before, containers, remote_head) = (tree(), d.containers(), git(&d.remote.path(), &["rev-parse", "main"]));
    let run = d.deploy(&["--dry-run"], 0);
    assert!(run.all().contains("plan: deploy commit"), "{}", run.all());
    assert!(run.all().contains("switch:"), "{}", run.all());
    assert_eq!(tree(), before, "the host's tree changed");
    assert_eq!(d.containers(), containers);
    assert_eq!(
        git(&d.remote.path(), &["rev-parse", "main"]),
        remote_head,
        "--dry-run pushed"
    );
    assert_eq!(d.version().as_deref(), Some("A"));
}

#[test]
fn status_logs_and_exec_look_at_the_live_release() {
    let mut a = Behaviour::version("A");
    a.worker_log = Some("hello from the worker".into());
    let d = Deployment::new(Setup::default(), &a);
    d.deploy(&[], 0);
    let status = d.run(&["status", "test"]);
    assert_eq!(status.code, 0, "{}", status.all());
    assert!(status.stdout.contains(&d.current().unwrap()), "{}", status.stdout);
    assert!(
        status.stdout.contains("api") && status.stdout.contains("running"),
        "{}",
        status.stdout
    );
    assert!(status.stdout.contains("lock: free"), "{}", status.stdout);

    wait_for("the worker's line in the logs", Duration::from_secs(20), || {
        d.run(&["logs", "test", "worker", "-n", "20"])
            .stdout
            .contains("hello from the worker")
    });

    let exec = d.run(&["exec", "test", "--service", "api", "--", "cat", "/www/version"]);
    assert_eq!(exec.code, 0, "{}", exec.all());
    assert!(exec.stdout.contains("A"), "{}", exec.stdout);
    let on_host = d.run(&["exec", "test", "--", "sh", "-c", "exit 7"]);
    assert_eq!(on_host.code, 1, "{}", on_host.all());
}

#[test]
fn setup_uploads_shared_files_that_each_release_links() {
    let d = Deployment::new(
        Setup {
            app_extra: "shared_files = [\".env\"]".into(),
            ..Setup::default()
        },
        &Behaviour::version("A"),
    );
    // Before setup the host has no .env: the deploy stops at staging and changes nothing.
    let run = d.deploy(&[], 1);
    assert!(run.all().contains("shared file"), "{}", run.all());
    assert!(d.current().is_none());

    std::fs::write(d.app.path().join(".env"), "DATABASE_URL=postgres://example\n").unwrap();
    let setup = d.run(&["setup", "test"]);
    assert_eq!(setup.code, 0, "{}", setup.all());
    let shared = d.app_path().join("shared/.env");
    assert_eq!(
        std::fs::read_to_string(&shared).unwrap(),
        "DATABASE_URL=postgres://example\n"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&shared).unwrap().permissions().mode() & 0o777, 0o600);

    d.deploy(&[], 0);
    let link = d.app_path().join("releases").join(d.current().unwrap()).join(".env");
    assert_eq!(std::fs::read_link(&link).unwrap(), shared);
}

#[test]
fn hooks_run_around_the_deploy_and_a_failing_pre_deploy_changes_nothing() {
    let d = Deployment::new(
        Setup {
            extra: "[hooks]\npre_deploy = \"echo checking $DEPLOY_COMMIT; test ! -e stop\"\npost_deploy = \"echo \\\"$DEPLOY_ENV $DEPLOY_RESULT $DEPLOY_RELEASE\\\" > post.txt\"\n".into(),
            ..Setup::default()
        },
        &Behaviour::version("A"),
    );
    std::fs::write(d.app.path().join("stop"), "").unwrap();
    let run = d.deploy(&[], 1);
    assert!(run.all().contains("hook pre_deploy exited with 1"), "{}", run.all());
    assert!(!d.app_path().join("releases").exists(), "a host was touched");
    assert!(!d.locked());

    std::fs::remove_file(d.app.path().join("stop")).unwrap();
    let run = d.deploy(&[], 0);
    assert!(run.all().contains("checking "), "{}", run.all());
    let post = std::fs::read_to_string(d.app.path().join("post.txt")).unwrap();
    assert_eq!(post.trim(), format!("test ok {}", d.current().unwrap()));
}

#[test]
fn a_same_size_change_committed_in_the_same_second_is_built_not_taken_from_the_cache() {
    let d = Deployment::new(Setup::default(), &Behaviour::version("A"));
    d.deploy(&[], 0);
    d.wait_version("A");
    // B changes one byte of one file and is committed with A's time: every
    // file `git archive` gives has the same size and mtime as A's.
    let date = git(d.app.path(), &["log", "-1", "--format=%cI"]).trim().to_string();
    std::fs::write(d.app.path().join("api/www/version"), "B\n").unwrap();
    let status = Command::new("git")
        .args(["commit", "-qam", "B: same size, same second"])
        .env("GIT_COMMITTER_DATE", &date)
        .env("GIT_AUTHOR_DATE", &date)
        .current_dir(d.app.path())
        .status()
        .unwrap();
    assert!(status.success());
    d.deploy(&[], 0);
    d.wait_version("B");
}
