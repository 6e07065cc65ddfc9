//! The pipeline every change to a live release goes through. `deploy up` and
//! `deploy rollback` are two entries to one sequence of phases, so the lock
//! keeper, Ctrl-C, the checklist, evidence and history exist once:
//!
//! connect → preflight → (pre_deploy) → lock → read live state under the lock →
//! stage (up: push, fetch, build) or choose (rollback: one kept release for the
//! whole fleet) → switch batch by batch, each batch verified → restore on failure,
//! verified → record → prune (up) → unlock → (post_deploy / on_failure).
//!
//! Where nothing comes between preflight and the lock (no dry run, no
//! pre_deploy hook, not a swarm), the lock is taken while preflight looks.

mod choose;
mod closing;
mod distribute;
mod hosts;
pub mod release_command;
mod switch;
mod up;

use std::time::Instant;

use crate::activation::Record;
use crate::config::{Config, Environment, Host};
use crate::error::{Error, Exit};
use crate::fleet::{select_hosts, Connecting, Fleet, LockGuard, LockRefused, QUICK_TIMEOUT, STEP_TIMEOUT};
use crate::hooks::{self, Hook};
use crate::interrupt::Interrupt;
use crate::live::{self, LiveState};
use crate::lock::{self, LockInfo};
use crate::outcome::{Change, Outcome};
use crate::remote::Cmd;
use crate::report::events::{Event, Reporter, Summary};

pub use hosts::{HostRun, Progress};
pub use up::{config_dir, UpPlan};

/// The flags of `deploy up`.
#[derive(Debug, Clone, Default)]
pub struct UpOptions {
    pub rev: Option<String>,
    pub dry_run: bool,
    pub no_push: bool,
    pub hosts: Option<Vec<String>>,
    pub message: Option<String>,
    pub allow_dirty: bool,
    pub no_verify: bool,
    pub no_rollback: bool,
}

/// The flags of `deploy rollback`.
#[derive(Debug, Clone, Default)]
pub struct RollbackOptions {
    /// The release to go back to; default: the newest earlier good one every host has.
    pub to: Option<String>,
    pub hosts: Option<Vec<String>>,
    pub message: Option<String>,
    pub no_verify: bool,
}

/// A change to a live release.
#[derive(Debug, Clone)]
pub enum Request {
    Up(UpOptions),
    Rollback(RollbackOptions),
}

impl Request {
    fn change(&self) -> Change {
        match self {
            Request::Up(_) => Change::Up,
            Request::Rollback(_) => Change::Rollback,
        }
    }

    fn hosts(&self) -> Option<&[String]> {
        match self {
            Request::Up(o) => o.hosts.as_deref(),
            Request::Rollback(o) => o.hosts.as_deref(),
        }
    }

    fn message(&self) -> Option<&str> {
        match self {
            Request::Up(o) => o.message.as_deref(),
            Request::Rollback(o) => o.message.as_deref(),
        }
    }

    fn no_verify(&self) -> bool {
        match self {
            Request::Up(o) => o.no_verify,
            Request::Rollback(o) => o.no_verify,
        }
    }

    /// Why a failed release is left live instead of put back, if it is.
    fn leave_failures(&self, config: &Config) -> Option<&'static str> {
        match self {
            Request::Up(o) if o.no_rollback => Some("--no-rollback"),
            _ if !config.rollback.automatic => Some("rollback.automatic = false"),
            _ => None,
        }
    }
}

/// Why the pipeline ended: the run's outcome and what to tell people.
#[derive(Debug)]
pub(crate) struct End {
    pub outcome: Outcome,
    pub error: Option<String>,
}

impl End {
    fn new(outcome: Outcome, error: impl Into<Option<String>>) -> End {
        End {
            outcome,
            error: error.into(),
        }
    }
}

/// One run: what it works with and where each host got to.
pub(crate) struct Run<'a> {
    pub config: &'a Config,
    pub env: &'a Environment,
    pub request: &'a Request,
    pub change: Change,
    pub reporter: &'a dyn Reporter,
    pub interrupt: &'a Interrupt,
    pub started: Instant,
    /// The release this run makes live (planned for up, chosen for rollback).
    pub release: Option<String>,
    pub commit: Option<String>,
    pub hosts: Vec<HostRun>,
    /// The release command, once it ran.
    pub ran: Option<crate::history::RanCommand>,
}

