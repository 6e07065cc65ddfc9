//! The SSH transport: one multiplexed OpenSSH master per host (openssh crate,
//! system `ssh`, so ~/.ssh/config, agents and jump hosts work as they do for `ssh`).

use std::net::{SocketAddr, TcpListener};
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use openssh::{ControlPersist, ForwardType, KnownHosts, Session, SessionBuilder, Socket, Stdio};

use super::{quote, stream_lines, LineSink, Output, Reader, Remote, RemoteError, Script, Writer};
use crate::config::{Host, HostKeyPolicy};

/// Extra time the client waits beyond a command's timeout, for `timeout` on the
/// host to stop it and report back before the client gives up on the channel.
const GRACE: Duration = Duration::from_secs(10);

/// How long the ssh master may take to close a port forward (it needs no round trip).
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

/// A host reached over SSH.
pub struct SshRemote {
    host: String,
    session: Option<Session>,
    /// Forwards to close before the next command (see [`Remote::close_forward_later`]).
    unwanted: std::sync::Mutex<Vec<(String, SocketAddr)>>,
    /// Private directory of the local ends of forwarded unix sockets; removed with the session.
    sockets: std::sync::Mutex<Option<tempfile::TempDir>>,
}

impl std::fmt::Debug for SshRemote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshRemote").field("host", &self.host).finish()
    }
}

impl SshRemote {
    /// Opens the master connection, verifying the host key under the host's policy.
    pub async fn connect(host: &Host) -> Result<SshRemote, RemoteError> {
        let mut builder = SessionBuilder::default();
        let t = &host.ssh;
        builder
            .known_hosts_check(match t.host_key_policy {
                HostKeyPolicy::Strict => KnownHosts::Strict,
                HostKeyPolicy::AcceptNew => KnownHosts::Add,
            })
            .connect_timeout(t.connect_timeout)
            // A dead link is noticed within 3 missed keepalives instead of TCP's minutes.
            .server_alive_interval(Duration::from_secs(5))
            .control_directory(std::env::temp_dir())
            // The master is closed when the session is dropped or closed; this only
            // bounds how long one outlives a deploy that was killed with SIGKILL.
            .control_persist(ControlPersist::IdleFor(NonZeroUsize::new(600).expect("non-zero")));
        if let Some(user) = &t.user {
            builder.user(user.expose().to_string());
        }
        if let Some(port) = t.port {
            builder.port(port);
        }
        if let Some(key) = &t.identity_file {
            builder.keyfile(key);
        }
        if let Some(file) = &t.known_hosts_file {
            builder.user_known_hosts_file(file);
        }
        if let Some(jump) = &t.jump {
            builder.jump_hosts([jump.expose()]);
        }
        let session = builder
            .connect_mux(host.address.expose())
            .await
            .map_err(|e| RemoteError::Connect {
                host: host.name.clone(),
                reason: ssh_words(&e),
            })?;
        Ok(SshRemote {
            host: host.name.clone(),
            session: Some(session),
            unwanted: std::sync::Mutex::new(Vec::new()),
            sockets: std::sync::Mutex::new(None),
        })
    }

    fn session(&self) -> &Session {
        self.session.as_ref().expect("session is present until close")
    }

    /// Closes the master connection and removes its control directory.
    pub async fn close(mut self) -> Result<(), RemoteError> {
        self.shutdown().await
    }

    async fn shutdown(&mut self) -> Result<(), RemoteError> {
        match self.session.take() {
            Some(s) => s.close().await.map_err(|e| RemoteError::Io {
                host: self.host.clone(),
                command: "close".into(),
                reason: ssh_words(&e),
            }),
            None => Ok(()),
        }
    }

    /// Closes the forwards that were let go of without waiting.
    async fn close_unwanted(&self) {
        let unwanted = std::mem::take(&mut *self.unwanted.lock().unwrap_or_else(|e| e.into_inner()));
        for (target, local) in unwanted {
            // One that cannot be closed goes with the master; nothing else to do.
            let _ = self.close_forward(&target, local).await;
        }
    }

