//! Many hosts at once: N sshd hosts (optionally one in its own network namespace),
//! each with its own path, compose project and ports, in one environment.

use std::process::Command;

use super::app::{AppRepo, BareRemote, Behaviour};
use super::engines::OwnEngine;
use super::images;
use super::sshd::{client_key, free_port, SshHost, USER};
use super::{git, http_get_at, open_tempdir, Netns, Run, Test};

/// How the fleet is set up.
#[derive(Debug, Clone, Default)]
pub struct FleetSetup {
    pub hosts: usize,
    pub parallel: Option<usize>,
    pub batch: Option<usize>,
    /// Per host (by index): the services it runs, if limited.
    pub services: Vec<(usize, Vec<&'static str>)>,
    /// Per host: `vars` to add.
    pub vars: Vec<(usize, &'static str, &'static str)>,
    /// The host (by index) that lives in its own network namespace.
    pub netns_host: Option<usize>,
    /// More TOML (checks).
    pub extra: String,
    /// The hosts (by index) with a Docker engine of their own (the others
    /// share this machine's); each has the base images the app runs, none built.
    pub own_engines: Vec<usize>,
}

/// The checklist fleet tests use: containers up, and each host's api health
/// (its own port, through SSH), waited for up to `timeout`.
pub fn checks(timeout: &str) -> String {
    format!(
        r#"
[verify]
timeout = "{timeout}"
interval = "200ms"
max_interval = "1s"

[[verify.checks]]
name = "containers up"
type = "compose_ps"

[[verify.checks]]
name = "api health"
type = "http"
service = "api"
url = "http://{{{{API_BIND}}}}:{{{{API_PORT}}}}/cgi-bin/health"
via = "ssh"
"#
    )
}

pub struct FleetHost {
    pub ssh: SshHost,
    /// Its own engine, if it has one (after `ssh`: the host goes first).
    pub engine: Option<OwnEngine>,
    pub api_bind: String,
    pub api_port: u16,
    pub project: String,
}

pub struct TestFleet {
    pub hosts: Vec<FleetHost>,
    pub app: AppRepo,
    pub remote: BareRemote,
    pub known: tempfile::TempDir,
    pub netns: Option<Netns>,
}

impl TestFleet {
    pub fn new(setup: FleetSetup, first: &Behaviour) -> TestFleet {
        let netns = setup.netns_host.map(|_| Netns::new());
        let app = AppRepo::new(first);
        let remote = BareRemote::new();
        git(
            app.path(),
            &["remote", "add", "origin", remote.path().to_str().unwrap()],
        );
        let known = open_tempdir();
        let mut hosts = Vec::new();
        let mut known_lines = String::new();
        let mut tables = String::new();
        for i in 0..setup.hosts {
            let in_ns = setup.netns_host == Some(i);
            let engine = setup.own_engines.contains(&i).then(|| {
                let engine = OwnEngine::start();
                engine.load_from_main(images::REDIS);
                engine
            });
            let ssh = match (&netns, in_ns, &engine) {
                (Some(ns), true, _) => SshHost::start_at(&ns.addr, Some(&ns.name)),
                (_, _, Some(engine)) => SshHost::start_with_config(&engine.sshd_config()),
                _ => SshHost::start(),
            };
            // A host in a namespace reaches its api on the link's outer address.
            let api_bind = match (&netns, in_ns) {
                (Some(ns), true) => format!("{}.1", ns.addr.rsplit_once('.').unwrap().0),
                _ => "127.0.0.1".to_string(),
            };
            let api_port = free_port();
            let project = format!("f{}", ssh.port);
            known_lines.push_str(&ssh.known_hosts_line());
            known_lines.push('\n');
            let services = setup
                .services
                .iter()
                .find(|(h, _)| *h == i)
                .map(|(_, s)| {
                    format!(
                        "services = [{}]\n",
                        s.iter().map(|x| format!("\"{x}\"")).collect::<Vec<_>>().join(", ")
                    )
                })
                .unwrap_or_default();
            let mut vars = format!(
                "API_BIND = \"{api_bind}\", API_PORT = \"{api_port}\", REDIS_PORT = \"{}\"",
                free_port()
            );
            for (_, k, v) in setup.vars.iter().filter(|(h, _, _)| *h == i) {
                vars.push_str(&format!(", {k} = \"{v}\""));
            }
            tables.push_str(&format!(
                "[[environments.test.hosts]]\naddress = \"{}\"\nport = {}\npath = \"{}\"\nproject = \"{project}\"\n{services}vars = {{ {vars} }}\n\n",
                ssh.addr,
                ssh.port,
                ssh.app_path().display()
            ));
            hosts.push(FleetHost {
                ssh,
                engine,
                api_bind,
                api_port,
                project,
            });
        }
        std::fs::write(known.path().join("known_hosts"), known_lines).unwrap();
        let config = format!(
            "[app]\nname = \"fleet\"\n\n[ssh]\nuser = \"{USER}\"\nidentity_file = \"{}\"\nknown_hosts_file = \"{}\"\nconnect_timeout = \"5s\"\n\n\
             [environments.test]\nparallel = {}\n{}\n{tables}\n{}",
            client_key().display(),
            known.path().join("known_hosts").display(),
            setup.parallel.unwrap_or(4),
            setup.batch.map(|b| format!("batch = {b}\n")).unwrap_or_default(),
            setup.extra
        );
        std::fs::write(app.path().join("deploy.toml"), config).unwrap();
        TestFleet {
            hosts,
            app,
            remote,
            known,
            netns,
        }
    }

