//! The command line: clap definitions only.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// The exit codes, shown by `deploy --help` and documented in the README.
pub const EXIT_CODES: &str = "\
Exit codes:
  0    success
  1    failed before any host changed (push rejected, build failed, preflight failed)
  2    usage or configuration error
  3    the new release failed verification; the previous release was restored and verified
  4    rollback failed or was incomplete: a person must look now
  5    another deploy holds the lock
  6    one or more checks failed and nothing was rolled back
  130  interrupted (Ctrl-C / SIGTERM) after cleaning up";

/// Deploy a Docker Compose app to your servers, verify it, and roll back by itself.
#[derive(Debug, Parser)]
#[command(name = "deploy", version, after_help = EXIT_CODES)]
pub struct Cli {
    /// The config file.
    #[arg(long, global = true, value_name = "PATH", default_value = "deploy.toml")]
    pub config: PathBuf,
    /// How results are printed.
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Human)]
    pub output: OutputFormat,
    /// Say more (repeat for even more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Print only errors and the result.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// When to use colors.
    #[arg(long, global = true, value_enum, default_value_t = Color::Auto)]
    pub color: Color,
    #[command(subcommand)]
    pub command: Command,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// For people: progress and a summary.
    Human,
    /// One JSON object per line on stdout; the last one is the result.
    Json,
}

/// Color choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Color {
    Auto,
    Always,
    Never,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate deploy.toml without touching any host.
    Check,
    /// Write a commented deploy.toml, prefilled from the compose file here.
    Init {
        /// The compose file to read (default: docker-compose.yml, compose.yaml, ... here).
        #[arg(long, value_name = "PATH")]
        compose_file: Option<PathBuf>,
        /// Overwrite an existing deploy.toml.
        #[arg(long)]
        force: bool,
    },
}
