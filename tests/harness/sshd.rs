//! sshd hosts on loopback: each with its own port, host key and deploy path,
//! logging in a dedicated user the way an EC2 `ubuntu` user would.

use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use super::{open_tempdir, set_mode, sh};

/// The user the hosts log in: shell /bin/sh (no slow rc files), in the docker group.
pub const USER: &str = "deploytest";

/// Creates the test user once per run (idempotent across runs).
pub fn ensure_user() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let exists = Command::new("id")
            .arg(USER)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !exists {
            sh(Command::new("useradd").args(["-m", "-s", "/bin/sh", "-G", "docker", USER]));
            // sshd with UsePAM no refuses a locked account ("!"); "*" has no password yet is not locked.
            sh(Command::new("usermod").args(["-p", "*", USER]));
        }
        let home = PathBuf::from(format!("/home/{USER}"));
        // Repositories the tests create are owned by root; let git on the host read them.
        std::fs::write(
            home.join(".gitconfig"),
            "[safe]\n\tdirectory = *\n[user]\n\tname = deploytest\n\temail = deploytest@example.com\n",
        )
        .expect("write .gitconfig");
        sh(Command::new("chown")
            .arg(format!("{USER}:{USER}"))
            .arg(home.join(".gitconfig")));
        std::fs::create_dir_all("/run/sshd").expect("mkdir /run/sshd");
    });
}

/// The client key every host accepts, made once per target dir.
pub fn client_key() -> &'static Path {
    static KEY: OnceLock<PathBuf> = OnceLock::new();
    KEY.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("client-key");
        let key = dir.join("id_ed25519");
        if !key.exists() || !dir.join("id_ed25519.pub").exists() {
            std::fs::create_dir_all(&dir).expect("mkdir client-key");
            let _ = std::fs::remove_file(&key);
            sh(Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "deploy-test-client", "-f"])
                .arg(&key));
        }
        set_mode(&key, 0o600);
        key
    })
}

