//! A deployable setup: an sshd host, the app repository with a deploy.toml, a
//! bare remote the host fetches from, and the app's own ports and compose project.
//! Its containers, networks and images are removed on drop.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::app::{AppRepo, BareRemote, Behaviour};
use super::sshd::{free_port, SshHost};
use super::{git, http_get, open_tempdir, Run, Test};

/// How a deployment is set up.
#[derive(Debug, Clone)]
pub struct Setup {
    /// "git" or "upload".
    pub strategy: &'static str,
    /// "v1", "v2" or "auto".
    pub compose: &'static str,
    /// Extra lines for `[app]`.
    pub app_extra: String,
    /// Extra lines for `[source]`.
    pub source_extra: String,
    /// More TOML at the end (`[verify]`, checks, hooks); `{API_PORT}` and
    /// `{REDIS_PORT}` are replaced by the deployment's ports.
    pub extra: String,
    /// More lines for the host's sshd_config.
    pub sshd_extra: String,
}

impl Default for Setup {
    fn default() -> Setup {
        Setup {
            strategy: "git",
            compose: "v2",
            app_extra: String::new(),
            source_extra: String::new(),
            extra: String::new(),
            sshd_extra: String::new(),
        }
    }
}

pub struct Deployment {
    pub host: SshHost,
    pub app: AppRepo,
    pub remote: BareRemote,
    pub known: tempfile::TempDir,
    pub api_port: u16,
    pub redis_port: u16,
    pub project: String,
}

impl Deployment {
    /// Everything set up, nothing deployed; the app's first commit is `first`.
    pub fn new(setup: Setup, first: &Behaviour) -> Deployment {
        let d = Deployment::with_app(AppRepo::new(first), &setup);
        let app = format!("[app]\nname = \"app\"\n{}\n", setup.app_extra);
        d.write_config(&app, &setup);
        d
    }

    /// The shape in `tests/fixtures/<name>/`, set up and not deployed: its
    /// `deploy.toml` with this host's tables added.
    pub fn fixture(name: &str, setup: Setup) -> Deployment {
        let d = Deployment::with_app(AppRepo::from_fixture(name), &setup);
        let own = std::fs::read_to_string(super::repo_root().join("tests/fixtures").join(name).join("deploy.toml"))
            .expect("the fixture's deploy.toml");
        d.write_config(&own, &setup);
        d
    }

    /// A host, a bare remote and ports for `app`.
    fn with_app(app: AppRepo, setup: &Setup) -> Deployment {
        let host = SshHost::start_with_config(&setup.sshd_extra);
        let remote = BareRemote::new();
        git(
            app.path(),
            &["remote", "add", "origin", remote.path().to_str().unwrap()],
        );
        let known = open_tempdir();
        let (api_port, redis_port) = (free_port(), free_port());
        let project = format!("t{}", host.port);
        Deployment {
            host,
            app,
            remote,
            known,
            api_port,
            redis_port,
            project,
        }
    }

    /// deploy.toml: `app` (the `[app]` table and whatever the app brings), then
    /// this host's tables, then `setup.extra`; `{API_PORT}` and `{REDIS_PORT}`
    /// are replaced by the deployment's ports.
    fn write_config(&self, app: &str, setup: &Setup) {
        let host = format!(
            "[source]\nstrategy = \"{}\"\n{}\n\n{}\n[environments.test]\nhosts = [\"127.0.0.1\"]\npath = \"{}\"\nproject = \"{}\"\ncompose = \"{}\"\nvars = {{ API_PORT = \"{}\", REDIS_PORT = \"{}\" }}\n",
            setup.strategy,
            setup.source_extra,
            self.host.ssh_toml(&self.host.known_hosts_file(self.known.path()), "strict"),
            self.host.app_path().display(),
            self.project,
            setup.compose,
            self.api_port,
            self.redis_port,
        );
        let text = format!("{app}\n{host}\n{}", setup.extra)
            .replace("{API_PORT}", &self.api_port.to_string())
            .replace("{REDIS_PORT}", &self.redis_port.to_string());
        // Untracked, so the tree stays clean for deploys.
        std::fs::write(self.app.path().join("deploy.toml"), text).unwrap();
    }

    /// `deploy <args>` in the app's directory.
    pub fn run(&self, args: &[&str]) -> Run {
        Test::new()
            .args(args.iter().copied())
            .current_dir(self.app.path())
            .run()
    }

