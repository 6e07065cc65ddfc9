//! `type = "compose_ps"`: every service running; healthy where it has a healthcheck.

use super::{Attempt, Target};
use crate::compose;
use crate::fleet::QUICK_TIMEOUT;

pub(crate) async fn attempt(target: &Target<'_>) -> Attempt {
    let m = target.member;
    let services = m.compose_for(target.record).cmd(["config", "--services"]);
    let out = m
        .remote
        .check(&services.into(), Some(QUICK_TIMEOUT))
        .await
        .map_err(|e| e.to_string())?;
    let mut expected: Vec<String> = out
        .stdout
        .lines()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if let Some(runs) = &m.host.services {
        expected.retain(|s| runs.contains(s));
    }
    let ps = m
        .remote
        .check(&compose::ps_cmd(&target.record.project).into(), Some(QUICK_TIMEOUT))
        .await
        .map_err(|e| e.to_string())?;
    let containers = compose::parse_ps(&ps.stdout);
    let mut problems = Vec::new();
    let mut fine = Vec::new();
    for s in &expected {
        let mine: Vec<&compose::Container> = containers.iter().filter(|c| &c.service == s).collect();
        if mine.is_empty() {
            problems.push(format!("{s}: no container"));
        }
        for c in mine {
            match (c.state.as_str(), c.health()) {
                ("running", None | Some("healthy")) => fine.push(format!("{s}: {}", c.status)),
                ("running", Some(h)) => problems.push(format!("{s}: {h} ({})", c.status)),
                (state, _) => problems.push(format!("{s}: {state} ({})", c.status)),
            }
        }
    }
    if problems.is_empty() {
        Ok(fine.join("; "))
    } else {
        Err(problems.join("; "))
    }
}
