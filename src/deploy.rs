//! `deploy <ENV>`: the pipeline across hosts. Preflight and lock every host,
//! push, stage and build the new release while the old one serves, switch
//! (batch by batch), record, prune, unlock. A failed switch puts the previous
//! release back; Ctrl-C stops cleanly.

use std::time::{Duration, Instant, SystemTime};

use futures::stream::{self, StreamExt};

use crate::compose::{self, OVERRIDE_FILE};
use crate::config::{Config, Environment, Strategy};
use crate::error::{Error, Exit};
use crate::fleet::{select_hosts, step, Fleet, Member, QUICK_TIMEOUT, STEP_TIMEOUT};
use crate::git::{self, Commit, PushAuth, Repo};
use crate::history::{self, Entry, Outcome};
use crate::hooks::{self, Hook};
use crate::interrupt::Interrupt;
use crate::known_hosts::KnownHosts;
use crate::lock::{self, LockInfo};
use crate::release::{self, release_id};
use crate::report::events::{Event, HostSummary, Reporter, Step, Summary};
use crate::verify::{self, CheckResult, Evidence, HostChecks};

/// A build may take long, but not forever.
const BUILD_TIMEOUT: Duration = Duration::from_secs(60 * 60);

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

/// What the run will deploy, worked out locally before any host is touched.
struct Plan {
    commit: Commit,
    release: String,
    build: Vec<String>,
    /// `strategy = "git"`: what hosts fetch from.
    fetch_url: Option<String>,
    /// `strategy = "upload"`: the commit's files.
    tar: Option<Vec<u8>>,
}

/// Where one host got to.
#[derive(Debug, Clone)]
struct HostState {
    name: String,
    previous: Option<String>,
    staged: bool,
    switched: bool,
    live: Option<String>,
    outcome: &'static str,
    error: Option<String>,
    started: Instant,
    checks: Vec<CheckResult>,
    evidence: Option<Evidence>,
    rollback_checks: Vec<CheckResult>,
}

/// The directory deploy.toml is in: the app's repository.
pub fn config_dir(config: &Config) -> std::path::PathBuf {
    match config.path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    }
}

/// The services to build: `[app] build`, or every service with `build:` in the commit's compose files.
fn services_to_build(config: &Config, repo: &Repo, commit: &Commit) -> Result<Vec<String>, Error> {
    if let Some(list) = &config.app.build {
        return Ok(list.iter().map(|s| s.expose().to_string()).collect());
    }
    let mut out: Vec<String> = Vec::new();
    for file in &config.app.compose_files {
        let text = repo.read_file(commit, file.expose())?.ok_or_else(|| {
            Error::Usage(format!(
                "commit {} has no {} (app.compose_files)",
                commit.short,
                file.expose()
            ))
        })?;
        let services = compose::services(&text)
            .map_err(|e| Error::Usage(format!("{} in commit {}: {e}", file.expose(), commit.short)))?;
        for s in services.into_iter().filter(|s| s.builds) {
            if !out.contains(&s.name) {
                out.push(s.name);
            }
        }
    }
    Ok(out)
}

