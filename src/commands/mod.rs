//! One module per subcommand; each returns the exit code it ends with.

pub mod check;
pub mod completions;
pub mod doctor;
pub mod exec;
pub mod init;
pub mod lock;
pub mod logs;
pub mod man;
pub mod releases;
pub mod rollback;
pub mod setup;
pub mod status;
pub mod up;
pub mod verify;

use std::time::Instant;

use crate::cli::Cli;
use crate::config::{Config, Environment};
use crate::error::{Error, Exit};
use crate::fleet::{select_hosts, Fleet};
use crate::report::events::{Event, HostSummary, Reporter, Summary};
use crate::report::Printer;

/// Loads deploy.toml and tells the printer its secrets.
pub fn load(cli: &Cli, printer: &mut Printer) -> Result<Config, Error> {
    let config = Config::load(&cli.config)?;
    printer.add_secrets(&config.secrets);
    Ok(config)
}

/// The environment called `name`, or a usage error listing the ones there are.
pub fn environment<'a>(config: &'a Config, name: &str) -> Result<&'a Environment, Error> {
    config.environment(name).ok_or_else(|| {
        let known: Vec<&str> = config.environments.keys().map(String::as_str).collect();
        Error::Usage(format!(
            "no environment `{name}` in {}; it has {}",
            config.path.display(),
            known.join(", ")
        ))
    })
}

/// The async runtime for commands that talk to hosts.
pub fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::Io {
            what: "cannot start the async runtime".into(),
            source: e,
        })
}

/// Summary of a command that touched hosts.
pub fn summary(
    command: &str,
    env: &str,
    exit: Exit,
    started: Instant,
    hosts: Vec<HostSummary>,
    error: Option<String>,
) -> Event {
    let result = match exit {
        Exit::Success => "ok",
        Exit::Failed => "failed",
        Exit::Usage => "error",
        Exit::RolledBack => "rolled_back",
        Exit::RollbackFailed => "rollback_failed",
        Exit::Locked => "locked",
        Exit::ChecksFailed => "checks_failed",
        Exit::Interrupted => "interrupted",
    };
    Event::Summary(Summary {
        command: command.into(),
        env: env.into(),
        result: result.into(),
        exit_code: exit as u8,
        release: None,
        commit: None,
        elapsed_ms: started.elapsed().as_millis() as u64,
        hosts,
        error,
    })
}

/// Each host's line for a command that worked on it or did not, then one for
/// each host that could not be reached; exit 1 if any did not work or answer.
pub fn host_lines(
    fleet: &Fleet,
    results: Vec<Result<(), String>>,
    ok: &str,
    unreachable: &[(String, String)],
) -> (Exit, Vec<HostSummary>) {
    let exit = if results.iter().all(Result::is_ok) && unreachable.is_empty() {
        Exit::Success
    } else {
        Exit::Failed
    };
    let mut hosts: Vec<HostSummary> = fleet
        .members
        .iter()
        .zip(results)
        .map(|(m, r)| {
            HostSummary::new(
                &m.host.name,
                m.current.clone(),
                if r.is_ok() { ok } else { "failed" },
                0,
                r.err(),
            )
        })
        .collect();
    hosts.extend(unreachable_lines(unreachable));
    (exit, hosts)
}

/// The summary lines of hosts that could not be reached or looked at.
pub fn unreachable_lines(unreachable: &[(String, String)]) -> Vec<HostSummary> {
    unreachable
        .iter()
        .map(|(host, e)| HostSummary::new(host, None, "unreachable", 0, Some(e.clone())))
        .collect()
}

/// "cannot reach web2, web3": the summary's error when hosts did not answer.
pub fn unreachable_error(unreachable: &[(String, String)]) -> Option<String> {
    (!unreachable.is_empty()).then(|| {
        let names: Vec<&str> = unreachable.iter().map(|(n, _)| n.as_str()).collect();
        format!("cannot reach {}; shown: the hosts that answered", names.join(", "))
    })
}

/// Runs `cmd` on the member, each output line reported as it arrives; Err names
/// a non-zero exit as "`what` exited with N".
pub async fn stream_output(
    reporter: &dyn Reporter,
    m: &crate::fleet::Member,
    cmd: crate::remote::Cmd,
    what: &str,
) -> Result<(), String> {
    use crate::remote::Stream;
    let host = m.host.name.clone();
    let mut sink = |s: Stream, line: &str| {
        reporter.event(Event::Output {
            host: host.clone(),
            stream: if s == Stream::Stdout { "stdout" } else { "stderr" }.into(),
            line: line.to_string(),
        })
    };
    let code = m
        .remote
        .stream(&cmd.into(), None, &mut sink)
        .await
        .map_err(|e| e.to_string())?;
    if code == 0 {
        Ok(())
    } else {
        Err(format!("{what} exited with {code}"))
    }
}

/// Connects to and preflights the selected hosts of `env` that answer: the
/// fleet of those, and each host that could not be reached with the reason.
/// Read-only commands go on with the hosts they reached; each one that did not
/// is named.
pub async fn reach(
    env: &Environment,
    hosts: Option<&[String]>,
    reporter: &dyn Reporter,
) -> Result<(Fleet, Vec<(String, String)>), Error> {
    let hosts = select_hosts(env, hosts)?;
    let (mut fleet, mut unreachable) = Fleet::connect_reachable(env, &hosts, reporter).await;
    // A host that answers but whose preflight failed (Docker down, no compose)
    // stays: its lock and releases can still be read, and what needs Docker
    // fails there with its own error.
    for (host, e) in fleet.preflight(reporter).await {
        reporter.event(Event::Warning {
            host: Some(host),
            message: format!("preflight: {e}"),
        });
    }
    if env.swarm() {
        // One manager speaks for the swarm: the first that answers.
        if let Some(chosen) = fleet.keep_first_manager(&unreachable).await {
            for (host, why) in unreachable.drain(..) {
                reporter.event(Event::Warning {
                    host: Some(host),
                    message: format!("left aside (the swarm is reached through {chosen}): {why}"),
                });
            }
        }
    }
    // Keep the file's order in the summary: reachable hosts first, in order.
    unreachable.sort_by_key(|(n, _)| hosts.iter().position(|h| &h.name == n));
    Ok((fleet, unreachable))
}
