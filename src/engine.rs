//! The Docker Engine API of a host, reached through the SSH connection: the
//! OpenSSH master forwards the engine's unix socket, and bollard speaks the API
//! over it. Listing containers, exec, logs and health read this way start no
//! docker or compose program on the host (a Python start-up each with compose
//! v1). Compose stays the tool for build, up and run; every caller keeps the
//! command-line way as its fallback when the API cannot be reached.

use std::collections::HashMap;
use std::time::Duration;

use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::query_parameters::{
    InspectContainerOptions, ListContainersOptions, ListImagesOptions, LogsOptions, RemoveContainerOptions,
    StopContainerOptions, TagImageOptions,
};
use bollard::Docker;
use futures::StreamExt;

use crate::compose::Container;
use crate::config::Orchestrator;
use crate::remote::Remote;

/// How long one API request may take.
const REQUEST_TIMEOUT: u64 = 60;

/// A host's Docker engine.
#[derive(Debug, Clone)]
pub struct Engine {
    docker: Docker,
    /// The engine's version (`docker version`'s Server.Version).
    pub version: String,
}

impl Engine {
    /// Forwards `socket` (the engine's unix socket on the host) through
    /// `remote` and asks the engine its version. (bollard sends requests
    /// without an API version in the path, which every engine answers in its own.)
    pub async fn connect(remote: &dyn Remote, socket: &str) -> Result<Engine, String> {
        let local = remote.forward_socket(socket).await.map_err(|e| e.to_string())?;
        let path = local.to_str().ok_or("the socket's local path is not UTF-8")?;
        let docker = Docker::connect_with_unix(path, REQUEST_TIMEOUT, bollard::API_DEFAULT_VERSION)
            .map_err(|e| e.to_string())?;
        let version = docker
            .version()
            .await
            .map_err(|e| e.to_string())?
            .version
            .unwrap_or_default();
        Ok(Engine { docker, version })
    }

