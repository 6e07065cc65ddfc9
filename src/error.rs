//! The tool's errors and the exit code each one maps to.

use std::process::ExitCode;

use crate::config::ConfigError;
use crate::git::GitError;
use crate::remote::RemoteError;

/// The documented exit codes (see `deploy --help`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Success = 0,
    Failed = 1,
    Usage = 2,
    RolledBack = 3,
    RollbackFailed = 4,
    Locked = 5,
    ChecksFailed = 6,
    Interrupted = 130,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}

/// Everything that can stop a command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// deploy.toml could not be loaded.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The command line asked for something impossible.
    #[error("{0}")]
    Usage(String),
    /// The local repository or a push.
    #[error(transparent)]
    Git(#[from] GitError),
    /// A host could not be reached or a command on it failed.
    #[error(transparent)]
    Remote(#[from] RemoteError),
    /// A local file could not be read or written.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The exit code this error ends the process with.
    pub fn exit(&self) -> Exit {
        match self {
            Error::Config(_) | Error::Usage(_) => Exit::Usage,
            Error::Git(e) if e.is_interrupted() => Exit::Interrupted,
            Error::Git(_) | Error::Remote(_) | Error::Io { .. } => Exit::Failed,
        }
    }
}

/// Renders an error with its chain of causes, each on its own line.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str("\n  caused by: ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}