impl Run<'_> {
    /// Tells the reporter something worth knowing that does not stop the run.
    pub fn warn(&self, host: Option<&str>, message: String) {
        self.reporter.event(Event::Warning {
            host: host.map(str::to_string),
            message,
        });
    }

    /// Tells the reporter what the run is doing.
    pub fn info(&self, host: Option<&str>, message: String) {
        self.reporter.event(Event::Info {
            host: host.map(str::to_string),
            message,
        });
    }

    /// The run's `--message`, for history lines.
    fn request_message(&self) -> Option<String> {
        self.request.message().map(str::to_string)
    }

    /// Whether the checklist runs after a switch.
    fn verifying(&self) -> bool {
        !self.request.no_verify() && !self.config.verify.checks.is_empty()
    }

    /// Emits the summary and returns the exit code.
    fn finish(&self, end: End) -> Exit {
        self.reporter.event(Event::Summary(Summary {
            command: self.change.command().into(),
            env: self.env.name.clone(),
            result: end.outcome.result_name().into(),
            exit_code: end.outcome.exit() as u8,
            release: self.release.clone(),
            commit: self.commit.clone(),
            elapsed_ms: self.started.elapsed().as_millis() as u64,
            hosts: self.hosts.iter().map(HostRun::summary).collect(),
            error: end.error,
        }));
        end.outcome.exit()
    }

    /// Marks each named host failed.
    fn fail_hosts(&mut self, failures: &[(String, String)]) {
        for (name, e) in failures {
            if let Some(h) = self.hosts.iter_mut().find(|h| &h.name == name) {
                h.fail(Outcome::Failed, e.clone());
            }
        }
    }
}

/// How long a deploy that stops before it starts (a dirty tree, an unknown
/// commit) waits for the connections it began to end, to close them.
const ABANDON_LIMIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Runs a change. Errors before anything starts (config, git) are returned;
/// everything after ends in a summary event and an exit code.
pub async fn run(
    config: &Config,
    env: &Environment,
    request: &Request,
    reporter: &dyn Reporter,
    interrupt: &Interrupt,
) -> Result<Exit, Error> {
    let hosts = select_hosts(env, request.hosts())?;
    // A deploy's connections start while its plan is made (see `Fleet::start_connecting`).
    let early = match request {
        Request::Up(_) if !env.swarm() => Some(Fleet::start_connecting(env, &hosts)),
        _ => None,
    };
    let mut plan = match request {
        Request::Up(o) => match UpPlan::prepare(config, o) {
            Ok(plan) => Some(plan),
            Err(e) => {
                if let Some(early) = early {
                    early.abandon(ABANDON_LIMIT).await;
                }
                return Err(e);
            }
        },
        Request::Rollback(o) => {
            choose::validate_to(env, o.to.as_deref())?;
            None
        }
    };
    let mut run = Run {
        config,
        env,
        request,
        change: request.change(),
        reporter,
        interrupt,
        started: Instant::now(),
        release: plan.as_ref().map(|p| p.release.clone()).or_else(|| match request {
            Request::Rollback(o) => o.to.clone(),
            Request::Up(_) => None,
        }),
        commit: plan.as_ref().map(|p| p.commit.id.clone()),
        hosts: hosts.iter().map(|h| HostRun::new(&h.name)).collect(),
        ran: None,
    };
    announce(&run, &hosts);

    // Look: connect and preflight every selected host; change nothing. A
    // change that takes the lock right after (no dry run, no pre_deploy
    // hook in between) takes it while preflight looks.
    let info = lock_info(&run, plan.as_ref());
    let dry_run = matches!(request, Request::Up(o) if o.dry_run);
    let eager = !dry_run && !env.swarm() && (run.change != Change::Up || config.hooks.pre_deploy.is_none());
    let (fleet, taken) = match connect(&mut run, &hosts, early, eager.then_some(&info)).await {
        Ok(f) => f,
        Err(end) => return Ok(run.finish(end)),
    };
    if let (true, Some(plan)) = (dry_run, plan.as_ref()) {
        up::describe(config, &fleet, plan, reporter);
        fleet.close().await;
        return Ok(run.finish(End::new(Outcome::DryRun, None)));
    }
    if interrupt.is_set() {
        if let Some((guard, _)) = &taken {
            guard.release(&fleet, reporter).await;
        }
        fleet.close().await;
        return Ok(run.finish(End::new(Outcome::Interrupted, None)));
    }
    if taken.is_none() {
        if let Some(end) = pre_hook(&run).await {
            fleet.close().await;
            return Ok(run.finish(end));
        }
    }

    // Change, under the lock.
    let end = locked(&mut run, &fleet, plan.as_mut(), &info, taken).await;
    for (h, m) in run.hosts.iter_mut().zip(&fleet.members) {
        h.remote_commands = Some(m.remote.commands());
    }
    fleet.close().await;
    post_hook(&run, &end).await;
    Ok(run.finish(end))
}

