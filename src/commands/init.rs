//! `deploy init`: write a commented deploy.toml from `templates/`, prefilled
//! from the compose file found here.

use std::path::{Path, PathBuf};

use crate::cli::Cli;
use crate::compose::{services as compose_services, Service};
use crate::error::{Error, Exit};
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
    Ok(Exit::Success)
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

fn render(name: &str, compose_file: &str, services: &[Service]) -> String {
    TEMPLATE
        .replace("{{name}}", &quoted(name))
        .replace("{{bare_name}}", name)
        .replace("{{compose_file}}", &quoted(compose_file))
        .replace(
            "{{all_services}}",
            &services.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", "),
        )
        .replace(
            "{{build}}",
            &list(services.iter().filter(|s| s.builds).map(|s| s.name.as_str())),
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