/// Runs `deploy up`. Errors before anything starts (config, git) are returned;
/// everything after ends in a summary event and an exit code.
pub async fn up(
    config: &Config,
    env: &Environment,
    opts: &UpOptions,
    reporter: &dyn Reporter,
    interrupt: &Interrupt,
) -> Result<Exit, Error> {
    let started = Instant::now();
    let hosts = select_hosts(env, opts.hosts.as_deref())?;
    let repo = Repo::discover(&config_dir(config))?;
    if !opts.allow_dirty {
        repo.require_clean()?;
    }
    let commit = repo.resolve(opts.rev.as_deref().unwrap_or("HEAD"))?;
    let build = services_to_build(config, &repo, &commit)?;
    let branch = config.source.branch.expose();
    let (fetch_url, tar) = match config.source.strategy {
        Strategy::Git => {
            let url = match &config.source.fetch_url {
                Some(u) => u.expose().to_string(),
                None => repo.remote_url(config.source.remote.expose())?,
            };
            if !opts.no_push && !repo.branch_contains(branch, &commit)? {
                return Err(Error::Usage(format!(
                    "commit {} is not on branch `{branch}`, which is what gets pushed; deploy a commit of `{branch}` or pass --no-push",
                    commit.short
                )));
            }
            (Some(url), None)
        }
        Strategy::Upload => (None, Some(repo.archive(&commit)?)),
    };
    let mut plan = Plan {
        release: release_id(SystemTime::now(), &commit.short),
        commit,
        build,
        fetch_url,
        tar,
    };

    reporter.event(Event::Start {
        command: "deploy".into(),
        env: env.name.clone(),
        hosts: hosts.iter().map(|h| h.name.clone()).collect(),
        release: Some(plan.release.clone()),
        commit: Some(plan.commit.id.clone()),
    });
    if hosts.len() < env.hosts.len() {
        let left: Vec<&str> = env
            .hosts
            .iter()
            .filter(|h| !hosts.iter().any(|s| s.name == h.name))
            .map(|h| h.name.as_str())
            .collect();
        reporter.event(Event::Warning {
            host: None,
            message: format!("--hosts: left alone: {}", left.join(", ")),
        });
    }

    // The id the summary reports: the planned one, unless a host already has it.
    let final_release = std::cell::RefCell::new(plan.release.clone());
    let finish = |result: &str, exit: Exit, states: &[HostState], error: Option<String>| {
        reporter.event(Event::Summary(Summary {
            command: "deploy".into(),
            env: env.name.clone(),
            result: result.into(),
            exit_code: exit as u8,
            release: Some(final_release.borrow().clone()),
            commit: Some(plan.commit.id.clone()),
            elapsed_ms: started.elapsed().as_millis() as u64,
            hosts: states
                .iter()
                .map(|s| HostSummary {
                    host: s.name.clone(),
                    release: s.live.clone(),
                    outcome: s.outcome.into(),
                    elapsed_ms: s.started.elapsed().as_millis() as u64,
                    error: s.error.clone(),
                    checks: s.checks.clone(),
                    evidence: s.evidence.clone(),
                    rollback_checks: s.rollback_checks.clone(),
                })
                .collect(),
            error,
        }));
        exit
    };
    let mut states: Vec<HostState> = hosts
        .iter()
        .map(|h| HostState {
            name: h.name.clone(),
            previous: None,
            staged: false,
            switched: false,
            live: None,
            outcome: "unchanged",
            error: None,
            started: Instant::now(),
            checks: Vec::new(),
            evidence: None,
            rollback_checks: Vec::new(),
        })
        .collect();
    let fail_hosts = |states: &mut [HostState], failures: &[(String, String)]| {
        for (name, e) in failures {
            if let Some(s) = states.iter_mut().find(|s| &s.name == name) {
                s.outcome = "failed";
                s.error = Some(e.clone());
            }
        }
    };

    // 1. Preflight: connect, look, change nothing.
    let mut fleet = match Fleet::connect(env, &hosts, reporter).await {
        Ok(f) => f,
        Err(failures) => {
            fail_hosts(&mut states, &failures);
            let names: Vec<&str> = failures.iter().map(|(n, _)| n.as_str()).collect();
            return Ok(finish(
                "failed",
                Exit::Failed,
                &states,
                Some(format!("cannot reach {}; no host was changed", names.join(", "))),
            ));
        }
    };
    let mut failures = fleet.preflight(reporter).await;
    if config.source.strategy == Strategy::Git {
        for m in fleet.members.iter().filter(|m| !m.git) {
            failures.push((
                m.host.name.clone(),
                "git is not installed (strategy = \"git\" needs it; or use strategy = \"upload\")".into(),
            ));
        }
    }
    for (s, m) in states.iter_mut().zip(&fleet.members) {
        s.previous = m.current.clone();
        s.live = m.current.clone();
    }
    if !failures.is_empty() {
        fail_hosts(&mut states, &failures);
        fleet.close().await;
        return Ok(finish(
            "failed",
            Exit::Failed,
            &states,
            Some("preflight failed; no host was changed".into()),
        ));
    }
    // Two deploys of a commit within one second would get the same id: this one
    // then takes the second after the newest release any host has.
    let newest = fleet.members.iter().filter_map(|m| m.newest.as_deref()).max();
    if let Some(id) = newest.and_then(|n| release::id_after(n, &plan.release, &plan.commit.short)) {
        reporter.event(Event::Info {
            host: None,
            message: format!("release id {} is taken on a host; this release is {id}", plan.release),
        });
        plan.release = id.clone();
        *final_release.borrow_mut() = id;
    }
    if opts.dry_run {
        describe_plan(config, &fleet, &plan, reporter);
        fleet.close().await;
        return Ok(finish("dry_run", Exit::Success, &states, None));
    }
    if interrupt.is_set() {
        fleet.close().await;
        return Ok(finish("interrupted", Exit::Interrupted, &states, None));
    }

    let hook_env = |result: &str, exit: Option<Exit>| {
        let mut env_vars = vec![
            ("DEPLOY_ENV".to_string(), env.name.clone()),
            ("DEPLOY_RELEASE".to_string(), plan.release.clone()),
            ("DEPLOY_COMMIT".to_string(), plan.commit.id.clone()),
            (
                "DEPLOY_HOSTS".to_string(),
                hosts.iter().map(|h| h.name.clone()).collect::<Vec<_>>().join(","),
            ),
            ("DEPLOY_RESULT".to_string(), result.to_string()),
        ];
        if let Some(e) = exit {
            env_vars.push(("DEPLOY_EXIT_CODE".to_string(), (e as u8).to_string()));
        }
        env_vars
    };
    let dir = config_dir(config);
    let vars = hook_env("started", None);
    if let Err(e) = hooks::run(Hook::PreDeploy, &config.hooks, &dir, &vars, reporter, interrupt).await {
        fleet.close().await;
        let (result, exit) = match e.is_interrupted() {
            true => ("interrupted", Exit::Interrupted),
            false => ("failed", Exit::Failed),
        };
        return Ok(finish(result, exit, &states, Some(format!("{e}; no host was changed"))));
    }

    // 2. Lock every host before changing any.
    let ttl = config.app.lock_timeout.0.as_secs().max(1);
    let info = LockInfo {
        holder: lock::whoami(),
        message: opts
            .message
            .clone()
            .unwrap_or_else(|| format!("deploy {} ({})", plan.commit.short, plan.release)),
        commit: Some(plan.commit.id.clone()),
        token: lock::new_token(),
        since: 0,
        expires: 0,
    };
    let ours = match fleet.lock(&info, ttl, reporter).await {
        Ok(ours) => ours,
        Err(refused) => {
            fleet.close().await;
            fail_hosts(&mut states, &refused.errors);
            return Ok(match refused.held.is_empty() {
                true => finish(
                    "failed",
                    Exit::Failed,
                    &states,
                    Some("could not take the lock; no host was changed".into()),
                ),
                false => finish(
                    "locked",
                    Exit::Locked,
                    &states,
                    Some(format!("another deploy holds the lock: {}", refused.held.join("; "))),
                ),
            });
        }
    };

    // 3. The work, under the lock; the lock is extended while it runs.
    let (result, exit, error) = {
        let work = work(
            config,
            env,
            opts,
            &repo,
            &fleet,
            &plan,
            &mut states,
            reporter,
            interrupt,
        );
        let keeper = fleet.keep_locks(&info.token, ttl);
        tokio::select! {
            r = work => r,
            _ = keeper => unreachable!("the lock keeper never ends"),
        }
    };

    // 4. Unlock and close, whatever happened.
    fleet.unlock(&ours, &info.token, reporter).await;
    fleet.close().await;
    let hook = if exit == Exit::Success {
        Hook::PostDeploy
    } else {
        Hook::OnFailure
    };
    let vars = hook_env(result, Some(exit));
    if let Err(e) = hooks::run(hook, &config.hooks, &dir, &vars, reporter, interrupt).await {
        reporter.event(Event::Warning {
            host: None,
            message: e.to_string(),
        });
    }
    Ok(finish(result, exit, &states, error))
}

