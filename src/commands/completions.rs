//! `deploy completions SHELL`: the script a shell sources to complete `deploy`.
//!
//! The script asks `deploy` itself while you type (clap_complete's dynamic
//! engine: it runs `DEPLOY_COMPLETE=<shell> deploy -- <the words so far>`, which
//! `main` answers before anything else), so candidates come from where you
//! are: environment names from deploy.toml (`--config` is honoured), host
//! names for `--hosts`, and release ids for `rollback --to` from the hosts.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::time::Duration;

use clap::CommandFactory;
use clap_complete::engine::{ArgValueCandidates, ArgValueCompleter, CompletionCandidate, SubcommandCandidates};
use clap_complete::env::Shells;

use crate::cli::{Cli, CompletionShell};
use crate::config::Config;
use crate::error::{Error, Exit};
use crate::fleet::{select_hosts, Fleet};
use crate::report::events::{Event, Reporter};
use crate::report::Printer;

/// The variable the scripts set when they ask `deploy` for candidates (not
/// clap's default `COMPLETE`: a name that generic may be set for other reasons,
/// and would turn every run into a completion).
pub const VAR: &str = "DEPLOY_COMPLETE";

/// How long completing `rollback --to` waits for a host to connect; one that
/// does not answer by then is left out.
const CONNECT_LIMIT: Duration = Duration::from_secs(2);

/// Prints the registration script for `shell`.
pub fn run(printer: &Printer, shell: CompletionShell) -> Result<Exit, Error> {
    let name = match shell {
        CompletionShell::Bash => "bash",
        CompletionShell::Zsh => "zsh",
        CompletionShell::Fish => "fish",
        CompletionShell::Powershell => "powershell",
    };
    let shells = Shells::builtins();
    let completer = shells
        .completer(name)
        .ok_or_else(|| Error::Usage(format!("no completion script for {name}")))?;
    let mut script = Vec::new();
    completer
        .write_registration(VAR, "deploy", "deploy", &program(), &mut script)
        .map_err(|e| Error::Io {
            what: format!("cannot write the {name} completion script"),
            source: e,
        })?;
    printer.document(&String::from_utf8_lossy(&script));
    Ok(Exit::Success)
}

/// What the script runs to ask for candidates: `deploy` as it was called
/// (found on PATH), or the absolute path of the binary it was called by path.
fn program() -> String {
    let arg0 = std::env::args_os()
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| "deploy".into());
    if arg0.components().count() > 1 {
        std::path::absolute(&arg0).unwrap_or(arg0).display().to_string()
    } else {
        arg0.display().to_string()
    }
}

/// The command line as the completion engine sees it: every `ENV` argument
/// completes environment names, `--hosts` host names, `rollback --to` release
/// ids; `deploy <TAB>` offers environments beside the subcommands (`deploy
/// prod` is `deploy up prod`).
pub fn command() -> clap::Command {
    let mut cmd = Cli::command()
        .allow_external_subcommands(true)
        .add(SubcommandCandidates::new(environments));
    let names: Vec<String> = cmd.get_subcommands().map(|s| s.get_name().to_string()).collect();
    for name in names {
        cmd = cmd.mut_subcommand(&name, |sub| {
            let rollback = sub.get_name() == "rollback";
            // mut_args keeps the arguments' order (mut_arg would move a positional last).
            sub.mut_args(move |a| match a.get_id().as_str() {
                "env" => a.add(ArgValueCandidates::new(environments)),
                "hosts" => a.add(ArgValueCandidates::new(host_names)),
                "to" if rollback => a.add(ArgValueCompleter::new(releases)),
                _ => a,
            })
        });
    }
    cmd
}

/// The words being completed, after the program's name: what the script
/// passed after `--`. Completers get only the word under the cursor, so the
/// rest (`--config`, the environment) is read from here.
fn words() -> Vec<String> {
    let args: Vec<String> = std::env::args_os().map(|a| a.to_string_lossy().into_owned()).collect();
    match args.iter().position(|a| a == "--") {
        Some(i) => args.into_iter().skip(i + 2).collect(),
        None => Vec::new(),
    }
}

/// Global flags that take a value, and the flags of commands that do.
const WITH_VALUE: &[&str] = &[
    "--config",
    "--output",
    "--color",
    "--to",
    "--hosts",
    "--message",
    "--rev",
    "--ttl",
    "--lines",
    "-n",
    "--service",
    "--compose-file",
    "--dir",
];

/// The value of `flag` on the command line (`--flag V` or `--flag=V`).
fn flag_value(words: &[String], flag: &str) -> Option<String> {
    words.iter().enumerate().find_map(|(i, w)| {
        if w == flag {
            words.get(i + 1).cloned()
        } else {
            w.strip_prefix(&format!("{flag}=")).map(str::to_string)
        }
    })
}

/// The words that are not flags or flag values: [subcommand, ENV, ...].
fn positionals(words: &[String]) -> Vec<&str> {
    let mut out = Vec::new();
    let mut skip = false;
    for w in words {
        if skip {
            skip = false;
        } else if w.starts_with('-') {
            skip = WITH_VALUE.contains(&w.as_str());
        } else {
            out.push(w.as_str());
        }
    }
    out
}

