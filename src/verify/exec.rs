//! `type = "exec"`: the command must exit 0 in the service's container: through
//! the Engine API (`docker exec` semantics), else `compose exec -T`. A swarm
//! stack: in a running task container on the manager, else on a node that
//! runs one and is listed in `nodes` (over SSH, `docker exec` there).

use super::{excerpt, Attempt, Target};
use crate::config::CheckKind;
use crate::fleet::QUICK_TIMEOUT;

pub(crate) async fn attempt(kind: &CheckKind, target: &Target<'_>) -> Attempt {
    let CheckKind::Exec { service, command } = kind else {
        unreachable!("exec check");
    };
    let m = target.member;
    let here = match through_engine(service, command, target).await {
        Some(result) => result,
        None => {
            let cmd = match target.record.engine {
                crate::config::Orchestrator::Compose => m
                    .compose_for(target.record)
                    .cmd(["exec", "-T", service.as_str()])
                    .args(command.iter()),
                crate::config::Orchestrator::Swarm => {
                    crate::swarm::exec(&target.record.project, service).args(command.iter())
                }
            };
            let out = m
                .remote
                .run(&cmd.into(), Some(QUICK_TIMEOUT))
                .await
                .map_err(|e| e.to_string())?;
            judged(&out)
        }
    };
    match &here {
        Err(e) if target.record.engine == crate::config::Orchestrator::Swarm && e.contains(NO_TASK_HERE) => {
            on_another_node(service, command, target).await
        }
        _ => here,
    }
}

/// What a swarm manager says when no task of the service runs on it.
const NO_TASK_HERE: &str = "no running task on this manager";

/// Exit 0 passes; the detail is the exit code and what the command said.
fn judged(out: &crate::remote::Output) -> Attempt {
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

/// A swarm service with no task on the manager: the command runs in a task
/// container on a node that runs one, reached over SSH where it is listed in
/// the environment's `nodes`.
async fn on_another_node(service: &str, command: &[crate::config::Text], target: &Target<'_>) -> Attempt {
    let m = target.member;
    let stack = target.record.project.as_str();
    let running = crate::swarm::task_nodes(m, stack, service)
        .await
        .map_err(|e| e.to_string())?;
    if running.is_empty() {
        return Err(format!("{service}: no running task on any node"));
    }
    let nodes = target.nodes.get(&m.host.nodes).await;
    let Some((_, name, remote)) = nodes.iter().find(|(id, _, _)| running.contains(id)) else {
        return Err(format!(
            "{service}: its running task(s) are on node(s) {}, none of them reached through `nodes` (exec checks run in the manager's tasks and those of listed nodes)",
            running.join(", ")
        ));
    };
    let cmd = crate::swarm::exec(stack, service).args(command.iter());
    let out = remote
        .run(&cmd.into(), Some(QUICK_TIMEOUT))
        .await
        .map_err(|e| format!("on node {name}: {e}"))?;
    judged(&out)
        .map(|d| format!("on node {name}: {d}"))
        .map_err(|d| format!("on node {name}: {d}"))
}

/// The exec through the Engine API, in the service's first running container
/// (as `docker exec` does): no compose start-up on the host. `None` when the
/// API cannot be used, for the caller to fall back to `compose exec`.
async fn through_engine(service: &str, command: &[crate::config::Text], target: &Target<'_>) -> Option<Attempt> {
    let engine = target.member.engine(target.reporter).await?;
    let containers = target.listed(engine).await.ok()?;
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