/// Push, stage, switch, record, prune. Returns (result, exit code, error).
#[allow(clippy::too_many_arguments)]
async fn work(
    config: &Config,
    env: &Environment,
    opts: &UpOptions,
    repo: &Repo,
    fleet: &Fleet,
    plan: &Plan,
    states: &mut [HostState],
    reporter: &dyn Reporter,
    interrupt: &Interrupt,
) -> (&'static str, Exit, Option<String>) {
    let id = plan.release.as_str();

    // Push.
    if config.source.strategy == Strategy::Git && !opts.no_push {
        let auth = push_auth(config, env);
        let remote = config.source.remote.expose();
        let branch = config.source.branch.expose();
        let timeout = config.source.push_timeout.get_ref().0;
        let mut interrupted = false;
        let pushed = step(reporter, "local", Step::Push, async {
            let r = git::push(repo.path(), remote, branch, &auth, timeout, interrupt).await;
            interrupted = r.as_ref().is_err_and(|e| e.is_interrupted());
            r
        });
        if let Err(e) = pushed.await {
            return match interrupted {
                true => (
                    "interrupted",
                    Exit::Interrupted,
                    Some(format!("{e}; no host was changed")),
                ),
                false => ("failed", Exit::Failed, Some(e)),
            };
        }
    }

    // Stage and build on every host while the old release serves.
    let staging = fleet.for_each(|m| stage(config, m, plan, reporter));
    let results = tokio::select! {
        r = staging => Some(r),
        _ = interrupt.wait() => None,
    };
    let Some(results) = results else {
        discard(config, fleet, id, reporter).await;
        record(config, fleet, states, plan, Outcome::Interrupted, opts, reporter).await;
        return (
            "interrupted",
            Exit::Interrupted,
            Some("interrupted before the switch; every host is still on its previous release".into()),
        );
    };
    let mut stage_failed = false;
    for (s, r) in states.iter_mut().zip(results) {
        match r {
            Ok(()) => s.staged = true,
            Err(e) => {
                s.outcome = "failed";
                s.error = Some(e);
                stage_failed = true;
            }
        }
    }
    if stage_failed {
        discard(config, fleet, id, reporter).await;
        record(config, fleet, states, plan, Outcome::Failed, opts, reporter).await;
        return (
            "failed",
            Exit::Failed,
            Some("staging failed; no host was changed".into()),
        );
    }
    if interrupt.is_set() {
        discard(config, fleet, id, reporter).await;
        return (
            "interrupted",
            Exit::Interrupted,
            Some("interrupted before the switch; every host is still on its previous release".into()),
        );
    }

    // Switch, batch by batch, each batch verified before the next. A switch in
    // progress is never abandoned half-way.
    let batch = env.batch.unwrap_or(fleet.members.len()).max(1);
    let indices: Vec<usize> = (0..fleet.members.len()).collect();
    let verifying = !opts.no_verify && !config.verify.checks.is_empty();
    let mut failure: Option<String> = None;
    let mut checks_failed = false;
    let mut interrupted = false;
    for chunk in indices.chunks(batch) {
        if interrupt.is_set() {
            interrupted = true;
            break;
        }
        let results: Vec<(usize, Result<(), String>)> = stream::iter(chunk.iter().copied())
            .map(|i| async move {
                let m = &fleet.members[i];
                (
                    i,
                    step(reporter, &m.host.name, Step::Switch, switch(config, m, id)).await,
                )
            })
            .buffer_unordered(fleet.env.parallel.max(1))
            .collect()
            .await;
        for (i, r) in results {
            // A failed `up` may have replaced some containers: treat it as switched so it is restored.
            states[i].switched = true;
            match r {
                Ok(()) => {
                    states[i].live = Some(id.to_string());
                    states[i].outcome = "deployed";
                }
                Err(e) => {
                    states[i].outcome = "failed";
                    states[i].error = Some(e.clone());
                    // Remote errors already start with the host's name.
                    let named = if e.starts_with(&states[i].name) {
                        e.clone()
                    } else {
                        format!("{}: {e}", states[i].name)
                    };
                    failure.get_or_insert(named);
                }
            }
        }
        if failure.is_some() {
            break;
        }
        if verifying {
            let checked = tokio::select! {
                r = verify::verify_members(config, fleet, chunk, |_| id.to_string(), reporter) => Some(r),
                _ = interrupt.wait() => None,
            };
            let Some(checked) = checked else {
                interrupted = true;
                break;
            };
            let failed = absorb(states, chunk, checked);
            if !failed.is_empty() {
                checks_failed = true;
                failure = Some(format!("checks failed: {}", failed.join("; ")));
                break;
            }
        }
    }
    if failure.is_some() || interrupted {
        if !interrupted && (opts.no_rollback || !config.rollback.automatic) {
            record(config, fleet, states, plan, Outcome::ChecksFailed, opts, reporter).await;
            let why = if opts.no_rollback {
                "--no-rollback"
            } else {
                "rollback.automatic = false"
            };
            return if checks_failed {
                (
                    "checks_failed",
                    Exit::ChecksFailed,
                    failure.map(|f| format!("{f}; {why}: the new release stays live")),
                )
            } else {
                (
                    "rollback_failed",
                    Exit::RollbackFailed,
                    failure.map(|f| format!("{f}; {why}: left as it is, a person must look now")),
                )
            };
        }
        let mut restored = restore_switched(config, fleet, states, reporter).await;
        if verifying && !interrupted {
            // Every host put back must pass the checklist again to count as restored,
            // also when another host could not be put back.
            let back: Vec<usize> = states
                .iter()
                .enumerate()
                .filter(|(_, s)| s.switched && s.outcome == "rolled_back")
                .map(|(i, _)| i)
                .collect();
            let previous: Vec<Option<String>> = states.iter().map(|s| s.previous.clone()).collect();
            let checked = verify::verify_members(
                config,
                fleet,
                &back,
                |i| previous[i].clone().unwrap_or_default(),
                reporter,
            )
            .await;
            let mut failed = Vec::new();
            for (&i, host) in back.iter().zip(checked) {
                if !host.ok() {
                    failed.push(format!("{}: {}", host.host, host.failed_names().join(", ")));
                    states[i].outcome = "rollback_failed";
                    if states[i].evidence.is_none() {
                        states[i].evidence = host.evidence;
                    }
                }
                states[i].rollback_checks = host.checks;
            }
            if !failed.is_empty() {
                restored = false;
                failure = Some(format!(
                    "{}; the restored release fails its checks too: {}",
                    failure.unwrap_or_default(),
                    failed.join("; ")
                ));
            }
        }
        let outcome = if restored {
            Outcome::RolledBack
        } else {
            Outcome::RollbackFailed
        };
        record(
            config,
            fleet,
            states,
            plan,
            if interrupted { Outcome::Interrupted } else { outcome },
            opts,
            reporter,
        )
        .await;
        return match (interrupted, restored) {
            (true, _) => (
                "interrupted",
                Exit::Interrupted,
                Some("interrupted during the switch; switched hosts were put back".into()),
            ),
            (false, true) => (
                "rolled_back",
                Exit::RolledBack,
                failure.map(|f| format!("{f}; the previous release was restored and verified")),
            ),
            (false, false) => (
                "rollback_failed",
                Exit::RollbackFailed,
                Some(format!(
                    "{}; the rollback did not complete: a person must look now",
                    failure.unwrap_or_default()
                )),
            ),
        };
    }

    // Record and prune.
    record(config, fleet, states, plan, Outcome::Deployed, opts, reporter).await;
    prune(config, fleet, id, reporter).await;
    if interrupt.is_set() {
        return (
            "interrupted",
            Exit::Interrupted,
            Some("interrupted after every host switched; the new release is live".into()),
        );
    }
    ("ok", Exit::Success, None)
}

