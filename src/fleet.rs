//! The hosts of one run, connected: each with its transport, its layout and what
//! preflight found (compose variant, live release). Commands that touch hosts
//! start here.

use std::fmt::Display;
use std::future::Future;
use std::time::Instant;

use futures::stream::{self, StreamExt};

use crate::activation::Record;
use crate::compose::Variant;
use crate::config::{Environment, Host};
use crate::engine::Engine;
use crate::error::Error;
use crate::lock::{self, Acquired, Extend, LockInfo};
use crate::release::{self, Layout};
use crate::remote::{self, Cmd, Remote, Script};
use crate::report::events::{Event, Reporter, Step, StepStatus};

/// Time limits for remote steps, so a stuck host cannot hang a run.
pub const STEP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10 * 60);
/// For commands that should answer at once.
pub const QUICK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Why the lock could not be taken everywhere.
#[derive(Debug, Default)]
pub struct LockRefused {
    /// "host: locked by ..." for each host someone else holds.
    pub held: Vec<String>,
    /// Hosts where taking it failed, with the reason.
    pub errors: Vec<(String, String)>,
}

/// One connected host.
pub struct Member {
    pub host: Host,
    pub remote: Box<dyn Remote>,
    pub layout: Layout,
    /// The Compose new releases use on this host (after preflight).
    pub variant: Option<Variant>,
    /// Every Compose the host has (after preflight).
    pub variants: Vec<Variant>,
    /// The live release (after preflight: a look, not what a change decides by).
    pub current: Option<String>,
    /// The live release's record, where it has one (after preflight).
    pub record: Option<Record>,
    /// Whether git is installed (after preflight).
    pub git: bool,
    /// Compose as preflight found it afresh, to keep in `.deploy/` (under the lock).
    pub detected: Option<String>,
    /// The engine's unix socket on the host (after preflight); `None` when
    /// `DOCKER_HOST` names something else (then only the CLI is used).
    pub docker_socket: Option<String>,
    /// The swarm's number of nodes, where this host is a swarm manager of a
    /// swarm environment (after preflight).
    pub swarm_nodes: Option<u32>,
    /// The services of the release this run built here, as compose resolved
    /// them beside the build: its checklist needs no `compose config`. Their
    /// `image`s are as the override named them at some moment of the build
    /// (before or after the content tags): not where to read images from.
    resolved: OfRelease<Vec<crate::compose::Service>>,
    /// The images of the release this run built here, named by their content
    /// through the Engine API ((service, tag), the override's order), and the
    /// override naming them, until a command of the release writes it on the
    /// host (see [`Member::pending_override`]).
    addressed: OfRelease<(Vec<(String, String)>, String)>,
    /// When a release was started on the host in this run (host clock), as
    /// its switch said: log checks need not ask the host.
    started: OfRelease<i64>,
    /// The engine's API through the connection, once asked for: `Err` says why not.
    engine: tokio::sync::OnceCell<Result<Engine, String>>,
    /// Whether the engine's absence was told already.
    engine_told: std::sync::atomic::AtomicBool,
}

/// A value this run learned about one release on a host (the last one kept).
#[derive(Debug)]
struct OfRelease<T>(std::sync::Mutex<Option<(String, T)>>);

impl<T> Default for OfRelease<T> {
    fn default() -> Self {
        OfRelease(std::sync::Mutex::new(None))
    }
}

impl<T: Clone> OfRelease<T> {
    fn keep(&self, id: &str, value: T) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some((id.to_string(), value));
    }

    /// The value kept for release `id`, if the last one kept is its.
    fn of(&self, id: &str) -> Option<T> {
        let kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        kept.as_ref().filter(|(of, _)| of == id).map(|(_, v)| v.clone())
    }
}

/// The engine's socket path from the host's `DOCKER_HOST` (`-`: unset).
fn docker_socket(docker_host: &str) -> Option<String> {
    match docker_host {
        "-" | "" => Some("/var/run/docker.sock".to_string()),
        other => other.strip_prefix("unix://").map(str::to_string),
    }
}

