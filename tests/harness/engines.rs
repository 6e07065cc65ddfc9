//! Docker engines of their own for test hosts, and a real registry: a host
//! whose images are its own is what "build once, ship to the others" needs.
//! Each engine is a second dockerd of this machine's Docker (vfs storage, a
//! bridge of its own, no iptables rules), its socket given to the host's login
//! user by sshd (`SetEnv DOCKER_HOST=...`). The registry is Debian's
//! `docker-registry` (the reference registry) on loopback.
//!
//! Never `dockerd --bridge none`: that deletes the machine's docker0. Each
//! engine gets a bridge of its own and a fresh data root, every time.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::sshd::free_port;
use super::{claim, open_tempdir, sh, wait_for};

/// A dockerd of its own; stopped, its containers, networks, bridge and files
/// removed on drop.
pub struct OwnEngine {
    dir: tempfile::TempDir,
    slot: u32,
    bridge: String,
    child: Child,
}

/// The slots this process's engines hold.
static TAKEN: std::sync::Mutex<std::collections::BTreeSet<u32>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

impl OwnEngine {
    /// Starts an engine with no images.
    pub fn start() -> OwnEngine {
        // Unique among test runs on this machine (`claim`) and among this
        // run's own engines (`claim` answers yes again to its own process):
        // its bridge, address pool and containerd namespace.
        let n = {
            let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
            let n = (0..30)
                .find(|n| !taken.contains(n) && claim("engine", *n))
                .expect("a free engine slot");
            taken.insert(n);
            n
        };
        let bridge = format!("ddtest{n}");
        let _ = Command::new("ip").args(["link", "del", &bridge]).output();
        for args in [
            vec!["link", "add", &bridge, "type", "bridge"],
            vec!["addr", "add", &format!("10.232.{n}.1/24"), "dev", &bridge],
            vec!["link", "set", &bridge, "up"],
        ] {
            sh(Command::new("ip").args(&args));
        }
        let dir = open_tempdir();
        let mut dockerd = Command::new("dockerd");
        dockerd.args(["--iptables=false", "--ip6tables=false"]);
        let child = spawn_dockerd(
            dockerd,
            dir.path(),
            &bridge,
            &format!("dtest{n}"),
            &format!("base=10.{}.0.0/16,size=24", 192 + n),
        );
        let engine = OwnEngine {
            dir,
            slot: n,
            bridge,
            child,
        };
        wait_for("a test host's own dockerd", Duration::from_secs(60), || {
            engine
                .docker()
                .arg("version")
                .output()
                .is_ok_and(|o| o.status.success())
        });
        engine
    }

    /// The engine's socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    /// `docker` against this engine.
    pub fn docker(&self) -> Command {
        let mut c = Command::new("docker");
        c.env("DOCKER_HOST", format!("unix://{}", self.socket().display()));
        c
    }

    /// The sshd config line that makes the host's login user use this engine.
    pub fn sshd_config(&self) -> String {
        format!("SetEnv DOCKER_HOST=unix://{}\n", self.socket().display())
    }

