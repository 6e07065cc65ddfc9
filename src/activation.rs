//! Making a release live. Each release carries a record of how to run it
//! (compose files, services, project, compose variant, which services switch
//! start-first), written when it was staged, so putting an old release back
//! never depends on today's deploy.toml.
//!
//! A start-first switch (`app.zero_downtime`) replaces a service's containers
//! without a moment with fewer ready containers than before: new containers
//! are started beside the old ones (`up -d --no-deps --no-recreate --scale
//! S=2n S`, the same on compose v1 and v2), each is waited for until it is
//! ready (its healthcheck healthy, or without one the service's `http` checks
//! passing against its own address), then, once the new ones have run for
//! [`SETTLE`] and `drain` has passed, the old ones are stopped (`docker
//! stop`: their stop signal and `stop_grace_period`) and removed.
//! A new container that is not ready in time is removed and the old ones are
//! never stopped. Then `up -d` brings the rest of the release, as before.
//! Compose scales the service up; reading, waiting on, stopping and removing
//! containers go through the Engine API, the docker CLI on the host where
//! that cannot be reached or fails.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::compose::{Compose, Container, Variant, ENV_FILE, OVERRIDE_FILE};
use crate::config::{Config, Orchestrator};
use crate::engine::Inspected;
use crate::fleet::{LockGuard, Member, QUICK_TIMEOUT, STEP_TIMEOUT};
use crate::interrupt::Interrupt;
use crate::lock;
use crate::release::{self, shell};
use crate::remote::{Cmd, RemoteError};
use crate::report::events::{Event, Reporter, StartFirstPhase};
use crate::swarm;
use crate::verify::{self, Evidence};

/// The file in each release that holds its [`Record`].
pub const RECORD_FILE: &str = ".deploy-release.json";

/// What activating a release needs, as it was when the release was staged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The release id.
    pub release: String,
    /// The full commit id.
    pub commit: String,
    /// The compose project it runs as.
    pub project: String,
    /// Compose files relative to the release dir, without deploy's override.
    pub compose_files: Vec<String>,
    /// The services `up` starts on this host; empty: all of them.
    pub services: Vec<String>,
    /// The services built for it (their images are named in the override file).
    pub build: Vec<String>,
    /// The env file with the host's compose variables, relative to the release dir.
    pub env_file: String,
    /// The Compose it was built and started with.
    pub compose: Variant,
    /// The compose profiles it runs with.
    #[serde(default)]
    pub profiles: Vec<String>,
    /// The services switched start-first (`app.zero_downtime`) on this host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zero_downtime: Vec<StartFirst>,
    /// Compose on the host, or a Swarm stack deployed from it.
    #[serde(default)]
    pub engine: Orchestrator,
    /// Written by an older `deploy` that kept no record: built from today's config.
    #[serde(skip)]
    pub inferred: bool,
}

impl Record {
    /// The record a release staged now on `m` gets.
    pub fn new(config: &Config, m: &Member, release: &str, commit: &str, build: &[String]) -> Record {
        Record {
            release: release.to_string(),
            commit: commit.to_string(),
            project: m.host.project.clone(),
            compose_files: config
                .app
                .compose_files
                .iter()
                .map(|f| f.expose().to_string())
                .collect(),
            services: m.runs(),
            build: m.builds(build),
            env_file: ENV_FILE.to_string(),
            compose: m.variant.unwrap_or(Variant::V2),
            profiles: config.app.profiles.clone(),
            engine: m.host.engine,
            // A stack's start-first services are Swarm's to update (see `crate::swarm`).
            zero_downtime: if m.host.engine == Orchestrator::Swarm {
                Vec::new()
            } else {
                config
                    .app
                    .zero_downtime
                    .iter()
                    .map(|z| z.get_ref())
                    .filter(|z| m.host.services.as_ref().is_none_or(|runs| runs.contains(&z.service)))
                    .map(|z| StartFirst {
                        service: z.service.clone(),
                        drain_ms: z.drain.as_millis() as u64,
                        port: z.port,
                    })
                    .collect()
            },
            inferred: false,
        }
    }

    /// For a release staged before records existed: today's config, said so by `inferred`.
    pub fn inferred(config: &Config, m: &Member, release: &str) -> Record {
        let commit = release.rsplit('-').next().unwrap_or("").to_string();
        let mut r = Record::new(config, m, release, &commit, &[]);
        r.inferred = true;
        r
    }

    /// Parses a record file; `None` for anything that is not one.
    pub fn parse(text: &str) -> Option<Record> {
        serde_json::from_str(text.trim()).ok()
    }

    /// The file's text.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a record serializes") + "\n"
    }
}

/// A service a release switches start-first, with its settings as staged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartFirst {
    /// The compose service.
    pub service: String,
    /// How long the old containers keep serving once the new ones are ready.
    #[serde(default)]
    pub drain_ms: u64,
    /// The port it listens on in its containers (for `http` readiness).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

impl Member {
    /// Compose for release `record` on this host: its own files and project,
    /// with the Compose it was made with where the host still has it.
    pub fn compose_for(&self, record: &Record) -> Compose {
        let variant = if self.variants.contains(&record.compose) {
            record.compose
        } else {
            self.variant.unwrap_or(Variant::V2)
        };
        let mut files = record.compose_files.clone();
        files.push(OVERRIDE_FILE.to_string());
        Compose {
            variant,
            project: record.project.clone(),
            dir: self.layout.release(&record.release),
            files,
            vars: self.host.vars.clone(),
            profiles: record.profiles.clone(),
        }
    }