/// Stores each host's check results; returns "host: check, check" for hosts that failed.
fn absorb(states: &mut [HostState], indices: &[usize], checked: Vec<HostChecks>) -> Vec<String> {
    let mut failed = Vec::new();
    for (&i, host) in indices.iter().zip(checked) {
        if !host.ok() {
            failed.push(format!("{}: {}", host.host, host.failed_names().join(", ")));
        }
        states[i].checks = host.checks;
        states[i].evidence = host.evidence;
    }
    failed
}

/// How pushes authenticate and check host keys: the `[ssh]` settings of the environment.
fn push_auth(config: &Config, env: &Environment) -> PushAuth {
    let _ = config;
    let ssh = env.hosts.first().map(|h| h.ssh.clone());
    PushAuth {
        known_hosts: KnownHosts::new(
            ssh.as_ref().and_then(|s| s.known_hosts_file.as_deref()),
            ssh.as_ref().map(|s| s.host_key_policy).unwrap_or_default(),
        ),
        identity_file: ssh.and_then(|s| s.identity_file),
    }
}

fn pid_file(m: &Member, id: &str) -> String {
    format!("{}/build-{id}.pid", m.layout.state())
}

/// Puts release `id` on the host and builds it; the live release is not touched.
async fn stage(config: &Config, m: &Member, plan: &Plan, reporter: &dyn Reporter) -> Result<(), String> {
    let id = plan.release.as_str();
    let host = m.host.name.as_str();
    let r = &m.remote;
    let transfer = async {
        r.check(&release::prepare(&m.layout).into(), Some(QUICK_TIMEOUT))
            .await?;
        match (&plan.fetch_url, &plan.tar) {
            (Some(url), _) => {
                r.check(
                    &release::fetch_and_export(&m.layout, url, &plan.commit.id, id).into(),
                    Some(STEP_TIMEOUT),
                )
                .await?;
            }
            (None, Some(tar)) => {
                r.upload(tar, &m.layout.upload(id), 0o600).await?;
                r.check(&release::extract_upload(&m.layout, id).into(), Some(STEP_TIMEOUT))
                    .await?;
            }
            (None, None) => unreachable!("a plan has a URL or a tar"),
        }
        if let Some(link) = release::link_shared(&m.layout, id, &config.app) {
            r.check(&link.into(), Some(QUICK_TIMEOUT)).await?;
        }
        let env = m.compose(config, id).env_file();
        r.upload(
            env.as_bytes(),
            &format!("{}/{}", m.layout.release(id), compose::ENV_FILE),
            0o600,
        )
        .await?;
        let text = compose::override_file(&m.host.project, &m.builds(&plan.build), id);
        r.upload(
            text.as_bytes(),
            &format!("{}/{OVERRIDE_FILE}", m.layout.release(id)),
            0o644,
        )
        .await?;
        Ok::<(), crate::remote::RemoteError>(())
    };
    let fetch_step = if plan.fetch_url.is_some() {
        Step::Fetch
    } else {
        Step::Upload
    };
    step(reporter, host, fetch_step, transfer).await?;
    let build = m.builds(&plan.build);
    if build.is_empty() {
        return Ok(());
    }
    let compose = m.compose(config, id);
    let mut args = vec!["build".to_string()];
    if config.app.no_cache {
        args.push("--no-cache".into());
    }
    args.extend(build);
    let build = release::tracked(&compose.cmd(args), &pid_file(m, id));
    // With the same tree and variables as the live release, its images are
    // what a build would give (from the cache): none is run. Not with `no_cache`.
    let live = m.current.as_deref().filter(|_| !config.app.no_cache);
    let reused = step(reporter, host, Step::Build, async {
        if let Some(live) = live {
            // Any doubt (an error, a timeout) means a build.
            let out = r
                .run(&release::reuse_images(&m.layout, live, id).into(), Some(QUICK_TIMEOUT))
                .await;
            if out.is_ok_and(|o| o.success() && o.stdout.trim() == "reused") {
                return Ok(Some(live));
            }
        }
        let out = r
            .run(&build.into(), Some(BUILD_TIMEOUT))
            .await
            .map_err(|e| e.to_string())?;
        if !out.success() {
            return Err(format!(
                "compose build exited with {}:\n{}",
                out.code,
                crate::remote::tail(&format!("{}{}", out.stdout, out.stderr), 30)
            ));
        }
        r.check(&release::address_images(&m.layout, id).into(), Some(QUICK_TIMEOUT))
            .await
            .map(|_| None)
            .map_err(|e| e.to_string())
    })
    .await?;
    if let Some(live) = reused {
        reporter.event(Event::Info {
            host: Some(host.to_string()),
            message: format!("nothing built: the release equals the live {live}, whose images it uses"),
        });
    }
    Ok(())
}

