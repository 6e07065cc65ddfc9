//! `type = "compose_ps"`: every service of the release as compose would have
//! it: long-running ones with all their replicas running (healthy where they
//! have a healthcheck), one-shot ones (migrations) exited 0. Containers of
//! `compose run` (one-off) do not count.

use super::{Attempt, Target};
use crate::compose::{self, Container, Service};

pub(crate) async fn attempt(target: &Target<'_>) -> Attempt {
    let m = target.member;
    if target.record.engine == crate::config::Orchestrator::Swarm {
        return stack(target).await;
    }
    let services = target.services().await?;
    let one_shots = compose::one_shots(services, &target.config.app.one_shot);
    let runs = m.host.services.as_ref();
    let expected: Vec<&Service> = services
        .iter()
        .filter(|s| s.active(&target.record.profiles))
        .filter(|s| runs.is_none_or(|r| r.contains(&s.name)))
        .collect();
    let containers = target.containers().await?;
    let mut problems = Vec::new();
    let mut fine = Vec::new();
    for s in expected {
        let mine: Vec<&Container> = containers.iter().filter(|c| c.service == s.name).collect();
        let verdict = if one_shots.contains(&s.name) {
            one_shot(&mine)
        } else {
            long_running(&mine, s.replicas.unwrap_or(1))
        };
        match verdict {
            Ok(said) => fine.push(format!("{}: {said}", s.name)),
            Err(said) => problems.push(format!("{}: {said}", s.name)),
        }
    }
    if problems.is_empty() {
        Ok(fine.join("; "))
    } else {
        Err(problems.join("; "))
    }
}

/// A service that runs once: done when every container exited 0.
fn one_shot(mine: &[&Container]) -> Result<String, String> {
    if mine.is_empty() {
        return Err("no container (a one-shot service that never ran)".into());
    }
    if let Some(c) = mine.iter().find(|c| c.state != "exited") {
        return Err(format!(
            "{} ({}): a one-shot service not finished yet",
            c.state, c.status
        ));
    }
    match mine.iter().find(|c| c.exit_code() != Some(0)) {
        Some(c) => Err(format!("failed ({})", c.status)),
        None => Ok("completed (exit 0)".into()),
    }
}

/// A service that keeps running: `want` containers running, each healthy
/// where it has a healthcheck.
fn long_running(mine: &[&Container], want: u32) -> Result<String, String> {
    if mine.is_empty() {
        return match want {
            0 => Ok("scaled to 0".into()),
            _ => Err("no container".into()),
        };
    }
    for c in mine {
        match (c.state.as_str(), c.health()) {
            ("running", None | Some("healthy")) => {}
            ("running", Some(h)) => return Err(format!("{h} ({})", c.status)),
            (state, _) => return Err(format!("{state} ({})", c.status)),
        }
    }
    let running = mine.len() as u32;
    if running < want {
        return Err(format!("{running} of {want} replicas running"));
    }
    let status = mine.first().map(|c| c.status.clone()).unwrap_or_default();
    Ok(match want {
        1 => status,
        n => format!("{n} replicas: {status}"),
    })
}

/// A Swarm stack: every service runs its desired number of tasks, all on the
/// image its spec names, the release's built services on the release's
/// images. Tasks that failed earlier (Swarm replaced them) do not count.
async fn stack(target: &Target<'_>) -> Attempt {
    let state = crate::swarm::read(target.member, &target.record.project)
        .await
        .map_err(|e| e.to_string())?;
    let images = crate::swarm::release_images(target.member, target.record)
        .await
        .map_err(|e| e.to_string())?;
    // Failed tasks and paused updates count only as what they left running.
    match crate::swarm::judge(&state, &images, &state) {
        crate::swarm::Verdict::Converged(said) => Ok(said),
        crate::swarm::Verdict::Waiting(why) | crate::swarm::Verdict::Failed(why) => Err(why),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(state: &str, status: &str) -> Container {
        Container {
            service: "s".into(),
            state: state.into(),
            status: status.into(),
            name: "n".into(),
        }
    }

    #[test]
    fn one_shots_pass_when_every_container_exited_zero() {
        assert!(one_shot(&[&c("exited", "Exited (0) 3 seconds ago")]).is_ok());
        assert!(one_shot(&[&c("exited", "Exited (1) 3 seconds ago")])
            .unwrap_err()
            .contains("Exited (1)"));
        assert!(one_shot(&[&c("running", "Up 1 second")]).is_err());
        assert!(one_shot(&[]).is_err());
    }

    #[test]
    fn long_running_services_need_every_replica_healthy() {
        let up = c("running", "Up 3 seconds (healthy)");
        assert!(long_running(&[&up, &up], 2).is_ok());
        assert_eq!(long_running(&[&up], 2).unwrap_err(), "1 of 2 replicas running");
        assert!(long_running(&[&c("running", "Up 3 seconds (unhealthy)")], 1).is_err());
        assert!(long_running(&[&c("exited", "Exited (0) 1 second ago")], 1).is_err());
    }
}
