use std::process::ExitCode;

fn main() -> ExitCode {
    // A completion script asking for candidates (`DEPLOY_COMPLETE=bash deploy -- ...`)
    // is answered here and the process exits; otherwise this does nothing.
    clap_complete::CompleteEnv::with_factory(deploy::commands::completions::command)
        .var(deploy::commands::completions::VAR)
        .complete();
    let cli = deploy::cli::Cli::parse_args(std::env::args_os().collect());
    deploy::run(cli).into()
}
