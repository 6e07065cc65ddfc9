//! `deploy rollback <ENV> [--to RELEASE]`: put the previous good release back,
//! from the images kept for it (no build), on every host.

use std::time::Instant;

use crate::cli::Cli;
use crate::deploy::activate;
use crate::error::{Error, Exit};
use crate::fleet::{step, QUICK_TIMEOUT};
use crate::history::{self, Entry, Outcome};
use crate::interrupt::Interrupt;
use crate::lock::{self, LockInfo};
use crate::release;
use crate::report::events::{Event, HostSummary, Step};
use crate::report::Printer;

/// Rolls the environment back.
pub fn run(
    cli: &Cli,
    printer: &mut Printer,
    env: &str,
    to: Option<&str>,
    hosts: Option<&[String]>,
    message: Option<&str>,
) -> Result<Exit, Error> {
    let config = super::load(cli, printer)?;
    let env = super::environment(&config, env)?;
    if let Some(t) = to {
        if !release::is_release_id(t) {
            return Err(Error::Usage(format!(
                "--to `{t}` is not a release id (see `deploy releases {}`)",
                env.name
            )));
        }
    }
    super::runtime()?.block_on(async {
        let _interrupt = Interrupt::install();
        let reporter = printer.reporter();
        let reporter = reporter.as_ref();
        let started = Instant::now();
        reporter.event(Event::Start {
            command: "rollback".into(),
            env: env.name.clone(),
            hosts: env.hosts.iter().map(|h| h.name.clone()).collect(),
            release: to.map(str::to_string),
            commit: None,
        });
        let fleet = match super::connect("rollback", env, hosts, reporter, started).await? {
            Ok(f) => f,
            Err(exit) => return Ok(exit),
        };
        // Decide every host's target before changing any.
        let plans = fleet
            .for_each(|m| async move {
                let hist = m
                    .remote
                    .check(&history::read(&m.layout).into(), Some(QUICK_TIMEOUT))
                    .await
                    .map_err(|e| e.to_string())?;
                let list = m
                    .remote
                    .check(&release::list(&m.layout).into(), Some(QUICK_TIMEOUT))
                    .await
                    .map_err(|e| e.to_string())?;
                let entries = history::parse(&hist.stdout);
                let existing: Vec<String> = list.stdout.lines().map(str::to_string).collect();
                let current = m
                    .current
                    .clone()
                    .ok_or("no release is live here; nothing to roll back from")?;
                let target = match to {
                    Some(t) if existing.iter().any(|e| e == t) => t.to_string(),
                    Some(t) => {
                        return Err(format!(
                            "release {t} is not on this host (kept: {})",
                            existing.join(", ")
                        ))
                    }
                    None => history::previous_good(&entries, &current, &existing)
                        .ok_or_else(|| format!("no earlier release is kept to go back to from {current}"))?,
                };
                let commit = entries
                    .iter()
                    .find(|e| e.release == target)
                    .map(|e| e.commit.clone())
                    .unwrap_or_else(|| target.rsplit('-').next().unwrap_or("").to_string());
                Ok::<_, String>((current, target, commit))
            })
            .await;
        let mut hosts_out: Vec<HostSummary> = Vec::new();
        let mut refused = Vec::new();
        for (m, p) in fleet.members.iter().zip(&plans) {
            if let Err(e) = p {
                refused.push(m.host.name.clone());
                hosts_out.push(HostSummary {
                    host: m.host.name.clone(),
                    release: m.current.clone(),
                    outcome: "unchanged".into(),
                    elapsed_ms: 0,
                    error: Some(e.clone()),
                    checks: Vec::new(),
                    evidence: None,
                    rollback_checks: Vec::new(),
                });
            }
        }
        if !refused.is_empty() {
            fleet.close().await;
            reporter.event(super::summary(
                "rollback",
                &env.name,
                Exit::Failed,
                started,
                hosts_out,
                Some(format!(
                    "nothing to roll back to on {}; no host was changed",
                    refused.join(", ")
                )),
            ));
            return Ok(Exit::Failed);
        }
        let plans: Vec<(String, String, String)> = plans.into_iter().map(|p| p.expect("checked above")).collect();

        let ttl = config.app.lock_timeout.0.as_secs().max(1);
        let info = LockInfo {
            holder: lock::whoami(),
            message: message.map(str::to_string).unwrap_or_else(|| "rollback".into()),
            commit: None,
            token: lock::new_token(),
            since: 0,
            expires: 0,
        };
        let ours = match fleet.lock(&info, ttl, reporter).await {
            Ok(o) => o,
            Err(r) => {
                fleet.close().await;
                let (exit, error) = if r.held.is_empty() {
                    (Exit::Failed, "could not take the lock".to_string())
                } else {
                    (
                        Exit::Locked,
                        format!("another deploy holds the lock: {}", r.held.join("; ")),
                    )
                };
                reporter.event(super::summary(
                    "rollback",
                    &env.name,
                    exit,
                    started,
                    Vec::new(),
                    Some(error),
                ));
                return Ok(exit);
            }
        };

        let results = fleet
            .for_each(|m| {
                let (current, target, _) =
                    &plans[fleet.members.iter().position(|x| std::ptr::eq(x, m)).expect("member")];
                let config = &config;
                async move {
                    let t0 = Instant::now();
                    let r = step(reporter, &m.host.name, Step::Rollback, activate(config, m, target)).await;
                    let r = match r {
                        Ok(()) => Ok(()),
                        // Leave the host on what it ran before, if that still works.
                        Err(e) => match activate(config, m, current).await {
                            Ok(()) => Err((e, Some(current.clone()))),
                            Err(e2) => Err((format!("{e}; returning to {current} failed too: {e2}"), None)),
                        },
                    };
                    (r, t0.elapsed().as_millis() as u64)
                }
            })
            .await;
        let mut exit = Exit::Success;
        let user = lock::whoami();
        let time = history::now();
        for (i, (m, (r, ms))) in fleet.members.iter().zip(results).enumerate() {
            let (current, target, commit) = &plans[i];
            let (outcome, live, error) = match r {
                Ok(()) => ("rolled_back", Some(target.clone()), None),
                Err((e, live)) => {
                    exit = Exit::RollbackFailed;
                    ("rollback_failed", live, Some(e))
                }
            };
            let entry = Entry {
                release: target.clone(),
                commit: commit.clone(),
                time: time.clone(),
                user: user.clone(),
                outcome: if error.is_none() {
                    Outcome::Rollback
                } else {
                    Outcome::RollbackFailed
                },
                from: Some(current.clone()),
                to: live.clone(),
                message: message.map(str::to_string),
            };
            let _ = step(
                reporter,
                &m.host.name,
                Step::Record,
                m.remote
                    .check(&history::append(&m.layout, &entry).into(), Some(QUICK_TIMEOUT)),
            )
            .await;
            hosts_out.push(HostSummary {
                host: m.host.name.clone(),
                release: live,
                outcome: outcome.into(),
                elapsed_ms: ms,
                error,
                checks: Vec::new(),
                evidence: None,
                rollback_checks: Vec::new(),
            });
        }
        fleet.unlock(&ours, &info.token, reporter).await;
        fleet.close().await;
        let error =
            (exit != Exit::Success).then(|| "the rollback failed on some hosts: a person must look now".to_string());
        reporter.event(super::summary("rollback", &env.name, exit, started, hosts_out, error));
        Ok(exit)
    })
}
