//! One module per subcommand; each returns the exit code it ends with.

pub mod check;
pub mod init;
