//! `deploy exec <ENV> [--service S] -- CMD...`: a command in a service of the live
//! release (`compose exec -T`; a swarm stack: `docker exec` in a running task
//! container of the service on the manager), or on the host in the live release's directory.

use std::time::Instant;

use crate::cli::Cli;
use crate::error::{Error, Exit};
use crate::remote::Cmd;
use crate::report::Printer;

/// Runs the command on every host; exit 0 if it succeeded everywhere, 1 if not.
pub fn run(
    cli: &Cli,
    printer: &mut Printer,
    env: &str,
    service: Option<&str>,
    hosts: Option<&[String]>,
    command: &[String],
) -> Result<Exit, Error> {
    let config = super::load(cli, printer)?;
    let env = super::environment(&config, env)?;
    let (program, args) = command
        .split_first()
        .ok_or_else(|| Error::Usage("exec needs a command after --".into()))?;
    super::runtime()?.block_on(async {
        let reporter = printer.reporter();
        let reporter = reporter.as_ref();
        let started = Instant::now();
        let (fleet, unreachable) = super::reach(env, hosts, reporter).await?;
        let results = fleet
            .for_each(|m| {
                let config = &config;
                async move {
                    let Some(record) = m.live_record(config) else {
                        return Err("no release is live here".to_string());
                    };
                    let swarm = record.engine == crate::config::Orchestrator::Swarm;
                    let cmd = match service {
                        Some(s) if swarm => crate::swarm::exec(&record.project, s).arg(program).args(args.iter()),
                        Some(s) => m
                            .compose_for(&record)
                            .cmd(["exec", "-T", s])
                            .arg(program)
                            .args(args.iter()),
                        None => Cmd::new(program)
                            .args(args.iter())
                            .current_dir(m.layout.release(&record.release)),
                    };
                    super::stream_output(reporter, m, cmd, "the command").await
                }
            })
            .await;
        let (exit, hosts) = super::host_lines(&fleet, results, "ok", &unreachable);
        fleet.close().await;
        let error = super::unreachable_error(&unreachable);
        reporter.event(super::summary("exec", &env.name, exit, started, hosts, error));
        Ok(exit)
    })
}