/// The start event, and which hosts `--hosts` leaves alone.
fn announce(run: &Run<'_>, hosts: &[Host]) {
    run.reporter.event(Event::Start {
        command: run.change.command().into(),
        env: run.env.name.clone(),
        hosts: hosts.iter().map(|h| h.name.clone()).collect(),
        release: run.release.clone(),
        commit: run.commit.clone(),
    });
    if hosts.len() < run.env.hosts.len() {
        let left: Vec<&str> = run
            .env
            .hosts
            .iter()
            .filter(|h| !hosts.iter().any(|s| s.name == h.name))
            .map(|h| h.name.as_str())
            .collect();
        run.warn(None, format!("--hosts: left alone: {}", left.join(", ")));
    }
}

/// The lock a run takes, and what it read right after taking it (see [`locked`]).
type Taken = (LockGuard, Vec<String>);

/// Connects to and preflights every selected host; a change needs all of
/// them. With `lock`, takes the lock meanwhile (see
/// [`Fleet::preflight_and_lock`]), released again if preflight failed.
async fn connect(
    run: &mut Run<'_>,
    hosts: &[Host],
    early: Option<Connecting>,
    lock: Option<&LockInfo>,
) -> Result<(Fleet, Option<Taken>), End> {
    if run.env.swarm() {
        return connect_manager(run, hosts).await.map(|f| (f, None));
    }
    let connected = match early {
        Some(early) => early.finish(run.reporter).await,
        None => Fleet::connect(run.env, hosts, run.reporter).await,
    };
    // Ctrl-C at the terminal also stops the `ssh` still connecting: that is
    // the interruption, not a host out of reach.
    if connected.is_err() && run.interrupt.is_set() {
        return Err(End::new(
            Outcome::Interrupted,
            "interrupted while connecting; no host was changed".to_string(),
        ));
    }
    let mut fleet = match connected {
        Ok(f) => f,
        Err(failures) => {
            run.fail_hosts(&failures);
            let names: Vec<&str> = failures.iter().map(|(n, _)| n.as_str()).collect();
            return Err(End::new(
                Outcome::Failed,
                format!("cannot reach {}; no host was changed", names.join(", ")),
            ));
        }
    };
    let (mut failures, locked) = match lock {
        Some(info) => {
            let (failures, locked) = fleet
                .preflight_and_lock(info, lock_ttl(run), run.reporter, read_under_lock)
                .await;
            (failures, Some(locked))
        }
        None => (fleet.preflight(run.reporter).await, None),
    };
    if run.change == Change::Up && run.config.source.strategy == crate::config::Strategy::Git {
        for m in fleet.members.iter().filter(|m| !m.git) {
            failures.push((
                m.host.name.clone(),
                "git is not installed (strategy = \"git\" needs it; or use strategy = \"upload\")".into(),
            ));
        }
    }
    for m in &fleet.members {
        failures.extend(other_engine(run, m).await);
    }
    for (h, m) in run.hosts.iter_mut().zip(&fleet.members) {
        h.live = m.current.clone();
    }
    if !failures.is_empty() {
        if let Some(Ok((guard, _))) = &locked {
            guard.release(&fleet, run.reporter).await;
        }
        run.fail_hosts(&failures);
        fleet.close().await;
        return Err(End::new(
            Outcome::Failed,
            "preflight failed; no host was changed".to_string(),
        ));
    }
    match locked {
        None => Ok((fleet, None)),
        Some(Ok((guard, live))) => {
            keep_detected(&fleet, &guard).await;
            // The keeper starts with the change; a preflight slower than a
            // second after the lock was taken extends it now (one round
            // trip), so a short `lock_timeout` cannot run out before. A lost
            // lock stays said: the change stops before staging.
            let _ = guard.held(&fleet).await;
            Ok((fleet, Some((guard, live))))
        }
        Some(Err(refused)) => {
            let end = refused_end(run, refused);
            fleet.close().await;
            Err(end)
        }
    }
}