/// `up -d` of release `id` (after `down` of the old one where the app asks for it),
/// then `current` points at it.
async fn switch(config: &Config, m: &Member, id: &str) -> Result<(), crate::remote::RemoteError> {
    if config.app.down_before_up {
        if let Some(prev) = &m.current {
            m.remote
                .check(
                    &m.compose(config, prev).cmd(["down", "--remove-orphans"]).into(),
                    Some(STEP_TIMEOUT),
                )
                .await?;
        }
    }
    activate(config, m, id).await
}

/// Makes release `target` live from its images (built at staging, or kept): no
/// build. Missing images are reported at once (compose would try to pull them).
pub async fn activate(config: &Config, m: &Member, target: &str) -> Result<(), crate::remote::RemoteError> {
    let missing = m
        .remote
        .check(&release::before_up(&m.layout, target).into(), Some(QUICK_TIMEOUT))
        .await?;
    let missing: Vec<&str> = missing.stdout.split_whitespace().collect();
    if !missing.is_empty() {
        return Err(crate::remote::RemoteError::Failed {
            host: m.host.name.clone(),
            command: format!("up release {target}"),
            code: 1,
            stderr: format!(
                "the images of release {target} are gone ({}); it cannot start without a build",
                missing.join(", ")
            ),
        });
    }
    m.remote
        .check(
            &m.compose(config, target)
                .cmd(["up", "-d", "--remove-orphans", "--no-build"])
                .args(m.runs())
                .into(),
            Some(STEP_TIMEOUT),
        )
        .await?;
    // Every built service must now run this release's image; recreate any that
    // does not. With none (the usual case) `current` already points at it.
    let stale = m
        .remote
        .check(
            &release::after_up(&m.layout, &m.host.project, target).into(),
            Some(QUICK_TIMEOUT),
        )
        .await?;
    let stale: Vec<String> = stale.stdout.split_whitespace().map(str::to_string).collect();
    if !stale.is_empty() {
        m.remote
            .check(
                &m.compose(config, target)
                    .cmd(["up", "-d", "--no-build", "--force-recreate"])
                    .args(stale)
                    .into(),
                Some(STEP_TIMEOUT),
            )
            .await?;
        m.remote
            .check(&release::point_current(&m.layout, target).into(), Some(QUICK_TIMEOUT))
            .await?;
    }
    Ok(())
}