/// What preflight saw on a host, before the run keeps it (see [`Member::keep`]).
struct Look {
    variants: Vec<Variant>,
    current: Option<String>,
    git: bool,
    socket: Option<String>,
    record: Option<Record>,
    detected: Option<String>,
    /// Whether docker answers there (`Err`: why not).
    docker: Result<(), String>,
    /// A swarm manager's number of nodes (swarm environments, where docker answers).
    swarm_nodes: Option<Result<u32, String>>,
}

/// Preflight's one command on `m` (its compose programs, live release and
/// record, git, `DOCKER_HOST`), with the Engine API asked at once (most
/// hosts use the default socket): whether docker answers there.
async fn look(m: &Member, reporter: &dyn Reporter) -> Result<Look, String> {
    let script = release::preflight(&m.layout).into();
    let (out, _) = tokio::join!(m.remote.check(&script, Some(QUICK_TIMEOUT)), m.engine(reporter));
    let out = out.map_err(|e| e.to_string())?;
    let mut lines = out.stdout.lines();
    let variants: Vec<Variant> = lines
        .next()
        .unwrap_or("")
        .split_whitespace()
        .filter_map(Variant::parse)
        .collect();
    let current = lines
        .next()
        .map(str::trim)
        .filter(|c| *c != "-" && release::is_release_id(c))
        .map(str::to_string);
    let git = lines.next().map(str::trim) == Some("git");
    let socket = docker_socket(lines.next().map(str::trim).unwrap_or("-"));
    let rest = lines.collect::<Vec<_>>().join("\n");
    let (record, detected) = match rest.split_once("@@deploy detected\n") {
        Some((r, d)) => (r.to_string(), Some(d.to_string())),
        None => (rest, None),
    };
    let record = Record::parse(&record).filter(|r| Some(&r.release) == current.as_ref());
    // DOCKER_HOST on the host may name another engine, or none: its CLI says.
    let api = match socket == m.docker_socket {
        true => m.engine(reporter).await,
        false => None,
    };
    let answers = match api {
        Some(_) => true,
        None => m
            .remote
            .check(&release::docker_version().into(), Some(QUICK_TIMEOUT))
            .await
            .is_ok_and(|o| !o.stdout.trim().is_empty()),
    };
    let docker = match answers {
        true => Ok(()),
        false => Err(
            "docker does not answer on this host (is the engine running, and is the user in the docker group?)".into(),
        ),
    };
    let swarm_nodes = match (m.host.engine, answers) {
        (crate::config::Orchestrator::Swarm, true) => Some(crate::swarm::preflight(m).await),
        _ => None,
    };
    Ok(Look {
        variants,
        current,
        git,
        socket,
        record,
        detected,
        docker,
        swarm_nodes,
    })
}

impl Member {
    /// Keeps what preflight saw (see [`look`]), whatever it found wrong (a
    /// read-only command still shows the live release of a host whose docker
    /// does not answer), and decides the compose new releases use here:
    /// `forced` (the environment's `compose`), else the one found first.
    /// `Err`: why the host cannot be deployed to.
    fn keep(&mut self, look: Look, forced: Option<Variant>) -> Result<(), String> {
        if look.socket != self.docker_socket {
            // DOCKER_HOST on the host says otherwise: that engine, or none.
            self.docker_socket = look.socket;
            self.engine = tokio::sync::OnceCell::new();
            self.engine_told = std::sync::atomic::AtomicBool::new(false);
        }
        self.current = look.current;
        self.record = look.record;
        self.git = look.git;
        self.detected = look.detected;
        let found = look.variants.first().copied();
        self.variants = look.variants;
        look.docker?;
        self.variant = match (forced, found) {
            (Some(v), _) | (None, Some(v)) => Some(v),
            (None, None) => {
                return Err("neither `docker compose` (v2) nor `docker-compose` (v1) is installed".to_string())
            }
        };
        if let Some(nodes) = look.swarm_nodes {
            self.swarm_nodes = Some(nodes?);
        }
        Ok(())
    }

