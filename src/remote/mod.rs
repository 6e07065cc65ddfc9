//! Running commands on hosts: one [`Remote`] trait, an SSH transport and a local
//! one. Commands are built with [`Cmd`] and quoted in [`quote`], nowhere else.

pub mod local;
pub mod quote;
pub mod ssh;

use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;

pub use quote::{Cmd, Script, Word};

/// What a finished command left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// Exit code; a command killed by a signal reports 128 + the signal.
    pub code: i32,
    /// Everything it wrote to stdout.
    pub stdout: String,
    /// Everything it wrote to stderr.
    pub stderr: String,
}

impl Output {
    /// Whether it exited 0.
    pub fn success(&self) -> bool {
        self.code == 0
    }
}

/// Which stream a streamed line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Receives streamed output, a line at a time.
pub type LineSink<'a> = &'a mut (dyn FnMut(Stream, &str) + Send);

/// Bytes streamed into a command's stdin (images on their way to a host).
pub type Reader<'a> = &'a mut (dyn tokio::io::AsyncRead + Unpin + Send);

/// Where a command's stdout is streamed to, byte for byte.
pub type Writer<'a> = &'a mut (dyn tokio::io::AsyncWrite + Unpin + Send);

/// Failures of a transport, each naming the host.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The SSH connection could not be opened (host key, auth, network).
    #[error("{host}: cannot connect: {reason}")]
    Connect { host: String, reason: String },
    /// A command could not be started or its output read.
    #[error("{host}: `{command}` could not run: {reason}")]
    Io {
        host: String,
        command: String,
        reason: String,
    },
    /// A command ran past its time and was stopped.
    #[error("{host}: `{command}` did not finish within {}; it was stopped", humantime::format_duration(*.timeout))]
    TimedOut {
        host: String,
        command: String,
        timeout: Duration,
    },
    /// A command exited non-zero where success was required.
    #[error("{host}: `{command}` exited with {code}{}", if .stderr.is_empty() { String::new() } else { format!(":\n{}", .stderr) })]
    Failed {
        host: String,
        command: String,
        code: i32,
        stderr: String,
    },
    /// A port could not be forwarded.
    #[error("{host}: cannot forward to {target}: {reason}")]
    Forward {
        host: String,
        target: String,
        reason: String,
    },
}

impl RemoteError {
    /// The same error, its command called `what` (a script of several steps
    /// reads better by what it does).
    pub fn named(self, what: &str) -> RemoteError {
        match self {
            RemoteError::Io { host, reason, .. } => RemoteError::Io {
                host,
                command: what.to_string(),
                reason,
            },
            RemoteError::TimedOut { host, timeout, .. } => RemoteError::TimedOut {
                host,
                command: what.to_string(),
                timeout,
            },
            RemoteError::Failed { host, code, stderr, .. } => RemoteError::Failed {
                host,
                command: what.to_string(),
                code,
                stderr,
            },
            other => other,
        }
    }
}

/// The last `n` lines of `text`, for error messages.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.trim_end().lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A place commands run: a host over SSH, or this machine.
#[async_trait]
pub trait Remote: Send + Sync {
    /// The host's name in output.
    fn host(&self) -> &str;

    /// Runs `script`, capturing its output. A non-zero exit is not an error here;
    /// running past `timeout` is, and the command is stopped on the host.
    async fn run(&self, script: &Script, timeout: Option<Duration>) -> Result<Output, RemoteError>;

