//! `deploy rollback <ENV> [--to RELEASE]`: the pipeline of `deploy up` with the
//! stage replaced by choosing one kept release for every host.

use crate::cli::{Cli, RollbackArgs};
use crate::error::{Error, Exit};
use crate::interrupt::Interrupt;
use crate::pipeline::{self, Request, RollbackOptions};
use crate::report::Printer;

/// Rolls the environment back and verifies it.
pub fn run(cli: &Cli, printer: &mut Printer, args: &RollbackArgs) -> Result<Exit, Error> {
    let config = super::load(cli, printer)?;
    let env = super::environment(&config, &args.env)?;
    let request = Request::Rollback(RollbackOptions {
        to: args.to.clone(),
        hosts: args.hosts.clone(),
        message: args.message.clone(),
        no_verify: args.no_verify,
    });
    super::runtime()?.block_on(async {
        let interrupt = Interrupt::install();
        let reporter = printer.reporter();
        pipeline::run(&config, env, &request, reporter.as_ref(), &interrupt).await
    })
}
