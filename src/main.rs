use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = deploy::cli::Cli::parse_args(std::env::args_os().collect());
    deploy::run(cli).into()
}