    /// `deploy test <args> --output json`, requiring `code`; every stdout line
    /// must be a JSON object, and the last one is returned (the summary).
    pub fn deploy_json(&self, extra: &[&str], code: i32) -> (Run, serde_json::Value) {
        let mut args = vec!["test", "--output", "json"];
        args.extend(extra);
        let run = self.run(&args);
        assert_eq!(
            run.code,
            code,
            "deploy {args:?} exited {}, expected {code}:\n{}",
            run.code,
            run.all()
        );
        let mut last = serde_json::Value::Null;
        for line in run.stdout.lines() {
            last = serde_json::from_str(line).unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line}"));
            assert!(last.is_object(), "{line}");
        }
        assert_eq!(last["event"], "summary", "the last line is the summary: {}", run.stdout);
        (run, last)
    }

    /// `deploy test <args>`, requiring `code`.
    pub fn deploy(&self, extra: &[&str], code: i32) -> Run {
        let mut args = vec!["test"];
        args.extend(extra);
        let run = self.run(&args);
        assert_eq!(
            run.code,
            code,
            "deploy {args:?} exited {}, expected {code}:\n{}",
            run.code,
            run.all()
        );
        run
    }

    /// `deploy test <args> --output json`, its JSON lines read as they come
    /// with when each arrived; returns the exit code and the events.
    pub fn deploy_timed(&self, extra: &[&str]) -> (i32, Vec<(std::time::Instant, serde_json::Value)>) {
        use std::io::BufRead;
        let mut child = Command::new(assert_cmd::cargo::cargo_bin("deploy"))
            .args(["test", "--output", "json"])
            .args(extra)
            .env("NO_COLOR", "1")
            .current_dir(self.app.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("deploy starts");
        let out = child.stdout.take().expect("stdout");
        let events = std::io::BufReader::new(out)
            .lines()
            .map_while(Result::ok)
            .map(|l| {
                let v = serde_json::from_str(&l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
                (std::time::Instant::now(), v)
            })
            .collect();
        let code = child.wait().expect("deploy ends").code().unwrap_or(-1);
        (code, events)
    }

    /// The ids of the containers running `service`, sorted.
    pub fn containers_of(&self, service: &str) -> Vec<String> {
        let out = super::sh(Command::new("docker").args([
            "ps",
            "-aq",
            "--no-trunc",
            "--filter",
            &format!("label=com.docker.compose.project={}", self.project),
            "--filter",
            &format!("label=com.docker.compose.service={service}"),
        ]));
        let mut v: Vec<String> = out.lines().map(str::to_string).collect();
        v.sort();
        v
    }

    /// What the api's /version answers.
    pub fn version(&self) -> Option<String> {
        http_get(self.api_port, "/version")
            .filter(|(s, _)| *s == 200)
            .map(|(_, b)| b.trim().to_string())
    }

    /// Waits until the api answers `want`. A run without checks returns once
    /// `up -d` started the container, before its server listens.
    pub fn wait_version(&self, want: &str) {
        super::wait_until(
            &format!("the api to answer {want}"),
            Duration::from_secs(20),
            || self.version(),
            |seen| seen.as_deref() == Some(want),
            |seen| format!(": it answers {seen:?}\n{}", self.explain()),
        );
    }

    /// What the host runs, for a failed assertion to show: the project's
    /// containers (image, state, created), `current`, and the live release's
    /// image override.
    pub fn explain(&self) -> String {
        let ps = Command::new("docker")
            .args([
                "ps",
                "-a",
                "--no-trunc",
                "--filter",
                &format!("label=com.docker.compose.project={}", self.project),
                "--format",
                "{{.Names}} {{.Image}} {{.State}} {{.Status}} created {{.CreatedAt}}",
            ])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let current = self.current().unwrap_or_default();
        let override_file = std::fs::read_to_string(
            self.host
                .app_path()
                .join("releases")
                .join(&current)
                .join(".deploy-compose.yml"),
        )
        .unwrap_or_default();
        format!("containers:\n{ps}current: {current}\noverride:\n{override_file}")
    }

    /// The release `current` points at.
    pub fn current(&self) -> Option<String> {
        std::fs::read_link(self.host.app_path().join("current"))
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
    }

    /// Release directories on the host, oldest first.
    pub fn releases(&self) -> Vec<String> {
        let mut ids: Vec<String> = std::fs::read_dir(self.host.app_path().join("releases"))
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        ids.sort();
        ids
    }

    /// The images release `id`'s override file names (what its containers run).
    pub fn release_images(&self, id: &str) -> Vec<String> {
        std::fs::read_to_string(
            self.host
                .app_path()
                .join("releases")
                .join(id)
                .join(".deploy-compose.yml"),
        )
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("image:"))
        .map(|i| i.trim().trim_matches('"').to_string())
        .collect()
    }

    /// The id of the container running `service`, if one runs.
    pub fn container_of(&self, service: &str) -> Option<String> {
        super::container_of(&self.project, service)
    }

    /// The history file's entries.
    pub fn history(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.host.app_path().join(".deploy/history.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("history lines are JSON"))
            .collect()
    }

    /// `repo:tag` of every image built for this project.
    pub fn images(&self) -> Vec<String> {
        let out = super::sh(
            Command::new("docker")
                .args(["image", "ls", "--format", "{{.Repository}}:{{.Tag}}", "--filter"])
                .arg(format!("reference={}-*", self.project)),
        );
        let mut v: Vec<String> = out.lines().map(str::to_string).collect();
        v.sort();
        v
    }

    /// Container ids of the project (running or not), sorted.
    pub fn containers(&self) -> Vec<String> {
        let out = super::sh(
            Command::new("docker")
                .args(["ps", "-aq", "--no-trunc", "--filter"])
                .arg(format!("label=com.docker.compose.project={}", self.project)),
        );
        let mut v: Vec<String> = out.lines().map(str::to_string).collect();
        v.sort();
        v
    }

    /// Whether the host's lock directory exists.
    pub fn locked(&self) -> bool {
        self.host.app_path().join(".deploy/lock").exists()
    }

    pub fn app_path(&self) -> PathBuf {
        self.host.app_path()
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        super::remove_project_images_at_exit(&self.project);
    }
}