/// Puts every switched host back on its previous release; true if all of them are.
async fn restore_switched(config: &Config, fleet: &Fleet, states: &mut [HostState], reporter: &dyn Reporter) -> bool {
    let todo: Vec<usize> = states
        .iter()
        .enumerate()
        .filter(|(_, s)| s.switched)
        .map(|(i, _)| i)
        .collect();
    let results: Vec<(usize, Result<(), String>)> = stream::iter(todo)
        .map(|i| {
            let prev = states[i].previous.clone();
            async move {
                let m = &fleet.members[i];
                let r = step(reporter, &m.host.name, Step::Rollback, async {
                    match &prev {
                        Some(p) => activate(config, m, p).await.map_err(|e| e.to_string()),
                        None => Err(
                            "this was the host's first deploy: there is no previous release to put back".to_string(),
                        ),
                    }
                })
                .await;
                (i, r)
            }
        })
        .buffer_unordered(fleet.env.parallel.max(1))
        .collect()
        .await;
    let mut all = true;
    for (i, r) in results {
        match r {
            Ok(()) => {
                states[i].live = states[i].previous.clone();
                states[i].outcome = "rolled_back";
            }
            Err(e) => {
                all = false;
                states[i].outcome = "rollback_failed";
                let before = states[i].error.take().map(|b| format!("{b}\n")).unwrap_or_default();
                states[i].error = Some(format!("{before}rollback: {e}"));
            }
        }
    }
    all
}

