//! The local repository (git2): resolve a revision, refuse a dirty tree, push
//! with verified host keys, and pack a commit's files for the upload strategy.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::time::Duration;

use git2::{
    CertificateCheckStatus, Cred, CredentialType, ErrorCode, ObjectType, Oid, PushOptions, RemoteCallbacks, Repository,
    StatusOptions, TreeWalkMode,
};

use crate::interrupt::Interrupt;
use crate::known_hosts::KnownHosts;

/// A resolved commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// Full hex id.
    pub id: String,
    /// The first 7 characters of the id.
    pub short: String,
    /// First line of the message.
    pub summary: String,
    /// Commit time, seconds since the epoch.
    pub time: i64,
}

/// Things that go wrong with the local repository or a push.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// No repository here.
    #[error("no git repository at {path}: {reason}")]
    Open { path: PathBuf, reason: String },
    /// A revision that names no commit.
    #[error("`{rev}` is not a commit in this repository: {reason}")]
    Resolve { rev: String, reason: String },
    /// Uncommitted changes.
    #[error("the working tree has uncommitted changes ({}); commit or stash them, or pass --allow-dirty", .files.join(", "))]
    Dirty { files: Vec<String> },
    /// The remote is not configured.
    #[error("no git remote `{name}`: {reason}")]
    NoRemote { name: String, reason: String },
    /// The remote refused to update a ref.
    #[error("push to `{remote}` rejected {refname}: {reason}")]
    Rejected {
        remote: String,
        refname: String,
        reason: String,
    },
    /// The server's host key was refused.
    #[error("push to `{remote}` refused: {reason}")]
    HostKey { remote: String, reason: String },
    /// Any other push failure (network, auth).
    #[error("push to `{remote}` failed: {reason}")]
    Push { remote: String, reason: String },
    /// The push did not finish within `[source] push_timeout`.
    #[error("push to `{remote}` did not finish within {} ([source] push_timeout); it was given up", humantime::format_duration(*.timeout))]
    PushTimedOut { remote: String, timeout: Duration },
    /// deploy was interrupted (Ctrl-C, SIGTERM) during the push.
    #[error("push to `{remote}` was interrupted")]
    PushInterrupted { remote: String },
    /// The commit's files could not be packed.
    #[error("cannot pack commit {commit}: {reason}")]
    Archive { commit: String, reason: String },
}

impl GitError {
    /// Whether the run was interrupted (exit 130) rather than git failing.
    pub fn is_interrupted(&self) -> bool {
        matches!(self, GitError::PushInterrupted { .. })
    }
}

/// How a push authenticates and checks the server.
#[derive(Debug, Clone)]
pub struct PushAuth {
    /// Host keys and the policy for unknown ones.
    pub known_hosts: KnownHosts,
    /// A key to offer (after the agent), e.g. `[ssh] identity_file`.
    pub identity_file: Option<PathBuf>,
}

/// A local repository.
pub struct Repo {
    repo: Repository,
}

impl std::fmt::Debug for Repo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repo").field("path", &self.repo.path()).finish()
    }
}

impl Repo {
    /// The repository containing `dir`.
    pub fn discover(dir: &Path) -> Result<Repo, GitError> {
        Repository::discover(dir)
            .map(|repo| Repo { repo })
            .map_err(|e| GitError::Open {
                path: dir.to_path_buf(),
                reason: e.message().to_string(),
            })
    }

    /// The repository's git directory (what [`push`] opens again on its own thread).
    pub fn path(&self) -> &Path {
        self.repo.path()
    }

    /// The commit `rev` names (`HEAD`, a branch, a tag, an id).
    pub fn resolve(&self, rev: &str) -> Result<Commit, GitError> {
        let err = |e: git2::Error| GitError::Resolve {
            rev: rev.to_string(),
            reason: e.message().to_string(),
        };
        let commit = self
            .repo
            .revparse_single(rev)
            .and_then(|o| o.peel_to_commit())
            .map_err(err)?;
        let id = commit.id().to_string();
        Ok(Commit {
            short: id[..7].to_string(),
            id,
            summary: commit.summary().ok().flatten().unwrap_or("").to_string(),
            time: commit.time().seconds(),
        })
    }