    /// What resolves release `record`'s services on this host (its
    /// `compose config`), and names them for keeping in `.deploy/services/`.
    pub fn resolving<'a>(&self, record: &'a Record) -> crate::release::Resolving<'a> {
        let compose = self.compose_for(record);
        crate::release::Resolving {
            config: compose.cmd(["config"]),
            invocation: compose.invocation(),
            files: &record.compose_files,
        }
    }

    /// The live release's record (from preflight), or one from today's config.
    pub fn live_record(&self, config: &Config) -> Option<Record> {
        let current = self.current.as_deref()?;
        Some(
            self.record
                .clone()
                .filter(|r| r.release == current)
                .unwrap_or_else(|| Record::inferred(config, self, current)),
        )
    }
}

/// What a switch works with besides the release: the checklist (which says
/// when a new container of a start-first service is ready), where to report,
/// and Ctrl-C, which stops waiting for new containers.
pub struct Switching<'a> {
    pub config: &'a Config,
    pub reporter: &'a dyn Reporter,
    /// `None` for a restore: putting a release back is never cut short.
    pub interrupt: Option<&'a Interrupt>,
}

/// Why a switch failed.
#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    /// A command on the host failed.
    #[error(transparent)]
    Remote(#[from] RemoteError),
    /// New containers of a start-first service were not ready in time: they
    /// were removed, the old ones were never stopped.
    #[error("{host}: the new {service} {containers} not ready: {why}; {removed}, the old ones kept serving")]
    NotReady {
        host: String,
        service: String,
        containers: String,
        why: String,
        removed: String,
        evidence: Box<Evidence>,
    },
    /// The lock stopped being ours between two commands of a switch: the
    /// host's switch had begun (its first command ran: the watchdog, the
    /// old release's `down`, start-first containers, or `up`), so it counts
    /// as switched.
    #[error("{0} (after this host's switch had begun)")]
    LockLostMidway(RemoteError),
    /// A Swarm stack did not come to run the release (see [`crate::swarm`]).
    #[error("{host}: the stack did not converge: {why}")]
    NotConverged {
        host: String,
        why: String,
        evidence: Box<Evidence>,
    },
}

impl SwitchError {
    /// The evidence gathered on the host, if the error has some.
    pub fn evidence(&self) -> Option<&Evidence> {
        match self {
            SwitchError::NotReady { evidence, .. } | SwitchError::NotConverged { evidence, .. } => Some(evidence),
            SwitchError::Remote(_) | SwitchError::LockLostMidway(_) => None,
        }
    }
}

/// Makes release `record` live from its images (built at staging, or kept): no
/// build, in one command run only while this run's `lock` holds on the host
/// (checked and extended there, see [`lock::if_ours`]). Missing images are
/// reported at once (compose would try to pull them); a service still on
/// another image after `up` is recreated; `first` runs before all of it (the
/// watchdog's arming, the old release's `down`). Start-first services whose
/// containers compose would replace are replaced start-first (see the
/// module's doc) between the image check and the `up` of the rest.
pub async fn activate(
    sw: &Switching<'_>,
    m: &Member,
    record: &Record,
    lock: &LockGuard,
    first: Option<&Cmd>,
) -> Result<(), SwitchError> {
    if record.engine == Orchestrator::Swarm {
        return activate_stack(sw, m, record, lock, first).await;
    }
    let target = record.release.as_str();
    let compose = m.compose_for(record);
    let guarded = |cmd: &Cmd| lock::if_ours(&m.layout, lock.token(), lock.ttl(), lock.confirm(), cmd);
    let named = |e: RemoteError| e.named(&format!("start release {target}"));
    // The release's override with its content tags, where they were made
    // through the Engine API, is written first, before `first` (the watchdog,
    // the old release's `down`) touches anything live (see `Member::pending_override`).
    let write = m.pending_override(target);
    // Where the API made them, it also finds the release's images there
    // before, and its services on them after `up`: no docker program on the
    // host. Not where the old release goes `down` first: its images, unused
    // from then on, are the host's to find right before `up`.
    let api = match sw.config.app.down_before_up {
        true => None,
        false => images_there(sw, m, target).await,
    };
    let before = release::before_up(&m.layout, target, api.is_some());
    let up = compose
        .cmd(["up", "-d", "--remove-orphans", "--no-build"])
        .args(record.services.iter());
    let after = release::after_up(&m.layout, &record.project, target);
    let recreate = compose.cmd(["up", "-d", "--no-build", "--force-recreate"]);
    let point = release::point_current(&m.layout, target);
    let rest = |write: Option<&Cmd>, first: Option<&Cmd>, before: Option<&Cmd>| {
        let after = api.is_none().then_some(&after);
        release::activate(write, first, before, &up, after, &recreate, &point)
    };
    // When the release was started, as the image check printed it: log checks need not ask.
    let started = |out: &crate::remote::Output| {
        if let Some(at) = release::started_in(&out.stdout) {
            m.started(target, at);
        }
    };
    if record.zero_downtime.is_empty() {
        let out = m
            .remote
            .check(
                &guarded(&rest(write.as_ref(), first, Some(&before))).into(),
                Some(STEP_TIMEOUT),
            )
            .await
            .map_err(named)?;
        started(&out);
    } else {
        // The lock, `first` and the image check before the first new container starts.
        let pre = release::chain(&[write.as_ref(), first, Some(&before)]);
        let out = m
            .remote
            .check(&guarded(&pre).into(), Some(STEP_TIMEOUT))
            .await
            .map_err(named)?;
        started(&out);
        start_first(sw, m, record, &compose).await?;
        m.remote
            .check(&guarded(&rest(None, None, None)).into(), Some(STEP_TIMEOUT))
            .await
            .map_err(|e| midway(named(e)))?;
    }
    // `current` was pointed at once after `up`. A service the API finds on
    // another image is recreated (and `current` pointed again); if the API
    // fails, the host checks as it does without it.
    if let Some((engine, images)) = api {
        let settle = match engine.running_images(&record.project).await {
            Ok(running) => {
                let stale: Vec<&str> = off_their_images(&running, &images).into_iter().collect();
                (!stale.is_empty()).then(|| {
                    sw.reporter.event(Event::Detail {
                        host: Some(m.host.name.clone()),
                        message: format!("still on another image after `up`: {}; recreating", stale.join(", ")),
                    });
                    release::chain(&[Some(&recreate.clone().args(stale)), Some(&point)])
                })
            }
            Err(why) => {
                cli_instead(sw, m, "the switch's image check", &why);
                Some(release::settle(&after, &recreate, &point))
            }
        };
        if let Some(settle) = settle {
            m.remote
                .check(&guarded(&settle).into(), Some(STEP_TIMEOUT))
                .await
                .map_err(|e| midway(named(e)))?;
        }
    }
    Ok(())
}