/// deploy.toml as `--config` names it.
fn config_path(words: &[String]) -> PathBuf {
    PathBuf::from(flag_value(words, "--config").unwrap_or_else(|| "deploy.toml".into()))
}

/// The environments of deploy.toml, read without `${VAR}`s: a value the
/// shell does not have must not cost the completion.
fn environments() -> Vec<CompletionCandidate> {
    let Ok(text) = std::fs::read_to_string(config_path(&words())) else {
        return Vec::new();
    };
    let Ok(table) = text.parse::<toml::Table>() else {
        return Vec::new();
    };
    let Some(envs) = table.get("environments").and_then(|e| e.as_table()) else {
        return Vec::new();
    };
    envs.iter()
        .map(|(name, env)| {
            let hosts = env.get("hosts").and_then(|h| h.as_array()).map_or(0, |h| h.len());
            CompletionCandidate::new(name).help(Some(
                format!("environment, {hosts} host{}", if hosts == 1 { "" } else { "s" }).into(),
            ))
        })
        .collect()
}

/// The environment named on the command line (`deploy <sub> ENV`).
fn chosen_environment(words: &[String]) -> Option<(Config, String)> {
    let config = Config::load(&config_path(words)).ok()?;
    let env = positionals(words)
        .into_iter()
        .skip(1)
        .find(|w| config.environments.contains_key(*w))?
        .to_string();
    Some((config, env))
}

/// The hosts of the environment on the command line.
fn host_names() -> Vec<CompletionCandidate> {
    let Some((config, env)) = chosen_environment(&words()) else {
        return Vec::new();
    };
    config.environments[&env]
        .hosts
        .iter()
        .map(|h| CompletionCandidate::new(&h.name))
        .collect()
}

/// Release ids `rollback --to` accepts: kept on every host that answers
/// within [`CONNECT_LIMIT`], newest first, each with its commit and how it went.
fn releases(current: &OsStr) -> Vec<CompletionCandidate> {
    let words = words();
    let Some((config, env)) = chosen_environment(&words) else {
        return Vec::new();
    };
    let prefix = current.to_string_lossy();
    let mut env = config.environments[&env].clone();
    let filter = flag_value(&words, "--hosts").map(|h| h.split(',').map(str::to_string).collect::<Vec<_>>());
    let Ok(hosts) = select_hosts(&env, filter.as_deref()) else {
        return Vec::new();
    };
    let hosts: Vec<_> = hosts
        .into_iter()
        .map(|mut h| {
            h.ssh.connect_timeout = h.ssh.connect_timeout.min(CONNECT_LIMIT);
            h
        })
        .collect();
    env.parallel = env.parallel.max(hosts.len());
    let Ok(runtime) = super::runtime() else {
        return Vec::new();
    };
    let states = runtime.block_on(async {
        let (fleet, _) = Fleet::connect_reachable(&env, &hosts, &Silent).await;
        let read = fleet
            .for_each(|m| async move {
                m.remote
                    .run(&crate::live::read(&m.layout, None).into(), Some(CONNECT_LIMIT))
                    .await
                    .ok()
                    .map(|out| crate::live::parse(&out.stdout))
            })
            .await;
        fleet.close().await;
        read.into_iter().flatten().collect::<Vec<_>>()
    });
    let Some(first) = states.first() else {
        return Vec::new();
    };
    let mut ids: Vec<&String> = first
        .releases
        .iter()
        .filter(|id| states.iter().all(|s| s.releases.contains(id)))
        .filter(|id| id.starts_with(prefix.as_ref()))
        .collect();
    ids.sort_by(|a, b| b.cmp(a));
    ids.into_iter()
        .map(|id| {
            let commit: String = first.commit_of(id).chars().take(7).collect();
            let how = first
                .history
                .iter()
                .rev()
                .find(|e| e.to.as_deref() == Some(id.as_str()) || e.release == *id)
                .and_then(|e| serde_json::to_value(e.outcome).ok())
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_else(|| "no history".into());
            let live = if first.current.as_deref() == Some(id.as_str()) {
                ", live"
            } else {
                ""
            };
            CompletionCandidate::new(id).help(Some(format!("commit {commit}, {how}{live}").into()))
        })
        .collect()
}

/// Says nothing: a completion prints only candidates.
struct Silent;

impl Reporter for Silent {
    fn event(&self, _: Event) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn positionals_skip_flags_and_their_values() {
        let words = w("--config x.toml rollback --hosts a,b prod --to 2026");
        assert_eq!(positionals(&words), vec!["rollback", "prod"]);
        assert_eq!(flag_value(&words, "--config").as_deref(), Some("x.toml"));
        assert_eq!(
            flag_value(&w("--config=y.toml status"), "--config").as_deref(),
            Some("y.toml")
        );
    }

    #[test]
    fn the_completion_command_is_valid() {
        command().debug_assert();
    }
}