/// What preflight found of compose afresh (the programs changed, or none
/// was kept), kept in `.deploy/` where the lock was taken before preflight
/// ended: one more command on such a host, while the lock is ours, before
/// anything reads it (a build's key of its resolved services).
async fn keep_detected(fleet: &Fleet, guard: &LockGuard) {
    fleet
        .for_each(|m| async move {
            if let Some(detected) = &m.detected {
                let keep = lock::if_ours(
                    &m.layout,
                    guard.token(),
                    0,
                    0,
                    &live::keep_detected(&m.layout, detected),
                );
                // Only a cache: a host that did not keep it looks again next time.
                let _ = m.remote.run(&keep.into(), Some(QUICK_TIMEOUT)).await;
            }
        })
        .await;
}

/// The command run right after the lock is taken: the live state (see
/// [`read_live`]), keeping what preflight found of compose where that is known.
fn read_under_lock(m: &crate::fleet::Member) -> Option<Cmd> {
    Some(live::read(&m.layout, m.detected.as_deref()))
}

/// How long the lock lasts unless extended.
fn lock_ttl(run: &Run<'_>) -> u64 {
    run.config.app.lock_timeout.0.as_secs().max(1)
}

/// How a run ends whose lock was refused.
fn refused_end(run: &mut Run<'_>, refused: LockRefused) -> End {
    run.fail_hosts(&refused.errors);
    match refused.held.is_empty() {
        true => End::new(
            Outcome::Failed,
            "could not take the lock; no host was changed".to_string(),
        ),
        false => End::new(
            Outcome::Locked,
            format!("another deploy holds the lock: {}", refused.held.join("; ")),
        ),
    }
}

/// A Swarm environment: connects to and preflights its managers, and goes on
/// through the first that answers and is an active manager; the others are
/// named in warnings and left out of the run.
async fn connect_manager(run: &mut Run<'_>, hosts: &[Host]) -> Result<Fleet, End> {
    let (mut fleet, mut failures) = Fleet::connect_reachable(run.env, hosts, run.reporter).await;
    failures.extend(fleet.preflight(run.reporter).await);
    let Some(chosen) = fleet.keep_first_manager(&failures).await else {
        run.fail_hosts(&failures);
        fleet.close().await;
        return Err(End::new(
            Outcome::Failed,
            "no swarm manager can be used; nothing was changed".to_string(),
        ));
    };
    for (host, why) in &failures {
        run.warn(
            Some(host),
            format!("left aside (the swarm is reached through {chosen}): {why}"),
        );
    }
    if hosts.len() > 1 {
        run.info(Some(&chosen), "the swarm manager this run works through".to_string());
    }
    run.hosts.retain(|h| h.name == chosen);
    for (h, m) in run.hosts.iter_mut().zip(&fleet.members) {
        h.live = m.current.clone();
    }
    let m = &fleet.members[0];
    let mut refusal = other_engine(run, m).await.map(|(_, why)| why);
    let first = &hosts[0].name;
    if refusal.is_none() && &chosen != first {
        // This manager's lock, releases and history decide only if the stack
        // runs what it says is live.
        if let Err(why) = crate::swarm::agrees(m, m.live_record(run.config).as_ref()).await {
            refusal = Some(format!(
                "{first} cannot be used and the stack does not run what {chosen} says is live ({why}): {chosen}'s lock, releases and history are not the ones the stack was deployed with; bring {first} back, or list {chosen} first once you know which release runs"
            ));
        }
    }
    if let Some(why) = refusal {
        run.fail_hosts(&[(chosen, why.clone())]);
        fleet.close().await;
        return Err(End::new(Outcome::Failed, format!("{why}; nothing was changed")));
    }
    let nodes = fleet.members[0].swarm_nodes.unwrap_or(1);
    if run.change == Change::Up && nodes > 1 && run.config.build.registry.is_none() {
        let why = format!(
            "the swarm has {nodes} nodes and each must pull the release's images: expected `[build] registry` (with on = \"first\"), which the manager pushes them to"
        );
        run.fail_hosts(&[(chosen, why.clone())]);
        fleet.close().await;
        return Err(End::new(Outcome::Failed, format!("{why}; nothing was changed")));
    }
    Ok(fleet)
}