/// A command of a switch after its first, refused for the lock: unlike the
/// first's refusal (nothing ran), the host's switch had begun.
fn midway(e: RemoteError) -> SwitchError {
    match e {
        RemoteError::Failed { code, .. } if code == lock::NOT_OURS => SwitchError::LockLostMidway(e),
        e => SwitchError::Remote(e),
    }
}

/// The Engine API, and release `target`'s images ((service, content tag)),
/// where this run made them through it and it finds them all there now: the
/// switch then needs no `docker image inspect` on the host. `None` leaves the
/// checks to the host (which names any image missing).
async fn images_there<'a>(
    sw: &Switching<'_>,
    m: &'a Member,
    target: &str,
) -> Option<(&'a crate::engine::Engine, Vec<(String, String)>)> {
    let images = m.addressed_images(target)?;
    let engine = m.engine(sw.reporter).await?;
    let names: Vec<&str> = images.iter().map(|(_, tag)| tag.as_str()).collect();
    match engine.has_images(&names).await {
        Ok(true) => Some((engine, images)),
        Ok(false) => None,
        Err(why) => {
            cli_instead(sw, m, "the switch's image check", &why);
            None
        }
    }
}

/// The services of `images` ((service, image)) with a running container on
/// another image, of those `running` ((service, image) each).
fn off_their_images<'a>(running: &'a [(String, String)], images: &[(String, String)]) -> BTreeSet<&'a str> {
    running
        .iter()
        .filter(|(service, image)| images.iter().any(|(s, tag)| s == service && tag != image))
        .map(|(service, _)| service.as_str())
        .collect()
}

/// [`activate`] for a Swarm stack: in one command while the lock is ours,
/// `first`, the image check, `docker stack deploy` and pointing `current`;
/// then the wait until the stack converged on the release (a new task that
/// fails ends it at once).
async fn activate_stack(
    sw: &Switching<'_>,
    m: &Member,
    record: &Record,
    lock: &LockGuard,
    first: Option<&Cmd>,
) -> Result<(), SwitchError> {
    let target = record.release.as_str();
    let named = |e: RemoteError| e.named(&format!("deploy the stack of release {target}"));
    let before = swarm::read(m, &record.project).await.map_err(named)?;
    let cmd = release::chain(&[first, Some(&plain(m, record))]);
    let cmd = lock::if_ours(&m.layout, lock.token(), lock.ttl(), lock.confirm(), &cmd);
    m.remote.check(&cmd.into(), Some(STEP_TIMEOUT)).await.map_err(named)?;
    let waited = match sw.interrupt {
        Some(interrupt) => tokio::select! {
            r = swarm::wait(m, record, &before) => r,
            _ = interrupt.wait() => Err(swarm::NotConverged {
                why: "interrupted (Ctrl-C) while waiting for it".to_string(),
                evidence: swarm::evidence(m, &record.project).await,
            }),
        },
        None => swarm::wait(m, record, &before).await,
    };
    match waited {
        Ok(said) => {
            sw.reporter.event(Event::Info {
                host: Some(m.host.name.clone()),
                message: format!("stack {} converged: {said}", record.project),
            });
            Ok(())
        }
        Err(e) => Err(SwitchError::NotConverged {
            host: m.host.name.clone(),
            why: e.why,
            evidence: Box::new(e.evidence),
        }),
    }
}

/// Making `record` live in one plain command (no lock check, no start-first):
/// what a host's watchdog runs to put a release back (see [`crate::watchdog`]).
/// A stack's is its image check, `docker stack deploy` and pointing `current`.
pub fn plain(m: &Member, record: &Record) -> Cmd {
    let target = record.release.as_str();
    if record.engine == Orchestrator::Swarm {
        return release::chain(&[
            Some(&release::before_up(&m.layout, target, false)),
            Some(&swarm::deploy(m, record)),
            Some(&release::point_current(&m.layout, target)),
        ]);
    }
    let compose = m.compose_for(record);
    release::activate(
        None,
        None,
        Some(&release::before_up(&m.layout, target, false)),
        &compose
            .cmd(["up", "-d", "--remove-orphans", "--no-build"])
            .args(record.services.iter()),
        Some(&release::after_up(&m.layout, &record.project, target)),
        &compose.cmd(["up", "-d", "--no-build", "--force-recreate"]),
        &release::point_current(&m.layout, target),
    )
}

