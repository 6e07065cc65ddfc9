//! The local transport: the same commands, run on this machine by `sh`.

use std::net::{SocketAddr, ToSocketAddrs};
use std::process::Stdio;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::process::Command;

use super::{quote, stream_lines, LineSink, Output, Reader, Remote, RemoteError, Script, Writer};

/// Extra time beyond a command's timeout for `timeout` itself to stop it.
const GRACE: Duration = Duration::from_secs(10);

/// This machine.
#[derive(Debug, Clone)]
pub struct LocalRemote {
    host: String,
}

impl LocalRemote {
    /// This machine, called `host` in output.
    pub fn new(host: impl Into<String>) -> LocalRemote {
        LocalRemote { host: host.into() }
    }

    fn command(&self, script: &Script, timeout: Option<Duration>) -> Command {
        let mut cmd = Command::new("sh");
        // Its own process group, as sshd gives a remote command its own session: a
        // Ctrl-C at the terminal reaches deploy, which stops the work itself.
        cmd.arg("-c")
            .arg(quote::wrap(script, timeout))
            .kill_on_drop(true)
            .process_group(0);
        cmd
    }

    fn io_error(&self, script: &Script, e: impl std::fmt::Display) -> RemoteError {
        RemoteError::Io {
            host: self.host.clone(),
            command: script.display(),
            reason: e.to_string(),
        }
    }
}

#[async_trait]
impl Remote for LocalRemote {
    fn host(&self) -> &str {
        &self.host
    }

    async fn run(&self, script: &Script, timeout: Option<Duration>) -> Result<Output, RemoteError> {
        let started = Instant::now();
        let mut cmd = self.command(script, timeout);
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let fut = async { cmd.output().await.map_err(|e| self.io_error(script, e)) };
        super::bounded(&self.host, script, timeout, GRACE, started, fut).await
    }

    async fn stream(&self, script: &Script, timeout: Option<Duration>, sink: LineSink<'_>) -> Result<i32, RemoteError> {
        let started = Instant::now();
        let mut cmd = self.command(script, timeout);
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| self.io_error(script, e))?;
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let fut = async {
            stream_lines(stdout, stderr, sink)
                .await
                .map_err(|e| self.io_error(script, e))?;
            let status = child.wait().await.map_err(|e| self.io_error(script, e))?;
            Ok(super::status_only(status))
        };
        Ok(super::bounded(&self.host, script, timeout, GRACE, started, fut)
            .await?
            .code)
    }

    async fn close(self: Box<Self>) -> Result<(), RemoteError> {
        Ok(())
    }

    async fn forward_socket(&self, remote: &str) -> Result<std::path::PathBuf, RemoteError> {
        // Already local: the socket itself.
        Ok(std::path::PathBuf::from(remote))
    }

    async fn run_with_reader(
        &self,
        script: &Script,
        input: Reader<'_>,
        timeout: Option<Duration>,
    ) -> Result<Output, RemoteError> {
        let started = Instant::now();
        let mut cmd = self.command(script, timeout);
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| self.io_error(script, e))?;
        let write = super::feed(input, child.stdin.take().expect("piped"));
        let fut = async {
            let (written, out) = tokio::join!(write, child.wait_with_output());
            let out = out.map_err(|e| self.io_error(script, e))?;
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
        let started = Instant::now();
        let mut cmd = self.command(script, timeout);
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| self.io_error(script, e))?;
        let (stdout, stderr) = (child.stdout.take().expect("piped"), child.stderr.take().expect("piped"));
        let fut = async {
            let said = super::drain(stdout, stderr, out)
                .await
                .map_err(|e| self.io_error(script, e))?;
            let status = child.wait().await.map_err(|e| self.io_error(script, e))?;
            Ok(std::process::Output {
                status,
                stdout: Vec::new(),
                stderr: said,
            })
        };
        super::bounded(&self.host, script, timeout, GRACE, started, fut).await
    }

    async fn close_forward(&self, _target: &str, _local: SocketAddr) -> Result<(), RemoteError> {
        // Nothing was opened: the target is used as it is.
        Ok(())
    }

    fn close_forward_later(&self, _target: &str, _local: SocketAddr) {}

    async fn forward(&self, target: &str) -> Result<SocketAddr, RemoteError> {
        // Already local: the target itself is the address to use.
        target
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| RemoteError::Forward {
                host: self.host.clone(),
                target: target.to_string(),
                reason: "expected host:port".into(),
            })
    }
}