    /// A connected host before preflight has looked at it.
    pub fn new(host: Host, remote: Box<dyn Remote>) -> Member {
        Member {
            layout: Layout::new(host.path.expose()),
            host,
            remote,
            variant: None,
            variants: Vec::new(),
            current: None,
            record: None,
            git: false,
            detected: None,
            docker_socket: docker_socket("-"),
            resolved: OfRelease::default(),
            addressed: OfRelease::default(),
            started: OfRelease::default(),
            engine: tokio::sync::OnceCell::new(),
            engine_told: std::sync::atomic::AtomicBool::new(false),
            swarm_nodes: None,
        }
    }

    /// Keeps release `id`'s services as its build in this run resolved them.
    pub fn resolved(&self, id: &str, services: Vec<crate::compose::Service>) {
        self.resolved.keep(id, services);
    }

    /// Release `id`'s services as its build in this run resolved them, if it
    /// was built here in this run: what compose's own files and variables
    /// (shared files too) said a moment ago, not a file a commit could bring.
    pub fn resolved_services(&self, id: &str) -> Option<Vec<crate::compose::Service>> {
        self.resolved.of(id)
    }

    /// Keeps release `id`'s images as the Engine API named them by their
    /// content ((service, tag)), and its override naming them so, for
    /// [`Member::pending_override`].
    pub fn addressed(&self, id: &str, images: Vec<(String, String)>) {
        let text = crate::compose::addressed_override(&images, &self.layout.root);
        self.addressed.keep(id, (images, text));
    }

    /// Release `id`'s built images ((service, content tag)), where this run
    /// made their content tags through the Engine API: what its switch can
    /// check through the API instead of the docker CLI on the host.
    pub fn addressed_images(&self, id: &str) -> Option<Vec<(String, String)>> {
        self.addressed.of(id).map(|(images, _)| images)
    }

    /// The command that writes release `id`'s override with its content tags,
    /// where they were made through the Engine API in this run: the switch
    /// runs it before all else, and the run's last command on a host that
    /// staged the release but never switched to it (a batch not reached). It
    /// does nothing where the release is gone (discarded), and writing it
    /// twice writes the same. (A release command runs before it: its
    /// override names the build's own tags, the very same images.)
    pub fn pending_override(&self, id: &str) -> Option<Cmd> {
        self.addressed
            .of(id)
            .map(|(_, text)| release::write_override(&self.layout, id, &text))
    }

    /// Keeps when release `id` was started on the host (seconds since the
    /// epoch, host clock), as its switch printed it.
    pub fn started(&self, id: &str, at: i64) {
        self.started.keep(id, at);
    }

    /// When release `id` was started in this run, if its switch said so.
    pub fn started_at(&self, id: &str) -> Option<i64> {
        self.started.of(id)
    }

    /// The host's Docker Engine API, connected on first use; `None` (told once,
    /// with `-v`) when it cannot be reached: callers then use the CLI.
    pub async fn engine(&self, reporter: &dyn Reporter) -> Option<&Engine> {
        let engine = self
            .engine
            .get_or_init(|| async {
                match &self.docker_socket {
                    Some(socket) => Engine::connect(self.remote.as_ref(), socket).await,
                    None => Err("DOCKER_HOST on the host is not a unix socket".to_string()),
                }
            })
            .await;
        match engine {
            Ok(e) => Some(e),
            Err(why) => {
                if !self.engine_told.swap(true, std::sync::atomic::Ordering::SeqCst) {
                    reporter.event(Event::Detail {
                        host: Some(self.host.name.clone()),
                        message: format!("the Docker Engine API is not reachable ({why}); using the docker CLI"),
                    });
                }
                None
            }
        }
    }

    /// Of the services a release builds, those this host runs.
    pub fn builds(&self, all: &[String]) -> Vec<String> {
        match &self.host.services {
            Some(runs) => all.iter().filter(|s| runs.contains(s)).cloned().collect(),
            None => all.to_vec(),
        }
    }

    /// The services named to `compose up`: this host's, or none (all).
    pub fn runs(&self) -> Vec<String> {
        self.host.services.clone().unwrap_or_default()
    }
}

