//! This machine's engine as a single-node Docker Swarm, for as long as a test
//! needs it: `docker swarm init --advertise-addr 127.0.0.1` only when the
//! engine is not in a swarm already, and on drop the engine is left as it was
//! found (the swarm left, the `docker_gwbridge` network it made removed). A
//! stack guard removes a test's stack and waits until its containers and
//! network are gone.

use std::process::Command;
use std::time::Duration;

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

impl Swarm {
    pub fn ensure() -> Swarm {
        let (_, state) = docker(&["info", "--format", "{{.Swarm.LocalNodeState}}"]);
        let had_gwbridge = docker(&["network", "inspect", "docker_gwbridge"]).0;
        if state.trim() == "active" {
            return Swarm {
                made: false,
                had_gwbridge,
            };
        }
        let (ok, said) = docker(&["swarm", "init", "--advertise-addr", "127.0.0.1"]);
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
