//! Build once for a fleet (`[build] on = "first"`): four hosts, three of them
//! with a Docker engine of their own that has never seen the app's base image
//! (so it could not build it). The first host builds; the others get its
//! images through a real registry, then streamed over SSH; every host runs the
//! very same image ids; a registry that does not answer stops the deploy
//! before any host switches.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use crate::harness::app::Behaviour;
use crate::harness::engines::{image_id, Registry};
use crate::harness::fleet::{checks, FleetSetup, TestFleet};
use crate::harness::images;
use crate::harness::sshd::free_port;

/// The deploy.toml the harness wrote, with `[build]` replaced by `build`.
fn set_build(fleet: &TestFleet, build: &str) {
    let path = fleet.app.path().join("deploy.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let kept = text.split("\n[build]\n").next().unwrap().to_string();
    std::fs::write(&path, format!("{kept}\n[build]\n{build}\n")).unwrap();
}

/// The hosts (by name) on which a build step ran.
fn builds(events: &[serde_json::Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["event"] == "step" && e["step"] == "build" && e["status"] == "started")
        .map(|e| e["host"].as_str().unwrap().to_string())
        .collect()
}

/// What each host was told it lacks ("gets 1 image(s) it lacks over SSH: api").
fn told(events: &[serde_json::Value], host: &str) -> String {
    events
        .iter()
        .filter(|e| e["event"] == "info" && e["host"] == host)
        .map(|e| e["message"].as_str().unwrap())
        .find(|m| m.contains("image"))
        .unwrap_or_default()
        .to_string()
}

/// Per host, the id of each image its live release's override names (in
/// the host's own engine).
fn live_image_ids(fleet: &TestFleet) -> Vec<Vec<(String, String)>> {
    (0..fleet.hosts.len())
        .map(|i| {
            let h = &fleet.hosts[i];
            let release = fleet.current(i).expect("a live release");
            let text = std::fs::read_to_string(
                h.ssh
                    .app_path()
                    .join("releases")
                    .join(&release)
                    .join(".deploy-compose.yml"),
            )
            .unwrap();
            text.lines()
                .filter_map(|l| l.trim().strip_prefix("image:"))
                .map(|name| {
                    let name = name.trim().trim_matches('"').to_string();
                    let docker = match &h.engine {
                        Some(e) => e.docker(),
                        None => Command::new("docker"),
                    };
                    let id = image_id(docker, &name).unwrap_or_else(|| panic!("host {i} has no image {name}"));
                    (name.split(':').next().unwrap().to_string(), id)
                })
                .collect()
        })
        .collect()
}

/// Every host's live release names the same image id for each service it
/// runs (host 3 runs the worker alone): the api's and the worker's ids.
fn same_ids_everywhere(fleet: &TestFleet) -> Vec<String> {
    let all = live_image_ids(fleet);
    let ids = |i: usize| all[i].iter().map(|(_, id)| id.clone()).collect::<Vec<_>>();
    assert_eq!(all[0].len(), 2, "api and worker are built: {all:?}");
    for i in 1..3 {
        assert_eq!(ids(i), ids(0), "host {i} runs other images than host 0: {all:?}");
    }
    assert_eq!(
        ids(3),
        vec![ids(0)[1].clone()],
        "host 3 names the worker's image alone: {all:?}"
    );
    ids(0)
}

#[test]
fn the_first_host_builds_and_the_others_run_its_images_from_a_registry_then_over_ssh() {
    let registry = Registry::start();
    let fleet = TestFleet::new(
        FleetSetup {
            hosts: 4,
            parallel: Some(4),
            own_engines: vec![1, 2, 3],
            // A host that runs no api gets no api image.
            services: vec![(3, vec!["worker", "redis"])],
            extra: format!(
                "{}\n[build]\non = \"first\"\nregistry = \"127.0.0.1:{}/fleet\"\n",
                checks("20s"),
                registry.port
            ),
            ..Default::default()
        },
        &Behaviour::version("A"),
    );
    for h in &fleet.hosts[1..] {
        let engine = h.engine.as_ref().unwrap();
        assert!(
            engine.image_id(images::BUSYBOX).is_none(),
            "the own engines lack the base image, so they cannot build"
        );
    }

    // The plan says who builds and how the images travel.
    let (_, plan) = fleet.deploy(&["--dry-run"], 0);
    let said = |host: Option<&str>| -> Vec<String> {
        plan.iter()
            .filter(|e| e["event"] == "info" && e["host"].as_str() == host)
            .map(|e| e["message"].as_str().unwrap().to_string())
            .collect()
    };
    let summary = plan.last().unwrap();
    let names: Vec<String> = (0..4)
        .map(|i| summary["hosts"][i]["host"].as_str().unwrap().to_string())
        .collect();
    let pushes = format!("push the images to 127.0.0.1:{}/fleet", registry.port);
    assert!(
        said(Some(&names[0]))
            .iter()
            .any(|m| m.starts_with("build, for every host: ") && m.contains(&pushes)),
        "{:?}",
        said(Some(&names[0]))
    );
    for name in &names[1..] {
        assert!(
            said(Some(name))
                .iter()
                .any(|m| m.starts_with("no build: the first host's images, pulled from 127.0.0.1:")),
            "{:?}",
            said(Some(name))
        );
    }

    // Through the registry: one build, three pulls, one set of ids.
    let (_, events) = fleet.deploy(&[], 0);
    assert_eq!(builds(&events), vec![names[0].clone()], "one build, on the first host");
    for name in &names[1..3] {
        assert!(
            told(&events, name).contains("pulls 2 image(s) it lacks from 127.0.0.1:"),
            "{name}: {}",
            told(&events, name)
        );
    }
    assert!(
        told(&events, &names[3]).contains("pulls 1 image(s) it lacks from 127.0.0.1:")
            && told(&events, &names[3]).ends_with(": worker"),
        "{}",
        told(&events, &names[3])
    );
    assert_eq!(fleet.versions()[..3], vec![Some("A".to_string()); 3]);
    assert_eq!(fleet.version(3), None, "host 3 runs no api");
    let first = same_ids_everywhere(&fleet);
    let release = fleet.current(0).unwrap();
    assert!(fleet.currents().iter().all(|c| c.as_deref() == Some(release.as_str())));
    let catalog = registry.get("/v2/_catalog");
    assert!(
        catalog.contains("fleet/api") && catalog.contains("fleet/worker"),
        "{catalog}"
    );
    let tags = registry.get("/v2/fleet/api/tags/list");
    let content_tag = format!("sha-{}", &first[0].trim_start_matches("sha256:")[..12]);
    assert!(
        tags.contains(&release) && tags.contains(&content_tag),
        "the release's tag and the content tag: {tags}"
    );
    for h in &fleet.hosts[1..] {
        let engine = h.engine.as_ref().unwrap();
        let kept: BTreeSet<String> = engine.images().into_iter().collect();
        assert!(
            !kept.iter().any(|i| i.starts_with("127.0.0.1:")),
            "the registry's names are taken off once the release names the images: {kept:?}"
        );
        assert!(engine.image_id(images::BUSYBOX).is_none(), "nothing was built there");
    }

    // Streamed over SSH (no registry): a change of the api alone sends only
    // the api's image; the worker's is the one every host already has.
    set_build(&fleet, "on = \"first\"");
    fleet.app.commit_file("api/www/extra.txt", "new\n", "api only");
    let (_, events) = fleet.deploy(&[], 0);
    assert_eq!(builds(&events), vec![names[0].clone()]);
    assert!(
        told(&events, &names[3]).contains("has every image the build made"),
        "the worker did not change: {}",
        told(&events, &names[3])
    );
    for name in &names[1..3] {
        assert!(
            told(&events, name).contains("gets 1 image(s) it lacks over SSH: api"),
            "{name}: {}",
            told(&events, name)
        );
        let sent: Vec<&serde_json::Value> = events
            .iter()
            .filter(|e| e["event"] == "transfer" && e["host"] == name.as_str())
            .collect();
        let last = sent.last().expect("the stream's progress is told");
        assert!(last["total_bytes"].as_u64().unwrap() > 0);
        assert_eq!(last["sent_bytes"], last["total_bytes"], "the whole stream was sent");
    }
    let second = same_ids_everywhere(&fleet);
    assert_ne!(second[0], first[0], "the api's image changed");
    assert_eq!(second[1], first[1], "the worker's did not");
    for i in 0..3 {
        let h = &fleet.hosts[i];
        assert_eq!(
            crate::harness::http_get_at(&h.api_bind, h.api_port, "/extra.txt", std::time::Duration::from_secs(5))
                .map(|(s, b)| (s, b.trim().to_string())),
            Some((200, "new".to_string())),
            "host {i} serves the new api"
        );
    }

    // Ctrl-C while the images are streamed to the hosts (a big api image, so
    // the stream lasts): exit 130, no host switched, the staged release gone
    // everywhere with the names it gave the loaded images, no `docker load`
    // left running, and this machine's saved stream removed.
    let big: String = {
        // 30 MB that gzip cannot shrink to nothing (a linear congruential stream as hex).
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        (0..15_000_000)
            .map(|_| {
                x = x
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                format!("{:02x}", (x >> 56) as u8)
            })
            .collect()
    };
    fleet.app.commit_file("api/www/big.txt", &big, "a big api image");
    let saved = || crate::harness::temp_entries("deploy-images-");
    let saved_before = saved();
    let live = fleet.currents();
    let builder = format!("127.0.0.1:{}", fleet.hosts[0].ssh.port);
    let (code, events, _) = crate::harness::interrupt_json_at(fleet.app.path(), &["test"], |e| {
        e["event"] == "step" && e["step"] == "images" && e["status"] == "started" && e["host"] != builder.as_str()
    });
    assert_eq!(code, Some(130), "{events:?}");
    let summary = events.last().unwrap();
    assert_eq!(summary["result"], "interrupted", "{summary}");
    let cut = summary["release"].as_str().unwrap().to_string();
    assert_eq!(fleet.currents(), live, "no host switched");
    for i in 0..4 {
        let h = &fleet.hosts[i];
        assert!(
            !h.ssh.app_path().join("releases").join(&cut).exists(),
            "host {i} keeps no staged {cut}"
        );
        if let Some(engine) = &h.engine {
            let names = engine.images();
            assert!(!names.iter().any(|n| n.contains(&cut)), "host {i}: {names:?}");
        }
    }
    // The hosts' logins' (other tests' engines load images as root). The
    // cleanup signals the load's process group and does not wait for it.
    let loads = || {
        let out = Command::new("pgrep")
            .args(["-u", crate::harness::sshd::USER, "-f", "docker load"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    crate::harness::wait_until(
        "the hosts' docker load to end",
        Duration::from_secs(10),
        loads,
        |left| left.is_empty(),
        |left| format!(": still running: {left}"),
    );
    assert_eq!(saved(), saved_before, "the saved stream is removed");
    let mut git = Command::new("git");
    crate::harness::sh(git.current_dir(fleet.app.path()).args(["rm", "-q", "api/www/big.txt"]));
    fleet
        .app
        .commit_file("api/www/extra.txt", "small again\n", "the api is small again");

    // Built on this machine (`on = "local"`), streamed to every host that
    // lacks the image; this machine keeps none of the release's names.
    set_build(&fleet, "on = \"local\"");
    fleet.app.commit_file("api/www/extra.txt", "local\n", "api, built here");
    let (_, events) = fleet.deploy(&[], 0);
    assert_eq!(builds(&events), vec!["local".to_string()], "no host builds");
    assert!(
        told(&events, &names[0]).contains("has every image"),
        "host 0 shares this machine's engine: {}",
        told(&events, &names[0])
    );
    let third = same_ids_everywhere(&fleet);
    assert_ne!(third[0], second[0]);
    // This machine's build cache is not the first host's: the worker's image
    // is the same id only if the build here reproduced it byte for byte
    // (file owners in the context differ between the two), and a host gets
    // exactly the images whose ids it lacks.
    let (lacks, worker_host) = match third[1] == second[1] {
        true => (
            "gets 1 image(s) it lacks over SSH: api",
            "has every image the build made",
        ),
        false => (
            "gets 2 image(s) it lacks over SSH: api, worker",
            "gets 1 image(s) it lacks over SSH: worker",
        ),
    };
    for name in &names[1..3] {
        assert!(told(&events, name).contains(lacks), "{name}: {}", told(&events, name));
    }
    assert!(
        told(&events, &names[3]).contains(worker_host),
        "{}",
        told(&events, &names[3])
    );
    let leftovers = Command::new("docker")
        .args(["image", "ls", "--format", "{{.Repository}}:{{.Tag}}"])
        .output()
        .unwrap();
    let build_project = format!("{}-build-", fleet.hosts[0].project);
    assert!(
        !String::from_utf8_lossy(&leftovers.stdout).contains(&build_project),
        "the local build's names are gone: {}",
        String::from_utf8_lossy(&leftovers.stdout)
    );

    // A build on this machine that fails: no host changes, and nothing of
    // the build is left here (its names, its temporary release directory).
    let dockerfile = fleet.app.path().join("api/Dockerfile");
    let good = std::fs::read_to_string(&dockerfile).unwrap();
    let build_dirs = || crate::harness::temp_entries("deploy-build-");
    let dirs_before = build_dirs();
    let live = fleet.currents();
    fleet
        .app
        .commit_file("api/Dockerfile", &format!("{good}RUN false\n"), "a build that fails");
    let (run, events) = fleet.deploy(&[], 1);
    let summary = events.last().unwrap();
    assert!(
        summary["error"]
            .as_str()
            .unwrap_or_default()
            .contains("no host was changed")
            && summary["hosts"][0]["error"]
                .as_str()
                .unwrap_or_default()
                .contains("the build on this machine failed"),
        "{}",
        run.all()
    );
    assert_eq!(fleet.currents(), live);
    assert_eq!(build_dirs(), dirs_before, "the temporary release directory is gone");
    let leftovers = Command::new("docker")
        .args(["image", "ls", "--format", "{{.Repository}}:{{.Tag}}"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&leftovers.stdout).contains(&build_project),
        "{}",
        String::from_utf8_lossy(&leftovers.stdout)
    );
    fleet.app.commit_file("api/Dockerfile", &good, "the build works again");

    // A registry that does not answer: the push fails, no host switches, the
    // staged release is gone everywhere.
    let before = fleet.currents();
    let dead = format!("127.0.0.1:{}/fleet", free_port());
    set_build(&fleet, &format!("on = \"first\"\nregistry = \"{dead}\""));
    fleet.app.commit_file("api/www/extra.txt", "newer\n", "api again");
    let (run, events) = fleet.deploy(&[], 1);
    let summary = events.last().unwrap();
    assert_eq!(summary["result"], "failed", "{}", run.all());
    assert!(
        summary["error"]
            .as_str()
            .unwrap_or_default()
            .contains("no host was changed"),
        "{summary}"
    );
    assert!(
        summary["hosts"][0]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("push to 127.0.0.1:"),
        "the push is what failed: {summary}"
    );
    assert_eq!(fleet.currents(), before);
    let names_left = Command::new("docker")
        .args(["image", "ls", "--format", "{{.Repository}}"])
        .output()
        .unwrap();
    // (Of this registry: other tests may use registries of their own.)
    assert!(
        !String::from_utf8_lossy(&names_left.stdout).contains(&dead),
        "the builder takes the registry's names off, pushed or not: {}",
        String::from_utf8_lossy(&names_left.stdout)
    );
    for i in 0..4 {
        let releases: Vec<String> = std::fs::read_dir(fleet.hosts[i].ssh.app_path().join("releases"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            releases.len(),
            3,
            "host {i} keeps only its three releases: {releases:?}"
        );
    }
}