/// Runs `fut` as `step` on `host`, telling the reporter when it starts and how it ends.
pub async fn step<T, E: Display>(
    reporter: &dyn Reporter,
    host: &str,
    step: Step,
    fut: impl Future<Output = Result<T, E>>,
) -> Result<T, String> {
    reporter.event(Event::Step {
        host: host.to_string(),
        step,
        status: StepStatus::Started,
    });
    let started = Instant::now();
    let result = fut.await;
    step_ended(reporter, host, step, started.elapsed().as_millis() as u64, result)
}

/// Tells the reporter how `step` on `host` ended, after `elapsed_ms`.
fn step_ended<T, E: Display>(
    reporter: &dyn Reporter,
    host: &str,
    step: Step,
    elapsed_ms: u64,
    result: Result<T, E>,
) -> Result<T, String> {
    let result = result.map_err(|e| e.to_string());
    let status = match &result {
        Ok(_) => StepStatus::Done {
            elapsed_ms,
            detail: None,
        },
        Err(error) => StepStatus::Failed {
            elapsed_ms,
            error: error.clone(),
        },
    };
    reporter.event(Event::Step {
        host: host.to_string(),
        step,
        status,
    });
    result
}

/// The hosts of `env` that `--hosts` names (all without it); an unknown name is a usage error.
pub fn select_hosts(env: &Environment, filter: Option<&[String]>) -> Result<Vec<Host>, Error> {
    let Some(names) = filter else {
        return Ok(env.hosts.clone());
    };
    for n in names {
        if !env.hosts.iter().any(|h| &h.name == n || h.address.expose() == n) {
            let known: Vec<&str> = env.hosts.iter().map(|h| h.name.as_str()).collect();
            return Err(Error::Usage(format!(
                "--hosts: `{n}` is not a host of `{}`; its hosts are {}",
                env.name,
                known.join(", ")
            )));
        }
    }
    Ok(env
        .hosts
        .iter()
        .filter(|h| names.iter().any(|n| &h.name == n || h.address.expose() == n))
        .cloned()
        .collect())
}

/// A connection attempt's result.
type Connected = Result<Box<dyn Remote>, String>;

/// Connections under way before the run said it started (see [`Fleet::start_connecting`]).
pub struct Connecting {
    env: Environment,
    tasks: Vec<(Host, tokio::task::JoinHandle<(Connected, u64)>)>,
}

impl Connecting {
    /// The fleet, as [`Fleet::connect`] gives it, once every connection
    /// ended: each told as a connect step that starts now and takes the time
    /// its connection took.
    pub async fn finish(self, reporter: &dyn Reporter) -> Result<Fleet, Vec<(String, String)>> {
        for (host, _) in &self.tasks {
            reporter.event(Event::Step {
                host: host.name.clone(),
                step: Step::Connect,
                status: StepStatus::Started,
            });
        }
        let results = futures::future::join_all(self.tasks.into_iter().map(|(host, task)| async move {
            let (r, elapsed_ms) = task
                .await
                .unwrap_or_else(|e| (Err(format!("the connection's task ended: {e}")), 0));
            let r = step_ended(reporter, &host.name, Step::Connect, elapsed_ms, r);
            (host, r)
        }))
        .await;
        Fleet::all_or_none(Fleet::of(&self.env, results)).await
    }

    /// The run stops before it started: closes what connected, waiting at
    /// most `limit` for the connections under way. One still under way then
    /// is cancelled when the runtime ends: its control directory goes with
    /// it, and its `ssh` gives up within `connect_timeout` at the latest;
    /// one that connected meanwhile is closed as its session is dropped.
    pub async fn abandon(self, limit: std::time::Duration) {
        let ended = futures::future::join_all(self.tasks.into_iter().map(|(_, task)| task));
        if let Ok(results) = tokio::time::timeout(limit, ended).await {
            for (r, _) in results.into_iter().flatten() {
                if let Ok(remote) = r {
                    let _ = remote.close().await;
                }
            }
        }
    }
}

/// Connected hosts.
pub struct Fleet {
    pub env: Environment,
    pub members: Vec<Member>,
}

