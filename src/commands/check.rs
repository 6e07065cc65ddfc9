//! `deploy check`: validate deploy.toml without touching any host.

use serde_json::json;

use crate::cli::Cli;
use crate::config::{CheckKind, Config, TransportKind};
use crate::error::{Error, Exit};
use crate::report::Printer;

/// Loads the config and says what it found; -v lists every host and check.
pub fn run(cli: &Cli, printer: &mut Printer) -> Result<Exit, Error> {
    let config = Config::load(&cli.config)?;
    printer.add_secrets(&config.secrets);
    zero_downtime(&config, printer)?;
    let path = config.path.display();
    let envs: Vec<String> = config
        .environments
        .values()
        .map(|e| {
            let n = e.hosts.len();
            format!("{} ({n} host{})", e.name, if n == 1 { "" } else { "s" })
        })
        .collect();
    printer.info(&format!(
        "{path} is valid: app `{}`, environments {}, {} check{}",
        config.app.name.get_ref(),
        envs.join(", "),
        config.verify.checks.len(),
        if config.verify.checks.len() == 1 { "" } else { "s" }
    ));
    for env in config.environments.values() {
        let transport = match env.transport {
            TransportKind::Ssh => "ssh",
            TransportKind::Local => "local",
        };
        printer.verbose(&format!(
            "environment {} (transport {transport}, parallel {}, batch {})",
            env.name,
            env.parallel,
            env.batch.map_or("all".to_string(), |b| b.to_string())
        ));
        for host in &env.hosts {
            let user = host
                .ssh
                .user
                .as_ref()
                .map_or(String::from("(ssh default)"), |u| u.to_string());
            let port = host.ssh.port.map_or(String::from("(ssh default)"), |p| p.to_string());
            let vars: Vec<String> = host.vars.iter().map(|(k, v)| format!("{k}={v}")).collect();
            printer.verbose(&format!(
                "  host {}: address {}, user {user}, port {port}, path {}, project {}{}{}",
                host.name,
                host.address,
                host.path,
                host.project,
                host.services
                    .as_ref()
                    .map_or(String::new(), |s| format!(", services {}", s.join(","))),
                if vars.is_empty() {
                    String::new()
                } else {
                    format!(", vars {}", vars.join(" "))
                },
            ));
        }
    }
    for check in &config.verify.checks {
        printer.verbose(&format!(
            "check {} ({}, timeout {}): {}",
            check.name,
            check.kind.type_name(),
            humantime::format_duration(check.timeout),
            describe(&check.kind)
        ));
    }
    printer.json(&json!({
        "event": "result",
        "result": "ok",
        "config": config.path.display().to_string(),
        "app": config.app.name.get_ref(),
        "environments": config.environments.values().map(|e| json!({
            "name": e.name,
            "hosts": e.hosts.iter().map(|h| h.name.clone()).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "checks": config.verify.checks.iter().map(|c| json!({"name": c.name, "type": c.kind.type_name()})).collect::<Vec<_>>(),
    }));
    Ok(Exit::Success)
}

/// Refuses `zero_downtime` services that cannot run twice, as the compose
/// files beside deploy.toml define them (`deploy up` checks the commit's own).
fn zero_downtime(config: &Config, printer: &Printer) -> Result<(), Error> {
    if config.app.zero_downtime.is_empty() {
        return Ok(());
    }
    let dir = crate::pipeline::config_dir(config);
    let mut files = Vec::new();
    let mut all = true;
    for file in &config.app.compose_files {
        match std::fs::read_to_string(dir.join(file.expose())) {
            Ok(text) => files.push((file.expose().to_string(), text)),
            Err(e) => {
                all = false;
                printer.warn(&format!(
                    "cannot read {} ({e}): app.zero_downtime is not checked against it",
                    dir.join(file.expose()).display()
                ));
            }
        }
    }
    Ok(config.refuse_zero_downtime(&files, all)?)
}

/// One line on what a check looks at; secret values show as redacted.
fn describe(kind: &CheckKind) -> String {
    match kind {
        CheckKind::Http {
            method,
            url,
            expect_status,
            via,
            ..
        } => {
            format!("{method} {url} expecting {expect_status:?} via {via:?}")
        }
        CheckKind::Redis { address, password, via } => format!(
            "PING {address}{} via {via:?}",
            password.as_ref().map_or(String::new(), |p| format!(" with AUTH {p}"))
        ),
        CheckKind::Exec { service, command } => {
            let cmd: Vec<String> = command.iter().map(|c| c.to_string()).collect();
            format!("in {service}: {}", cmd.join(" "))
        }
        CheckKind::ComposePs => "every service running, healthy where it has a healthcheck".into(),
        CheckKind::Logs {
            services,
            absent,
            present,
            ..
        } => format!(
            "logs of {}{}{}",
            if services.is_empty() {
                "every service".to_string()
            } else {
                services.join(", ")
            },
            absent.as_ref().map_or(String::new(), |r| format!(", absent /{r}/")),
            present.as_ref().map_or(String::new(), |r| format!(", present /{r}/")),
        ),
    }
}