/// Removes release `id` (never live) and its images from every host: a failed or
/// interrupted staging leaves nothing behind. Stops a build still running.
async fn discard(config: &Config, fleet: &Fleet, id: &str, reporter: &dyn Reporter) {
    let _ = config;
    fleet
        .for_each(|m| async move {
            let _ = m
                .remote
                .run(&release::stop_tracked(&pid_file(m, id)).into(), Some(QUICK_TIMEOUT))
                .await;
            if let Err(e) = m
                .remote
                .check(
                    &release::remove(&m.layout, &m.host.project, &[id.to_string()]).into(),
                    Some(STEP_TIMEOUT),
                )
                .await
            {
                reporter.event(Event::Warning {
                    host: Some(m.host.name.clone()),
                    message: format!("could not remove the staged release {id}: {e}"),
                });
            }
        })
        .await;
}

/// Appends a history line on every host.
async fn record(
    config: &Config,
    fleet: &Fleet,
    states: &[HostState],
    plan: &Plan,
    default: Outcome,
    opts: &UpOptions,
    reporter: &dyn Reporter,
) {
    let _ = config;
    let user = lock::whoami();
    let time = history::now();
    stream::iter(fleet.members.iter().zip(states))
        .map(|(m, s)| {
            let outcome = match s.outcome {
                "deployed" if default == Outcome::ChecksFailed => Outcome::ChecksFailed,
                "deployed" => Outcome::Deployed,
                "rolled_back" => Outcome::RolledBack,
                "rollback_failed" => Outcome::RollbackFailed,
                "failed" => Outcome::Failed,
                _ => default,
            };
            let entry = Entry {
                release: plan.release.clone(),
                commit: plan.commit.id.clone(),
                time: time.clone(),
                user: user.clone(),
                outcome,
                from: s.previous.clone(),
                to: s.live.clone(),
                message: opts.message.clone(),
            };
            async move {
                let _ = step(
                    reporter,
                    &m.host.name,
                    Step::Record,
                    m.remote
                        .check(&history::append(&m.layout, &entry).into(), Some(QUICK_TIMEOUT)),
                )
                .await;
            }
        })
        .buffer_unordered(fleet.env.parallel.max(1))
        .collect::<Vec<()>>()
        .await;
}

