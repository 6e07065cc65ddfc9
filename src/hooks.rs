//! `[hooks]`: local commands around a deploy, run with `sh -c` in deploy.toml's
//! folder, with `DEPLOY_*` variables describing the run. Their output goes
//! through the reporter, so secrets are scrubbed from it like from all output.

use std::path::Path;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::config::Text;
use crate::report::events::{Event, Reporter};

/// Which hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    PreDeploy,
    PostDeploy,
    OnFailure,
}

impl Hook {
    fn name(self) -> &'static str {
        match self {
            Hook::PreDeploy => "pre_deploy",
            Hook::PostDeploy => "post_deploy",
            Hook::OnFailure => "on_failure",
        }
    }
}

/// Runs the hook; Err with a message when it cannot start or exits non-zero.
pub async fn run(
    hook: Hook,
    command: &Text,
    dir: &Path,
    vars: &[(String, String)],
    reporter: &dyn Reporter,
) -> Result<(), String> {
    let name = format!("hook {}", hook.name());
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command.expose())
        .current_dir(dir)
        .envs(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("{name} could not start: {e}"))?;
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let forward = |stream: &'static str| {
        let name = name.clone();
        move |line: String| {
            reporter.event(Event::Output {
                host: name.clone(),
                stream: stream.into(),
                line,
            })
        }
    };
    let out = async {
        let mut lines = BufReader::new(stdout).lines();
        let f = forward("stdout");
        while let Ok(Some(l)) = lines.next_line().await {
            f(l);
        }
    };
    let err = async {
        let mut lines = BufReader::new(stderr).lines();
        let f = forward("stderr");
        while let Ok(Some(l)) = lines.next_line().await {
            f(l);
        }
    };
    let (_, _, status) = tokio::join!(out, err, child.wait());
    let status = status.map_err(|e| format!("{name}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{name} exited with {}", crate::remote::exit_code(status)))
    }
}