    /// Tracked files with uncommitted changes (untracked files do not change what
    /// is deployed, so they do not count).
    pub fn dirty_files(&self) -> Result<Vec<String>, GitError> {
        let mut opts = StatusOptions::new();
        opts.include_untracked(false).include_ignored(false);
        let statuses = self.repo.statuses(Some(&mut opts)).map_err(|e| GitError::Open {
            path: self.repo.path().to_path_buf(),
            reason: e.message().to_string(),
        })?;
        Ok(statuses
            .iter()
            .filter_map(|s| s.path().ok().map(str::to_string))
            .collect())
    }

    /// Fails with the changed files if the tree is dirty.
    pub fn require_clean(&self) -> Result<(), GitError> {
        let files = self.dirty_files()?;
        if files.is_empty() {
            Ok(())
        } else {
            Err(GitError::Dirty { files })
        }
    }

    /// The URL of remote `name`.
    pub fn remote_url(&self, name: &str) -> Result<String, GitError> {
        let remote = self.repo.find_remote(name).map_err(|e| GitError::NoRemote {
            name: name.to_string(),
            reason: e.message().to_string(),
        })?;
        remote.url().map(str::to_string).map_err(|_| GitError::NoRemote {
            name: name.to_string(),
            reason: "its URL is not UTF-8".into(),
        })
    }

    /// Whether local branch `branch` has `commit` (is it, or descends from it).
    pub fn branch_contains(&self, branch: &str, commit: &Commit) -> Result<bool, GitError> {
        let err = |e: git2::Error| GitError::Resolve {
            rev: branch.to_string(),
            reason: e.message().to_string(),
        };
        let tip = self
            .repo
            .revparse_single(&format!("refs/heads/{branch}"))
            .and_then(|o| o.peel_to_commit())
            .map_err(err)?;
        let oid = Oid::from_str(&commit.id).map_err(err)?;
        Ok(tip.id() == oid || self.repo.graph_descendant_of(tip.id(), oid).map_err(err)?)
    }

    /// The text of `path` in `commit`, or `None` if the commit has no such file.
    pub fn read_file(&self, commit: &Commit, path: &str) -> Result<Option<String>, GitError> {
        let err = |e: git2::Error| GitError::Archive {
            commit: commit.short.clone(),
            reason: e.message().to_string(),
        };
        let oid = Oid::from_str(&commit.id).map_err(err)?;
        let tree = self.repo.find_commit(oid).and_then(|c| c.tree()).map_err(err)?;
        let entry = match tree.get_path(Path::new(path)) {
            Ok(e) => e,
            Err(e) if e.code() == ErrorCode::NotFound => return Ok(None),
            Err(e) => return Err(err(e)),
        };
        let blob = self.repo.find_blob(entry.id()).map_err(err)?;
        Ok(Some(String::from_utf8_lossy(blob.content()).into_owned()))
    }