/// A free TCP port on 127.0.0.1 for a server of the tests (sshd, published app
/// ports). Taken below the kernel's ephemeral range (32768+), from which the
/// kernel hands out client ports and `deploy` its tunnels' ports: a port picked
/// there could be reused by one of those before the server binds it.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20000 + (std::process::id() % 50) as u16 * 200;
    loop {
        let offset = NEXT.fetch_add(1, Ordering::SeqCst) % 12000;
        let port = 20000 + (base - 20000 + offset) % 12000;
        // Claimed first: a port free now may be one another test run's
        // container releases for a moment during its switch.
        if super::claim("port", u32::from(port)) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// One sshd on loopback. Stopped and its files removed on drop.
pub struct SshHost {
    /// The address sshd listens on (127.0.0.1, or a network namespace's).
    pub addr: String,
    /// The network namespace it runs in, if any.
    pub netns: Option<String>,
    pub port: u16,
    /// Holds the host key, sshd config and log, authorized_keys, and `app/`.
    pub dir: tempfile::TempDir,
    /// Lines added to the sshd config (`SetEnv ...`).
    extra: String,
    child: Child,
}

impl SshHost {
    /// Starts a host with a fresh host key; `app/` under its dir is owned by the test user.
    pub fn start() -> SshHost {
        SshHost::start_at("127.0.0.1", None)
    }

    /// Starts a host listening on `addr`, inside network namespace `netns` if given.
    pub fn start_at(addr: &str, netns: Option<&str>) -> SshHost {
        SshHost::start_configured(addr, netns, "")
    }

    /// Starts a host on 127.0.0.1 whose sshd config has `extra` lines too
    /// (`SetEnv NAME=value` sets the login user's environment).
    pub fn start_with_config(extra: &str) -> SshHost {
        SshHost::start_configured("127.0.0.1", None, extra)
    }

    fn start_configured(addr: &str, netns: Option<&str>, extra: &str) -> SshHost {
        ensure_user();
        let dir = open_tempdir();
        let d = dir.path();
        new_host_key(d);
        let client_pub = std::fs::read_to_string(format!("{}.pub", client_key().display())).expect("client key");
        std::fs::write(d.join("authorized_keys"), client_pub).expect("authorized_keys");
        set_mode(&d.join("authorized_keys"), 0o644);
        std::fs::create_dir_all(d.join("app")).expect("mkdir app");
        sh(Command::new("chown").arg(format!("{USER}:{USER}")).arg(d.join("app")));
        for _ in 0..5 {
            // A claimed port even in a namespace (which has ports of its own):
            // projects are named after it, and must not meet another run's.
            let port = free_port();
            if let Some(child) = spawn_sshd(d, addr, port, netns, extra) {
                return SshHost {
                    addr: addr.to_string(),
                    netns: netns.map(str::to_string),
                    port,
                    dir,
                    extra: extra.to_string(),
                    child,
                };
            }
        }
        panic!(
            "sshd did not start; log: {}",
            std::fs::read_to_string(d.join("sshd.log")).unwrap_or_default()
        );
    }

    /// The deploy path on this host, owned by the test user.
    pub fn app_path(&self) -> PathBuf {
        self.dir.path().join("app")
    }

    /// The host's public key as known_hosts wants it: `[127.0.0.1]:PORT type base64`.
    pub fn known_hosts_line(&self) -> String {
        let public = std::fs::read_to_string(self.dir.path().join("hostkey.pub")).expect("host key");
        let mut fields = public.split_whitespace();
        let (kind, data) = (fields.next().expect("type"), fields.next().expect("key"));
        format!("[{}]:{} {kind} {data}", self.addr, self.port)
    }

    /// Writes a known_hosts file that trusts this host and returns its path.
    pub fn known_hosts_file(&self, dir: &Path) -> PathBuf {
        let path = dir.join(format!("known_hosts-{}", self.port));
        std::fs::write(&path, format!("{}\n", self.known_hosts_line())).expect("write known_hosts");
        path
    }

    /// Replaces the host key (as a reinstalled or impersonated server would) and restarts sshd.
    pub fn change_host_key(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        new_host_key(self.dir.path());
        self.child = spawn_sshd(
            self.dir.path(),
            &self.addr,
            self.port,
            self.netns.as_deref(),
            &self.extra,
        )
        .expect("sshd restarts on its port");
    }

    /// Stops the server (the host is down); its files stay.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// An `[ssh]` table for deploy.toml that reaches this host with the client key.
    pub fn ssh_toml(&self, known_hosts: &Path, policy: &str) -> String {
        format!(
            "[ssh]\nuser = \"{USER}\"\nport = {}\nidentity_file = \"{}\"\nhost_key_policy = \"{policy}\"\nknown_hosts_file = \"{}\"\nconnect_timeout = \"5s\"\n",
            self.port,
            client_key().display(),
            known_hosts.display()
        )
    }

    /// A pattern that matches this host's ssh client processes in `pgrep -f`.
    pub fn client_pattern(&self) -> String {
        format!("^ssh .*-p {} ", self.port)
    }

    /// Whether any ssh client process for this host is still running.
    pub fn ssh_clients_running(&self) -> bool {
        Command::new("pgrep")
            .arg("-f")
            .arg(self.client_pattern())
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for SshHost {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn new_host_key(dir: &Path) {
    let key = dir.join("hostkey");
    let _ = std::fs::remove_file(&key);
    let _ = std::fs::remove_file(dir.join("hostkey.pub"));
    sh(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key));
}

/// Starts sshd on `port` and waits for its banner; `None` if it exited (port taken).
fn spawn_sshd(dir: &Path, addr: &str, port: u16, netns: Option<&str>, extra: &str) -> Option<Child> {
    let config = format!(
        "Port {port}\nListenAddress {addr}\nHostKey {d}/hostkey\nAuthorizedKeysFile {d}/authorized_keys\n\
         PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n\
         PidFile {d}/sshd.pid\nPermitRootLogin no\nAllowUsers {USER}\nAllowTcpForwarding yes\n\
         MaxSessions 100\nMaxStartups 100:30:200\nClientAliveInterval 2\nClientAliveCountMax 3\nSubsystem sftp internal-sftp\n{extra}",
        d = dir.display()
    );
    std::fs::write(dir.join("sshd_config"), config).expect("sshd_config");
    let mut command = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "/usr/sbin/sshd"]);
            c
        }
        None => Command::new("/usr/sbin/sshd"),
    };
    let mut child = command
        .arg("-D")
        .arg("-f")
        .arg(dir.join("sshd_config"))
        .arg("-E")
        .arg(dir.join("sshd.log"))
        // Never the test's own stdout: a session left behind would hold it open.
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sshd (is openssh-server installed?)");
    let mut up = false;
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        if let Ok(Some(_)) = child.try_wait() {
            return None;
        }
        if let Ok(mut s) = TcpStream::connect((addr, port)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let mut banner = [0u8; 4];
            if s.read_exact(&mut banner).is_ok() && &banner == b"SSH-" {
                up = true;
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if !up {
        let _ = child.kill();
        let _ = child.wait();
        return None;
    }
    Some(child)
}
