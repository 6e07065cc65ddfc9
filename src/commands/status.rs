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
                let ps = m
                    .remote
                    .check(&compose::ps_cmd(&m.host.project).into(), Some(QUICK_TIMEOUT))
                    .await?;
                let lk = m
                    .remote
                    .check(&lock::status(&m.layout).into(), Some(QUICK_TIMEOUT))
                    .await?;
                Ok::<_, crate::remote::RemoteError>((compose::parse_ps(&ps.stdout), lock::parse_status(&lk.stdout)))
            })
            .await;
        let mut results = Vec::new();
        for (m, r) in fleet.members.iter().zip(found) {
            results.push(match r {
                Ok((containers, holder)) => {
                    let mut text = format!("release {}\n", m.current.as_deref().unwrap_or("none"));
                    for c in &containers {
                        text.push_str(&format!("  {:<12} {:<10} {}\n", c.service, c.state, c.status));
                    }
                    text.push_str(&match &holder {
                        None => "lock: free\n".to_string(),
                        Some(Some(info)) => format!("lock: held by {}\n", info.describe()),
                        Some(None) => "lock: held (no info)\n".to_string(),
                    });
                    reporter.event(Event::Data {
                        host: m.host.name.clone(),
                        kind: "status".into(),
                        data: json!({ "current": m.current, "containers": containers, "lock": holder }),
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