impl Fleet {
    /// Connects to every host, `parallel` at a time. If any host cannot be reached,
    /// the others are closed again and every failure is returned by host.
    pub async fn connect(
        env: &Environment,
        hosts: &[Host],
        reporter: &dyn Reporter,
    ) -> Result<Fleet, Vec<(String, String)>> {
        Fleet::all_or_none(Fleet::connect_reachable(env, hosts, reporter).await).await
    }

    /// The fleet if every host connected; else the others closed again, and every failure.
    async fn all_or_none((fleet, failures): (Fleet, Vec<(String, String)>)) -> Result<Fleet, Vec<(String, String)>> {
        if failures.is_empty() {
            Ok(fleet)
        } else {
            fleet.close().await;
            Err(failures)
        }
    }

    /// Connects to every host it can, `parallel` at a time: the fleet of those
    /// that answered, and each one that did not with the reason.
    pub async fn connect_reachable(
        env: &Environment,
        hosts: &[Host],
        reporter: &dyn Reporter,
    ) -> (Fleet, Vec<(String, String)>) {
        let results: Vec<(Host, Connected)> = stream::iter(hosts.iter().cloned())
            .map(|host| async move {
                let r = step(
                    reporter,
                    &host.name,
                    Step::Connect,
                    remote::connect(env.transport, &host),
                )
                .await;
                (host, r)
            })
            .buffered(env.parallel.max(1))
            .collect()
            .await;
        Fleet::of(env, results)
    }

    /// The fleet of the hosts that connected, and each one that did not with the reason.
    fn of(env: &Environment, results: Vec<(Host, Connected)>) -> (Fleet, Vec<(String, String)>) {
        let mut members = Vec::new();
        let mut failures = Vec::new();
        for (host, r) in results {
            match r {
                Ok(remote) => members.push(Member::new(host, remote)),
                Err(e) => failures.push((host.name.clone(), e)),
            }
        }
        let fleet = Fleet {
            env: env.clone(),
            members,
        };
        (fleet, failures)
    }

