//! `deploy init`: write a commented deploy.toml from `templates/`, prefilled
//! from the compose file found here.

use std::path::{Path, PathBuf};

use crate::cli::Cli;
use crate::compose::{services as compose_services, Service};
use crate::doctor::compose::ComposeFile;
use crate::doctor::Level;
use crate::error::{Error, Exit};
use crate::report::events::Event;
use crate::report::Printer;

/// The template, compiled in so the binary works anywhere.
const TEMPLATE: &str = include_str!("../../templates/deploy.toml");

/// Compose file names, in the order compose itself looks for them.
const COMPOSE_NAMES: &[&str] = &[
    "compose.yaml",
    "compose.yml",
    "docker-compose.yml",
    "docker-compose.yaml",
];

/// Writes deploy.toml (at `--config`) unless it exists and `force` is off.
pub fn run(cli: &Cli, printer: &Printer, compose_file: Option<&Path>, force: bool) -> Result<Exit, Error> {
    let target = &cli.config;
    if target.exists() && !force {
        return Err(Error::Usage(format!(
            "{} already exists; pass --force to overwrite it",
            target.display()
        )));
    }
    let dir = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let compose_path = match compose_file {
        Some(p) => p.to_path_buf(),
        None => COMPOSE_NAMES
            .iter()
            .map(|n| dir.join(n))
            .find(|p| p.exists())
            .ok_or_else(|| {
                Error::Usage(format!(
                    "no compose file in {}: expected one of {}, or --compose-file PATH",
                    dir.display(),
                    COMPOSE_NAMES.join(", ")
                ))
            })?,
    };
    let text = std::fs::read_to_string(&compose_path).map_err(|e| Error::Io {
        what: format!("cannot read {}", compose_path.display()),
        source: e,
    })?;
    let services = compose_services(&text)
        .map_err(|e| Error::Usage(format!("{} is not a compose file: {e}", compose_path.display())))?;
    let name = project_name(&dir);
    let relative = compose_path
        .strip_prefix(&dir)
        .unwrap_or(&compose_path)
        .display()
        .to_string();
    let rendered = render(&name, &relative, &services);
    std::fs::write(target, rendered).map_err(|e| Error::Io {
        what: format!("cannot write {}", target.display()),
        source: e,
    })?;
    printer.info(&format!(
        "wrote {} for `{name}` with services {}; set your hosts under [environments.prod], then run `deploy check`",
        target.display(),
        services.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
    ));
    doctor(printer, target, &dir, &relative, text);
    Ok(Exit::Success)
}

/// The compose part of `deploy doctor`, on the files as they are here: what to
/// fix before the first deploy. The file was written either way, so it does
/// not change init's exit code.
fn doctor(printer: &Printer, target: &Path, dir: &Path, compose_file: &str, text: String) {
    let config = match crate::config::Config::load(target) {
        Ok(c) => c,
        Err(e) => return printer.warn(&format!("doctor could not read what init wrote: {e}")),
    };
    let files = [ComposeFile {
        name: compose_file.to_string(),
        text,
    }];
    let findings = crate::commands::doctor::compose_findings(&config, &files, dir);
    let reporter = printer.reporter();
    for f in &findings {
        reporter.event(Event::Finding(f.clone()));
    }
    let count = |l: Level| findings.iter().filter(|f| f.level == l).count();
    printer.info(&format!(
        "doctor: {} to fix (✗), {} worth a look (!); `deploy doctor prod` looks at the hosts too",
        count(Level::Fail),
        count(Level::Warn)
    ));
}

/// A compose project name from the directory's name: lowercase, `[a-z0-9_-]`.
fn project_name(dir: &Path) -> String {
    let base = std::path::absolute(dir)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let cleaned: String = base
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let cleaned = cleaned.trim_start_matches(['-', '_']).to_string();
    if cleaned.is_empty() {
        "app".to_string()
    } else {
        cleaned
    }
}

/// TOML string literal for `s`.
fn quoted(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn list<'a>(items: impl Iterator<Item = &'a str>) -> String {
    items.map(quoted).collect::<Vec<_>>().join(", ")
}

/// Each service's healthcheck as an `exec` check, so `deploy verify` runs it too.
fn healthcheck_checks(services: &[Service]) -> String {
    let mut out = String::new();
    for s in services {
        let Some(test) = &s.healthcheck else { continue };
        let command: Vec<String> = match test.split_first() {
            Some((kind, rest)) if kind == "CMD" => rest.to_vec(),
            Some((kind, rest)) if kind == "CMD-SHELL" => vec!["sh".into(), "-c".into(), rest.join(" ")],
            _ => continue,
        };
        if command.is_empty() {
            continue;
        }
        out.push_str(&format!(
            "# {name}'s own healthcheck, from the compose file:\n[[verify.checks]]\nname = {}\ntype = \"exec\"\nservice = {}\ncommand = [{}]\n\n",
            quoted(&format!("{} healthcheck", s.name)),
            quoted(&s.name),
            list(command.iter().map(String::as_str)),
            name = s.name,
        ));
    }
    out
}

/// "migrate (api waits for it to complete)" for each one-shot service found.
fn one_shots_found(services: &[Service]) -> String {
    let found = crate::compose::one_shots(services, &[]);
    if found.is_empty() {
        return "none".into();
    }
    found.join(", ")
}

fn render(name: &str, compose_file: &str, services: &[Service]) -> String {
    let mut profiles: Vec<&str> = services
        .iter()
        .flat_map(|s| s.profiles.iter().map(String::as_str))
        .collect();
    profiles.sort_unstable();
    profiles.dedup();
    TEMPLATE
        .replace("{{one_shot_found}}", &one_shots_found(services))
        .replace(
            "{{profiles_found}}",
            &if profiles.is_empty() {
                "none in the compose file".to_string()
            } else {
                format!("the compose file has {}", profiles.join(", "))
            },
        )
        .replace("{{healthcheck_checks}}", &healthcheck_checks(services))
        .replace("{{name}}", &quoted(name))
        .replace("{{bare_name}}", name)
        .replace("{{compose_file}}", &quoted(compose_file))
        .replace(
            "{{all_services}}",
            &services.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", "),
        )
        .replace(
            "{{build}}",
            // A service behind a profile is built only when its profile is active.
            &list(
                services
                    .iter()
                    .filter(|s| s.builds && s.profiles.is_empty())
                    .map(|s| s.name.as_str()),
            ),
        )
        .replace("{{services}}", &list(services.iter().map(|s| s.name.as_str())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_names_are_compose_safe() {
        assert_eq!(project_name(Path::new("/tmp/My App")), "my-app");
    }
}
