//! `deploy up <ENV>` (and `deploy <ENV>`).

use crate::cli::{Cli, UpArgs};
use crate::error::{Error, Exit};
use crate::interrupt::Interrupt;
use crate::pipeline::{self, Request, UpOptions};
use crate::report::Printer;

/// Deploys the commit to the environment.
pub fn run(cli: &Cli, printer: &mut Printer, args: &UpArgs) -> Result<Exit, Error> {
    let config = super::load(cli, printer)?;
    let env = super::environment(&config, &args.env)?;
    let request = Request::Up(UpOptions {
        rev: args.rev.clone(),
        dry_run: args.dry_run,
        no_push: args.no_push,
        hosts: args.hosts.clone(),
        message: args.message.clone(),
        allow_dirty: args.allow_dirty,
        no_verify: args.no_verify,
        no_rollback: args.no_rollback,
    });
    super::runtime()?.block_on(async {
        let interrupt = Interrupt::install();
        let reporter = printer.reporter();
        pipeline::run(&config, env, &request, reporter.as_ref(), &interrupt).await
    })
}