    /// Starts connecting to every host, `parallel` at a time, in tasks of
    /// their own: the SSH handshakes go on while this machine prepares the
    /// run (git2's start-up alone, OpenSSL reading the system's CA bundle,
    /// takes tens of milliseconds). [`Connecting::finish`] tells and ends them.
    pub fn start_connecting(env: &Environment, hosts: &[Host]) -> Connecting {
        let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(env.parallel.max(1)));
        let tasks = hosts
            .iter()
            .map(|host| {
                let (permits, transport, h) = (permits.clone(), env.transport, host.clone());
                let task = tokio::spawn(async move {
                    let _permit = permits.acquire_owned().await;
                    let started = Instant::now();
                    let r = remote::connect(transport, &h).await.map_err(|e| e.to_string());
                    (r, started.elapsed().as_millis() as u64)
                });
                (host.clone(), task)
            })
            .collect();
        Connecting {
            env: env.clone(),
            tasks,
        }
    }

    /// Reads each host's compose variant, live release and tools; returns the
    /// hosts that cannot be deployed to, with the reason.
    pub async fn preflight(&mut self, reporter: &dyn Reporter) -> Vec<(String, String)> {
        let looks = self.look(reporter).await;
        self.apply(looks)
    }

    /// [`Fleet::preflight`] and [`Fleet::lock_then`] at once, in two round
    /// trips that overlap: a change that would take the lock right after a
    /// preflight that passed saves the wait for one of them. The lock is
    /// taken whatever preflight finds; the caller releases it when preflight
    /// failed.
    pub async fn preflight_and_lock(
        &mut self,
        info: &LockInfo,
        ttl: u64,
        reporter: &dyn Reporter,
        then: impl Fn(&Member) -> Option<Cmd>,
    ) -> (Vec<(String, String)>, Result<(LockGuard, Vec<String>), LockRefused>) {
        let (looks, locked) = tokio::join!(self.look(reporter), self.lock_then(info, ttl, reporter, then));
        (self.apply(looks), locked)
    }

    /// Preflight's look at every host (see [`Look`]), each reported as its step.
    async fn look(&self, reporter: &dyn Reporter) -> Vec<Result<Look, String>> {
        self.for_each(|m| async move {
            let name = m.host.name.clone();
            step(reporter, &name, Step::Preflight, look(m, reporter)).await
        })
        .await
    }

    /// Keeps what preflight saw on each host, and decides which compose it
    /// uses: the hosts that cannot be deployed to, with the reason.
    fn apply(&mut self, looks: Vec<Result<Look, String>>) -> Vec<(String, String)> {
        let forced = self.env.compose;
        let mut failures = Vec::new();
        for (m, look) in self.members.iter_mut().zip(looks) {
            if let Err(why) = look.and_then(|look| m.keep(look, forced)) {
                failures.push((m.host.name.clone(), why));
            }
        }
        failures
    }

    /// Runs `f` for every member, `parallel` at a time; results in member order.
    pub async fn for_each<'a, T, F, Fut>(&'a self, f: F) -> Vec<T>
    where
        F: Fn(&'a Member) -> Fut,
        Fut: Future<Output = T>,
    {
        stream::iter(self.members.iter().map(f))
            .buffered(self.env.parallel.max(1))
            .collect()
            .await
    }

    /// Runs `f` for every member with its own item of `items` (in member
    /// order), `parallel` at a time; results in member order.
    pub async fn for_each_with<'a, I, T, F, Fut>(&'a self, items: Vec<I>, f: F) -> Vec<T>
    where
        F: Fn(&'a Member, I) -> Fut,
        Fut: Future<Output = T>,
    {
        stream::iter(self.members.iter().zip(items).map(|(m, i)| f(m, i)))
            .buffered(self.env.parallel.max(1))
            .collect()
            .await
    }

    /// Takes the lock on every host, or on none: if any host is held by someone
    /// else (or fails), the locks taken are released again. `ttl = 0`: a lock
    /// that never expires (taken by hand).
    pub async fn lock(&self, info: &LockInfo, ttl: u64, reporter: &dyn Reporter) -> Result<LockGuard, LockRefused> {
        self.lock_then(info, ttl, reporter, |_| None)
            .await
            .map(|(guard, _)| guard)
    }

    /// [`Fleet::lock`], and in the same command on each host, right after the
    /// lock is taken, `then(member)`: its output per member (empty where it
    /// did not run). One round trip for "lock, then read what is live".
    pub async fn lock_then(
        &self,
        info: &LockInfo,
        ttl: u64,
        reporter: &dyn Reporter,
        then: impl Fn(&Member) -> Option<Cmd>,
    ) -> Result<(LockGuard, Vec<String>), LockRefused> {
        const AFTER: &str = "@@deploy after the lock";
        let then = &then;
        let results = self
            .for_each(|m| async move {
                step(reporter, &m.host.name, Step::Lock, async {
                    let mut script = Script::from(lock::acquire(&m.layout, info, ttl));
                    if let Some(cmd) = then(m) {
                        script = script.then(Cmd::new("echo").arg(AFTER)).then(cmd);
                    }
                    let out = m.remote.check(&script, Some(QUICK_TIMEOUT)).await?;
                    let (lock_part, after) = match out.stdout.split_once(&format!("{AFTER}\n")) {
                        Some((l, a)) => (l.to_string(), a.to_string()),
                        None => (out.stdout.clone(), String::new()),
                    };
                    Ok::<_, crate::remote::RemoteError>((lock::parse_acquire(&lock_part), after))
                })
                .await
            })
            .await;
        let (results, after): (Vec<Result<Acquired, String>>, Vec<String>) = results
            .into_iter()
            .map(|r| match r {
                Ok((a, rest)) => (Ok(a), rest),
                Err(e) => (Err(e), String::new()),
            })
            .unzip();
        let mut refused = LockRefused::default();
        for (m, r) in self.members.iter().zip(&results) {
            match r {
                Ok(Acquired::Fresh) => {}
                Ok(Acquired::TookOver(old)) => reporter.event(Event::Warning {
                    host: Some(m.host.name.clone()),
                    message: format!(
                        "took over an expired lock{}",
                        old.as_ref()
                            .map(|i| format!(" held by {}", i.describe()))
                            .unwrap_or_default()
                    ),
                }),
                Ok(Acquired::Held(holder)) => refused.held.push(format!(
                    "{}: locked by {}",
                    m.host.name,
                    holder
                        .as_ref()
                        .map_or("someone (no lock info)".to_string(), LockInfo::describe)
                )),
                Ok(Acquired::Stuck(holder)) => refused.held.push(format!(
                    "{}: an expired lock of {}, which this host cannot take over safely (it has no flock(1)): `deploy lock ENV release --force` breaks it",
                    m.host.name,
                    holder
                        .as_ref()
                        .map_or("someone (no lock info)".to_string(), LockInfo::describe)
                )),
                Ok(Acquired::Busy) => refused.errors.push((
                    m.host.name.clone(),
                    "another lock operation kept the host's lock mutex for 30 s".into(),
                )),
                Err(e) => refused.errors.push((m.host.name.clone(), e.clone())),
            }
        }
        let guard = LockGuard {
            token: info.token.clone(),
            ttl,
            ours: results
                .iter()
                .map(|r| matches!(r, Ok(Acquired::Fresh | Acquired::TookOver(_))))
                .collect(),
            kept: std::sync::Mutex::new(vec![std::time::SystemTime::now(); self.members.len()]),
            lost: std::sync::Mutex::new(None),
            released: std::sync::atomic::AtomicBool::new(false),
            confirm: 0,
        };
        if refused.held.is_empty() && refused.errors.is_empty() {
            Ok((guard, after))
        } else {
            guard.release(self, reporter).await;
            Err(refused)
        }
    }

    /// Closes every connection.
    /// A Swarm environment works through one manager: keeps the first member
    /// (in the file's order) not named in `failed` and closes the others.
    /// `None` (and nothing closed) when every member failed.
    pub async fn keep_first_manager(&mut self, failed: &[(String, String)]) -> Option<String> {
        let i = self
            .members
            .iter()
            .position(|m| !failed.iter().any(|(n, _)| n == &m.host.name))?;
        let mut others = std::mem::take(&mut self.members);
        let chosen = others.remove(i);
        let name = chosen.host.name.clone();
        self.members = vec![chosen];
        futures::future::join_all(others.into_iter().map(|m| m.remote.close())).await;
        Some(name)
    }

    pub async fn close(self) {
        futures::future::join_all(self.members.into_iter().map(|m| m.remote.close())).await;
    }
}

