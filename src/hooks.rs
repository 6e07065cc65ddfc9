//! `[hooks]`: local commands around a deploy, run with `sh -c` in deploy.toml's
//! folder, with `DEPLOY_*` variables describing the run. Their output goes
//! through the reporter, so secrets are scrubbed from it like from all output.
//!
//! A hook runs in its own process group: the terminal's Ctrl-C reaches deploy,
//! not the hook, and deploy stops the hook's whole group (SIGTERM, then SIGKILL)
//! when it is interrupted or the hook outlives `[hooks] timeout`.

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Child;

use crate::config::{Hooks, Text};
use crate::interrupt::Interrupt;
use crate::report::events::{Event, Reporter};

/// How long a hook's processes get to end after SIGTERM before SIGKILL.
const KILL_AFTER: Duration = Duration::from_secs(3);

/// Which hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    PreDeploy,
    PostDeploy,
    OnFailure,
}

impl Hook {
    /// Its key under `[hooks]`.
    pub fn name(self) -> &'static str {
        match self {
            Hook::PreDeploy => "pre_deploy",
            Hook::PostDeploy => "post_deploy",
            Hook::OnFailure => "on_failure",
        }
    }

    /// Its command in `[hooks]`, if one is set.
    pub fn command(self, hooks: &Hooks) -> Option<&Text> {
        match self {
            Hook::PreDeploy => hooks.pre_deploy.as_ref(),
            Hook::PostDeploy => hooks.post_deploy.as_ref(),
            Hook::OnFailure => hooks.on_failure.as_ref(),
        }
    }
}

/// How a hook did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// `sh` could not be started.
    #[error("hook {} could not start: {reason}", .hook.name())]
    Start { hook: Hook, reason: String },
    /// Waiting for it failed.
    #[error("hook {}: {reason}", .hook.name())]
    Wait { hook: Hook, reason: String },
    /// It exited non-zero (or was killed by a signal: 128 + the signal).
    #[error("hook {} exited with {code}", .hook.name())]
    Failed { hook: Hook, code: i32 },
    /// It ran past `[hooks] timeout`; it and everything it started were stopped.
    #[error("hook {} did not finish within {} ([hooks] timeout); it was stopped", .hook.name(), humantime::format_duration(*.timeout))]
    TimedOut { hook: Hook, timeout: Duration },
    /// deploy was interrupted (Ctrl-C, SIGTERM) while it ran; it was stopped.
    #[error("hook {} was stopped: interrupted", .hook.name())]
    Interrupted { hook: Hook },
}

impl HookError {
    /// Whether the run was interrupted (exit 130), rather than the hook failing.
    pub fn is_interrupted(&self) -> bool {
        matches!(self, HookError::Interrupted { .. })
    }
}

/// Runs `hook` as `[hooks]` sets it (Ok when it is not set), within
/// `hooks.timeout`. It is stopped by a Ctrl-C that comes while it runs; one
/// that came before it started does not stop it (a hook run on the way out of
/// an interrupted deploy), the next one does.
pub async fn run(
    hook: Hook,
    hooks: &Hooks,
    dir: &Path,
    vars: &[(String, String)],
    reporter: &dyn Reporter,
    interrupt: &Interrupt,
) -> Result<(), HookError> {
    let Some(command) = hook.command(hooks) else {
        return Ok(());
    };
    let timeout = hooks.timeout.get_ref().0;
    let seen = interrupt.count();
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command.expose())
        .current_dir(dir)
        .envs(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group: the terminal's SIGINT goes to deploy's group only, and
        // the hook with everything it started can be stopped as one.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| HookError::Start {
            hook,
            reason: e.to_string(),
        })?;
    let group = child.id().and_then(|pid| i32::try_from(pid).ok());
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(HookError::Start {
            hook,
            reason: "its output could not be captured".into(),
        });
    };
    let name = format!("hook {}", hook.name());

    enum End {
        Exited(std::io::Result<ExitStatus>),
        TimedOut,
        Interrupted,
    }
    let end = {
        // Done when the hook has exited and closed its output (so the last lines are shown).
        let work = async {
            let (_, _, status) = tokio::join!(
                forward(stdout, &name, "stdout", reporter),
                forward(stderr, &name, "stderr", reporter),
                child.wait()
            );
            status
        };
        tokio::select! {
            status = work => End::Exited(status),
            _ = tokio::time::sleep(timeout) => End::TimedOut,
            _ = interrupt.wait_beyond(seen) => End::Interrupted,
        }
    };
    match end {
        End::Exited(Ok(status)) if status.success() => Ok(()),
        End::Exited(Ok(status)) => Err(HookError::Failed {
            hook,
            code: crate::remote::exit_code(status),
        }),
        End::Exited(Err(e)) => Err(HookError::Wait {
            hook,
            reason: e.to_string(),
        }),
        End::TimedOut => {
            stop(&mut child, group).await;
            Err(HookError::TimedOut { hook, timeout })
        }
        End::Interrupted => {
            stop(&mut child, group).await;
            Err(HookError::Interrupted { hook })
        }
    }
}

/// Hands each line of `stream` to the reporter as the hook's output.
async fn forward(stream: impl AsyncRead + Unpin, name: &str, which: &str, reporter: &dyn Reporter) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        reporter.event(Event::Output {
            host: name.to_string(),
            stream: which.into(),
            line,
        });
    }
}

/// Stops the hook's process group: SIGTERM, then SIGKILL to whatever is left
/// after [`KILL_AFTER`].
async fn stop(child: &mut Child, group: Option<i32>) {
    let Some(group) = group.filter(|g| *g > 1) else {
        let _ = child.kill().await;
        return;
    };
    signal_group(group, libc::SIGTERM);
    let deadline = Instant::now() + KILL_AFTER;
    while Instant::now() < deadline {
        // Reap the hook's shell, so that a group with only its zombie left counts as gone.
        let _ = child.try_wait();
        if !signal_group(group, 0) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    signal_group(group, libc::SIGKILL);
    let _ = child.wait().await;
}

/// kill(2) to every process of `group`; whether any process received it.
fn signal_group(group: i32, signal: i32) -> bool {
    // SAFETY: kill(2) has no memory effects; a negative pid addresses the group
    // this module created with process_group(0), whose id cannot be reused
    // while any member of it lives.
    unsafe { libc::kill(-group, signal) == 0 }
}