/// Why `m`'s live release stops a change: it runs with the other engine (a
/// compose project where the environment is now a swarm, or the reverse) and
/// still runs, so a deploy would leave it running beside the new one.
async fn other_engine(run: &Run<'_>, m: &crate::fleet::Member) -> Option<(String, String)> {
    let live = m.record.as_ref().filter(|_| m.current.is_some())?;
    if live.engine == run.env.engine {
        return None;
    }
    let runs = match live.engine {
        crate::config::Orchestrator::Compose => {
            let ps = crate::compose::ps_cmd(&live.project, live.engine);
            match m.remote.check(&ps.into(), Some(crate::fleet::QUICK_TIMEOUT)).await {
                Ok(out) => crate::compose::parse_ps(&out.stdout)
                    .iter()
                    .any(|c| c.state == "running"),
                Err(e) => return Some((m.host.name.clone(), e.to_string())),
            }
        }
        crate::config::Orchestrator::Swarm => match crate::swarm::read(m, &live.project).await {
            Ok(state) => !state.services.is_empty(),
            // Not a swarm (any more): nothing of the stack runs.
            Err(_) => false,
        },
    };
    if !runs {
        return None;
    }
    let how = match live.engine {
        crate::config::Orchestrator::Compose => {
            format!("`docker compose -p {} down` in {}/current", live.project, m.layout.root)
        }
        crate::config::Orchestrator::Swarm => format!("`docker stack rm {}`", live.project),
    };
    Some((
        m.host.name.clone(),
        format!(
            "the live release {} runs with engine = \"{}\", this environment is engine = \"{}\": stop it first ({how}), then deploy",
            live.release,
            choose::engine_name(live.engine),
            choose::engine_name(run.env.engine)
        ),
    ))
}

/// `DEPLOY_*` variables for the hooks.
fn hook_env(run: &Run<'_>, result: &str, exit: Option<Exit>) -> Vec<(String, String)> {
    let mut vars = vec![
        ("DEPLOY_ENV".to_string(), run.env.name.clone()),
        ("DEPLOY_RELEASE".to_string(), run.release.clone().unwrap_or_default()),
        ("DEPLOY_COMMIT".to_string(), run.commit.clone().unwrap_or_default()),
        (
            "DEPLOY_HOSTS".to_string(),
            run.hosts.iter().map(|h| h.name.clone()).collect::<Vec<_>>().join(","),
        ),
        ("DEPLOY_RESULT".to_string(), result.to_string()),
    ];
    if let Some(e) = exit {
        vars.push(("DEPLOY_EXIT_CODE".to_string(), (e as u8).to_string()));
    }
    vars
}

/// `pre_deploy` (deploy up only): a failure stops the run before the lock.
async fn pre_hook(run: &Run<'_>) -> Option<End> {
    if run.change != Change::Up {
        return None;
    }
    let dir = up::config_dir(run.config);
    let vars = hook_env(run, "started", None);
    match hooks::run(
        Hook::PreDeploy,
        &run.config.hooks,
        &dir,
        &vars,
        run.reporter,
        run.interrupt,
    )
    .await
    {
        Ok(()) => None,
        Err(e) if e.is_interrupted() => Some(End::new(Outcome::Interrupted, format!("{e}; no host was changed"))),
        Err(e) => Some(End::new(Outcome::Failed, format!("{e}; no host was changed"))),
    }
}

/// `post_deploy` or `on_failure` (deploy up only), after the lock is released.
async fn post_hook(run: &Run<'_>, end: &End) {
    if run.change != Change::Up || matches!(end.outcome, Outcome::DryRun) {
        return;
    }
    let hook = match end.outcome.exit() {
        Exit::Success => Hook::PostDeploy,
        _ => Hook::OnFailure,
    };
    let vars = hook_env(run, end.outcome.result_name(), Some(end.outcome.exit()));
    let dir = up::config_dir(run.config);
    if let Err(e) = hooks::run(hook, &run.config.hooks, &dir, &vars, run.reporter, run.interrupt).await {
        run.warn(None, e.to_string());
    }
}

/// What a run's lock says of it (`deploy lock status`).
fn lock_info(run: &Run<'_>, plan: Option<&UpPlan>) -> LockInfo {
    LockInfo {
        since: 0,
        expires: 0,
        token: lock::new_token(),
        kind: lock::LockKind::Deploy,
        holder: lock::whoami(),
        message: run.request.message().map(str::to_string).unwrap_or_else(|| match plan {
            Some(p) => format!("deploy {}", p.commit.short),
            None => "rollback".to_string(),
        }),
        commit: plan.map(|p| p.commit.id.clone()),
    }
}

