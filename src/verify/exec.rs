//! `type = "exec"`: the command must exit 0 in the service's container: through
//! the Engine API (`docker exec` semantics), else `compose exec -T` (a swarm
//! stack: `docker exec` in a running task container on the manager).

use super::{excerpt, Attempt, Target};
use crate::config::CheckKind;
use crate::fleet::QUICK_TIMEOUT;

pub(crate) async fn attempt(kind: &CheckKind, target: &Target<'_>) -> Attempt {
    let CheckKind::Exec { service, command } = kind else {
        unreachable!("exec check");
    };
    let m = target.member;
    if let Some(result) = through_engine(service, command, target).await {
        return result;
    }
    let cmd = match target.record.engine {
        crate::config::Orchestrator::Compose => m
            .compose_for(target.record)
            .cmd(["exec", "-T", service.as_str()])
            .args(command.iter()),
        crate::config::Orchestrator::Swarm => crate::swarm::exec(&target.record.project, service).args(command.iter()),
    };
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

/// The exec through the Engine API, in the service's first running container
/// (as `docker exec` does): no compose start-up on the host. `None` when the
/// API cannot be used, for the caller to fall back to `compose exec`.
async fn through_engine(service: &str, command: &[crate::config::Text], target: &Target<'_>) -> Option<Attempt> {
    let engine = target.member.engine(target.reporter).await?;
    let containers = engine
        .containers(&target.record.project, target.record.engine)
        .await
        .ok()?;
    let Some(c) = containers.iter().find(|c| c.service == service && c.state == "running") else {
        return Some(Err(match target.record.engine {
            crate::config::Orchestrator::Compose => format!("{service}: no running container"),
            crate::config::Orchestrator::Swarm => {
                format!("{service}: no running task on this manager (exec checks reach the manager's own tasks only)")
            }
        }));
    };
    let words: Vec<&str> = command.iter().map(|w| w.expose()).collect();
    let (code, said) = engine.exec(&c.name, &words, QUICK_TIMEOUT).await.ok()?;
    let detail = format!("exit {code}: {}", excerpt(&said, 300));
    Some(if code == 0 { Ok(detail) } else { Err(detail) })
}