    /// `deploy test --output json <args>`: the run and every event, the summary last.
    pub fn deploy(&self, extra: &[&str], code: i32) -> (Run, Vec<serde_json::Value>) {
        let mut args = vec!["test"];
        args.extend(extra);
        self.json(&args, code)
    }

    /// `deploy <args> --output json`, requiring exit `code`: the run and every
    /// event, the summary last.
    pub fn json(&self, args: &[&str], code: i32) -> (Run, Vec<serde_json::Value>) {
        let mut args = args.to_vec();
        args.extend(["--output", "json"]);
        let run = Test::new()
            .args(args.iter().copied())
            .current_dir(self.app.path())
            .run();
        assert_eq!(
            run.code,
            code,
            "deploy {args:?} exited {}, expected {code}:\n{}",
            run.code,
            run.all()
        );
        let events: Vec<serde_json::Value> = run
            .stdout
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSON line"))
            .collect();
        (run, events)
    }

    /// What host `i`'s api answers at /version.
    pub fn version(&self, i: usize) -> Option<String> {
        let h = &self.hosts[i];
        http_get_at(&h.api_bind, h.api_port, "/version", std::time::Duration::from_secs(5))
            .filter(|(s, _)| *s == 200)
            .map(|(_, b)| b.trim().to_string())
    }

    /// `deploy <args>` for people (human output), in the app's directory.
    pub fn run(&self, args: &[&str]) -> Run {
        Test::new()
            .args(args.iter().copied())
            .current_dir(self.app.path())
            .run()
    }

    /// The release each host's `current` points at.
    pub fn currents(&self) -> Vec<Option<String>> {
        (0..self.hosts.len()).map(|i| self.current(i)).collect()
    }

    /// What each host's api answers at /version.
    pub fn versions(&self) -> Vec<Option<String>> {
        (0..self.hosts.len()).map(|i| self.version(i)).collect()
    }

    pub fn current(&self, i: usize) -> Option<String> {
        std::fs::read_link(self.hosts[i].ssh.app_path().join("current"))
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
    }

    pub fn history(&self, i: usize) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.hosts[i].ssh.app_path().join(".deploy/history.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    pub fn locked(&self, i: usize) -> bool {
        self.hosts[i].ssh.app_path().join(".deploy/lock").exists()
    }

    /// Containers of host `i`'s project running `service`.
    pub fn containers_of(&self, i: usize, service: &str) -> Vec<String> {
        let out = Command::new("docker")
            .args([
                "ps",
                "-aq",
                "--filter",
                &format!("label=com.docker.compose.project={}", self.hosts[i].project),
                "--filter",
                &format!("label=com.docker.compose.service={service}"),
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for TestFleet {
    fn drop(&mut self) {
        for h in &self.hosts {
            super::remove_project_images_at_exit(&h.project);
        }
    }
}
