//! `engine = "swarm"` on a real single-node Swarm (a dockerd of the test's
//! own made a swarm manager, never this machine's engine: see
//! `harness::swarm`): the app deployed as a stack
//! over SSH from its manager, changed, a bad release rolled back by the
//! checklist, `deploy rollback`, each verified by the checklist (the stack's
//! services converged, the api's health through the published port, Redis,
//! an exec in the api's task container, a log line of the worker's task), and
//! status and logs of the swarm environment. Then a swarm of two nodes (the
//! second a dockerd of its own in a network namespace): refused without a
//! registry, deployed through one, every node running the manager's images.

use std::process::Command;

use crate::harness::app::{Behaviour, Health};
use crate::harness::deployment::{Deployment, Setup};
use crate::harness::engines::Registry;
use crate::harness::sshd::{free_port, SshHost};
use crate::harness::swarm::{exclusive, RegistryImages, Swarm, Worker};
use crate::harness::Netns;
use crate::harness::Test;

/// The app as a stack file: ports published in host mode (the routing mesh
/// does not answer on this machine), no `depends_on` (a stack has none), and
/// services found by DNS round robin: a service's virtual IP (IPVS) does not
/// route on this machine's kernel, task addresses on the overlay do.
const STACK: &str = r#"services:
  api:
    build: ./api
    init: true
    ports:
      - target: 8000
        published: ${API_PORT}
        mode: host
    environment:
      FAIL_HEALTH: "0"
    deploy:
      endpoint_mode: dnsrr
  worker:
    build: ./worker
    init: true
  redis:
    image: deploy-test/redis:1
    init: true
    command: ["redis-server", "--save", "", "--appendonly", "no", "--protected-mode", "no"]
    ports:
      - target: 6379
        published: ${REDIS_PORT}
        mode: host
    deploy:
      endpoint_mode: dnsrr
"#;

const CHECKS: &str = r#"
[verify]
timeout = "10s"
interval = "100ms"
max_interval = "500ms"

[[verify.checks]]
name = "services converged"
type = "compose_ps"

[[verify.checks]]
name = "api health"
type = "http"
url = "http://127.0.0.1:{API_PORT}/cgi-bin/health"

[[verify.checks]]
name = "redis"
type = "redis"
address = "127.0.0.1:{REDIS_PORT}"

[[verify.checks]]
name = "api reaches redis"
type = "exec"
service = "api"
command = ["sh", "-c", "echo PING | nc -w 2 redis 6379 | grep -q PONG"]

[[verify.checks]]
name = "worker started"
type = "logs"
services = ["worker"]
present = "^worker .* started$"
"#;

/// The image each of the stack's services runs (`service` → image, digest cut).
fn service_images(swarm: &Swarm, stack: &str) -> Vec<(String, String)> {
    let out = swarm
        .docker()
        .args(["service", "ls", "--filter"])
        .arg(format!("label=com.docker.stack.namespace={stack}"))
        .args(["--format", "{{.Name}} {{.Image}}"])
        .output()
        .unwrap();
    let mut v: Vec<(String, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(n, i)| (n.to_string(), i.split('@').next().unwrap().to_string()))
        .collect();
    v.sort();
    v
}

fn check<'a>(host: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    host["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("check {name} in {host}"))
}