    /// Pushes local branch `branch` to the same branch on remote `name`. Blocks
    /// until git is done, however long that is: async code calls [`push`].
    pub fn push(&self, name: &str, branch: &str, auth: &PushAuth) -> Result<(), GitError> {
        let mut remote = self.repo.find_remote(name).map_err(|e| GitError::NoRemote {
            name: name.to_string(),
            reason: e.message().to_string(),
        })?;
        let refname = format!("refs/heads/{branch}");
        // The push goes to pushurl where one is set; its host key is checked under its port.
        let url = remote
            .pushurl()
            .ok()
            .flatten()
            .or_else(|| remote.url().ok())
            .unwrap_or("")
            .to_string();
        let port = ssh_host_port(&url).map_or(22, |(_, p)| p);
        let host_key_error: RefCell<Option<String>> = RefCell::new(None);
        let rejected: RefCell<Vec<(String, String)>> = RefCell::new(Vec::new());
        let auth_error: RefCell<Option<String>> = RefCell::new(None);
        let keys = key_candidates(auth.identity_file.as_deref());
        let mut ssh_attempt = 0usize;
        let mut helper_tried = false;
        let config = self.repo.config().ok();

        let mut callbacks = RemoteCallbacks::new();
        callbacks.certificate_check(|cert, host| {
            let Some(hostkey) = cert.as_hostkey() else {
                // TLS: libgit2 verifies the certificate chain itself.
                return Ok(CertificateCheckStatus::CertificatePassthrough);
            };
            let decision = match (hostkey.hostkey_type(), hostkey.hostkey()) {
                (Some(kind), Some(raw)) => auth.known_hosts.decide(host, port, kind.name(), raw),
                _ => Err(format!(
                    "{host} presented no host key that can be checked against known_hosts"
                )),
            };
            match decision {
                Ok(()) => Ok(CertificateCheckStatus::CertificateOk),
                Err(msg) => {
                    *host_key_error.borrow_mut() = Some(msg.clone());
                    Err(git2::Error::from_str(&msg))
                }
            }
        });
        callbacks.credentials(|url, username, allowed| {
            let user = username.unwrap_or("git");
            if allowed.contains(CredentialType::SSH_KEY) {
                // libgit2 asks again after each refusal: offer the agent, then each key once.
                let attempt = ssh_attempt;
                ssh_attempt += 1;
                let agent = std::env::var_os("SSH_AUTH_SOCK").is_some();
                let offset = usize::from(agent);
                if agent && attempt == 0 {
                    return Cred::ssh_key_from_agent(user);
                }
                if let Some(key) = keys.get(attempt - offset) {
                    let public = PathBuf::from(format!("{}.pub", key.display()));
                    return Cred::ssh_key(user, public.exists().then_some(public.as_path()), key, None);
                }
                let msg = format!(
                    "no SSH key was accepted for {user} (tried {} key(s){})",
                    keys.len(),
                    if agent { " and the agent" } else { "" }
                );
                *auth_error.borrow_mut() = Some(msg.clone());
                return Err(git2::Error::from_str(&msg));
            }
            if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) && !helper_tried {
                helper_tried = true;
                if let Some(config) = &config {
                    return Cred::credential_helper(config, url, username);
                }
            }
            if allowed.contains(CredentialType::USERNAME) {
                return Cred::username(user);
            }
            let msg = "no credentials were accepted (ssh-agent, key file or git credential helper)".to_string();
            *auth_error.borrow_mut() = Some(msg.clone());
            Err(git2::Error::from_str(&msg))
        });
        callbacks.push_update_reference(|refname, status| {
            if let Some(reason) = status {
                rejected.borrow_mut().push((refname.to_string(), reason.to_string()));
            }
            Ok(())
        });
        let mut opts = PushOptions::new();
        opts.remote_callbacks(callbacks);
        let result = remote.push(&[format!("{refname}:{refname}")], Some(&mut opts));
        drop(opts);
        if let Some(reason) = host_key_error.into_inner() {
            return Err(GitError::HostKey {
                remote: name.to_string(),
                reason,
            });
        }
        if let Some((refname, reason)) = rejected.into_inner().into_iter().next() {
            return Err(GitError::Rejected {
                remote: name.to_string(),
                refname,
                reason,
            });
        }
        match result {
            Ok(()) => Ok(()),
            Err(e)
                if e.code() == ErrorCode::NotFastForward
                    || e.message().contains("fastforward")
                    || e.message().contains("fast-forward") =>
            {
                Err(GitError::Rejected {
                    remote: name.to_string(),
                    refname,
                    reason: "non-fast-forward: the remote branch has commits this one does not; pull or rebase first"
                        .into(),
                })
            }
            Err(e) => Err(GitError::Push {
                remote: name.to_string(),
                reason: auth_error.into_inner().unwrap_or_else(|| e.message().to_string()),
            }),
        }
    }

    /// A tar archive of the commit's files (modes and symlinks kept, submodules left out).
    pub fn archive(&self, commit: &Commit) -> Result<Vec<u8>, GitError> {
        let err = |reason: String| GitError::Archive {
            commit: commit.short.clone(),
            reason,
        };
        let oid = Oid::from_str(&commit.id).map_err(|e| err(e.message().to_string()))?;
        let tree = self
            .repo
            .find_commit(oid)
            .and_then(|c| c.tree())
            .map_err(|e| err(e.message().to_string()))?;
        let mut tar = tar::Builder::new(Vec::new());
        let mtime = u64::try_from(commit.time).unwrap_or(0);
        let mut failure: Option<String> = None;
        tree.walk(TreeWalkMode::PreOrder, |dir, entry| {
            let path = format!("{dir}{}", entry.name().unwrap_or(""));
            let mode = entry.filemode();
            let result = match entry.kind() {
                Some(ObjectType::Tree) => {
                    let mut h = tar::Header::new_gnu();
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(0o755);
                    h.set_size(0);
                    h.set_mtime(mtime);
                    tar.append_data(&mut h, format!("{path}/"), std::io::empty())
                }
                Some(ObjectType::Blob) => match self.repo.find_blob(entry.id()) {
                    Ok(blob) => {
                        let mut h = tar::Header::new_gnu();
                        h.set_mtime(mtime);
                        if mode == 0o120000 {
                            h.set_entry_type(tar::EntryType::Symlink);
                            h.set_size(0);
                            h.set_mode(0o777);
                            let target = String::from_utf8_lossy(blob.content()).into_owned();
                            tar.append_link(&mut h, &path, target)
                        } else {
                            h.set_entry_type(tar::EntryType::Regular);
                            h.set_mode(if mode == 0o100755 { 0o755 } else { 0o644 });
                            h.set_size(blob.content().len() as u64);
                            tar.append_data(&mut h, &path, blob.content())
                        }
                    }
                    Err(e) => Err(std::io::Error::other(e.message().to_string())),
                },
                // Submodules (commits) and anything else are not part of this tree's files.
                _ => Ok(()),
            };
            match result {
                Ok(()) => git2::TreeWalkResult::Ok,
                Err(e) => {
                    failure = Some(format!("{path}: {e}"));
                    git2::TreeWalkResult::Abort
                }
            }
        })
        .map_err(|e| err(e.message().to_string()))?;
        if let Some(reason) = failure {
            return Err(err(reason));
        }
        tar.into_inner().map_err(|e| err(e.to_string()))
    }
}