    fn forward_error(&self, target: &str, reason: String) -> RemoteError {
        RemoteError::Forward {
            host: self.host.clone(),
            target: target.to_string(),
            reason,
        }
    }

    fn io_error(&self, script: &Script, e: impl std::fmt::Display) -> RemoteError {
        RemoteError::Io {
            host: self.host.clone(),
            command: script.display(),
            reason: e.to_string(),
        }
    }
}

/// `host:port` (the host may be `[v6]`) as the socket a forward connects to.
fn target_socket(target: &str) -> Option<Socket<'static>> {
    let (host, port) = target.rsplit_once(':')?;
    Some(Socket::TcpSocket {
        host: host.trim_matches(['[', ']']).to_string().into(),
        port: port.parse().ok()?,
    })
}

/// openssh's own message is "failed to connect to the remote host"; ssh's words
/// (host key refused, connection refused, permission denied) are in the source.
fn ssh_words(e: &openssh::Error) -> String {
    let mut words = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string().trim().to_string();
        if !text.is_empty() && !words.contains(&text) {
            words.push_str(": ");
            words.push_str(&text);
        }
        source = s.source();
    }
    words
}

#[async_trait]
impl Remote for SshRemote {
    fn host(&self) -> &str {
        &self.host
    }

    async fn run(&self, script: &Script, timeout: Option<Duration>) -> Result<Output, RemoteError> {
        self.close_unwanted().await;
        let started = Instant::now();
        let mut cmd = self.session().raw_command(quote::wrap(script, timeout));
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let fut = async { cmd.output().await.map_err(|e| self.io_error(script, ssh_words(&e))) };
        super::bounded(&self.host, script, timeout, GRACE, started, fut).await
    }

    async fn stream(&self, script: &Script, timeout: Option<Duration>, sink: LineSink<'_>) -> Result<i32, RemoteError> {
        self.close_unwanted().await;
        let started = Instant::now();
        let mut cmd = self.session().raw_command(quote::wrap(script, timeout));
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().await.map_err(|e| self.io_error(script, ssh_words(&e)))?;
        let stdout = child.stdout().take().expect("piped");
        let stderr = child.stderr().take().expect("piped");
        let fut = async {
            stream_lines(stdout, stderr, sink)
                .await
                .map_err(|e| self.io_error(script, e))?;
            let status = child.wait().await.map_err(|e| self.io_error(script, ssh_words(&e)))?;
            Ok(super::status_only(status))
        };
        Ok(super::bounded(&self.host, script, timeout, GRACE, started, fut)
            .await?
            .code)
    }

    async fn close(mut self: Box<Self>) -> Result<(), RemoteError> {
        self.shutdown().await
    }

    async fn run_with_reader(
        &self,
        script: &Script,
        input: Reader<'_>,
        timeout: Option<Duration>,
    ) -> Result<Output, RemoteError> {
        self.close_unwanted().await;
        let started = Instant::now();
        let mut cmd = self.session().raw_command(quote::wrap(script, timeout));
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().await.map_err(|e| self.io_error(script, ssh_words(&e)))?;
        let write = super::feed(input, child.stdin().take().expect("piped"));
        // Output is read while input is written: a command that answers as it
        // reads cannot stall on a full pipe.
        let fut = async {
            let (written, out) = tokio::join!(write, child.wait_with_output());
            let out = out.map_err(|e| self.io_error(script, ssh_words(&e)))?;
            // A command that stopped early (failed, or was stopped) closed its
            // stdin: its exit says why, not the broken pipe.
            if out.status.success() {
                written.map_err(|e| self.io_error(script, e))?;
            }
            Ok(out)
        };
        super::bounded(&self.host, script, timeout, GRACE, started, fut).await
    }