/// The lock a run holds on every host of its fleet. The run asks
/// [`LockGuard::held`] before each change, which asks the hosts;
/// [`LockGuard::keep`] extends the lock meanwhile (a build may outlast it).
#[derive(Debug)]
pub struct LockGuard {
    token: String,
    ttl: u64,
    /// Which members' locks this run took.
    ours: Vec<bool>,
    /// When each member's lock was last known to be ours and extended: an
    /// unanswered extension counts as lost once the lock could have expired.
    kept: std::sync::Mutex<Vec<std::time::SystemTime>>,
    /// Why the lock is no longer ours, once it is not.
    lost: std::sync::Mutex<Option<String>>,
    /// Released already.
    released: std::sync::atomic::AtomicBool,
    /// The watchdogs' confirm timeout in seconds (0: none armed): each
    /// extension pushes their deadline, so the keeper runs often enough.
    confirm: u64,
}

impl LockGuard {
    /// The token the lock was taken with.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The lock's lifetime in seconds (0: never expires).
    pub fn ttl(&self) -> u64 {
        self.ttl
    }

    /// The watchdogs' confirm timeout in seconds (0: no watchdog).
    pub fn confirm(&self) -> u64 {
        self.confirm
    }

    /// Watchdogs will be armed with `secs`: extensions push their deadlines.
    pub fn with_watchdogs(mut self, secs: u64) -> LockGuard {
        self.confirm = secs;
        self
    }

