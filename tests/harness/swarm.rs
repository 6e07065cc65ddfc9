//! Docker Swarms of the tests' own: a manager that is a dockerd of its own,
//! and a second node in a network namespace the test makes. This machine's
//! engine is never put in swarm mode (see [`Swarm`]).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::engines::{spawn_dockerd, stop_dockerd, OwnEngine};
use super::sshd::free_port;
use super::{images, open_tempdir, sh, wait_for, Netns};

/// One swarm test at a time: each makes a swarm, and two swarms on one
/// machine would share its ports and VXLAN devices.
static EXCLUSIVE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Held for as long as a test uses a swarm.
pub fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    EXCLUSIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// A swarm of the test's own: a dockerd of its own (see
/// [`OwnEngine`]) made a swarm manager, with the base images. Never this
/// machine's engine: leaving a swarm makes Docker 20.10 forget the DNS names
/// of the containers of every other network on that engine (seen here:
/// after `swarm leave --force`, a compose app's containers no longer
/// resolved each other), so a swarm on it could not be left as found.
pub struct Swarm {
    pub engine: OwnEngine,
    /// The manager's swarm port.
    pub port: u16,
}

impl Swarm {
    /// A manager advertised (and listening) at `addr`.
    pub fn start(addr: &str) -> Swarm {
        images::ensure();
        let engine = OwnEngine::start();
        engine.load_from_main(images::BUSYBOX);
        engine.load_from_main(images::REDIS);
        let port = free_port();
        sh(engine
            .docker()
            .args(["swarm", "init", "--advertise-addr", addr])
            .arg("--listen-addr")
            .arg(format!("{addr}:{port}"))
            // VXLAN on a port of its own: not another swarm's on this machine.
            .args(["--data-path-port", &free_port().to_string()]));
        Swarm { engine, port }
    }

    /// `docker` against the manager.
    pub fn docker(&self) -> Command {
        self.engine.docker()
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        // Then the engine goes, with everything it made.
        let _ = self.docker().args(["swarm", "leave", "--force"]).output();
    }
}

/// `docker <args>` on this machine's engine: whether it succeeded, and what it printed.
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
    pub fn join(ns: &Netns, registry_port: u16, swarm: &Swarm) -> Worker {
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
        // iptables of its own: the namespace has its own.
        let dockerd = spawn_dockerd(
            ns.enter("dockerd"),
            d,
            &bridge,
            &format!("{}w", ns.name),
            "base=10.234.0.0/16,size=24",
        );
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
        let token = sh(swarm.docker().args(["swarm", "join-token", "-q", "worker"]));
        sh(worker
            .docker()
            .args(["swarm", "join", "--token", token.trim(), "--advertise-addr", &ns.addr])
            .arg(format!("{outer}:{}", swarm.port)));
        wait_for("two ready nodes", Duration::from_secs(60), || {
            let out = swarm.docker().args(["node", "ls", "--format", "{{.Status}}"]).output();
            out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).matches("Ready").count() == 2)
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
        stop_dockerd(&mut self.dockerd, self.dir.path());
        for f in &mut self.forwards {
            let _ = f.kill();
            let _ = f.wait();
        }
    }
}
