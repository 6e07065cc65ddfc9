//! The integration suite: one test binary, driving the real `deploy` binary and
//! library against real sshd hosts, the Docker engine and git remotes.

mod harness;

mod build_once;
mod ci_recipes;
mod cli_check;
mod cli_check_support;
mod cli_init;
mod completions;
mod doctor;
mod fixture_app;
mod fleets;
mod git_push;
mod pipeline;
mod release_commands;
mod releases;
mod round_trips;
mod safety;
mod shapes;
mod ssh_transport;
mod verification;
mod watchdog;
mod zero_downtime;