/// Whether `e` says the command did not run because the lock is not ours.
pub fn lock_not_ours(e: &SwitchError) -> bool {
    matches!(e, SwitchError::Remote(RemoteError::Failed { code, .. }) if *code == lock::NOT_OURS)
}

/// Switches the host from `from` (if any) to `to`, while `lock` is ours:
/// `first` (the watchdog's arming), then `down` of the old release where the
/// app asks for it (`down_before_up`, never with `-v`: named volumes survive),
/// then [`activate`].
pub async fn switch(
    sw: &Switching<'_>,
    m: &Member,
    from: Option<&Record>,
    to: &Record,
    lock: &LockGuard,
    first: Option<&Cmd>,
) -> Result<(), SwitchError> {
    let down = from
        .filter(|_| sw.config.app.down_before_up)
        .map(|prev| m.compose_for(prev).cmd(["down", "--remove-orphans"]));
    let before = release::chain(&[first, down.as_ref()]);
    activate(sw, m, to, lock, Some(&before)).await
}

/// Replaces, start-first, each of the release's start-first services whose
/// containers compose would replace: one whose config hash (compose's own
/// `com.docker.compose.config-hash`, which covers the image and every other
/// setting) differs from the release's, or whose image tag now names another
/// image. Services without containers yet are left to `up`.
async fn start_first(sw: &Switching<'_>, m: &Member, record: &Record, compose: &Compose) -> Result<(), SwitchError> {
    // `--hash=*` in one word: v1's docopt and v2's cobra both read it so.
    let out = m
        .remote
        .check(&compose.cmd(["config", "--hash=*"]).into(), Some(QUICK_TIMEOUT))
        .await?;
    let hashes: BTreeMap<&str, &str> = out
        .stdout
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(s, h)| (s.trim(), h.trim()))
        .collect();
    for entry in &record.zero_downtime {
        // Not a service of this release (or not under its profiles).
        let Some(hash) = hashes.get(entry.service.as_str()) else {
            continue;
        };
        let old = old_containers(sw, m, &record.project, &entry.service, hash).await?;
        if old.is_empty() || old.iter().all(|(_, changed)| !changed) {
            continue;
        }
        let old: Vec<String> = old.into_iter().map(|(id, _)| id).collect();
        replace(sw, m, record, compose, entry, &old).await?;
    }
    Ok(())
}

/// Each of `service`'s containers (not one-off) with whether compose would
/// replace it: its config hash differs from the release's (`hash`) or its
/// image's name now names another image. Through the Engine API, else
/// `OLD_CONTAINERS` on the host.
async fn old_containers(
    sw: &Switching<'_>,
    m: &Member,
    project: &str,
    service: &str,
    hash: &str,
) -> Result<Vec<(String, bool)>, SwitchError> {
    if let Some(engine) = m.engine(sw.reporter).await {
        let api = async {
            let ids = engine.service_containers(project, service).await?;
            let found = engine.inspect(&ids).await?;
            futures::future::try_join_all(found.into_iter().map(|c| async move {
                let now = engine.image_id(&c.config_image).await?;
                let changed = c.config_hash != hash || now.as_deref() != Some(c.image.as_str());
                Ok::<_, String>((c.id, changed))
            }))
            .await
        };
        match api.await {
            Ok(old) => return Ok(old),
            Err(why) => cli_instead(sw, m, "reading the containers to replace", &why),
        }
    }
    let out = m
        .remote
        .check(
            &shell(OLD_CONTAINERS, &[project, service, hash]).into(),
            Some(QUICK_TIMEOUT),
        )
        .await?;
    Ok(out
        .stdout
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(id, verdict)| (id.to_string(), verdict.trim() == "changed"))
        .collect())
}

/// Says (with `-v`) that the Engine API failed at `what` and the docker CLI
/// on the host does it instead.
fn cli_instead(sw: &Switching<'_>, m: &Member, what: &str, why: &str) {
    sw.reporter.event(Event::Detail {
        host: Some(m.host.name.clone()),
        message: format!("{what} through the Engine API failed ({why}); using the docker CLI"),
    });
}

/// The ids of `service`'s containers (not one-off): through the Engine API,
/// else `CONTAINERS` on the host.
async fn service_containers(
    sw: &Switching<'_>,
    m: &Member,
    project: &str,
    service: &str,
) -> Result<Vec<String>, RemoteError> {
    if let Some(engine) = m.engine(sw.reporter).await {
        match engine.service_containers(project, service).await {
            Ok(ids) => return Ok(ids),
            Err(why) => cli_instead(sw, m, "listing the containers", &why),
        }
    }
    let out = m
        .remote
        .check(&shell(CONTAINERS, &[project, service]).into(), Some(QUICK_TIMEOUT))
        .await?;
    Ok(out.stdout.lines().map(str::to_string).collect())
}

