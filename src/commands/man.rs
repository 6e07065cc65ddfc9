//! `deploy man`: the man page, from the same clap definitions as `--help`.

use std::path::Path;

use clap::CommandFactory;

use crate::cli::Cli;
use crate::error::{Error, Exit};
use crate::report::Printer;

/// Prints deploy(1); with `dir`, writes deploy.1 and a deploy-<command>.1 for
/// every subcommand there instead.
pub fn run(printer: &Printer, dir: Option<&Path>) -> Result<Exit, Error> {
    let mut cmd = Cli::command();
    // Built, subcommands know themselves as `deploy up` (synopsis) and `deploy-up` (title).
    cmd.build();
    let Some(dir) = dir else {
        printer.document(&String::from_utf8_lossy(&page(cmd.clone())?));
        return Ok(Exit::Success);
    };
    let io = |what: String| move |e| Error::Io { what, source: e };
    std::fs::create_dir_all(dir).map_err(io(format!("cannot create {}", dir.display())))?;
    let mut written = Vec::new();
    let mut pages = vec![("deploy.1".to_string(), cmd.clone())];
    for sub in cmd.get_subcommands() {
        // `deploy-up` is how man(1) finds `deploy up` (as git does).
        pages.push((format!("deploy-{}.1", sub.get_name()), sub.clone()));
    }
    for (file, page_cmd) in pages {
        let path = dir.join(&file);
        std::fs::write(&path, page(page_cmd)?).map_err(io(format!("cannot write {}", path.display())))?;
        written.push(file);
    }
    printer.info(&format!("wrote {} in {}", written.join(", "), dir.display()));
    Ok(Exit::Success)
}

/// One command's page as roff.
fn page(cmd: clap::Command) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd)
        .section("1")
        .manual("deploy manual")
        .source(format!("deploy {}", env!("CARGO_PKG_VERSION")))
        .render(&mut out)
        .map_err(|e| Error::Io {
            what: "cannot render the man page".into(),
            source: e,
        })?;
    // clap_mangen files `after_help` (the exit codes) under EXTRA; man pages call it EXIT STATUS.
    let text = String::from_utf8_lossy(&out).replace(".SH EXTRA\n", ".SH \"EXIT STATUS\"\n");
    Ok(text.into_bytes())
}