/// Pushes local branch `branch` of the repository at `repo_path` to remote
/// `remote`, giving up after `timeout` ([`GitError::PushTimedOut`]) or when
/// `interrupt` fires ([`GitError::PushInterrupted`]).
///
/// git2 blocks, and a server that never answers would block it for good: the
/// push runs on a thread of its own (not the runtime's blocking pool, which the
/// runtime would wait for when it shuts down), which opens its own
/// `Repository`. Given up, the thread is left behind; libgit2's connect and
/// read timeouts, set just above `timeout`, end it soon after.
pub async fn push(
    repo_path: &Path,
    remote: &str,
    branch: &str,
    auth: &PushAuth,
    timeout: Duration,
    interrupt: &Interrupt,
) -> Result<(), GitError> {
    set_server_timeouts(timeout);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (path, name, branch, auth) = (
        repo_path.to_path_buf(),
        remote.to_string(),
        branch.to_string(),
        auth.clone(),
    );
    let spawned = std::thread::Builder::new().name("git push".into()).spawn(move || {
        let result = Repository::open(&path)
            .map_err(|e| GitError::Open {
                path: path.clone(),
                reason: e.message().to_string(),
            })
            .and_then(|repo| Repo { repo }.push(&name, &branch, &auth));
        // Nobody listens any more when the push was given up.
        let _ = tx.send(result);
    });
    if let Err(e) = spawned {
        return Err(GitError::Push {
            remote: remote.to_string(),
            reason: format!("cannot start a thread for it: {e}"),
        });
    }
    tokio::select! {
        result = rx => result.unwrap_or_else(|_| Err(GitError::Push {
            remote: remote.to_string(),
            reason: "the push ended without a result".into(),
        })),
        _ = tokio::time::sleep(timeout) => Err(GitError::PushTimedOut {
            remote: remote.to_string(),
            timeout,
        }),
        _ = interrupt.wait() => Err(GitError::PushInterrupted {
            remote: remote.to_string(),
        }),
    }
}