/// Takes the lock (unless `taken` while preflight looked), does the work
/// under it (the keeper extending it), releases it.
async fn locked(
    run: &mut Run<'_>,
    fleet: &Fleet,
    plan: Option<&mut UpPlan>,
    info: &LockInfo,
    taken: Option<Taken>,
) -> End {
    // The live state is read in the same command, right after the lock is taken.
    let (guard, live) = match taken {
        Some(taken) => taken,
        None => match fleet
            .lock_then(info, lock_ttl(run), run.reporter, read_under_lock)
            .await
        {
            Ok(g) => g,
            Err(refused) => return refused_end(run, refused),
        },
    };
    // Every switched host gets a watchdog, pushed by each extension (the dead-man switch).
    let guard = guard.with_watchdogs(run.config.confirm_timeout().as_secs().max(1));
    let states = read_live(run, fleet, &live);
    let (end, recorded, listed) = {
        let work = changes(run, fleet, plan, &guard, &states);
        tokio::select! {
            done = work => done,
            _ = guard.keep(fleet) => unreachable!("the lock keeper never ends"),
        }
    };
    let work = closing::closing(run, fleet, &states, &end, recorded, &guard, listed);
    closing::finish(run, fleet, work, &guard).await;
    end
}

/// Everything under the lock: read what is live, prepare the target, switch,
/// verify, restore on failure, record, prune.
/// Returns how the run ended, whether it leaves history lines (a rollback
/// that found nothing to go back to attempted nothing), and the images to
/// prune as listed meanwhile (see [`closing::list_while`]).
async fn changes(
    run: &mut Run<'_>,
    fleet: &Fleet,
    plan: Option<&mut UpPlan>,
    guard: &LockGuard,
    states: &[LiveState],
) -> (End, bool, Vec<Option<closing::Listed>>) {
    // The target on every host: a staged new release (and its release
    // command run), or a kept one.
    let prepared = match plan {
        Some(plan) => match up::stage(run, fleet, plan, states, guard).await {
            Ok(()) => match release_command::run(run, fleet, guard).await {
                Ok(()) => Ok(()),
                Err(end) => {
                    up::discard(fleet, &plan.release, run.reporter).await;
                    Err(end)
                }
            },
            Err(end) => Err(end),
        },
        None => choose::target(run, fleet, states).await,
    };
    if let Err(end) = prepared {
        // A staging that failed is a deploy that failed; a rollback that found
        // nothing to go back to attempted nothing.
        return (end, run.change == Change::Up, Vec::new());
    }
    if run.request.no_verify() && !run.config.verify.checks.is_empty() {
        run.warn(
            None,
            format!(
                "--no-verify: the checklist ({} checks) does not run; nothing says {} works",
                run.config.verify.checks.len(),
                run.release.as_deref().unwrap_or("the release")
            ),
        );
    }
    let lists = closing::to_list(run, states);
    let reporter = run.reporter;
    let (end, listed) = closing::list_while(fleet, lists, reporter, switch::roll_out(run, fleet, guard)).await;
    (end, true, listed)
}

/// Each host's live release, kept releases, records and history, as read
/// under the lock: this, not preflight, decides what a failed change puts back.
fn read_live(run: &mut Run<'_>, fleet: &Fleet, outputs: &[String]) -> Vec<LiveState> {
    let mut states = Vec::new();
    let mut inferred = Vec::new();
    for ((h, m), out) in run.hosts.iter_mut().zip(&fleet.members).zip(outputs) {
        let state = live::parse(out);
        if state.torn_lines > 0 {
            run.reporter.event(Event::Warning {
                host: Some(h.name.clone()),
                message: format!(
                    "{} line(s) of {} are not readable (a torn write) and were skipped",
                    state.torn_lines,
                    m.layout.history()
                ),
            });
        }
        h.from = state.current.as_deref().map(|cur| {
            state.records.get(cur).cloned().unwrap_or_else(|| {
                inferred.push(format!("{} on {}", cur, h.name));
                Record::inferred(run.config, m, cur)
            })
        });
        h.live = state.current.clone();
        states.push(state);
    }
    if !inferred.is_empty() {
        run.warn(
            None,
            format!(
                "release {} has no record of how it was started (staged by an older deploy): it would be put back with today's deploy.toml",
                inferred.join(", ")
            ),
        );
    }
    states
}