    /// Copies `image` from this machine's engine (a base image the host
    /// would have pulled from its registry).
    pub fn load_from_main(&self, image: &str) {
        let mut save = Command::new("docker")
            .args(["save", image])
            .stdout(Stdio::piped())
            .spawn()
            .expect("docker save");
        let out = self
            .docker()
            .args(["load", "-q"])
            .stdin(save.stdout.take().expect("piped"))
            .output()
            .expect("docker load");
        assert!(save.wait().is_ok_and(|s| s.success()), "docker save {image}");
        assert!(
            out.status.success(),
            "load {image}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The id of `image` in this engine, if it has it.
    pub fn image_id(&self, image: &str) -> Option<String> {
        image_id(self.docker(), image)
    }

    /// The images this engine has, as `repository:tag`.
    pub fn images(&self) -> Vec<String> {
        let out = self
            .docker()
            .args(["image", "ls", "--format", "{{.Repository}}:{{.Tag}}"])
            .output()
            .expect("docker image ls");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// The id of `image` through `docker` (any engine), if it is there.
pub fn image_id(mut docker: Command, image: &str) -> Option<String> {
    let out = docker
        .args(["image", "inspect", "-f", "{{.Id}}", image])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

impl Drop for OwnEngine {
    fn drop(&mut self) {
        stop_dockerd(&mut self.child, self.dir.path());
        let _ = Command::new("ip").args(["link", "del", &self.bridge]).output();
        TAKEN.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.slot);
    }
}

/// Stops an engine of its own started by [`spawn_dockerd`] in `dir` and
/// removes what it made: its containers and networks (their bridges live in
/// a network stack that outlives it), the daemon (SIGTERM, so it stops its
/// containerd and unmounts; killed after 10 s), what a swarm left mounted
/// under its exec root, and its files.
pub fn stop_dockerd(child: &mut Child, dir: &std::path::Path) {
    let docker = || {
        let mut c = Command::new("docker");
        c.env("DOCKER_HOST", format!("unix://{}", dir.join("sock").display()));
        c
    };
    let containers = docker()
        .args(["ps", "-aq"])
        .output()
        .map(|o| o.stdout)
        .unwrap_or_default();
    let containers: Vec<String> = String::from_utf8_lossy(&containers)
        .lines()
        .map(str::to_string)
        .collect();
    if !containers.is_empty() {
        let _ = docker().args(["rm", "-f"]).args(&containers).output();
    }
    let _ = docker().args(["network", "prune", "-f"]).output();
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let stopped = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        matches!(child.try_wait(), Ok(Some(_)))
    });
    if !stopped {
        let _ = child.kill();
        let _ = child.wait();
    }
    let root = dir.display().to_string();
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    for point in mounts.lines().filter_map(|l| l.split_whitespace().nth(1)) {
        if point.starts_with(&root) {
            let _ = Command::new("umount").args(["-l", point]).output();
        }
    }
    // vfs leaves plain directories, some read-only to their owner.
    let _ = Command::new("rm").arg("-rf").arg(dir).status();
}

/// Starts `dockerd` (a command that runs it, with any flags of its own) as
/// an engine of its own in `dir`: a fresh data root, its socket at
/// `dir/sock`, vfs storage, bridge `bridge`, containerd namespace
/// `namespace`, networks from `pool`; its log in `dir/dockerd.log`.
pub fn spawn_dockerd(mut dockerd: Command, dir: &std::path::Path, bridge: &str, namespace: &str, pool: &str) -> Child {
    // The machine's daemon.json names its own data root and storage driver.
    std::fs::write(dir.join("daemon.json"), "{\"mtu\": 1400}").expect("daemon.json");
    let log = std::fs::File::create(dir.join("dockerd.log")).expect("log");
    dockerd
        .arg("--config-file")
        .arg(dir.join("daemon.json"))
        .arg("--data-root")
        .arg(dir.join("data"))
        .arg("--exec-root")
        .arg(dir.join("exec"))
        .arg("--pidfile")
        .arg(dir.join("pid"))
        .arg("-H")
        .arg(format!("unix://{}", dir.join("sock").display()))
        .args(["--bridge", bridge, "--storage-driver", "vfs"])
        // Were a system containerd used, its namespace is not the machine engine's.
        .args(["--containerd-namespace", namespace])
        .args(["--containerd-plugins-namespace", &format!("{namespace}-plugins")])
        .args(["--default-address-pool", pool])
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("dockerd starts")
}

/// Debian's `docker-registry` on a loopback port, its storage in a temporary
/// directory; stopped on drop.
pub struct Registry {
    _dir: tempfile::TempDir,
    child: Child,
    pub port: u16,
}

impl Registry {
    pub fn start() -> Registry {
        Registry::start_with(None)
    }

    /// A registry that lets only `user` with `password` push and pull
    /// (htpasswd, bcrypt, from Debian's apache2-utils).
    pub fn start_with_auth(user: &str, password: &str) -> Registry {
        Registry::start_with(Some((user, password)))
    }

    fn start_with(auth: Option<(&str, &str)>) -> Registry {
        let dir = open_tempdir();
        let port = free_port();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        if let Some((user, password)) = auth {
            let file = dir.path().join("htpasswd");
            let line = super::sh(Command::new("htpasswd").args(["-Bbn", user, password]));
            std::fs::write(&file, line.trim_end().to_string() + "\n").expect("htpasswd file");
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: deploy-test\n    path: {}\n",
                file.display()
            ));
        }
        std::fs::write(dir.path().join("config.yml"), config).expect("registry config");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.path().join("log")).expect("log"))
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry starts (the Debian package docker-registry)");
        let registry = Registry { _dir: dir, child, port };
        wait_for("the registry", Duration::from_secs(30), || {
            // 401 from one that asks for credentials: it answers.
            super::http_get_at("127.0.0.1", port, "/v2/", Duration::from_secs(1))
                .is_some_and(|(s, _)| s == 200 || s == 401)
        });
        registry
    }

    /// Whether the registry stores tag `tag` of repository `repo` (read from
    /// its storage, so it needs no credentials).
    pub fn has_tag(&self, repo: &str, tag: &str) -> bool {
        self._dir
            .path()
            .join("data/docker/registry/v2/repositories")
            .join(repo)
            .join("_manifests/tags")
            .join(tag)
            .is_dir()
    }

    /// The tags of `repo` in the registry's storage.
    pub fn tags(&self, repo: &str) -> Vec<String> {
        let dir = self
            ._dir
            .path()
            .join("data/docker/registry/v2/repositories")
            .join(repo)
            .join("_manifests/tags");
        let mut tags: Vec<String> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        tags.sort();
        tags
    }

    /// `GET path` on the registry: its body.
    pub fn get(&self, path: &str) -> String {
        super::http_get_at("127.0.0.1", self.port, path, Duration::from_secs(5))
            .map(|(_, b)| b)
            .unwrap_or_default()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