/// Sets libgit2's connect and read timeouts (process-wide) to a little more
/// than `timeout`, so a push thread that was given up ends by itself, and
/// libgit2's own timeout never beats [`push`]'s, whose error names the limit.
fn set_server_timeouts(timeout: Duration) {
    static SETTING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let limit = timeout.saturating_add(Duration::from_secs(1));
    let ms = libc::c_int::try_from(limit.as_millis()).unwrap_or(libc::c_int::MAX);
    let _guard = SETTING.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: these write two C globals that libgit2 reads when it opens a
    // connection. They are written here, under a lock, before the push thread
    // that reads them starts; nothing else in deploy opens git connections.
    unsafe {
        let _ = git2::opts::set_server_connect_timeout_in_milliseconds(ms);
        let _ = git2::opts::set_server_timeout_in_milliseconds(ms);
    }
}

/// Keys offered after the agent: the configured one, then ssh's defaults.
fn key_candidates(identity_file: Option<&Path>) -> Vec<PathBuf> {
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
    identity_file
        .map(Path::to_path_buf)
        .into_iter()
        .chain(
            ["id_ed25519", "id_ecdsa", "id_rsa"]
                .iter()
                .map(|n| home.join(".ssh").join(n)),
        )
        .filter(|p| p.exists())
        .collect()
}

/// Host and port of an SSH git URL (`ssh://user@host:2222/x.git`, `user@host:x.git`);
/// `None` for other schemes and local paths.
pub fn ssh_host_port(url: &str) -> Option<(String, u16)> {
    for scheme in ["ssh://", "git+ssh://", "ssh+git://"] {
        if let Some(rest) = url.strip_prefix(scheme) {
            let authority = rest.split('/').next()?;
            let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            if let Some(inner) = hostport.strip_prefix('[') {
                let (host, after) = inner.split_once(']')?;
                let port = after.strip_prefix(':').and_then(|p| p.parse().ok()).unwrap_or(22);
                return Some((host.to_string(), port));
            }
            return Some(match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p.parse().ok()?),
                None => (hostport.to_string(), 22),
            });
        }
    }
    if url.contains("://") || url.starts_with('/') || url.starts_with('.') {
        return None;
    }
    // scp-like: [user@]host:path, where host has no slash before the colon.
    let (before, _) = url.split_once(':')?;
    if before.contains('/') {
        return None;
    }
    let host = before.rsplit_once('@').map_or(before, |(_, h)| h);
    Some((host.to_string(), 22))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_urls_give_host_and_port() {
        assert_eq!(
            ssh_host_port("ssh://u@127.0.0.1:2222/srv/r.git"),
            Some(("127.0.0.1".into(), 2222))
        );
        assert_eq!(ssh_host_port("ssh://github.com/a/b"), Some(("github.com".into(), 22)));
        assert_eq!(
            ssh_host_port("git@github.com:acme/x.git"),
            Some(("github.com".into(), 22))
        );
        assert_eq!(ssh_host_port("/srv/r.git"), None);
        assert_eq!(ssh_host_port("https://github.com/a/b"), None);
    }
}