    /// Runs `script`, handing each output line to `sink` as it arrives; returns the exit code.
    async fn stream(&self, script: &Script, timeout: Option<Duration>, sink: LineSink<'_>) -> Result<i32, RemoteError>;

    /// Runs `script` with everything `input` yields on its stdin, capturing
    /// its output (as [`Remote::run`]).
    async fn run_with_reader(
        &self,
        script: &Script,
        input: Reader<'_>,
        timeout: Option<Duration>,
    ) -> Result<Output, RemoteError>;

    /// Runs `script`, copying its stdout to `out` as it comes (the returned
    /// output holds only stderr).
    async fn run_to_writer(
        &self,
        script: &Script,
        out: Writer<'_>,
        timeout: Option<Duration>,
    ) -> Result<Output, RemoteError>;

    /// Runs `script` with `input` on its stdin, capturing its output (as [`Remote::run`]).
    async fn run_with_input(
        &self,
        script: &Script,
        input: &[u8],
        timeout: Option<Duration>,
    ) -> Result<Output, RemoteError> {
        self.run_with_reader(script, &mut &input[..], timeout).await
    }

    /// Makes `target` (`host:port` as seen from the host) reachable at a local address.
    /// It stays open until [`Remote::close_forward`] (or the connection's end).
    async fn forward(&self, target: &str) -> Result<SocketAddr, RemoteError>;

    /// Closes the forward that [`Remote::forward`] opened for `target` at `local`.
    async fn close_forward(&self, target: &str, local: SocketAddr) -> Result<(), RemoteError>;

    /// Closes that forward from code that cannot wait (a drop): it is closed
    /// before the transport's next command, or with the connection.
    fn close_forward_later(&self, target: &str, local: SocketAddr);

    /// A local path at which the host's unix socket `remote` (the Docker
    /// engine's) answers: forwarded through the connection, or the path itself.
    /// Open until the connection closes.
    async fn forward_socket(&self, remote: &str) -> Result<std::path::PathBuf, RemoteError>;

    /// Ends the connection (closes the SSH master); a no-op for local.
    async fn close(self: Box<Self>) -> Result<(), RemoteError>;

    /// How many commands (exec channels) this connection has run.
    fn commands(&self) -> usize {
        0
    }

    /// Runs `script` and requires exit 0.
    async fn check(&self, script: &Script, timeout: Option<Duration>) -> Result<Output, RemoteError> {
        let out = self.run(script, timeout).await?;
        self.required(script, out)
    }

    /// Runs `script` with `input` on its stdin and requires exit 0.
    async fn check_with_input(
        &self,
        script: &Script,
        input: &[u8],
        timeout: Option<Duration>,
    ) -> Result<Output, RemoteError> {
        let out = self.run_with_input(script, input, timeout).await?;
        self.required(script, out)
    }

    /// Runs `script` with everything `input` yields on its stdin and requires exit 0.
    async fn check_with_reader(
        &self,
        script: &Script,
        input: Reader<'_>,
        timeout: Option<Duration>,
    ) -> Result<Output, RemoteError> {
        let out = self.run_with_reader(script, input, timeout).await?;
        self.required(script, out)
    }

    /// Runs `script` with its stdout copied to `out`, and requires exit 0.
    async fn check_to_writer(
        &self,
        script: &Script,
        out: Writer<'_>,
        timeout: Option<Duration>,
    ) -> Result<Output, RemoteError> {
        let done = self.run_to_writer(script, out, timeout).await?;
        self.required(script, done)
    }

    /// Writes `bytes` to `path` on the host with `mode`, atomically (temp file, then rename).
    async fn upload(&self, bytes: &[u8], path: &str, mode: u32) -> Result<(), RemoteError> {
        self.check_with_input(&upload_script(path, mode), bytes, None)
            .await
            .map(|_| ())
    }

    /// `out`, or the error that `script` exited non-zero.
    fn required(&self, script: &Script, out: Output) -> Result<Output, RemoteError> {
        if out.success() {
            Ok(out)
        } else {
            Err(RemoteError::Failed {
                host: self.host().to_string(),
                command: script.display(),
                code: out.code,
                stderr: tail(&out.stderr, 20),
            })
        }
    }
}

// Runs each argument as a command, one after the other whatever each one's
// exit, each followed by a line with its exit code.
const EACH: &str = r#"for c in "$@"; do (eval "$c") 2>&1; printf '\n@@deploy exit %s\n' "$?"; done"#;

/// Runs `cmds` one after the other in one round trip, each whatever the
/// others' exit: each one's exit code and output (stderr with stdout).
pub async fn batch(remote: &dyn Remote, cmds: &[Cmd], timeout: Option<Duration>) -> Result<Vec<Output>, RemoteError> {
    let script = Cmd::new("sh")
        .arg("-c")
        .arg(EACH)
        .arg("sh")
        .args(cmds.iter().map(Cmd::as_word));
    let out = remote.run(&script.into(), timeout).await?;
    let mut results = Vec::new();
    let mut text = String::new();
    for line in out.stdout.split_inclusive('\n') {
        match line.trim_end().strip_prefix("@@deploy exit ") {
            Some(code) => {
                // The newline printed before the marker is not the command's.
                let stdout = text.strip_suffix('\n').unwrap_or(&text).to_string();
                results.push(Output {
                    code: code.trim().parse().unwrap_or(-1),
                    stdout,
                    stderr: String::new(),
                });
                text.clear();
            }
            None => text.push_str(line),
        }
    }
    // A batch cut short (a killed shell) reports the commands that never ran as failed.
    while results.len() < cmds.len() {
        results.push(Output {
            code: -1,
            stdout: std::mem::take(&mut text),
            stderr: out.stderr.clone(),
        });
    }
    Ok(results)
}

/// A transport that counts the commands it runs (shown with `-vv` and in the
/// JSON summary, so a change that adds round trips shows).
struct Counted {
    inner: Box<dyn Remote>,
    commands: std::sync::atomic::AtomicUsize,
}

impl Counted {
    fn one(&self) {
        self.commands.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

#[async_trait]
impl Remote for Counted {
    fn host(&self) -> &str {
        self.inner.host()
    }

    async fn run(&self, script: &Script, timeout: Option<Duration>) -> Result<Output, RemoteError> {
        self.one();
        self.inner.run(script, timeout).await
    }

    async fn stream(&self, script: &Script, timeout: Option<Duration>, sink: LineSink<'_>) -> Result<i32, RemoteError> {
        self.one();
        self.inner.stream(script, timeout, sink).await
    }

    async fn run_with_reader(
        &self,
        script: &Script,
        input: Reader<'_>,
        timeout: Option<Duration>,
    ) -> Result<Output, RemoteError> {
        self.one();
        self.inner.run_with_reader(script, input, timeout).await
    }

    async fn run_to_writer(
        &self,
        script: &Script,
        out: Writer<'_>,
        timeout: Option<Duration>,
    ) -> Result<Output, RemoteError> {
        self.one();
        self.inner.run_to_writer(script, out, timeout).await
    }

    async fn forward(&self, target: &str) -> Result<SocketAddr, RemoteError> {
        self.inner.forward(target).await
    }

    async fn close_forward(&self, target: &str, local: SocketAddr) -> Result<(), RemoteError> {
        self.inner.close_forward(target, local).await
    }

    fn close_forward_later(&self, target: &str, local: SocketAddr) {
        self.inner.close_forward_later(target, local)
    }

    async fn forward_socket(&self, remote: &str) -> Result<std::path::PathBuf, RemoteError> {
        self.inner.forward_socket(remote).await
    }

    async fn close(self: Box<Self>) -> Result<(), RemoteError> {
        self.inner.close().await
    }

    fn commands(&self) -> usize {
        self.commands.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Connects to `host` with the environment's transport.
pub async fn connect(
    transport: crate::config::TransportKind,
    host: &crate::config::Host,
) -> Result<Box<dyn Remote>, RemoteError> {
    let inner: Box<dyn Remote> = match transport {
        crate::config::TransportKind::Local => Box::new(local::LocalRemote::new(host.name.clone())),
        crate::config::TransportKind::Ssh => Box::new(ssh::SshRemote::connect(host).await?),
    };
    Ok(Box::new(Counted {
        inner,
        commands: std::sync::atomic::AtomicUsize::new(0),
    }))
}

/// The script that writes stdin to `path` atomically with `mode`.
pub(crate) fn upload_script(path: &str, mode: u32) -> Script {
    let tmp = format!("{path}.deploy-upload");
    let dir = match path.rsplit_once('/') {
        Some(("", _)) => "/".to_string(),
        Some((d, _)) => d.to_string(),
        None => ".".to_string(),
    };
    Script::new()
        .then(Cmd::new("mkdir").arg("-p").arg(dir))
        // umask first so the file is never readable by others, even for a moment.
        .then(
            Cmd::new("sh")
                .arg("-c")
                .arg("umask 077 && cat > \"$1\"")
                .arg("sh")
                .arg(&tmp),
        )
        .then(Cmd::new("chmod").arg(format!("{mode:o}")).arg(&tmp))
        .then(Cmd::new("mv").arg("-f").arg(&tmp).arg(path))
}

/// Reads exit code from a std ExitStatus, mapping signals to 128 + n.
pub fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// Waits for a command's end (`fut`: its exit status and what it captured),
/// started at `started`, for `timeout` plus `grace`, and makes it an
/// [`Output`]: a command its time limit stopped (`timeout` on the host, or
/// this wait) is `TimedOut`.
pub(crate) async fn bounded(
    host: &str,
    script: &Script,
    timeout: Option<Duration>,
    grace: Duration,
    started: std::time::Instant,
    fut: impl std::future::Future<Output = Result<std::process::Output, RemoteError>>,
) -> Result<Output, RemoteError> {
    let timed = |t: Duration| RemoteError::TimedOut {
        host: host.to_string(),
        command: script.display(),
        timeout: t,
    };
    let out = match timeout {
        Some(t) => tokio::time::timeout(t + grace, fut).await.map_err(|_| timed(t))?,
        None => fut.await,
    }?;
    let code = exit_code(out.status);
    if timed_out(code, started.elapsed(), timeout) {
        return Err(timed(timeout.unwrap_or_default()));
    }
    Ok(Output {
        code,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Copies `input` into a command's stdin, then closes it (its end of input).
pub(crate) async fn feed(input: Reader<'_>, mut stdin: impl tokio::io::AsyncWrite + Unpin) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    tokio::io::copy(input, &mut stdin).await?;
    stdin.shutdown().await
}

/// Copies a command's stdout to `out` while reading its stderr: what it
/// said there.
pub(crate) async fn drain(
    mut stdout: impl tokio::io::AsyncRead + Unpin,
    mut stderr: impl tokio::io::AsyncRead + Unpin,
    out: Writer<'_>,
) -> std::io::Result<Vec<u8>> {
    use tokio::io::AsyncWriteExt;
    let mut said = Vec::new();
    let (copied, read) = tokio::join!(
        async {
            tokio::io::copy(&mut stdout, out).await?;
            out.flush().await
        },
        tokio::io::AsyncReadExt::read_to_end(&mut stderr, &mut said)
    );
    copied?;
    read?;
    Ok(said)
}

/// A finished process's status with nothing captured.
pub(crate) fn status_only(status: std::process::ExitStatus) -> std::process::Output {
    std::process::Output {
        status,
        stdout: Vec::new(),
        stderr: Vec::new(),
    }
}

/// `timeout` exits 124 when it stopped the command (137 after KILL).
pub(crate) fn timed_out(code: i32, elapsed: Duration, timeout: Option<Duration>) -> bool {
    matches!(timeout, Some(t) if (code == 124 || code == 137) && elapsed >= t)
}

/// Reads stdout and stderr line by line as they arrive, handing each to `sink`.
pub(crate) async fn stream_lines<O, E>(stdout: O, stderr: E, sink: LineSink<'_>) -> std::io::Result<()>
where
    O: tokio::io::AsyncRead + Unpin,
    E: tokio::io::AsyncRead + Unpin,
{
    use tokio::io::AsyncBufReadExt;
    let mut out = tokio::io::BufReader::new(stdout).lines();
    let mut err = tokio::io::BufReader::new(stderr).lines();
    let (mut out_done, mut err_done) = (false, false);
    while !(out_done && err_done) {
        tokio::select! {
            line = out.next_line(), if !out_done => match line? {
                Some(l) => sink(Stream::Stdout, &l),
                None => out_done = true,
            },
            line = err.next_line(), if !err_done => match line? {
                Some(l) => sink(Stream::Stderr, &l),
                None => err_done = true,
            },
        }
    }
    Ok(())
}
