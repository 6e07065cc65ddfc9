//! `deploy status <ENV>`: per host, the live release, its containers and the lock holder.

use std::time::Instant;

use serde_json::json;

use crate::cli::Cli;
use crate::compose;
use crate::error::{Error, Exit};
use crate::fleet::QUICK_TIMEOUT;
use crate::lock;
use crate::report::events::Event;
use crate::report::Printer;
use crate::watchdog;

/// Shows what runs where.
pub fn run(cli: &Cli, printer: &mut Printer, env: &str, hosts: Option<&[String]>) -> Result<Exit, Error> {
    let config = super::load(cli, printer)?;
    let env = super::environment(&config, env)?;
    super::runtime()?.block_on(async {
        let reporter = printer.reporter();
        let reporter = reporter.as_ref();
        let started = Instant::now();
        let (fleet, unreachable) = super::reach(env, hosts, reporter).await?;
        let found = fleet
            .for_each(|m| async move {
                let swarm = m.host.engine == crate::config::Orchestrator::Swarm;
                let cmds = [
                    match swarm {
                        // The stack's tasks on every node, not the manager's containers.
                        true => crate::swarm::state_cmd(&m.host.project),
                        false => compose::ps_cmd(&m.host.project, m.host.engine),
                    },
                    lock::status(&m.layout),
                    watchdog::pending(&m.layout),
                ];
                let outs = crate::remote::batch(m.remote.as_ref(), &cmds, Some(QUICK_TIMEOUT)).await?;
                let text = |i: usize| outs.get(i).map(|o| o.stdout.clone()).unwrap_or_default();
                Ok::<_, crate::remote::RemoteError>((
                    match swarm {
                        true => crate::swarm::tasks_as_containers(&crate::swarm::parse_state(&m.host.project, &text(0))),
                        false => compose::parse_ps_of(&text(0), &m.host.project, m.host.engine),
                    },
                    lock::parse_status(&text(1)),
                    watchdog::parse_pending(&text(2)),
                ))
            })
            .await;
        let mut results = Vec::new();
        for (m, r) in fleet.members.iter().zip(found) {
            results.push(match r {
                Ok((containers, holder, watchdogs)) => {
                    let mut text = format!("release {}\n", m.current.as_deref().unwrap_or("none"));
                    for c in &containers {
                        text.push_str(&format!("  {:<12} {:<10} {}\n", c.service, c.state, c.status));
                    }
                    text.push_str(&match &holder {
                        None => "lock: free\n".to_string(),
                        Some(Some(info)) => format!("lock: held by {}\n", info.describe()),
                        Some(None) => "lock: held (no info)\n".to_string(),
                    });
                    for (token, deadline) in &watchdogs {
                        let at = humantime::format_rfc3339_seconds(
                            std::time::UNIX_EPOCH + std::time::Duration::from_secs(*deadline),
                        );
                        text.push_str(&format!(
                            "watchdog: armed by run {token}; unless that run confirms, it puts the release from before back at {at}\n"
                        ));
                    }
                    reporter.event(Event::Data {
                        host: m.host.name.clone(),
                        kind: "status".into(),
                        data: json!({
                            "current": m.current,
                            "containers": containers,
                            "lock": holder,
                            "watchdogs": watchdogs.iter().map(|(t, d)| json!({ "run": t, "fires_at": d })).collect::<Vec<_>>(),
                        }),
                        text,
                    });
                    Ok(())
                }
                Err(e) => Err(e.to_string()),
            });
        }
        let (exit, hosts) = super::host_lines(&fleet, results, "ok", &unreachable);
        fleet.close().await;
        let error = super::unreachable_error(&unreachable);
        reporter.event(super::summary("status", &env.name, exit, started, hosts, error));
        Ok(exit)
    })
}