    async fn run_to_writer(
        &self,
        script: &Script,
        out: Writer<'_>,
        timeout: Option<Duration>,
    ) -> Result<Output, RemoteError> {
        self.close_unwanted().await;
        let started = Instant::now();
        let mut cmd = self.session().raw_command(quote::wrap(script, timeout));
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().await.map_err(|e| self.io_error(script, ssh_words(&e)))?;
        let (stdout, stderr) = (
            child.stdout().take().expect("piped"),
            child.stderr().take().expect("piped"),
        );
        let fut = async {
            let said = super::drain(stdout, stderr, out)
                .await
                .map_err(|e| self.io_error(script, e))?;
            let status = child.wait().await.map_err(|e| self.io_error(script, ssh_words(&e)))?;
            Ok(std::process::Output {
                status,
                stdout: Vec::new(),
                stderr: said,
            })
        };
        super::bounded(&self.host, script, timeout, GRACE, started, fut).await
    }

    async fn forward_socket(&self, remote: &str) -> Result<std::path::PathBuf, RemoteError> {
        let err = |reason: String| RemoteError::Forward {
            host: self.host.clone(),
            target: remote.to_string(),
            reason,
        };
        let local = {
            let mut dir = self.sockets.lock().unwrap_or_else(|e| e.into_inner());
            if dir.is_none() {
                // tempfile makes it 0700: only this user reaches the host's engine through it.
                *dir = Some(
                    tempfile::Builder::new()
                        .prefix("deploy-sockets-")
                        .tempdir()
                        .map_err(|e| err(e.to_string()))?,
                );
            }
            let n = dir
                .as_ref()
                .map_or(0, |d| std::fs::read_dir(d.path()).map_or(0, |r| r.count()));
            dir.as_ref()
                .map(|d| d.path().join(format!("{n}.sock")))
                .unwrap_or_default()
        };
        self.session()
            .request_port_forward(
                ForwardType::Local,
                Socket::UnixSocket {
                    path: local.clone().into(),
                },
                Socket::UnixSocket {
                    path: std::path::PathBuf::from(remote).into(),
                },
            )
            .await
            .map_err(|e| err(ssh_words(&e)))?;
        Ok(local)
    }

    async fn forward(&self, target: &str) -> Result<SocketAddr, RemoteError> {
        self.close_unwanted().await;
        let remote = target_socket(target).ok_or_else(|| self.forward_error(target, "expected host:port".into()))?;
        let mut last = String::new();
        // The mux protocol cannot report a port it picked, so pick a free one here;
        // another process may take it in between, hence the retries.
        for _ in 0..3 {
            let local = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(|e| self.forward_error(target, e.to_string()))?;
            match self
                .session()
                .request_port_forward(ForwardType::Local, local, remote.clone())
                .await
            {
                Ok(()) => return Ok(local),
                Err(e) => last = ssh_words(&e),
            }
        }
        Err(self.forward_error(target, last))
    }

    async fn close_forward(&self, target: &str, local: SocketAddr) -> Result<(), RemoteError> {
        let remote = target_socket(target).ok_or_else(|| self.forward_error(target, "expected host:port".into()))?;
        // The same arguments as the request, as the mux protocol matches on them.
        // The master answers by itself, at once; a wedged one must not hang the run.
        let closing = self.session().close_port_forward(ForwardType::Local, local, remote);
        match tokio::time::timeout(FORWARD_TIMEOUT, closing).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.forward_error(
                target,
                format!("cannot close the forward at {local}: {}", ssh_words(&e)),
            )),
            Err(_) => Err(self.forward_error(
                target,
                format!("the ssh master did not close the forward at {local} within {FORWARD_TIMEOUT:?}"),
            )),
        }
    }

    fn close_forward_later(&self, target: &str, local: SocketAddr) {
        self.unwanted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((target.to_string(), local));
    }
}
