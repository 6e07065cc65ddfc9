//! `deploy`: turn a page of manual release steps for a Docker Compose app into
//! one safe command.
//!
//! Where things live: [`cli`] is the command line, [`commands`] has one module per
//! subcommand, [`config`] reads deploy.toml, [`pipeline`] is every change to a
//! live release (`deploy up` and `deploy rollback`), [`activation`] makes a
//! release live, [`verify`] is the checklist, [`remote`] runs commands on hosts
//! (and quotes them, in one place), [`git`] is the local repository, [`report`] prints.

pub mod activation;
pub mod cli;
pub mod commands;
pub mod compose;
pub mod config;
pub mod doctor;
pub mod engine;
pub mod error;
pub mod fleet;
pub mod git;
pub mod history;
pub mod hooks;
pub mod interrupt;
pub mod known_hosts;
pub mod live;
pub mod lock;
pub mod outcome;
pub mod pipeline;
pub mod release;
pub mod remote;
pub mod report;
pub mod swarm;
pub mod verify;
pub mod watchdog;

use cli::{Cli, Command};
use error::Exit;
use report::Printer;

/// Runs one invocation and returns its exit code; errors are printed here, once.
pub fn run(cli: Cli) -> Exit {
    let mut printer = Printer::new(cli.output, cli.verbose, cli.quiet, cli.color);
    let result = match &cli.command {
        Command::Up(args) => commands::up::run(&cli, &mut printer, args),
        Command::Rollback(args) => commands::rollback::run(&cli, &mut printer, args),
        Command::Verify { env, hosts } => commands::verify::run(&cli, &mut printer, env, hosts.as_deref()),
        Command::Releases { env, hosts } => commands::releases::run(&cli, &mut printer, env, hosts.hosts.as_deref()),
        Command::Status { env, hosts } => commands::status::run(&cli, &mut printer, env, hosts.hosts.as_deref()),
        Command::Lock {
            env,
            action,
            force,
            message,
            ttl,
            hosts,
        } => commands::lock::run(
            &cli,
            &mut printer,
            commands::lock::LockArgs {
                env,
                action: *action,
                force: *force,
                message: message.as_deref(),
                ttl: *ttl,
                hosts: hosts.hosts.as_deref(),
            },
        ),
        Command::Logs {
            env,
            service,
            lines,
            follow,
            hosts,
        } => commands::logs::run(
            &cli,
            &mut printer,
            env,
            service.as_deref(),
            *lines,
            *follow,
            hosts.hosts.as_deref(),
        ),
        Command::Exec {
            env,
            service,
            hosts,
            command,
        } => commands::exec::run(
            &cli,
            &mut printer,
            env,
            service.as_deref(),
            hosts.hosts.as_deref(),
            command,
        ),
        Command::Setup { env, hosts } => commands::setup::run(&cli, &mut printer, env, hosts.hosts.as_deref()),
        Command::Check => commands::check::run(&cli, &mut printer),
        Command::Doctor { env, rev, hosts } => commands::doctor::run(
            &cli,
            &mut printer,
            env.as_deref(),
            rev.as_deref(),
            hosts.hosts.as_deref(),
        ),
        Command::Completions { shell } => commands::completions::run(&printer, *shell),
        Command::Man { dir } => commands::man::run(&printer, dir.as_deref()),
        Command::Init { compose_file, force } => commands::init::run(&cli, &printer, compose_file.as_deref(), *force),
    };
    match result {
        Ok(exit) => exit,
        Err(err) => {
            printer.error(&err);
            err.exit()
        }
    }
}