/// Stops containers `ids` (their own stop signal and grace period) and
/// removes them: through the Engine API, else `STOP_AND_REMOVE` on the host.
async fn stop_and_remove(sw: &Switching<'_>, m: &Member, ids: &[String]) -> Result<(), RemoteError> {
    if let Some(engine) = m.engine(sw.reporter).await {
        match engine.stop_and_remove(ids, STEP_TIMEOUT).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(why)) => {
                return Err(RemoteError::Failed {
                    host: m.host.name.clone(),
                    command: "stop and remove containers (Engine API)".to_string(),
                    code: 1,
                    stderr: why,
                })
            }
            Err(why) => cli_instead(sw, m, "stopping and removing containers", &why),
        }
    }
    m.remote
        .check(&shell(STOP_AND_REMOVE, &strs(ids)).into(), Some(STEP_TIMEOUT))
        .await
        .map(|_| ())
}

// $1 project, $2 service, $3 the release's config hash of it. Prints each of
// the service's containers (not one-off) as `<id> same|changed`: changed when
// its config hash differs or its image tag now names another image.
const OLD_CONTAINERS: &str = r#"
ids=$(docker ps -aq --no-trunc --filter "label=com.docker.compose.project=$1" \
  --filter "label=com.docker.compose.service=$2" --filter label=com.docker.compose.oneoff=False)
[ -n "$ids" ] || exit 0
docker inspect -f '{{.Id}} {{index .Config.Labels "com.docker.compose.config-hash"}} {{.Image}} {{.Config.Image}}' $ids |
while read -r id hash image name; do
  now=$(docker image inspect -f '{{.Id}}' "$name" 2>/dev/null || echo none)
  if [ "$hash" = "$3" ] && [ "$now" = "$image" ]; then echo "$id same"; else echo "$id changed"; fi
done
"#;

// $1 project, $2 service: the ids of its containers (not one-off).
const CONTAINERS: &str = r#"docker ps -aq --no-trunc --filter "label=com.docker.compose.project=$1" \
  --filter "label=com.docker.compose.service=$2" --filter label=com.docker.compose.oneoff=False"#;

// Containers (ids) to stop with their own stop signal and grace period
// (compose sets both from the service), then remove. Fails only if one is
// still there afterwards.
const STOP_AND_REMOVE: &str = r#"
docker stop "$@" >/dev/null 2>&1
docker rm -f "$@" >/dev/null 2>&1
for id in "$@"; do
  if docker inspect "$id" >/dev/null 2>&1; then echo "container $id could not be removed" >&2; exit 1; fi
done
exit 0
"#;

/// `docker inspect -f` of what [`Inspected`] holds of a new container.
const FRESH_FORMAT: &str = "{{.Id}}|{{.Name}}|{{.State.Status}}|{{.State.ExitCode}}|{{with index .State \"Health\"}}{{.Status}}{{end}}|{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}|{{range $p, $v := index .Config \"ExposedPorts\"}}{{$p}} {{end}}";

/// A line of `docker inspect -f FRESH_FORMAT`.
fn parse_fresh(line: &str) -> Option<Inspected> {
    let f: Vec<&str> = line.split('|').collect();
    let words = |s: &str| s.split_whitespace().map(str::to_string).collect();
    Some(Inspected {
        id: f.first()?.to_string(),
        name: f.get(1)?.trim_start_matches('/').to_string(),
        state: f.get(2)?.to_string(),
        exit_code: f.get(3)?.to_string(),
        health: f.get(4)?.to_string(),
        ips: words(f.get(5)?),
        exposed: words(f.get(6)?),
        ..Inspected::default()
    })
}

/// Inspects containers `ids`, leaving out those that are gone (see
/// [`gone`]): through the Engine API, else `docker inspect` on the host.
async fn inspect(sw: &Switching<'_>, m: &Member, ids: &[String]) -> Result<Vec<Inspected>, RemoteError> {
    if let Some(engine) = m.engine(sw.reporter).await {
        match engine.inspect(ids).await {
            Ok(found) => return Ok(found),
            Err(why) => cli_instead(sw, m, "inspecting containers", &why),
        }
    }
    let script = Cmd::new("docker")
        .args(["inspect", "-f", FRESH_FORMAT])
        .args(ids.iter())
        .into();
    let out = m.remote.run(&script, Some(QUICK_TIMEOUT)).await?;
    // `docker inspect` prints those it found and exits 1 naming each one gone.
    let said: Vec<&str> = out.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    let only_gone = out.code == 1
        && !said.is_empty()
        && said
            .iter()
            .all(|l| l.contains("No such object") || l.contains("No such container"));
    let out = match out.success() || only_gone {
        true => out,
        false => m.remote.required(&script, out)?,
    };
    Ok(out.stdout.lines().filter_map(parse_fresh).collect())
}

/// Of containers `ids`, those `found` does not have or shows being removed.
fn gone<'a>(ids: &'a [String], found: &[Inspected]) -> Vec<&'a str> {
    ids.iter()
        .filter(|id| !found.iter().any(|c| &c.id == *id && c.state != "removing"))
        .map(|id| short(id))
        .collect()
}

/// A container id as `docker ps` shows it.
fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// Why new containers are not ready.
enum Unready {
    /// Not ready in time, or stopped: why, in words.
    Failed(String),
    /// Ctrl-C.
    Interrupted,
}

