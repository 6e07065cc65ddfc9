//! `deploy verify <ENV>`: the checklist alone, against the live release.

use std::time::Instant;

use crate::activation::Record;
use crate::cli::Cli;
use crate::error::{Error, Exit};
use crate::interrupt::Interrupt;
use crate::report::events::{Event, HostSummary};
use crate::report::Printer;
use crate::verify;

/// Runs every check on every reachable host; exit 0 if all pass, 6 if any
/// fails, 1 if all that answered pass but a host did not answer.
pub fn run(cli: &Cli, printer: &mut Printer, env: &str, hosts: Option<&[String]>) -> Result<Exit, Error> {
    let config = super::load(cli, printer)?;
    let env = super::environment(&config, env)?;
    super::runtime()?.block_on(async {
        let interrupt = Interrupt::install();
        let reporter = printer.reporter();
        let reporter = reporter.as_ref();
        let started = Instant::now();
        reporter.event(Event::Start {
            command: "verify".into(),
            env: env.name.clone(),
            hosts: env.hosts.iter().map(|h| h.name.clone()).collect(),
            release: None,
            commit: None,
        });
        let (fleet, unreachable) = super::reach(env, hosts, reporter).await?;
        let all: Vec<usize> = (0..fleet.members.len()).collect();
        // The live release as it was started: its own compose files and project.
        let records: Vec<Record> = fleet
            .members
            .iter()
            .map(|m| {
                m.live_record(&config)
                    .unwrap_or_else(|| Record::inferred(&config, m, ""))
            })
            .collect();
        let checked = tokio::select! {
            r = verify::verify_members(&config, &fleet, &all, |i| records[i].clone(), reporter) => Some(r),
            _ = interrupt.wait() => None,
        };
        let Some(checked) = checked else {
            fleet.close().await;
            reporter.event(super::summary(
                "verify",
                &env.name,
                Exit::Interrupted,
                started,
                Vec::new(),
                None,
            ));
            return Ok(Exit::Interrupted);
        };
        let mut failed = Vec::new();
        let mut hosts: Vec<HostSummary> = fleet
            .members
            .iter()
            .zip(checked)
            .map(|(m, c)| {
                let ok = c.ok();
                if !ok {
                    failed.push(format!("{}: {}", m.host.name, c.failed_names().join(", ")));
                }
                let mut h = HostSummary::new(
                    &m.host.name,
                    m.current.clone(),
                    if ok { "ok" } else { "checks_failed" },
                    started.elapsed().as_millis() as u64,
                    None,
                );
                h.checks = c.checks;
                h.evidence = c.evidence;
                h
            })
            .collect();
        hosts.extend(super::unreachable_lines(&unreachable));
        fleet.close().await;
        let (exit, error) = match (failed.is_empty(), super::unreachable_error(&unreachable)) {
            (false, _) => (
                Exit::ChecksFailed,
                Some(format!("checks failed: {}", failed.join("; "))),
            ),
            (true, Some(e)) => (Exit::Failed, Some(e)),
            (true, None) => (Exit::Success, None),
        };
        reporter.event(super::summary("verify", &env.name, exit, started, hosts, error));
        Ok(exit)
    })
}