    /// Why the lock is lost, if the keeper (or an earlier check) found out
    /// already; asks no host.
    pub fn known_lost(&self) -> Option<String> {
        self.lost.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether this run took the lock on member `i`.
    pub fn holds(&self, i: usize) -> bool {
        self.ours.get(i).copied().unwrap_or(false)
    }

    /// The locks were released by other means (the run's last command).
    pub fn mark_released(&self) {
        self.released.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Extends the lock every third of its lifetime until dropped; never returns.
    /// A lock found not ours, or expired, is marked lost.
    pub async fn keep(&self, fleet: &Fleet) {
        if self.ttl == 0 {
            return std::future::pending().await;
        }
        let mut secs = self.ttl / 3;
        if self.confirm > 0 {
            secs = secs.min(self.confirm / 3);
        }
        let every = std::time::Duration::from_secs(secs.max(1));
        loop {
            tokio::time::sleep(every).await;
            self.extend(fleet).await;
        }
    }

    /// `Ok` while the lock is ours on every host; else why not. The hosts are
    /// asked (and the lock extended) unless they all confirmed it within the
    /// last second: between two of the keeper's rounds someone may have broken
    /// it, or this machine may have slept past its expiry.
    pub async fn held(&self, fleet: &Fleet) -> Result<(), String> {
        // Confirmed by every host within the last second (taken, or extended):
        // asking again would only cost a round trip.
        let fresh = {
            let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
            kept.iter()
                .zip(&self.ours)
                .all(|(t, ours)| !ours || t.elapsed().is_ok_and(|e| e < std::time::Duration::from_secs(1)))
        };
        if self.ttl > 0 && !fresh {
            self.extend(fleet).await;
        }
        match self.lost.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            Some(why) => Err(why),
            None => Ok(()),
        }
    }

    /// One extension on every host we hold.
    async fn extend(&self, fleet: &Fleet) {
        let results = fleet
            .for_each(|m| async move {
                let sent = std::time::SystemTime::now();
                let r = m
                    .remote
                    .run(
                        &lock::extend(&m.layout, &self.token, self.ttl, self.confirm).into(),
                        Some(QUICK_TIMEOUT),
                    )
                    .await;
                let verdict = match r {
                    Ok(out) => lock::parse_extend(out.code, &out.stderr),
                    Err(e) => Extend::Unknown(e.to_string()),
                };
                (sent, verdict)
            })
            .await;
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        let mut lost = self.lost.lock().unwrap_or_else(|e| e.into_inner());
        for (i, (m, (sent, verdict))) in fleet.members.iter().zip(results).enumerate() {
            if !self.ours.get(i).copied().unwrap_or(false) {
                continue;
            }
            let why = match verdict {
                Extend::Kept => {
                    kept[i] = sent;
                    continue;
                }
                Extend::NotOurs => "the lock was taken by someone else (or broken with --force)".to_string(),
                Extend::Expired => format!(
                    "the lock expired: it was not extended for longer than lock_timeout ({}s); was this machine asleep?",
                    self.ttl
                ),
                // Unanswered: it may still be ours, unless it is past its time.
                Extend::Unknown(_) if kept[i].elapsed().unwrap_or_default().as_secs() < self.ttl => continue,
                Extend::Unknown(e) => format!("the lock could not be extended within lock_timeout: {e}"),
            };
            lost.get_or_insert(format!("{}: {why}", m.host.name));
        }
    }

    /// Releases the locks this run took (unless released already).
    pub async fn release(&self, fleet: &Fleet, reporter: &dyn Reporter) {
        if self.released.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let members: Vec<&Member> = fleet
            .members
            .iter()
            .zip(&self.ours)
            .filter(|(_, o)| **o)
            .map(|(m, _)| m)
            .collect();
        let token = self.token.as_str();
        stream::iter(members)
            .map(|m| async move {
                let _ = step(
                    reporter,
                    &m.host.name,
                    Step::Unlock,
                    m.remote
                        .check(&lock::release(&m.layout, Some(token)).into(), Some(QUICK_TIMEOUT)),
                )
                .await;
            })
            .buffer_unordered(fleet.env.parallel.max(1))
            .collect::<Vec<()>>()
            .await;
    }
}