/// Starts `entry`'s new containers beside `old`, waits until they are ready,
/// then drains, stops and removes `old`. If they are not ready in time (or
/// Ctrl-C), removes them instead and leaves `old` serving.
async fn replace(
    sw: &Switching<'_>,
    m: &Member,
    record: &Record,
    compose: &Compose,
    entry: &StartFirst,
    old: &[String],
) -> Result<(), SwitchError> {
    let service = entry.service.as_str();
    let scale = format!("{service}={}", old.len() * 2);
    let started = Instant::now();
    let up = m
        .remote
        .check(
            &compose
                .cmd(["up", "-d", "--no-deps", "--no-recreate", "--no-build", "--scale"])
                .arg(scale.as_str())
                .arg(service)
                .into(),
            Some(STEP_TIMEOUT),
        )
        .await;
    // The new containers run (and their network answers) from here at the latest.
    let running = Instant::now();
    let now = service_containers(sw, m, &record.project, service).await?;
    let new: Vec<String> = now.into_iter().filter(|id| !old.contains(id)).collect();
    if let Err(e) = up {
        // Whatever it started goes; the old containers were not touched.
        discard(sw, m, &new).await;
        return Err(e.into());
    }
    wait_and_swap(sw, m, record, entry, old, &new, (started, running)).await
}

/// How long new containers have run, at least, before the old ones are
/// stopped, however soon they are ready. Docker puts a new container in its
/// network's DNS before the container's network answers; a proxy that looks
/// it up and connects then gets no answer to its address resolution (ARP),
/// and Linux asks again only after 1 s (`net.ipv4.neigh.*.retrans_time_ms`,
/// 1000 by default): until then that proxy reaches neither container if the
/// old one is already stopped. Seen here through the demo's Caddy, on the
/// first start-first switch that gave the new container an address the proxy
/// had never reached: requests held for 1 s, while deploy, resolving from
/// the host, had found the new container ready 30 ms after it started.
pub const SETTLE: Duration = Duration::from_millis(1250);

/// Stops and removes containers `ids`, as well as it can: for a path that
/// already failed.
async fn discard(sw: &Switching<'_>, m: &Member, ids: &[String]) {
    if !ids.is_empty() {
        let _ = stop_and_remove(sw, m, ids).await;
    }
}

/// The rest of [`replace`] once the new containers run: wait until they are
/// ready, then swap (drain, stop and remove `old`), or remove them.
async fn wait_and_swap(
    sw: &Switching<'_>,
    m: &Member,
    record: &Record,
    entry: &StartFirst,
    old: &[String],
    new: &[String],
    (started, running): (Instant, Instant),
) -> Result<(), SwitchError> {
    let service = entry.service.as_str();
    // A command that fails before the swap: the old containers still serve,
    // the new ones must not stay beside them. (Not ready: removed below.)
    let inspected = match (inspect(sw, m, new).await, inspect(sw, m, old).await) {
        (Ok(fresh), Ok(before)) => (fresh, before),
        (Err(e), _) | (_, Err(e)) => {
            discard(sw, m, new).await;
            return Err(e.into());
        }
    };
    let (fresh, before) = inspected;
    let old_names = names(&before);
    let new_names = names(&fresh);
    let event = |phase: StartFirstPhase| {
        sw.reporter.event(Event::StartFirst {
            host: m.host.name.clone(),
            service: service.to_string(),
            phase,
            new: new_names.clone(),
            old: old_names.clone(),
            elapsed_ms: started.elapsed().as_millis() as u64,
        })
    };
    let by_health = !fresh.is_empty() && fresh.iter().all(|c| !c.health.is_empty());
    event(StartFirstPhase::Started {
        ready_when: if by_health { "healthcheck" } else { "http checks" }.into(),
    });
    let removed = gone(new, &fresh);
    let ready = if new.is_empty() {
        Err(Unready::Failed("compose started no new container".into()))
    } else if !removed.is_empty() {
        Err(Unready::Failed(removed_meanwhile(&removed)))
    } else if by_health {
        until_healthy(sw, m, new).await
    } else {
        until_checks_pass(sw, m, record, entry, &fresh).await
    };
    // Ready: the old ones serve on for `drain`, and until the new ones have
    // run for SETTLE; Ctrl-C meanwhile still removes the new ones.
    let ready = match ready {
        Ok(()) => {
            event(StartFirstPhase::Ready);
            let drained = Instant::now() + Duration::from_millis(entry.drain_ms);
            settle(sw, drained.max(running + SETTLE)).await
        }
        unready => unready,
    };
    match ready {
        Ok(()) => {
            // From here the new containers stay whatever happens: the old
            // ones may already be stopped, and they are what serves.
            stop_and_remove(sw, m, old).await?;
            event(StartFirstPhase::Replaced);
            Ok(())
        }
        Err(unready) => {
            let why = match unready {
                Unready::Failed(why) => why,
                Unready::Interrupted => "interrupted (Ctrl-C) while waiting for them".to_string(),
            };
            let evidence = not_ready_evidence(sw, m, service, new).await;
            stop_and_remove(sw, m, new).await?;
            event(StartFirstPhase::NotReady { why: why.clone() });
            let one = new_names.len() == 1;
            Err(SwitchError::NotReady {
                host: m.host.name.clone(),
                service: service.to_string(),
                containers: format!(
                    "container{} {} {}",
                    if one { "" } else { "s" },
                    new_names.join(", "),
                    if one { "was" } else { "were" }
                ),
                why,
                removed: if one { "it was removed" } else { "they were removed" }.to_string(),
                evidence: Box::new(evidence),
            })
        }
    }
}

