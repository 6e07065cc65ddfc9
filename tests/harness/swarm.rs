//! This machine's engine as a single-node Docker Swarm, for as long as a test
//! needs it: `docker swarm init --advertise-addr 127.0.0.1` only when the
//! engine is not in a swarm already, and on drop the engine is left as it was
//! found (the swarm left, the `docker_gwbridge` network it made removed). A
//! stack guard removes a test's stack and waits until its containers and
//! network are gone.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{open_tempdir, sh, wait_for, Netns};

/// The engine in swarm mode while this lives.
pub struct Swarm {
    /// Whether this guard made the swarm (and so leaves it).
    made: bool,
    /// Whether `docker_gwbridge` existed before.
    had_gwbridge: bool,
}

fn docker(args: &[&str]) -> (bool, String) {
    let out = Command::new("docker").args(args).output().expect("docker runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// One swarm test at a time: each puts the engine in swarm mode its own way.
static EXCLUSIVE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Held for as long as a test uses the swarm.
pub fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    EXCLUSIVE.lock().unwrap_or_else(|e| e.into_inner())
}

impl Swarm {
    /// A single-node swarm advertised on loopback.
    pub fn ensure() -> Swarm {
        Swarm::ensure_at("127.0.0.1")
    }

    /// A swarm advertised at `addr` (where other nodes reach it).
    pub fn ensure_at(addr: &str) -> Swarm {
        let (_, state) = docker(&["info", "--format", "{{.Swarm.LocalNodeState}}"]);
        let had_gwbridge = docker(&["network", "inspect", "docker_gwbridge"]).0;
        if state.trim() == "active" {
            return Swarm {
                made: false,
                had_gwbridge,
            };
        }
        let (ok, said) = docker(&["swarm", "init", "--advertise-addr", addr]);
        assert!(ok, "docker swarm init: {said}");
        Swarm {
            made: true,
            had_gwbridge,
        }
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        if !self.made {
            return;
        }
        let (ok, said) = docker(&["swarm", "leave", "--force"]);
        if !ok {
            eprintln!("docker swarm leave --force: {said}");
        }
        if !self.had_gwbridge {
            // The bridge is let go a moment after the swarm is left.
            for _ in 0..50 {
                let (_, said) = docker(&["network", "rm", "docker_gwbridge"]);
                if !docker(&["network", "inspect", "docker_gwbridge"]).0 {
                    break;
                }
                eprintln!("docker network rm docker_gwbridge: {said}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

/// Removes stack `name` on drop and waits for its containers and networks to go.
pub struct Stack(pub String);

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = docker(&["stack", "rm", &self.0]);
        let label = format!("label=com.docker.stack.namespace={}", self.0);
        // Never a panic in a drop: it may run while a failed test unwinds.
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            if docker(&["ps", "-aq", "--filter", &label]).1.trim().is_empty()
                && docker(&["network", "ls", "-q", "--filter", &label]).1.trim().is_empty()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        eprintln!("stack {} still has containers or networks after 60 s", self.0);
    }
}

/// Removes, on drop, this engine's images whose repository starts with a
/// registry address and then `/<path>/` (the names a swarm manager keeps of
/// what it pushed), for any registry port.
pub struct RegistryImages(pub &'static str);

impl Drop for RegistryImages {
    fn drop(&mut self) {
        let (_, list) = docker(&["image", "ls", "--format", "{{.Repository}}:{{.Tag}}"]);
        let mine: Vec<&str> = list
            .lines()
            .filter(|r| {
                r.split_once('/')
                    .is_some_and(|(host, rest)| host.contains(':') && rest.starts_with(self.0))
            })
            .collect();
        if !mine.is_empty() {
            let mut args = vec!["image", "rm"];
            args.extend(mine);
            let _ = docker(&args);
        }
    }
}

/// A second node: a dockerd of its own (vfs, a bridge and iptables of its
/// own) in a network namespace this test made, joined to the swarm as a
/// worker. It reaches the registry on this machine's loopback port as
/// `127.0.0.1:<port>` too (a forwarder in the namespace, to one on this
/// side of the link), so the stack names one reference that every node
/// can pull, from a registry that both engines trust as a loopback one.
pub struct Worker {
    dir: tempfile::TempDir,
    dockerd: Child,
    forwards: Vec<Child>,
}

impl Worker {
    pub fn join(ns: &Netns, registry_port: u16) -> Worker {
        let dir = open_tempdir();
        let d = dir.path();
        let bridge = format!("{}br", ns.name);
        for args in [
            vec!["link", "add", &bridge, "type", "bridge"],
            vec!["addr", "add", "10.233.0.1/24", "dev", &bridge],
            vec!["link", "set", &bridge, "up"],
            vec!["route", "add", "default", "via", &ns.outer()],
        ] {
            sh(ns.command("ip").args(&args));
        }
        std::fs::write(d.join("daemon.json"), "{\"mtu\": 1400}").expect("daemon.json");
        let log = std::fs::File::create(d.join("dockerd.log")).expect("log");
        let dockerd = ns
            .enter("dockerd")
            .arg("--config-file")
            .arg(d.join("daemon.json"))
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("pid"))
            .arg("-H")
            .arg(format!("unix://{}", d.join("sock").display()))
            .args(["--bridge", &bridge, "--storage-driver", "vfs"])
            .args(["--containerd-namespace", &format!("{}w", ns.name)])
            .args(["--containerd-plugins-namespace", &format!("{}w-plugins", ns.name)])
            .args(["--default-address-pool", "base=10.234.0.0/16,size=24"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("dockerd starts");
        let port = registry_port.to_string();
        let outer = ns.outer();
        let forwards = vec![
            Command::new("socat")
                .arg(format!("TCP-LISTEN:{port},bind={outer},fork,reuseaddr"))
                .arg(format!("TCP:127.0.0.1:{port}"))
                .stdin(Stdio::null())
                .spawn()
                .expect("socat (Debian's socat)"),
            ns.enter("socat")
                .arg(format!("TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr"))
                .arg(format!("TCP:{outer}:{port}"))
                .stdin(Stdio::null())
                .spawn()
                .expect("socat in the namespace"),
        ];
        let worker = Worker { dir, dockerd, forwards };
        wait_for("the worker's dockerd", Duration::from_secs(60), || {
            worker.docker().arg("info").output().is_ok_and(|o| o.status.success())
        });
        let (ok, token) = docker(&["swarm", "join-token", "-q", "worker"]);
        assert!(ok, "join-token: {token}");
        sh(worker
            .docker()
            .args(["swarm", "join", "--token", token.trim(), "--advertise-addr", &ns.addr])
            .arg(format!("{outer}:2377")));
        wait_for("two ready nodes", Duration::from_secs(60), || {
            docker(&["node", "ls", "--format", "{{.Status}}"])
                .1
                .matches("Ready")
                .count()
                == 2
        });
        worker
    }

    /// sshd_config lines that give a login this node's engine.
    pub fn sshd_config(&self) -> String {
        format!("SetEnv DOCKER_HOST=unix://{}\n", self.dir.path().join("sock").display())
    }

    /// `docker` against this node's engine.
    pub fn docker(&self) -> Command {
        let mut c = Command::new("docker");
        c.env(
            "DOCKER_HOST",
            format!("unix://{}", self.dir.path().join("sock").display()),
        );
        c
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.docker().args(["swarm", "leave", "--force"]).output();
        let containers = self
            .docker()
            .args(["ps", "-aq"])
            .output()
            .map(|o| o.stdout)
            .unwrap_or_default();
        let containers: Vec<String> = String::from_utf8_lossy(&containers)
            .lines()
            .map(str::to_string)
            .collect();
        if !containers.is_empty() {
            let _ = self.docker().args(["rm", "-f"]).args(&containers).output();
        }
        // SIGTERM: dockerd stops its containerd and unmounts what it mounted.
        let _ = Command::new("kill").arg(self.dockerd.id().to_string()).status();
        let stopped = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(100));
            matches!(self.dockerd.try_wait(), Ok(Some(_)))
        });
        if !stopped {
            let _ = self.dockerd.kill();
            let _ = self.dockerd.wait();
        }
        for f in &mut self.forwards {
            let _ = f.kill();
            let _ = f.wait();
        }
        // vfs leaves directories read-only to their owner.
        let _ = Command::new("rm").arg("-rf").arg(self.dir.path()).status();
    }
}
