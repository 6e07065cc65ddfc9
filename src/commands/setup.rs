//! `deploy setup <ENV>`: check docker, compose and git on every host, create the
//! layout and the shared directories (0700), and upload shared files that the
//! host does not have yet (0600).

use std::time::Instant;

use crate::cli::Cli;
use crate::config::Strategy;
use crate::error::{Error, Exit};
use crate::fleet::{step, QUICK_TIMEOUT};
use crate::pipeline::config_dir;
use crate::release::{self, shell};
use crate::report::events::{Event, Step};
use crate::report::Printer;

/// Prepares every host.
pub fn run(cli: &Cli, printer: &mut Printer, env: &str, hosts: Option<&[String]>) -> Result<Exit, Error> {
    let config = super::load(cli, printer)?;
    let env = super::environment(&config, env)?;
    let dir = config_dir(&config);
    super::runtime()?.block_on(async {
        let reporter = printer.reporter();
        let reporter = reporter.as_ref();
        let started = Instant::now();
        let (fleet, unreachable) = super::reach(env, hosts, reporter).await?;
        let results = fleet
            .for_each(|m| {
                let (config, dir) = (&config, &dir);
                async move {
                    step(reporter, &m.host.name, Step::Setup, async {
                        if config.source.strategy == Strategy::Git && !m.git {
                            return Err("git is not installed (strategy = \"git\" needs it)".to_string());
                        }
                        m.remote.check(&release::prepare(&m.layout).into(), Some(QUICK_TIMEOUT)).await.map_err(|e| e.to_string())?;
                        if !config.app.shared_dirs.is_empty() {
                            m.remote
                                .check(&release::make_shared_dirs(&m.layout, &config.app).into(), Some(QUICK_TIMEOUT))
                                .await
                                .map_err(|e| e.to_string())?;
                        }
                        for f in &config.app.shared_files {
                            let name = f.expose();
                            let remote_path = format!("{}/{name}", m.layout.shared());
                            let exists = m
                                .remote
                                .run(&shell(r#"test -e "$1""#, &[&remote_path]).into(), Some(QUICK_TIMEOUT))
                                .await
                                .map_err(|e| e.to_string())?
                                .success();
                            if exists {
                                continue;
                            }
                            match std::fs::read(dir.join(name)) {
                                Ok(bytes) => m.remote.upload(&bytes, &remote_path, 0o600).await.map_err(|e| e.to_string())?,
                                Err(_) => reporter.event(Event::Warning {
                                    host: Some(m.host.name.clone()),
                                    message: format!("shared file {name} is neither on the host nor next to deploy.toml; create {remote_path} before deploying"),
                                }),
                            }
                        }
                        Ok(())
                    })
                    .await
                }
            })
            .await;
        let (exit, hosts) = super::host_lines(&fleet, results, "ready", &unreachable);
        fleet.close().await;
        let error = super::unreachable_error(&unreachable);
        reporter.event(super::summary("setup", &env.name, exit, started, hosts, error));
        Ok(exit)
    })
}
