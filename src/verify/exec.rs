//! `type = "exec"`: `compose exec -T <service> <command>` must exit 0.

use super::{excerpt, Attempt, Target};
use crate::config::CheckKind;
use crate::fleet::QUICK_TIMEOUT;

pub(crate) async fn attempt(kind: &CheckKind, target: &Target<'_>) -> Attempt {
    let CheckKind::Exec { service, command } = kind else {
        unreachable!("exec check");
    };
    let m = target.member;
    let cmd = m
        .compose_for(target.record)
        .cmd(["exec", "-T", service.as_str()])
        .args(command.iter());
    let out = m
        .remote
        .run(&cmd.into(), Some(QUICK_TIMEOUT))
        .await
        .map_err(|e| e.to_string())?;
    let said = if out.stderr.trim().is_empty() {
        &out.stdout
    } else {
        &out.stderr
    };
    let detail = format!("exit {}: {}", out.code, excerpt(said, 300));
    if out.success() {
        Ok(detail)
    } else {
        Err(detail)
    }
}
