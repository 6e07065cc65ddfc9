//! `deploy releases <ENV>`: each host's release history.

use std::time::Instant;

use serde_json::json;

use crate::cli::Cli;
use crate::error::{Error, Exit};
use crate::fleet::QUICK_TIMEOUT;
use crate::history;
use crate::release;
use crate::report::events::Event;
use crate::report::Printer;

/// Lists releases: id, commit, when, who, outcome; `*` marks the live one.
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
                let hist = m
                    .remote
                    .check(&history::read(&m.layout).into(), Some(QUICK_TIMEOUT))
                    .await?;
                let list = m
                    .remote
                    .check(&release::list(&m.layout).into(), Some(QUICK_TIMEOUT))
                    .await?;
                Ok::<_, crate::remote::RemoteError>((
                    history::parse(&hist.stdout),
                    list.stdout.lines().map(str::to_string).collect::<Vec<_>>(),
                ))
            })
            .await;
        let mut results = Vec::new();
        for (m, r) in fleet.members.iter().zip(found) {
            results.push(match r {
                Ok((history, kept)) => {
                    if let Some(message) = history.warning() {
                        reporter.event(Event::Warning {
                            host: Some(m.host.name.clone()),
                            message,
                        });
                    }
                    let entries = history.entries;
                    let mut text = String::new();
                    for e in &entries {
                        let live =
                            m.current.as_deref() == e.to.as_deref() && e.to.as_deref() == Some(e.release.as_str());
                        text.push_str(&format!(
                            "{} {}  {}  {}  {}  {}{}{}\n",
                            if live { "*" } else { " " },
                            e.release,
                            &e.commit[..e.commit.len().min(7)],
                            e.time,
                            e.user,
                            serde_json::to_value(e.outcome)
                                .ok()
                                .and_then(|v| v.as_str().map(str::to_string))
                                .unwrap_or_default(),
                            e.from.as_deref().map(|f| format!(" from {f}")).unwrap_or_default(),
                            if kept.contains(&e.release) { "" } else { " (pruned)" },
                        ));
                        if let Some(ran) = &e.release_command {
                            let codes: Vec<String> = ran.codes.iter().map(i32::to_string).collect();
                            text.push_str(&format!(
                                "    release command on {}: {} (exit {})\n",
                                ran.hosts.join(", "),
                                ran.command,
                                codes.join(", ")
                            ));
                        }
                    }
                    if entries.is_empty() {
                        text.push_str("no releases yet\n");
                    }
                    reporter.event(Event::Data {
                        host: m.host.name.clone(),
                        kind: "releases".into(),
                        data: json!({ "current": m.current, "kept": kept, "history": entries }),
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
        reporter.event(super::summary("releases", &env.name, exit, started, hosts, error));
        Ok(exit)
    })
}
