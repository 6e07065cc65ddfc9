//! `deploy logs <ENV> [SERVICE] [-n LINES] [-f]`: the live release's logs, every host.

use std::time::Instant;

use crate::cli::Cli;
use crate::error::{Error, Exit};
use crate::interrupt::Interrupt;
use crate::report::Printer;

/// Streams logs, each line tagged with its host.
pub fn run(
    cli: &Cli,
    printer: &mut Printer,
    env: &str,
    service: Option<&str>,
    lines: u32,
    follow: bool,
    hosts: Option<&[String]>,
) -> Result<Exit, Error> {
    let config = super::load(cli, printer)?;
    let env = super::environment(&config, env)?;
    super::runtime()?.block_on(async {
        let interrupt = Interrupt::install();
        let reporter = printer.reporter();
        let reporter = reporter.as_ref();
        let started = Instant::now();
        let (fleet, unreachable) = super::reach(env, hosts, reporter).await?;
        let work = fleet.for_each(|m| {
            let config = &config;
            async move {
                let Some(record) = m.live_record(config) else {
                    return Err("no release is live here".to_string());
                };
                if record.engine == crate::config::Orchestrator::Swarm {
                    let n = lines.to_string();
                    let cmd = crate::swarm::logs_cmd(&record.project, service, &n, follow);
                    return super::stream_output(reporter, m, cmd, "docker service logs").await;
                }
                let mut args = vec![
                    "logs".to_string(),
                    "--no-color".into(),
                    "--tail".into(),
                    lines.to_string(),
                ];
                if follow {
                    args.push("--follow".into());
                }
                args.extend(service.map(str::to_string));
                let cmd = m.compose_for(&record).cmd(args);
                super::stream_output(reporter, m, cmd, "compose logs").await
            }
        });
        let results = tokio::select! {
            r = work => Some(r),
            _ = interrupt.wait() => None,
        };
        let (exit, hosts) = match results {
            None => (Exit::Interrupted, Vec::new()),
            Some(results) => super::host_lines(&fleet, results, "ok", &unreachable),
        };
        fleet.close().await;
        let error = super::unreachable_error(&unreachable);
        reporter.event(super::summary("logs", &env.name, exit, started, hosts, error));
        Ok(exit)
    })
}
