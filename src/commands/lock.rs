//! `deploy lock <ENV> status|acquire|release [--force] [--ttl D]`.
//!
//! A lock taken by hand belongs to `user@machine` and stays until it is
//! released (or its `--ttl` passes): a freeze no deploy takes over. `release`
//! without `--force` frees only such a lock of yours; `--force` breaks anyone's.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::cli::{Cli, LockAction};
use crate::error::{Error, Exit};
use crate::fleet::QUICK_TIMEOUT;
use crate::lock::{self, LockInfo, LockKind};
use crate::report::events::{Event, HostSummary};
use crate::report::Printer;

/// What `deploy lock` was asked.
#[derive(Debug, Clone, Copy)]
pub struct LockArgs<'a> {
    pub env: &'a str,
    pub action: LockAction,
    pub force: bool,
    pub message: Option<&'a str>,
    /// acquire: expire after this long; `None`: never.
    pub ttl: Option<Duration>,
    pub hosts: Option<&'a [String]>,
}

/// Runs a lock action on every reachable host.
pub fn run(cli: &Cli, printer: &mut Printer, args: LockArgs<'_>) -> Result<Exit, Error> {
    let config = super::load(cli, printer)?;
    let env = super::environment(&config, args.env)?;
    if args.ttl.is_some() && args.action != LockAction::Acquire {
        return Err(Error::Usage("--ttl goes with `acquire`".into()));
    }
    let me = lock::whoami();
    let token = format!("manual:{me}");
    super::runtime()?.block_on(async {
        let reporter = printer.reporter();
        let reporter = reporter.as_ref();
        let started = Instant::now();
        let command = format!(
            "lock {}",
            match args.action {
                LockAction::Status => "status",
                LockAction::Acquire => "acquire",
                LockAction::Release => "release",
            }
        );
        let (fleet, unreachable) = super::reach(env, args.hosts, reporter).await?;
        let mut exit = Exit::Success;
        let mut error = None;
        let mut hosts = Vec::new();
        match args.action {
            LockAction::Acquire => {
                let info = LockInfo {
                    since: 0,
                    expires: 0,
                    token: token.clone(),
                    kind: LockKind::Manual,
                    holder: me.clone(),
                    message: args.message.unwrap_or("held by hand (deploy lock acquire)").to_string(),
                    commit: None,
                };
                // Whole seconds, rounded up: a lock never expires sooner than asked.
                let ttl = args.ttl.map_or(0, |d| d.as_secs_f64().ceil().max(1.0) as u64);
                match fleet.lock(&info, ttl, reporter).await {
                    // The guard is dropped without releasing: the lock stays.
                    Ok(_held) => {
                        for m in &fleet.members {
                            hosts.push(HostSummary::new(&m.host.name, m.current.clone(), "locked", 0, None));
                        }
                    }
                    Err(r) => {
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
            }
            LockAction::Release | LockAction::Status => {
                let results = fleet
                    .for_each(|m| {
                        let cmd = match args.action {
                            LockAction::Release => lock::release(&m.layout, (!args.force).then_some(token.as_str())),
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
                            if args.action == LockAction::Release && first == "held" {
                                exit = Exit::Locked;
                                error = Some(
                                    "a lock is held by someone else; `deploy lock ENV release --force` breaks it"
                                        .into(),
                                );
                            }
                            reporter.event(Event::Data {
                                host: m.host.name.clone(),
                                kind: "lock".into(),
                                data: json!({
                                    "state": first,
                                    "kind": holder.as_ref().map(|h| h.kind),
                                    "holder": holder,
                                }),
                                text,
                            });
                            (first, None)
                        }
                    };
                    hosts.push(HostSummary::new(&m.host.name, m.current.clone(), &outcome, 0, err));
                }
            }
        }
        hosts.extend(super::unreachable_lines(&unreachable));
        if !unreachable.is_empty() && exit == Exit::Success {
            exit = Exit::Failed;
        }
        let error = error.or_else(|| super::unreachable_error(&unreachable));
        fleet.close().await;
        reporter.event(super::summary(&command, &env.name, exit, started, hosts, error));
        Ok(exit)
    })
}
