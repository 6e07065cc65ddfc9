//! `deploy`: turn a page of manual release steps for a Docker Compose app into
//! one safe command.
//!
//! Where things live: [`cli`] is the command line, [`commands`] has one module per
//! subcommand, [`config`] reads deploy.toml, [`remote`] runs commands on hosts (and
//! quotes them, in one place), [`git`] is the local repository, [`report`] prints.

pub mod cli;
pub mod commands;
pub mod config;
pub mod error;
pub mod git;
pub mod known_hosts;
pub mod remote;
pub mod report;

use cli::{Cli, Command};
use error::Exit;
use report::Printer;

/// Runs one invocation and returns its exit code; errors are printed here, once.
pub fn run(cli: Cli) -> Exit {
    let mut printer = Printer::new(cli.output, cli.verbose, cli.quiet, cli.color);
    let result = match &cli.command {
        Command::Check => commands::check::run(&cli, &mut printer),
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
