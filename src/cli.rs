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
#[command(name = "deploy", version, after_help = EXIT_CODES, override_usage = "deploy [OPTIONS] <ENV>\n       deploy [OPTIONS] <COMMAND>")]
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

/// `deploy up` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct UpArgs {
    /// The environment.
    pub env: String,
    /// The commit to deploy (default: HEAD).
    #[arg(long, value_name = "REV")]
    pub rev: Option<String>,
    /// Print the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not push (the hosts fetch what the remote already has).
    #[arg(long)]
    pub no_push: bool,
    /// Skip the verification checklist.
    #[arg(long)]
    pub no_verify: bool,
    /// Leave a release that fails its checks live (exit 6).
    #[arg(long)]
    pub no_rollback: bool,
    /// Only these hosts (comma-separated); the rest are left alone.
    #[arg(long, value_delimiter = ',', value_name = "H1,H2")]
    pub hosts: Option<Vec<String>>,
    /// Recorded in the lock and history.
    #[arg(long, value_name = "TEXT")]
    pub message: Option<String>,
    /// Deploy even with uncommitted changes (the commit is deployed, not the changes).
    #[arg(long)]
    pub allow_dirty: bool,
}

/// `deploy rollback` flags.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = ROLLBACK_EXIT_CODES)]
pub struct RollbackArgs {
    /// The environment.
    pub env: String,
    /// The release to return to (see `deploy releases`); it must be kept on every selected host.
    #[arg(long, value_name = "RELEASE")]
    pub to: Option<String>,
    /// Only these hosts (comma-separated); the rest are left alone.
    #[arg(long, value_delimiter = ',', value_name = "H1,H2")]
    pub hosts: Option<Vec<String>>,
    /// Recorded in the lock and history.
    #[arg(long, value_name = "TEXT")]
    pub message: Option<String>,
    /// Skip the checklist on the release rolled back to (said in the summary).
    #[arg(long)]
    pub no_verify: bool,
}

/// What `deploy rollback`'s exit codes mean.
pub const ROLLBACK_EXIT_CODES: &str = "\
Exit codes of rollback:
  0    every host runs the target release and it passed its checks (or --no-verify)
  1    nothing changed: a host is unreachable, or no release to go back to is kept on every host
  3    the target failed its checks; every host was put back on the release it was on, verified
  4    putting a host back failed too, or the lock was lost mid-way: a person must look now
  5    another deploy holds the lock
  6    the target failed its checks and was left live (rollback.automatic = false)
  130  interrupted (Ctrl-C / SIGTERM); switched hosts were put back (not verified again)";

/// `--hosts`, for commands that take it.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct HostsArg {
    /// Only these hosts (comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "H1,H2")]
    pub hosts: Option<Vec<String>>,
}

/// `deploy lock` actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LockAction {
    Status,
    Acquire,
    Release,
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
    /// Deploy the current commit to ENV (`deploy ENV` is the same).
    Up(UpArgs),
    /// Run the verification checklist against the live release (exit 0 or 6).
    Verify {
        /// The environment.
        env: String,
        /// Only these hosts (comma-separated).
        #[arg(long, value_delimiter = ',', value_name = "H1,H2")]
        hosts: Option<Vec<String>>,
    },
    /// Put the previous good release back (or --to RELEASE) on every host, from
    /// its kept images, and run the checklist on it.
    Rollback(RollbackArgs),
    /// The release history of each host.
    Releases {
        /// The environment.
        env: String,
        #[command(flatten)]
        hosts: HostsArg,
    },
    /// Per host: live release, containers, lock holder.
    Status {
        /// The environment.
        env: String,
        #[command(flatten)]
        hosts: HostsArg,
    },
    /// Look at, take or break the deploy lock.
    Lock {
        /// The environment.
        env: String,
        /// What to do.
        #[arg(value_enum)]
        action: LockAction,
        /// Release someone else's lock.
        #[arg(long)]
        force: bool,
        /// Why you hold it (acquire).
        #[arg(long, value_name = "TEXT")]
        message: Option<String>,
        /// acquire: let the lock expire after this long (default: it stays until released).
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        ttl: Option<std::time::Duration>,
        #[command(flatten)]
        hosts: HostsArg,
    },
    /// Logs of the live release.
    Logs {
        /// The environment.
        env: String,
        /// One service (default: all).
        service: Option<String>,
        /// Lines from the end.
        #[arg(short = 'n', long = "lines", default_value_t = 100)]
        lines: u32,
        /// Keep following.
        #[arg(short, long)]
        follow: bool,
        #[command(flatten)]
        hosts: HostsArg,
    },
    /// Run a command in a service of the live release (or on the host without --service).
    Exec {
        /// The environment.
        env: String,
        /// The compose service to run it in.
        #[arg(long, value_name = "S")]
        service: Option<String>,
        #[command(flatten)]
        hosts: HostsArg,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Prepare hosts: layout, shared files, check docker, compose and git.
    Setup {
        /// The environment.
        env: String,
        #[command(flatten)]
        hosts: HostsArg,
    },
    /// Validate deploy.toml without touching any host.
    Check,
    /// Find what would break a deploy: the commit's compose files and deploy.toml,
    /// and with ENV every host (ssh, docker, disk, clock, git, lock, last release).
    Doctor {
        /// The environment whose hosts to examine (default: only the compose files).
        env: Option<String>,
        /// The commit whose compose files are read (default: HEAD).
        #[arg(long, value_name = "REV")]
        rev: Option<String>,
        #[command(flatten)]
        hosts: HostsArg,
    },
    /// Print the shell completion script (environment names complete from deploy.toml).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: CompletionShell,
    },
    /// Print the man page (roff); with --dir, write one page per subcommand there.
    Man {
        /// Write deploy.1 and deploy-<command>.1 into this directory.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
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

/// Shells `deploy completions` writes a script for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
    Powershell,
}

/// The subcommand names, so `deploy prod` can mean `deploy up prod`.
pub const SUBCOMMANDS: &[&str] = &[
    "up",
    "verify",
    "rollback",
    "releases",
    "status",
    "lock",
    "logs",
    "exec",
    "setup",
    "check",
    "init",
    "doctor",
    "completions",
    "man",
    "help",
];

impl Cli {
    /// Parses the command line; `deploy ENV ...` is read as `deploy up ENV ...`.
    pub fn parse_args(args: Vec<std::ffi::OsString>) -> Cli {
        use clap::Parser;
        let mut args = args;
        // Global flags that take a value, so their value is not taken for the ENV.
        const WITH_VALUE: &[&str] = &["--config", "--output", "--color"];
        let mut i = 1;
        while i < args.len() {
            let a = args[i].to_string_lossy().to_string();
            if WITH_VALUE.contains(&a.as_str()) {
                i += 2;
                continue;
            }
            if a.starts_with('-') {
                i += 1;
                continue;
            }
            if !SUBCOMMANDS.contains(&a.as_str()) {
                args.insert(i, "up".into());
            }
            break;
        }
        Cli::parse_from(args)
    }
}