#[test]
fn a_stack_is_deployed_changed_rolled_back_by_its_checks_and_on_request() {
    let _one_at_a_time = exclusive();
    let swarm = Swarm::start("127.0.0.1");
    let d = Deployment::new(
        Setup {
            app_extra: "compose_files = [\"stack.yml\"]\nzero_downtime = [\"worker\"]\n".into(),
            extra: CHECKS.into(),
            sshd_extra: swarm.engine.sshd_config(),
            ..Default::default()
        },
        &Behaviour::version("v1"),
    );
    // The names a local build's push leaves here, if any.
    let _pushed = RegistryImages("swarm/");
    d.app.commit_file("stack.yml", STACK, "the stack file");
    let path = d.app.path().join("deploy.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    // An unreachable manager listed first: the swarm is reached through the next.
    let dead = free_port();
    let text = text
        .replace("[environments.test]\n", "[environments.test]\nengine = \"swarm\"\n")
        .replacen(
            "hosts = [\"127.0.0.1\"]",
            &format!("hosts = [{{ address = \"127.0.0.1\", port = {dead} }}, \"127.0.0.1\"]"),
            1,
        );
    std::fs::write(&path, text).unwrap();

    // First deploy: the stack runs the release's images, every check passes.
    let (run, s) = d.deploy_json(&[], 0);
    let first = s["release"].as_str().unwrap().to_string();
    assert_eq!(d.current().as_deref(), Some(first.as_str()));
    assert_eq!(d.version().as_deref(), Some("v1"), "{}", run.all());
    let hosts = s["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 1, "one manager speaks for the swarm: {s}");
    assert!(
        run.stdout.contains("left aside"),
        "the dead manager is named:\n{}",
        run.all()
    );
    for name in [
        "services converged",
        "api health",
        "redis",
        "api reaches redis",
        "worker started",
    ] {
        assert_eq!(check(&hosts[0], name)["ok"], true, "{name}: {}", hosts[0]);
    }
    let images_first = service_images(&swarm, &d.project);
    // app.zero_downtime: Swarm starts the worker's new task before it stops the old one.
    let order = swarm
        .docker()
        .args(["service", "inspect", "--format", "{{.Spec.UpdateConfig.Order}}"])
        .arg(format!("{}_worker", d.project))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&order.stdout).trim(), "start-first");
    let api = format!("{}_api", d.project);
    let worker = format!("{}_worker", d.project);
    assert_eq!(
        images_first.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        [api.as_str(), &format!("{}_redis", d.project), worker.as_str()]
    );
    let release_images = d.release_images(&first);
    for (service, image) in &images_first {
        if service != &format!("{}_redis", d.project) {
            assert!(
                release_images.contains(image),
                "{service} runs {image}, the release names {release_images:?}"
            );
        }
    }

    // A change: only the stack's services move to the new release's images.
    d.app.commit(&Behaviour::version("v2"));
    let (run, s) = d.deploy_json(&[], 0);
    let second = s["release"].as_str().unwrap().to_string();
    assert_eq!(d.version().as_deref(), Some("v2"), "{}", run.all());
    let images_second = service_images(&swarm, &d.project);
    assert_ne!(images_first, images_second);
    assert!(
        d.release_images(&second).contains(&images_second[0].1),
        "{images_second:?}"
    );

    // A release whose api answers 500: its checks fail, the stack is put back
    // on the previous release, verified (exit 3).
    let mut bad = Behaviour::version("v3");
    bad.health = Health::Fails;
    d.app.commit(&bad);
    let (run, s) = d.deploy_json(&[], 3);
    assert_eq!(s["result"], "rolled_back", "{}", run.all());
    let host = &s["hosts"][0];
    assert_eq!(check(host, "api health")["ok"], false, "{host}");
    assert!(
        host["evidence"]["containers"].as_array().is_some_and(|c| !c.is_empty()),
        "the stack's tasks as evidence: {host}"
    );
    let after = host["rollback_checks"].as_array().unwrap();
    assert!(!after.is_empty() && after.iter().all(|c| c["ok"] == true), "{host}");
    assert_eq!(d.current().as_deref(), Some(second.as_str()));
    assert_eq!(d.version().as_deref(), Some("v2"));
    assert_eq!(service_images(&swarm, &d.project), images_second);

    // A release whose api exits at once: the stack does not converge, the
    // failed task is the evidence, and the stack is put back (exit 3).
    d.app
        .commit_file("api/start.sh", "echo api crashing\nexit 1\n", "an api that exits");
    let (run, s) = d.deploy_json(&[], 3);
    assert_eq!(s["result"], "rolled_back", "{}", run.all());
    let host = &s["hosts"][0];
    let error = host["error"].as_str().unwrap_or_default();
    assert!(error.contains("did not converge") && error.contains("api"), "{host}");
    assert!(
        host["evidence"]["logs"]["api"]
            .as_array()
            .is_some_and(|l| l.iter().any(|l| l.as_str().unwrap().contains("api crashing"))),
        "the failing task's log is evidence: {host}"
    );
    assert_eq!(d.current().as_deref(), Some(second.as_str()));
    assert_eq!(d.version().as_deref(), Some("v2"));
    assert_eq!(service_images(&swarm, &d.project), images_second);

    // `deploy rollback`: back to the first release, verified.
    let run = d.run(&["rollback", "test"]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(d.current().as_deref(), Some(first.as_str()));
    assert_eq!(d.version().as_deref(), Some("v1"));
    assert_eq!(service_images(&swarm, &d.project), images_first);

    // verify, status and logs of a swarm environment.
    let run = d.run(&["verify", "test"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let run = d.run(&["status", "test", "--output", "json"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let status: Vec<serde_json::Value> = run.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let data = status.iter().find(|e| e["kind"] == "status").expect("status data");
    assert_eq!(data["data"]["current"], first.as_str());
    let running: Vec<&str> = data["data"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["state"] == "running")
        .map(|c| c["service"].as_str().unwrap())
        .collect();
    for service in ["api", "worker", "redis"] {
        assert!(running.contains(&service), "{service} runs: {data}");
    }
    let run = d.run(&["logs", "test", "worker", "-n", "5"]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(run.stdout.contains("worker v1 started"), "{}", run.all());

    // With a registry that asks for credentials (what a swarm of more than
    // one node needs): this machine builds (`on = "local"`) and pushes, the
    // manager pulls the images, then pushes them by content and the stack
    // names them there; the credentials come from a ${VAR} and are never
    // printed, and no `docker login` is left behind.
    let password = "s3cret-Registry-pw";
    let registry = Registry::start_with_auth("deployer", password);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        format!(
            "{text}\n[build]\non = \"local\"\nregistry = \"127.0.0.1:{}/swarm\"\nregistry_user = \"deployer\"\nregistry_password = \"${{DEPLOY_TEST_REGISTRY_PASSWORD}}\"\n",
            registry.port
        ),
    )
    .unwrap();
    let logins_before = std::fs::read_to_string("/root/.docker/config.json").unwrap_or_default();
    d.app.commit(&Behaviour::version("v5"));
    // Without the password the registry refuses the push: nothing changes.
    let run = Test::new()
        .args(["test", "-v"])
        .current_dir(d.app.path())
        .env("DEPLOY_TEST_REGISTRY_PASSWORD", "wrong")
        .run();
    assert_eq!(run.code, 1, "{}", run.all());
    assert_eq!(d.version().as_deref(), Some("v1"), "{}", run.all());
    let run = Test::new()
        .args(["test", "--output", "json", "-vv"])
        .current_dir(d.app.path())
        .env("DEPLOY_TEST_REGISTRY_PASSWORD", password)
        .run();
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        !run.all().contains(password),
        "the password is never printed:\n{}",
        run.all()
    );
    let s: serde_json::Value = serde_json::from_str(run.stdout.lines().last().unwrap()).unwrap();
    let fifth = s["release"].as_str().unwrap().to_string();
    assert_eq!(d.version().as_deref(), Some("v5"), "{}", run.all());
    let prefix = format!("127.0.0.1:{}/swarm/", registry.port);
    for (service, image) in service_images(&swarm, &d.project) {
        if service.ends_with("_api") || service.ends_with("_worker") {
            assert!(
                image.starts_with(&prefix) && image.contains(":sha-"),
                "{service} runs {image}"
            );
            let (_, tag) = image.rsplit_once(':').unwrap();
            let repo = image
                .strip_prefix("127.0.0.1:")
                .unwrap()
                .split_once('/')
                .unwrap()
                .1
                .rsplit_once(':')
                .unwrap()
                .0;
            assert!(registry.has_tag(repo, tag), "{repo}:{tag} in {:?}", registry.tags(repo));
        }
    }
    assert!(
        registry.has_tag("swarm/api", &fifth),
        "the release's tag too: {:?}",
        registry.tags("swarm/api")
    );
    assert_eq!(
        std::fs::read_to_string("/root/.docker/config.json").unwrap_or_default(),
        logins_before,
        "no docker login is left in the user's config"
    );
    // Back to the newest good release before it, from before the registry.
    let run = Test::new()
        .args(["rollback", "test"])
        .current_dir(d.app.path())
        .env("DEPLOY_TEST_REGISTRY_PASSWORD", password)
        .run();
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(d.current().as_deref(), Some(second.as_str()));
    assert_eq!(d.version().as_deref(), Some("v2"));
    assert_eq!(service_images(&swarm, &d.project), images_second);

    // The api changed behind deploy's back, and the first manager still does
    // not answer: the second one's state is not what the stack runs, so it
    // decides nothing.
    let changed = swarm
        .docker()
        .args([
            "service",
            "update",
            "--detach",
            "--quiet",
            "--image",
            "deploy-test/busybox:1",
        ])
        .arg(&api)
        .output()
        .unwrap();
    assert!(changed.status.success(), "{changed:?}");
    let run = Test::new()
        .args(["rollback", "test"])
        .current_dir(d.app.path())
        .env("DEPLOY_TEST_REGISTRY_PASSWORD", password)
        .run();
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(run.all().contains("does not run what"), "{}", run.all());
}

/// The app for two nodes: the api on both (one task per node), the worker on
/// the second node only, Redis on the manager (its image is this engine's).
const TWO_NODE_STACK: &str = r#"services:
  api:
    build: ./api
    init: true
    ports:
      - target: 8000
        published: ${API_PORT}
        mode: host
    environment:
      FAIL_HEALTH: "0"
    deploy:
      replicas: 2
      endpoint_mode: dnsrr
      placement:
        max_replicas_per_node: 1
  worker:
    build: ./worker
    init: true
    deploy:
      placement:
        constraints: [node.role == worker]
  redis:
    image: deploy-test/redis:1
    init: true
    command: ["redis-server", "--save", "", "--appendonly", "no", "--protected-mode", "no"]
    ports:
      - target: 6379
        published: ${REDIS_PORT}
        mode: host
    deploy:
      endpoint_mode: dnsrr
      placement:
        constraints: [node.role == manager]
"#;

/// The image id of the running container of `service` (in stack `stack`)
/// that `docker` (an engine) runs.
fn running_image(mut docker: Command, stack: &str, service: &str) -> Option<String> {
    let out = docker
        .args(["ps", "-q", "--filter"])
        .arg(format!("label=com.docker.swarm.service.name={stack}_{service}"))
        .output()
        .ok()?;
    let id = String::from_utf8_lossy(&out.stdout).lines().next()?.to_string();
    let mut inspect = Command::new("docker");
    inspect.envs(docker.get_envs().filter_map(|(k, v)| Some((k, v?))));
    let out = inspect.args(["inspect", "--format", "{{.Image}}", &id]).output().ok()?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[test]
fn a_swarm_of_two_nodes_needs_a_registry_and_runs_the_managers_images_everywhere() {
    let _one_at_a_time = exclusive();
    let ns = Netns::new();
    let swarm = Swarm::start(&ns.outer());
    let registry = Registry::start();
    let worker = Worker::join(&ns, registry.port, &swarm);
    let d = Deployment::new(
        Setup {
            app_extra: "compose_files = [\"stack.yml\"]\n".into(),
            extra: CHECKS.into(),
            sshd_extra: swarm.engine.sshd_config(),
            ..Default::default()
        },
        &Behaviour::version("v1"),
    );
    d.app.commit_file("stack.yml", TWO_NODE_STACK, "the stack file");
    // The second node over SSH (a login whose docker is that node's), for
    // exec checks of the tasks that run only there.
    let node = SshHost::start_with_config(&worker.sshd_config());
    let known = d.known.path().join(format!("known_hosts-{}", d.host.port));
    let lines = std::fs::read_to_string(&known).unwrap();
    std::fs::write(&known, format!("{lines}{}\n", node.known_hosts_line())).unwrap();
    let path = d.app.path().join("deploy.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace(
            "[environments.test]\n",
            &format!(
                "[environments.test]\nengine = \"swarm\"\nnodes = [{{ address = \"127.0.0.1\", port = {} }}]\n",
                node.port
            ),
        ) + WORKER_EXEC,
    )
    .unwrap();

    // Without a registry the second node could not run the images: refused.
    let (run, s) = d.deploy_json(&[], 1);
    assert!(
        s["error"]
            .as_str()
            .unwrap_or_default()
            .contains("the swarm has 2 nodes"),
        "{}",
        run.all()
    );
    assert!(service_images(&swarm, &d.project).is_empty(), "nothing was deployed");

    // Through the registry: every check passes (the worker's log line comes
    // from the second node), and both nodes run the very images the manager built.
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        format!(
            "{text}\n[build]\non = \"first\"\nregistry = \"127.0.0.1:{}/multi\"\n",
            registry.port
        ),
    )
    .unwrap();
    let mut ids = Vec::new();
    for version in ["v1", "v2"] {
        if version == "v2" {
            d.app.commit(&Behaviour::version("v2"));
        }
        let (run, s) = d.deploy_json(&[], 0);
        assert_eq!(d.version().as_deref(), Some(version), "{}", run.all());
        for c in s["hosts"][0]["checks"].as_array().unwrap() {
            assert_eq!(c["ok"], true, "{c}");
        }
        let here = running_image(swarm.docker(), &d.project, "api").expect("an api task here");
        let there = running_image(worker.docker(), &d.project, "api").expect("an api task on the second node");
        assert_eq!(here, there, "{version}: the same api image on both nodes");
        assert!(
            running_image(worker.docker(), &d.project, "worker").is_some(),
            "the worker runs on the second node"
        );
        ids.push(here);
    }
    assert_ne!(ids[0], ids[1], "the change reached both nodes");

    // The worker's task runs only on the second node: its exec check went
    // there over SSH; without `nodes` it cannot, and says why.
    let run = d.run(&["verify", "test", "--output", "json"]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(run.stdout.contains("on node 127.0.0.1:"), "{}", run.all());
    let text = std::fs::read_to_string(&path).unwrap();
    let without: String = text
        .lines()
        .filter(|l| !l.starts_with("nodes = "))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&path, without).unwrap();
    let run = d.run(&["verify", "test"]);
    assert_eq!(run.code, 6, "{}", run.all());
    assert!(
        run.all().contains("none of them reached through `nodes`"),
        "{}",
        run.all()
    );
}

/// An exec check of a service that runs only on the second node.
const WORKER_EXEC: &str = r#"
[[verify.checks]]
name = "worker reaches redis"
type = "exec"
service = "worker"
command = ["sh", "-c", "echo PING | nc -w 2 redis 6379 | grep -q PONG"]
"#;
