//! `deploy rollback`'s own phase: one kept release for the whole fleet, chosen
//! under the lock, or a refusal that changes nothing.

use super::{End, Run};
use crate::activation::Record;
use crate::config::Environment;
use crate::error::Error;
use crate::fleet::Fleet;
use crate::live::LiveState;
use crate::outcome::Outcome;
use crate::release;

/// Refuses a `--to` that cannot be a release id, before any host is touched.
pub(super) fn validate_to(env: &Environment, to: Option<&str>) -> Result<(), Error> {
    match to {
        Some(t) if !release::is_release_id(t) => Err(Error::Usage(format!(
            "--to `{t}` is not a release id (see `deploy releases {}`)",
            env.name
        ))),
        _ => Ok(()),
    }
}

/// The release every host goes to: `--to`, which every host must keep (and not
/// every host already run), or the newest release that went live and passed
/// on every host, that every host still keeps, and that is older than the
/// newest live one, as long as it moves no host forward. Sets each host's
/// `to`; refuses (naming the hosts) before anything changes otherwise.
pub(super) async fn target(run: &mut Run<'_>, fleet: &Fleet, states: &[LiveState]) -> Result<(), End> {
    let refuse = |why: String| End::new(Outcome::Failed, format!("{why}; no host was changed"));
    let names: Vec<&str> = run.hosts.iter().map(|h| h.name.as_str()).collect();
    let idle: Vec<&str> = names
        .iter()
        .zip(states)
        .filter(|(_, s)| s.current.is_none())
        .map(|(n, _)| *n)
        .collect();
    if !idle.is_empty() {
        return Err(refuse(format!(
            "no release is live on {}: there is nothing to roll back from",
            idle.join(", ")
        )));
    }
    let to = match &run.request {
        super::Request::Rollback(o) => o.to.clone(),
        super::Request::Up(_) => None,
    };
    let target = match to {
        Some(t) => {
            let lacking: Vec<String> = names
                .iter()
                .zip(states)
                .filter(|(_, s)| !s.releases.contains(&t))
                .map(|(n, s)| format!("{n} (keeps {})", s.releases.join(", ")))
                .collect();
            if !lacking.is_empty() {
                return Err(refuse(format!("release {t} is not kept on {}", lacking.join("; "))));
            }
            if states.iter().all(|s| s.current.as_deref() == Some(t.as_str())) {
                return Err(refuse(format!(
                    "every host already runs {t}; `deploy verify {}` runs its checklist",
                    run.env.name
                )));
            }
            t
        }
        None => {
            let t = newest_common(run, &names, states)?;
            // A host on an older release would move forward: that is a deploy,
            // which someone may have rolled back on purpose. Only `--to` does it.
            let behind: Vec<String> = names
                .iter()
                .zip(states)
                .filter(|(_, s)| s.current.as_deref().is_some_and(|c| c < t.as_str()))
                .map(|(n, s)| format!("{n} (on {})", s.current.as_deref().unwrap_or("")))
                .collect();
            if !behind.is_empty() {
                return Err(refuse(format!(
                    "going back to {t} would move {} forward; pass --to {t} to do that, or --hosts to leave them alone",
                    behind.join(", ")
                )));
            }
            t
        }
    };
    let mut inferred = Vec::new();
    for ((h, m), state) in run.hosts.iter_mut().zip(&fleet.members).zip(states) {
        h.to = Some(state.records.get(&target).cloned().unwrap_or_else(|| {
            inferred.push(h.name.clone());
            Record::inferred(run.config, m, &target)
        }));
    }
    let engine = run.env.engine;
    if let Some(other) = run
        .hosts
        .iter()
        .filter_map(|h| h.to.as_ref())
        .find(|r| r.engine != engine)
    {
        return Err(refuse(format!(
            "release {target} ran with engine = \"{}\", this environment is engine = \"{}\": a rollback does not move an app between engines",
            engine_name(other.engine),
            engine_name(engine)
        )));
    }
    if !inferred.is_empty() {
        run.warn(
            None,
            format!(
                "release {target} has no record of how it was started on {} (staged by an older deploy): it is started with today's deploy.toml",
                inferred.join(", ")
            ),
        );
    }
    run.commit = states.first().map(|s| s.commit_of(&target));
    run.info(None, format!("rolling back to {target} on every host"));
    run.release = Some(target);
    Ok(())
}

/// The newest good release every host keeps, older than the newest live one.
fn newest_common(run: &Run<'_>, names: &[&str], states: &[LiveState]) -> Result<String, End> {
    let newest_live = states.iter().filter_map(|s| s.current.as_deref()).max().unwrap_or("");
    // Without history nothing says which kept release went live and passed.
    let blind: Vec<&str> = names
        .iter()
        .zip(states)
        .filter(|(_, s)| s.history.is_empty())
        .map(|(n, _)| *n)
        .collect();
    if !blind.is_empty() {
        return Err(End::new(
            Outcome::Failed,
            format!(
                "{} has no release history, so nothing says which kept release worked there; pick one with --to (see `deploy releases`); no host was changed",
                blind.join(", ")
            ),
        ));
    }
    let good_here = |s: &LiveState, id: &str| s.good().contains(&id);
    let mut candidates: Vec<&str> = states
        .iter()
        .flat_map(|s| s.releases.iter().map(String::as_str))
        .filter(|id| *id < newest_live)
        .collect();
    candidates.sort();
    candidates.dedup();
    // The newest release some host could go back to, for the message when
    // another host lacks it.
    let wanted = candidates
        .iter()
        .rev()
        .find(|id| {
            states
                .iter()
                .any(|s| s.releases.iter().any(|r| r == *id) && good_here(s, id))
        })
        .map(|s| s.to_string());
    let chosen = candidates
        .iter()
        .rev()
        .find(|id| {
            states
                .iter()
                .all(|s| s.releases.iter().any(|r| r == *id) && good_here(s, id))
        })
        .map(|s| s.to_string());
    let lacking = |id: &str| -> Vec<String> {
        names
            .iter()
            .zip(states)
            .filter(|(_, s)| !(s.releases.iter().any(|r| r == id) && good_here(s, id)))
            .map(|(n, _)| n.to_string())
            .collect()
    };
    match (chosen, wanted) {
        (Some(c), Some(w)) if c != w => {
            run.warn(
                None,
                format!(
                    "{w} is not kept (or did not go live) on {}: going back to {c}, the newest good release every host has",
                    lacking(&w).join(", ")
                ),
            );
            Ok(c)
        }
        (Some(c), _) => Ok(c),
        (None, Some(w)) => Err(End::new(
            Outcome::Failed,
            format!(
                "no release older than {newest_live} went live on every host and is kept on all of them ({w} is missing on {}); pass --to or --hosts; no host was changed",
                lacking(&w).join(", ")
            ),
        )),
        (None, None) => Err(End::new(
            Outcome::Failed,
            format!("no release older than {newest_live} is kept to go back to; no host was changed"),
        )),
    }
}

/// `compose` or `swarm`, as deploy.toml spells it.
pub(super) fn engine_name(engine: crate::config::Orchestrator) -> &'static str {
    match engine {
        crate::config::Orchestrator::Compose => "compose",
        crate::config::Orchestrator::Swarm => "swarm",
    }
}