/// Waits until `until`, the old containers still serving, or until Ctrl-C.
async fn settle(sw: &Switching<'_>, until: Instant) -> Result<(), Unready> {
    let wait = tokio::time::sleep_until(until.into());
    match sw.interrupt {
        Some(interrupt) => tokio::select! {
            _ = wait => Ok(()),
            _ = interrupt.wait() => Err(Unready::Interrupted),
        },
        None => {
            wait.await;
            Ok(())
        }
    }
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn names(c: &[Inspected]) -> Vec<String> {
    c.iter().map(|c| c.name.clone()).collect()
}

/// Why new containers that someone removed are not ready.
fn removed_meanwhile(gone: &[&str]) -> String {
    format!(
        "container{} {} no longer exist{} (removed by something else while it was waited for)",
        if gone.len() == 1 { "" } else { "s" },
        gone.join(", "),
        if gone.len() == 1 { "s" } else { "" }
    )
}

/// Waits until every container of `ids` is healthy, within `verify.timeout`,
/// asking as often as the checklist does (see `verify::retry_delay`). One that
/// stops for good fails at once; `unhealthy` is waited out (Docker keeps
/// probing, and it may yet pass).
async fn until_healthy(sw: &Switching<'_>, m: &Member, ids: &[String]) -> Result<(), Unready> {
    let verify = &sw.config.verify;
    let started = Instant::now();
    let mut last;
    loop {
        let tried = Instant::now();
        match inspect(sw, m, ids).await {
            Ok(now) => {
                if let Some(why) = ended_for_good(ids, &now, "healthy") {
                    return Err(Unready::Failed(why));
                }
                if now.len() == ids.len() && now.iter().all(|c| c.health == "healthy") {
                    return Ok(());
                }
                last = now
                    .iter()
                    .map(|c| format!("{} {}", c.name, if c.health.is_empty() { &c.state } else { &c.health }))
                    .collect::<Vec<_>>()
                    .join(", ");
            }
            Err(e) => last = e.to_string(),
        }
        let delay = verify::retry_delay(started.elapsed(), tried.elapsed(), verify.interval, verify.max_interval);
        if started.elapsed() + delay >= verify.timeout {
            return Err(Unready::Failed(format!(
                "not healthy within {} (verify.timeout): {last}",
                humantime::format_duration(verify.timeout)
            )));
        }
        if let Some(interrupt) = sw.interrupt {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = interrupt.wait() => return Err(Unready::Interrupted),
            }
        } else {
            tokio::time::sleep(delay).await;
        }
    }
}

/// Without a healthcheck: the service's `http` checks against each new
/// container's own address, at `entry.port` or the one port it exposes.
async fn until_checks_pass(
    sw: &Switching<'_>,
    m: &Member,
    record: &Record,
    entry: &StartFirst,
    fresh: &[Inspected],
) -> Result<(), Unready> {
    let service = entry.service.as_str();
    if verify::http_checks_of(sw.config, service).is_empty() {
        return Err(Unready::Failed(format!(
            "it has no healthcheck and no `http` check has `service = \"{service}\"`: nothing says when a new container is ready (give the service a healthcheck, or add such a check)"
        )));
    }
    let mut targets = Vec::new();
    for c in fresh {
        let port = match (entry.port, c.exposed.as_slice()) {
            (Some(p), _) => p,
            (None, [one]) => match one.trim_end_matches("/tcp").parse() {
                Ok(p) => p,
                Err(_) => return Err(Unready::Failed(format!("{} exposes {one}, not a TCP port", c.name))),
            },
            (None, _) => {
                return Err(Unready::Failed(format!(
                    "{} exposes {} ports: set the port it listens on (app.zero_downtime: {{ service = \"{service}\", port = 8000 }})",
                    c.name,
                    if c.exposed.is_empty() { "no".to_string() } else { c.exposed.join(", ") }
                )))
            }
        };
        let Some(ip) = c.ips.first() else {
            return Err(Unready::Failed(format!("{} has no address on a network", c.name)));
        };
        targets.push((c.name.clone(), format!("{ip}:{port}")));
    }
    let checks = futures::future::join_all(targets.iter().map(|(name, address)| {
        verify::container_ready(
            sw.config,
            m,
            record,
            service,
            (name.as_str(), address.as_str()),
            sw.reporter,
        )
    }));
    let ids: Vec<String> = fresh.iter().map(|c| c.id.clone()).collect();
    let interrupted = async {
        match sw.interrupt {
            Some(interrupt) => interrupt.wait().await,
            None => std::future::pending().await,
        }
    };
    let results = tokio::select! {
        r = checks => r,
        why = ended(sw, m, &ids) => return Err(Unready::Failed(why)),
        _ = interrupted => return Err(Unready::Interrupted),
    };
    match results.into_iter().find_map(Result::err) {
        Some(failed) => Err(Unready::Failed(format!("check `{}`: {}", failed.name, failed.detail))),
        None => Ok(()),
    }
}

/// Ends when one of containers `ids` is gone or has stopped for good,
/// saying which: looked at every [`ENDED_EVERY`] while their http checks are
/// waited for, as `until_healthy` looks at each poll.
async fn ended(sw: &Switching<'_>, m: &Member, ids: &[String]) -> String {
    loop {
        tokio::time::sleep(ENDED_EVERY).await;
        let Ok(now) = inspect(sw, m, ids).await else {
            continue;
        };
        if let Some(why) = ended_for_good(ids, &now, "ready") {
            return why;
        }
    }
}

