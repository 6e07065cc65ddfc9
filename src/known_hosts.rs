//! Host keys for git2, which, unlike `ssh`, leaves the decision to us: look the
//! host up in known_hosts with OpenSSH's own `ssh-keygen -F` (so hashed entries
//! and patterns work as they do for ssh) and apply the same policy as the SSH
//! transport.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;

use crate::config::HostKeyPolicy;

/// What known_hosts says about a key a server presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The key is listed for this host.
    Known,
    /// The host is not listed with a key of this type.
    Unknown,
    /// The host is listed with a different key, or the key is revoked.
    Changed,
    /// known_hosts could not be searched (ssh-keygen missing or failing): refuse.
    Unreadable(String),
}

/// Where to look.
#[derive(Debug, Clone)]
pub struct KnownHosts {
    /// The user's file (written to under accept-new).
    pub user_file: PathBuf,
    /// Files only read (`/etc/ssh/ssh_known_hosts`).
    pub global_files: Vec<PathBuf>,
    /// What to do with an unknown host.
    pub policy: HostKeyPolicy,
}

impl KnownHosts {
    /// The configured file, or ssh's default `~/.ssh/known_hosts`; plus the global file.
    pub fn new(file: Option<&Path>, policy: HostKeyPolicy) -> KnownHosts {
        let user_file = file.map(Path::to_path_buf).unwrap_or_else(|| {
            let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
            home.join(".ssh/known_hosts")
        });
        let global_files = if file.is_some() {
            Vec::new()
        } else {
            vec![PathBuf::from("/etc/ssh/ssh_known_hosts")]
        };
        KnownHosts {
            user_file,
            global_files,
            policy,
        }
    }

    /// How known_hosts names `host` on `port`.
    pub fn host_name(host: &str, port: u16) -> String {
        if port == 22 {
            host.to_string()
        } else {
            format!("[{host}]:{port}")
        }
    }

    /// Looks `key` (raw SSH wire format) of `key_type` up for `host`:`port`.
    pub fn verdict(&self, host: &str, port: u16, key_type: &str, key: &[u8]) -> Verdict {
        let name = Self::host_name(host, port);
        let wanted = base64::engine::general_purpose::STANDARD.encode(key);
        let mut verdict = Verdict::Unknown;
        for file in std::iter::once(&self.user_file).chain(&self.global_files) {
            let lines = match lookup(file, &name) {
                Ok(lines) => lines,
                Err(e) => return Verdict::Unreadable(e),
            };
            for line in lines {
                let mut fields = line.split_whitespace();
                let Some(mut first) = fields.next() else { continue };
                let mut revoked = false;
                if first.starts_with('@') {
                    revoked = first == "@revoked";
                    if first == "@cert-authority" {
                        continue;
                    }
                    first = match fields.next() {
                        Some(f) => f,
                        None => continue,
                    };
                }
                let _ = first; // the host field; ssh-keygen already matched it
                let (Some(kind), Some(data)) = (fields.next(), fields.next()) else {
                    continue;
                };
                if revoked && data == wanted {
                    return Verdict::Changed;
                }
                // Listed with another key (of any type) and not with this one: changed,
                // so accept-new never adds a second key for a known host.
                if kind == key_type && data == wanted {
                    verdict = Verdict::Known;
                } else if verdict != Verdict::Known {
                    verdict = Verdict::Changed;
                }
            }
        }
        verdict
    }

    /// Decides on a presented key: Ok to proceed, or Err with a message for the user.
    pub fn decide(&self, host: &str, port: u16, key_type: &str, key: &[u8]) -> Result<(), String> {
        let name = Self::host_name(host, port);
        match self.verdict(host, port, key_type, key) {
            Verdict::Known => Ok(()),
            Verdict::Unreadable(e) => Err(format!("cannot check the host key of {name}: {e}; refusing to connect")),
            Verdict::Changed => Err(format!(
                "the {key_type} host key of {name} does not match {}: it changed, or someone is in between; refusing to connect",
                self.user_file.display()
            )),
            Verdict::Unknown => match self.policy {
                HostKeyPolicy::Strict => Err(format!(
                    "no {key_type} host key is known for {name} in {} and host_key_policy is strict; add it (ssh-keyscan) or use accept-new",
                    self.user_file.display()
                )),
                HostKeyPolicy::AcceptNew => {
                    let data = base64::engine::general_purpose::STANDARD.encode(key);
                    append(&self.user_file, &format!("{name} {key_type} {data}"))
                        .map_err(|e| format!("cannot record the host key of {name} in {}: {e}", self.user_file.display()))
                }
            },
        }
    }
}

/// The entries of `file` that match `name`, as `ssh-keygen -F` finds them.
fn lookup(file: &Path, name: &str) -> Result<Vec<String>, String> {
    if !file.exists() {
        return Ok(Vec::new());
    }
    let out = Command::new("ssh-keygen")
        .arg("-F")
        .arg(name)
        .arg("-f")
        .arg(file)
        .output()
        .map_err(|e| format!("ssh-keygen could not run ({e})"))?;
    // Exit 1 with no output means "not found"; anything on stderr is a failure.
    if !out.status.success() && !out.stderr.is_empty() {
        return Err(format!(
            "ssh-keygen -F failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(str::to_string)
        .collect())
}

fn append(file: &Path, line: &str) -> std::io::Result<()> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(file)?;
    writeln!(f, "{line}")
}