/// Removes releases (and their images) beyond `keep_releases`, never `id` nor
/// the release each host ran before it.
async fn prune(config: &Config, fleet: &Fleet, id: &str, reporter: &dyn Reporter) {
    let keep = *config.app.keep_releases.get_ref() as usize;
    fleet
        .for_each(|m| async move {
            let _ = step(reporter, &m.host.name, Step::Prune, async {
                let out = m
                    .remote
                    .check(&release::list(&m.layout).into(), Some(QUICK_TIMEOUT))
                    .await?;
                let ids: Vec<String> = out.stdout.lines().map(str::to_string).collect();
                // The release live before this deploy stays: a rollback goes back to it.
                let doomed = release::to_prune(ids, keep, Some(id), m.current.as_deref());
                if !doomed.is_empty() {
                    m.remote
                        .check(
                            &release::remove(&m.layout, &m.host.project, &doomed).into(),
                            Some(STEP_TIMEOUT),
                        )
                        .await?;
                }
                Ok::<(), crate::remote::RemoteError>(())
            })
            .await;
        })
        .await;
}

/// `--dry-run`: what would happen, host by host.
fn describe_plan(config: &Config, fleet: &Fleet, plan: &Plan, reporter: &dyn Reporter) {
    let id = plan.release.as_str();
    let info = |host: Option<&str>, message: String| {
        reporter.event(Event::Info {
            host: host.map(str::to_string),
            message,
        })
    };
    info(
        None,
        format!(
            "plan: deploy commit {} ({}) as release {id}",
            plan.commit.short, plan.commit.summary
        ),
    );
    if config.source.strategy == Strategy::Git {
        info(
            None,
            format!("push branch `{}` to `{}`", config.source.branch, config.source.remote),
        );
    }
    for m in &fleet.members {
        let h = Some(m.host.name.as_str());
        info(
            h,
            format!(
                "live release: {}; compose {}",
                m.current.as_deref().unwrap_or("none (first deploy)"),
                match m.variant {
                    Some(compose::Variant::V1) => "v1",
                    _ => "v2",
                }
            ),
        );
        match &plan.fetch_url {
            Some(url) => info(
                h,
                format!("fetch {} from {url} into {}", plan.commit.short, m.layout.release(id)),
            ),
            None => info(h, format!("upload the commit's files to {}", m.layout.release(id))),
        }
        let compose = m.compose(config, id);
        if !plan.build.is_empty() {
            info(
                h,
                format!("build: {}", compose.cmd(["build"]).args(plan.build.iter()).display()),
            );
        }
        info(
            h,
            format!(
                "switch: {}",
                compose.cmd(["up", "-d", "--remove-orphans", "--no-build"]).display()
            ),
        );
        info(
            h,
            format!(
                "then: current -> releases/{id}, record history, keep {} releases",
                config.app.keep_releases.get_ref()
            ),
        );
    }
}
