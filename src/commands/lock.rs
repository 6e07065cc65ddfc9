//! `deploy lock <ENV> status|acquire|release [--force]`.
//!
//! A lock taken by hand belongs to `user@machine`: `release` without `--force`
//! frees only such a lock of yours; `--force` breaks anyone's.

use std::time::Instant;

use serde_json::json;

use crate::cli::{Cli, LockAction};
use crate::error::{Error, Exit};
use crate::fleet::QUICK_TIMEOUT;
use crate::lock::{self, LockInfo};
use crate::report::events::{Event, HostSummary};
use crate::report::Printer;

/// Runs a lock action on every host.
pub fn run(
    cli: &Cli,
    printer: &mut Printer,
    env: &str,
    action: LockAction,
    force: bool,
    message: Option<&str>,
) -> Result<Exit, Error> {
    let config = super::load(cli, printer)?;
    let env = super::environment(&config, env)?;
    let me = lock::whoami();
    let token = format!("manual:{me}");
    super::runtime()?.block_on(async {
        let reporter = printer.reporter();
        let reporter = reporter.as_ref();
        let started = Instant::now();
        let command = format!(
            "lock {}",
            match action {
                LockAction::Status => "status",
                LockAction::Acquire => "acquire",
                LockAction::Release => "release",
            }
        );
        let fleet = match super::connect(&command, env, None, reporter, started).await? {
            Ok(f) => f,
            Err(exit) => return Ok(exit),
        };
        let mut exit = Exit::Success;
        let mut error = None;
        let mut hosts = Vec::new();
        match action {
            LockAction::Acquire => {
                let info = LockInfo {
                    holder: me.clone(),
                    message: message.unwrap_or("held by hand (deploy lock acquire)").to_string(),
                    commit: None,
                    token: token.clone(),
                    since: 0,
                    expires: 0,
                };
                if let Err(r) = fleet
                    .lock(&info, config.app.lock_timeout.0.as_secs().max(1), reporter)
                    .await
                {
                    exit = if r.held.is_empty() { Exit::Failed } else { Exit::Locked };
                    error = Some(
                        r.held
                            .into_iter()
                            .chain(r.errors.into_iter().map(|(h, e)| format!("{h}: {e}")))
                            .collect::<Vec<_>>()
                            .join("; "),
                    );
                }
            }
            LockAction::Release | LockAction::Status => {
                let results = fleet
                    .for_each(|m| {
                        let cmd = match action {
                            LockAction::Release => lock::release(&m.layout, (!force).then_some(token.as_str())),
                            _ => lock::status(&m.layout),
                        };
                        async move { m.remote.check(&cmd.into(), Some(QUICK_TIMEOUT)).await }
                    })
                    .await;
                for (m, r) in fleet.members.iter().zip(results) {
                    let (outcome, err) = match r {
                        Err(e) => {
                            exit = Exit::Failed;
                            ("failed".to_string(), Some(e.to_string()))
                        }
                        Ok(out) => {
                            let first = out.stdout.lines().next().unwrap_or("").trim().to_string();
                            let holder = lock::parse_status(&out.stdout).flatten();
                            let text = match (first.as_str(), &holder) {
                                ("free", _) => "lock: free".to_string(),
                                ("released", _) => "lock: released".to_string(),
                                (_, Some(info)) => format!("lock: held by {}", info.describe()),
                                _ => "lock: held (no info)".to_string(),
                            };
                            if action == LockAction::Release && first == "held" {
                                exit = Exit::Locked;
                                error = Some(
                                    "a lock is held by someone else; `deploy lock ENV release --force` breaks it"
                                        .into(),
                                );
                            }
                            reporter.event(Event::Data {
                                host: m.host.name.clone(),
                                kind: "lock".into(),
                                data: json!({ "state": first, "holder": holder }),
                                text,
                            });
                            (first, None)
                        }
                    };
                    hosts.push(HostSummary {
                        host: m.host.name.clone(),
                        release: m.current.clone(),
                        outcome,
                        elapsed_ms: 0,
                        error: err,
                        checks: Vec::new(),
                        evidence: None,
                        rollback_checks: Vec::new(),
                    });
                }
            }
        }
        fleet.close().await;
        reporter.event(super::summary(&command, &env.name, exit, started, hosts, error));
        Ok(exit)
    })
}