/// Why new containers `ids`, as inspected (`now`), will never be `ready`:
/// one is gone (see [`gone`]) or has stopped for good; `None` while neither.
fn ended_for_good(ids: &[String], now: &[Inspected], ready: &str) -> Option<String> {
    let gone = gone(ids, now);
    if !gone.is_empty() {
        return Some(removed_meanwhile(&gone));
    }
    now.iter().find(|c| c.stopped()).map(|c| {
        format!(
            "{} {} (exit code {}) before it was {ready}",
            c.name, c.state, c.exit_code
        )
    })
}

/// How often [`ended`] looks.
const ENDED_EVERY: Duration = Duration::from_millis(250);

/// What the new containers that were not ready looked like: state, health
/// log and last log lines.
async fn not_ready_evidence(sw: &Switching<'_>, m: &Member, service: &str, ids: &[String]) -> Evidence {
    let mut evidence = Evidence {
        containers: Vec::new(),
        logs: BTreeMap::new(),
        health: BTreeMap::new(),
    };
    let Ok(now) = inspect(sw, m, ids).await else {
        return evidence;
    };
    let seen: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
    for c in now.iter().filter(|c| seen.contains(c.id.as_str())) {
        evidence.containers.push(Container {
            service: service.to_string(),
            state: c.state.clone(),
            status: match c.health.as_str() {
                "" => c.state.clone(),
                h => format!("{} ({h})", c.state),
            },
            name: c.name.clone(),
        });
        if let Some(lines) = verify::last_lines(m, &c.id, sw.reporter).await {
            evidence
                .logs
                .entry(format!("{service} (new container {})", c.name))
                .or_default()
                .extend(lines);
        }
        if !c.health.is_empty() {
            if let Some(p) = verify::probes(m, &c.id, sw.reporter).await {
                evidence.health.insert(c.name.clone(), p);
            }
        }
    }
    evidence
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only a switch's first command refused for the lock means nothing ran:
    /// a later one's refusal leaves the host counted as switched (to be put back).
    #[test]
    fn a_lock_refusal_after_the_first_command_is_not_nothing_ran() {
        let refused = || RemoteError::Failed {
            host: "web1".into(),
            command: "start release r".into(),
            code: lock::NOT_OURS,
            stderr: "the lock expired".into(),
        };
        assert!(lock_not_ours(&SwitchError::Remote(refused())));
        let later = midway(refused());
        assert!(!lock_not_ours(&later));
        assert!(
            later.to_string().contains("after this host's switch had begun"),
            "{later}"
        );
        let failed = midway(RemoteError::Failed {
            host: "web1".into(),
            command: "start release r".into(),
            code: 1,
            stderr: String::new(),
        });
        assert!(matches!(failed, SwitchError::Remote(_)));
    }

    #[test]
    fn a_service_is_off_its_image_when_a_running_container_of_it_runs_another() {
        let pair = |s: &str, i: &str| (s.to_string(), i.to_string());
        let images = [pair("api", "shop-api:sha-1"), pair("worker", "shop-worker:sha-2")];
        let running = [
            pair("api", "shop-api:sha-1"),
            pair("worker", "shop-worker:sha-2"),
            // Not built: not judged.
            pair("redis", "redis:7"),
        ];
        assert!(off_their_images(&running, &images).is_empty());
        let running = [
            pair("api", "shop-api:sha-1"),
            pair("api", "shop-api:sha-0"),
            pair("worker", "sha256:0123"),
        ];
        assert_eq!(
            off_their_images(&running, &images).into_iter().collect::<Vec<_>>(),
            ["api", "worker"]
        );
        // A service with no running container is the checklist's to judge.
        assert!(off_their_images(&[], &images).is_empty());
    }

    #[test]
    fn inspected_containers_parse_with_or_without_health_and_ports() {
        let c = parse_fresh("abc|/shop-api-2|running|0|starting|172.18.0.5 10.0.0.2 |8000/tcp |").unwrap();
        assert_eq!((c.name.as_str(), c.health.as_str()), ("shop-api-2", "starting"));
        assert_eq!(c.ips, ["172.18.0.5", "10.0.0.2"]);
        assert_eq!(c.exposed, ["8000/tcp"]);
        assert!(!c.stopped());
        let c = parse_fresh("abc|/shop-api-3|exited|3|||").unwrap();
        assert!(c.health.is_empty() && c.ips.is_empty() && c.exposed.is_empty());
        assert!(c.stopped());
        assert!(parse_fresh("abc|only").is_none());
    }

    #[test]
    fn records_without_a_zero_downtime_list_still_parse() {
        let old = r#"{"release":"20260101T000000Z-a","commit":"a","project":"p","compose_files":["docker-compose.yml"],
            "services":[],"build":["api"],"env_file":".deploy-env","compose":"v2"}"#;
        let r = Record::parse(old).expect("a record from before zero_downtime");
        assert!(r.zero_downtime.is_empty());
        let mut with = r.clone();
        with.zero_downtime.push(StartFirst {
            service: "api".into(),
            drain_ms: 2000,
            port: Some(8000),
        });
        assert_eq!(Record::parse(&with.to_json()), Some(with));
        assert!(!r.to_json().contains("zero_downtime"), "{}", r.to_json());
    }
}