    /// The containers of compose project `project`, running or not, without
    /// one-off containers (`compose run`), as `docker ps -a` shows them.
    /// For a Swarm stack (`engine`), the stack's task containers on this
    /// node, each with its service's name in the stack.
    pub async fn containers(&self, project: &str, engine: Orchestrator) -> Result<Vec<Container>, String> {
        let (labels, service_label) = match engine {
            Orchestrator::Compose => (services_of(project), "com.docker.compose.service"),
            Orchestrator::Swarm => (
                vec![format!("com.docker.stack.namespace={project}")],
                "com.docker.swarm.service.name",
            ),
        };
        let list = self.every_container(labels).await?;
        Ok(list
            .into_iter()
            .map(|c| Container {
                service: c
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(service_label))
                    .map(|s| crate::compose::service_in(s, project, engine))
                    .unwrap_or_default(),
                state: c.state.map(|s| s.to_string()).unwrap_or_default(),
                status: c.status.unwrap_or_default(),
                name: c
                    .names
                    .and_then(|n| n.first().map(|n| n.trim_start_matches('/').to_string()))
                    .unwrap_or_default(),
            })
            .collect())
    }

    /// Runs `command` in container `name` (as `docker exec` does): its exit
    /// code and what it printed (stdout, then stderr).
    pub async fn exec(&self, name: &str, command: &[&str], timeout: Duration) -> Result<(i64, String), String> {
        let run = async {
            let exec = self
                .docker
                .create_exec(
                    name,
                    CreateExecOptions {
                        attach_stdout: Some(true),
                        attach_stderr: Some(true),
                        cmd: Some(command.to_vec()),
                        ..Default::default()
                    },
                )
                .await
                .map_err(|e| e.to_string())?;
            let (mut out, mut err) = (String::new(), String::new());
            if let StartExecResults::Attached { mut output, .. } = self
                .docker
                .start_exec(&exec.id, None::<StartExecOptions>)
                .await
                .map_err(|e| e.to_string())?
            {
                while let Some(chunk) = output.next().await {
                    match chunk.map_err(|e| e.to_string())? {
                        bollard::container::LogOutput::StdErr { message } => {
                            err.push_str(&String::from_utf8_lossy(&message))
                        }
                        other => out.push_str(&String::from_utf8_lossy(&other.into_bytes())),
                    }
                }
            }
            let inspect = self.docker.inspect_exec(&exec.id).await.map_err(|e| e.to_string())?;
            let code = inspect.exit_code.ok_or("the exec has no exit code")?;
            Ok::<_, String>((code, if err.trim().is_empty() { out } else { err }))
        };
        tokio::time::timeout(timeout, run)
            .await
            .map_err(|_| format!("no answer within {}", humantime::format_duration(timeout)))?
    }

    /// The log lines of container `name` (stdout and stderr), since `since`
    /// (seconds since the epoch, host clock) or its last `tail` lines.
    pub async fn logs(&self, name: &str, since: Option<i64>, tail: Option<u32>) -> Result<Vec<String>, String> {
        let mut stream = self.docker.logs(
            name,
            Some(LogsOptions {
                stdout: true,
                stderr: true,
                since: since.and_then(|s| i32::try_from(s).ok()).unwrap_or(0),
                tail: tail.map_or_else(|| "all".to_string(), |n| n.to_string()),
                ..Default::default()
            }),
        );
        let mut text = String::new();
        while let Some(chunk) = stream.next().await {
            text.push_str(&String::from_utf8_lossy(
                &chunk.map_err(|e| e.to_string())?.into_bytes(),
            ));
        }
        Ok(text.lines().map(str::to_string).collect())
    }

    /// Tags image `name` (`repo:tag`) with its content, as `repo:sha-<the
    /// first 12 hex digits of its id>`, and returns that tag.
    pub async fn content_tag(&self, name: &str) -> Result<String, String> {
        let id = self
            .docker
            .inspect_image(name)
            .await
            .map_err(|e| format!("{name}: {e}"))?
            .id
            .ok_or_else(|| format!("{name}: the engine gave no id"))?;
        let hex = id.strip_prefix("sha256:").unwrap_or(&id);
        let short = hex.get(..12).ok_or_else(|| format!("{name}: an id too short: {id}"))?;
        let repo = name.rsplit_once(':').map_or(name, |(repo, _)| repo);
        let tag = format!("sha-{short}");
        self.docker
            .tag_image(
                name,
                Some(TagImageOptions {
                    repo: Some(repo.to_string()),
                    tag: Some(tag.clone()),
                }),
            )
            .await
            .map_err(|e| format!("{name}: {e}"))?;
        Ok(format!("{repo}:{tag}"))
    }

    /// Whether the engine has every image of `names` (`docker image inspect`
    /// of them all): `Ok(false)` when one is missing.
    pub async fn has_images(&self, names: &[&str]) -> Result<bool, String> {
        let found = futures::future::join_all(names.iter().map(|n| self.docker.inspect_image(n))).await;
        let mut all = true;
        for (name, r) in names.iter().zip(found) {
            match r {
                Ok(_) => {}
                Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => all = false,
                Err(e) => return Err(format!("{name}: {e}")),
            }
        }
        Ok(all)
    }

    /// The running containers of compose project `project`, without one-off
    /// ones: (service, image) each, the image as the container was created
    /// from it (`docker ps`'s IMAGE).
    pub async fn running_images(&self, project: &str) -> Result<Vec<(String, String)>, String> {
        let list = self
            .docker
            .list_containers(Some(ListContainersOptions {
                filters: filter("label", services_of(project)),
                ..Default::default()
            }))
            .await
            .map_err(|e| e.to_string())?;
        Ok(list
            .into_iter()
            .map(|c| {
                let service = c
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("com.docker.compose.service"))
                    .cloned()
                    .unwrap_or_default();
                (service, c.image.unwrap_or_default())
            })
            .collect())
    }

    /// The build tags of releases `ids` of compose project `project`
    /// (`<project>-<service>:<id>`), each followed by the content tag of its
    /// image (`<project>-<service>:sha-<12 hex of the image id>`, made or
    /// not): what pruning those releases looks at besides their overrides.
    pub async fn build_tags(&self, project: &str, ids: &[String]) -> Result<Vec<String>, String> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let refs = ids.iter().map(|id| format!("{project}-*:{id}")).collect();
        let images = self
            .docker
            .list_images(Some(ListImagesOptions {
                filters: filter("reference", refs),
                ..Default::default()
            }))
            .await
            .map_err(|e| e.to_string())?;
        Ok(images
            .iter()
            .flat_map(|image| {
                let hex = image.id.strip_prefix("sha256:").unwrap_or(&image.id);
                let short = hex.get(..12).unwrap_or(hex).to_string();
                image
                    .repo_tags
                    .iter()
                    .filter_map(|t| t.rsplit_once(':'))
                    .filter(|(repo, tag)| {
                        repo.strip_prefix(project)
                            .and_then(|r| r.strip_prefix('-'))
                            .is_some_and(|svc| !svc.is_empty() && !svc.contains('/'))
                            && ids.iter().any(|id| id == tag)
                    })
                    .flat_map(|(repo, tag)| [format!("{repo}:{tag}"), format!("{repo}:sha-{short}")])
                    .collect::<Vec<_>>()
            })
            .collect())
    }

    /// The ids of service `service`'s containers of compose project
    /// `project`, running or not, without one-offs: `docker ps -aq` with its
    /// labels as filters.
    pub async fn service_containers(&self, project: &str, service: &str) -> Result<Vec<String>, String> {
        let mut labels = services_of(project);
        labels.push(format!("com.docker.compose.service={service}"));
        let list = self.every_container(labels).await?;
        Ok(list.into_iter().filter_map(|c| c.id).collect())
    }

    /// Every container with all of `labels` (`key=value`), running or not.
    async fn every_container(&self, labels: Vec<String>) -> Result<Vec<bollard::models::ContainerSummary>, String> {
        self.docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: filter("label", labels),
                ..Default::default()
            }))
            .await
            .map_err(|e| e.to_string())
    }

    /// Containers `ids`, inspected at once, in that order; one the engine no
    /// longer has (removed) is left out, for the caller to see it is gone.
    pub async fn inspect(&self, ids: &[String]) -> Result<Vec<Inspected>, String> {
        let found = futures::future::try_join_all(ids.iter().map(|id| async move {
            match self.docker.inspect_container(id, None::<InspectContainerOptions>).await {
                Ok(c) => Ok(Some(Inspected::of(c))),
                Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(None),
                Err(e) => Err(format!("{id}: {e}")),
            }
        }))
        .await?;
        Ok(found.into_iter().flatten().collect())
    }

    /// The id of the image `name` names now; `None` where it names none.
    pub async fn image_id(&self, name: &str) -> Result<Option<String>, String> {
        match self.docker.inspect_image(name).await {
            Ok(image) => Ok(image.id),
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Stops containers `ids` with their own stop signal and grace period
    /// (compose sets both from the service), then removes them, as `docker
    /// stop` and `docker rm -f` do. The outer error: the API failed (the
    /// caller may use the CLI instead); the inner: the engine's answer, a
    /// stop that outlasted `limit` (nothing removed then: the container is
    /// still draining) or a container still there afterwards, with why.
    pub async fn stop_and_remove(&self, ids: &[String], limit: Duration) -> Result<Result<(), String>, String> {
        use bollard::errors::Error;
        let patient = self.docker.clone().with_timeout(limit);
        /// How one stop went.
        enum Stop {
            Done,
            /// The engine refused it, saying why (the removal forces it).
            Refused(String),
            /// Still stopping at the limit: nothing may be removed.
            Outlasted(String),
            /// The API failed.
            Failed(String),
        }
        let stopped = futures::future::join_all(ids.iter().map(|id| {
            let patient = &patient;
            async move {
                match patient.stop_container(id, None::<StopContainerOptions>).await {
                    // Stopped, already stopped (304) or gone (404).
                    Ok(())
                    | Err(Error::DockerResponseServerError {
                        status_code: 304 | 404, ..
                    }) => Stop::Done,
                    Err(Error::RequestTimeoutError) => Stop::Outlasted(format!(
                        "container {id} was still stopping after {}",
                        humantime::format_duration(limit)
                    )),
                    Err(e @ Error::DockerResponseServerError { .. }) => Stop::Refused(format!("{id}: {e}")),
                    Err(e) => Stop::Failed(format!("stopping {id}: {e}")),
                }
            }
        }))
        .await;
        let mut said = Vec::new();
        for stop in stopped {
            match stop {
                Stop::Done => {}
                Stop::Refused(why) => said.push(why),
                Stop::Outlasted(why) => return Ok(Err(why)),
                Stop::Failed(why) => return Err(why),
            }
        }
        for id in ids {
            let removed = self
                .docker
                .remove_container(
                    id,
                    Some(RemoveContainerOptions {
                        force: true,
                        ..Default::default()
                    }),
                )
                .await;
            match removed {
                Ok(()) | Err(Error::DockerResponseServerError { status_code: 404, .. }) => {}
                Err(e @ Error::DockerResponseServerError { .. }) => said.push(format!("{id}: {e}")),
                Err(e) => return Err(format!("removing {id}: {e}")),
            }
        }
        for id in ids {
            match self.docker.inspect_container(id, None::<InspectContainerOptions>).await {
                Err(Error::DockerResponseServerError { status_code: 404, .. }) => {}
                Ok(_) => {
                    return Ok(Err(format!(
                        "container {id} could not be removed{}",
                        if said.is_empty() {
                            String::new()
                        } else {
                            format!(" ({})", said.join("; "))
                        }
                    )))
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(Ok(()))
    }

    /// The last healthcheck results of container `name`: "exit 1: output".
    pub async fn health_log(&self, name: &str) -> Result<Vec<String>, String> {
        let inspect = self
            .docker
            .inspect_container(name, None::<InspectContainerOptions>)
            .await
            .map_err(|e| e.to_string())?;
        Ok(inspect
            .state
            .and_then(|s| s.health)
            .and_then(|h| h.log)
            .unwrap_or_default()
            .into_iter()
            .map(|p| {
                format!(
                    "exit {}: {}",
                    p.exit_code.unwrap_or(-1),
                    crate::verify::excerpt(&p.output.unwrap_or_default(), 300)
                )
            })
            .collect())
    }
}

/// One container as `docker inspect` shows it, in the words a switch reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inspected {
    pub id: String,
    /// Without the leading `/`.
    pub name: String,
    /// `running`, `exited`...
    pub state: String,
    pub exit_code: String,
    /// Its healthcheck's status; empty without one.
    pub health: String,
    /// Its addresses on its networks.
    pub ips: Vec<String>,
    /// `8000/tcp`, ...
    pub exposed: Vec<String>,
    /// Compose's `com.docker.compose.config-hash` label.
    pub config_hash: String,
    /// The id of the image it runs.
    pub image: String,
    /// The image name it was made from (`Config.Image`).
    pub config_image: String,
}

impl Inspected {
    /// Gone for good: exited or dead (a container compose restarts shows `restarting`).
    pub fn stopped(&self) -> bool {
        matches!(self.state.as_str(), "exited" | "dead" | "removing")
    }

    fn of(c: bollard::models::ContainerInspectResponse) -> Inspected {
        let state = c.state.unwrap_or_default();
        let config = c.config.unwrap_or_default();
        // By network name, as `docker inspect`'s template ranges over them.
        let networks: std::collections::BTreeMap<String, _> = c
            .network_settings
            .and_then(|n| n.networks)
            .unwrap_or_default()
            .into_iter()
            .collect();
        let ips: Vec<String> = networks
            .into_values()
            .filter_map(|e| e.ip_address)
            .filter(|ip| !ip.is_empty())
            .collect();
        let mut exposed = config.exposed_ports.unwrap_or_default();
        exposed.sort();
        Inspected {
            id: c.id.unwrap_or_default(),
            name: c.name.unwrap_or_default().trim_start_matches('/').to_string(),
            state: state.status.map(|s| s.to_string()).unwrap_or_default(),
            exit_code: state.exit_code.map(|c| c.to_string()).unwrap_or_default(),
            health: state
                .health
                .and_then(|h| h.status)
                .map(|s| s.to_string())
                .unwrap_or_default(),
            ips,
            exposed,
            config_hash: config
                .labels
                .unwrap_or_default()
                .remove("com.docker.compose.config-hash")
                .unwrap_or_default(),
            image: c.image.unwrap_or_default(),
            config_image: config.image.unwrap_or_default(),
        }
    }
}

/// A list request's filters: `key` matching any of `values`.
fn filter(key: &str, values: Vec<String>) -> Option<HashMap<String, Vec<String>>> {
    Some(HashMap::from([(key.to_string(), values)]))
}

/// The labels of compose project `project`'s service containers (not the
/// one-offs of `compose run`).
fn services_of(project: &str) -> Vec<String> {
    vec![
        format!("com.docker.compose.project={project}"),
        "com.docker.compose.oneoff=False".to_string(),
    ]
}
