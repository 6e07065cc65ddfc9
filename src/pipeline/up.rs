//! `deploy up`'s own phases: plan the release locally, push, stage and build it
//! on every host while the old one serves (pruning after a success is the
//! closing's: see `closing.rs`).

use std::time::{Duration, SystemTime};

use super::{End, Run, UpOptions};
use crate::activation::{Record, RECORD_FILE};
use crate::compose::{self, OVERRIDE_FILE};
use crate::config::{BuildOn, Config, Environment, Strategy, Text, TransportKind};
use crate::error::Error;
use crate::fleet::{step, Fleet, LockGuard, Member, QUICK_TIMEOUT, STEP_TIMEOUT};
use crate::git::{self, Commit, PushAuth, Repo};
use crate::known_hosts::KnownHosts;
use crate::live::LiveState;
use crate::outcome::Outcome;
use crate::pipeline::{release_command, Progress};
use crate::release::{self, release_id};
use crate::remote::Script;
use crate::report::events::{Event, Reporter, Step};

/// A build may take long, but not forever.
const BUILD_TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// What `deploy up` will deploy, worked out locally before any host is touched.
#[derive(Debug)]
pub struct UpPlan {
    pub commit: Commit,
    /// The release id (the second after the newest a host has, if that is later).
    pub release: String,
    /// The services built.
    pub build: Vec<String>,
    /// `strategy = "git"`: what hosts fetch from.
    fetch_url: Option<String>,
    /// `strategy = "upload"`: the commit's files.
    tar: Option<Vec<u8>>,
    /// The repository deploy.toml lives in.
    repo: Repo,
    no_push: bool,
}

/// The directory deploy.toml is in: the app's repository.
pub fn config_dir(config: &Config) -> std::path::PathBuf {
    match config.path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    }
}

impl UpPlan {
    /// Resolves the commit and what it builds; refuses a dirty tree or a commit
    /// that the pushed branch does not have.
    pub fn prepare(config: &Config, opts: &UpOptions) -> Result<UpPlan, Error> {
        let repo = Repo::discover(&config_dir(config))?;
        if !opts.allow_dirty {
            repo.require_clean()?;
        }
        let commit = repo.resolve(opts.rev.as_deref().unwrap_or("HEAD"))?;
        let build = services_to_build(config, &repo, &commit)?;
        refuse_zero_downtime(config, &repo, &commit)?;
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
        Ok(UpPlan {
            release: release_id(SystemTime::now(), &commit.short),
            commit,
            build,
            fetch_url,
            tar,
            repo,
            no_push: opts.no_push || config.source.strategy != Strategy::Git,
        })
    }
}

/// The services to build: `[app] build`, or every service with `build:` in the
/// commit's compose files that runs under the active profiles.
fn services_to_build(config: &Config, repo: &Repo, commit: &Commit) -> Result<Vec<String>, Error> {
    if let Some(list) = &config.app.build {
        return Ok(list.iter().map(|s| s.expose().to_string()).collect());
    }
    let mut files = Vec::new();
    for file in &config.app.compose_files {
        let text = repo.read_file(commit, file.expose())?.ok_or_else(|| {
            Error::Usage(format!(
                "commit {} has no {} (app.compose_files)",
                commit.short,
                file.expose()
            ))
        })?;
        files.push(
            compose::services(&text)
                .map_err(|e| Error::Usage(format!("{} in commit {}: {e}", file.expose(), commit.short)))?,
        );
    }
    Ok(compose::merged(&files)
        .into_iter()
        .filter(|s| s.builds && s.active(&config.app.profiles))
        .map(|s| s.name)
        .collect())
}

/// Refuses `zero_downtime` services that the commit's compose files make
/// impossible to run twice (host `ports:`, `container_name:`): exit 2 before
/// any host is touched.
fn refuse_zero_downtime(config: &Config, repo: &Repo, commit: &Commit) -> Result<(), Error> {
    if config.app.zero_downtime.is_empty() {
        return Ok(());
    }
    let mut files = Vec::new();
    for file in &config.app.compose_files {
        let text = repo.read_file(commit, file.expose())?.ok_or_else(|| {
            Error::Usage(format!(
                "commit {} has no {} (app.compose_files)",
                commit.short,
                file.expose()
            ))
        })?;
        files.push((file.expose().to_string(), text));
    }
    Ok(config.refuse_zero_downtime(&files, true)?)
}

/// How pushes authenticate and check host keys: the `[ssh]` settings of the environment.
fn push_auth(env: &Environment) -> PushAuth {
    let ssh = env.hosts.first().map(|h| h.ssh.clone());
    PushAuth {
        known_hosts: KnownHosts::new(
            ssh.as_ref().and_then(|s| s.known_hosts_file.as_deref()),
            ssh.as_ref().map(|s| s.host_key_policy).unwrap_or_default(),
        ),
        identity_file: ssh.and_then(|s| s.identity_file),
    }
}

/// Where the build (or an image transfer) of release `id` on `m` records
/// its process group, for a discard to stop it.
pub(super) fn pid_file(m: &Member, id: &str) -> String {
    format!("{}/build-{id}.pid", m.layout.state())
}

/// Pushes, then stages and builds the release on every host while the old one
/// serves. On failure or Ctrl-C the staged release is removed everywhere.
pub(super) async fn stage(
    run: &mut Run<'_>,
    fleet: &Fleet,
    plan: &mut UpPlan,
    states: &[LiveState],
    guard: &LockGuard,
) -> Result<(), End> {
    // Two deploys of a commit within one second would get the same id: this one
    // then takes the second after the newest release any host has.
    let newest = states.iter().filter_map(LiveState::newest).max();
    if let Some(id) = newest.and_then(|n| release::id_after(n, &plan.release, &plan.commit.short)) {
        run.info(
            None,
            format!("release id {} is taken on a host; this release is {id}", plan.release),
        );
        plan.release = id;
        run.release = Some(plan.release.clone());
    }
    guard.held(fleet).await.map_err(|why| {
        End::new(
            Outcome::Failed,
            format!("{why}; stopped before staging, no host was changed"),
        )
    })?;
    push(run, plan).await?;

    let befores: Vec<Option<String>> = states.iter().map(|s| s.current.clone()).collect();
    let (config, reporter, plan_ref) = (run.config, run.reporter, &*plan);
    // `[build] on = "first"`: the first host builds every image, the others
    // none; `"local"`: this machine builds them, no host does.
    let on = match plan.build.is_empty() {
        true => BuildOn::Hosts,
        false => config.build.on,
    };
    let local = match on {
        BuildOn::Local => Some(LocalBuild::open(config, fleet, reporter).await.map_err(|e| {
            End::new(
                Outcome::Failed,
                format!("cannot build on this machine: {e}; no host was changed"),
            )
        })?),
        _ => None,
    };
    let staged = async {
        let built_here = async {
            match &local {
                Some(l) => Some(l.build(config, plan_ref, reporter).await),
                None => None,
            }
        };
        let on_hosts = fleet.for_each_with(befores.into_iter().enumerate().collect(), |m, (i, before)| async move {
            let mut record = Record::new(config, m, &plan_ref.release, &plan_ref.commit.id, &plan_ref.build);
            let first_builds = on == BuildOn::First && i == 0;
            if first_builds {
                record.build = plan_ref.build.clone();
            }
            let builds = on == BuildOn::Hosts || first_builds;
            stage_host(
                config,
                m,
                &plan_ref.files(),
                &record,
                match (on, builds) {
                    (BuildOn::Hosts, _) => Builds::Own,
                    (_, true) => Builds::ForOthers,
                    (_, false) => Builds::No,
                },
                before.as_deref(),
                reporter,
            )
            .await
            .map(|()| record)
        });
        let (built_here, staged) = tokio::join!(built_here, on_hosts);
        if on == BuildOn::Hosts || staged.iter().any(Result::is_err) {
            return staged;
        }
        let records: Vec<Record> = staged.into_iter().flatten().collect();
        let builder = match (&local, &built_here) {
            (Some(l), Some(Ok(record))) => super::distribute::Builder {
                member: l.member(),
                record,
            },
            (_, Some(Err(e))) => {
                return records
                    .iter()
                    .map(|_| Err(format!("the build on this machine failed: {e}")))
                    .collect()
            }
            _ => super::distribute::Builder {
                member: &fleet.members[0],
                record: &records[0],
            },
        };
        let delivered = super::distribute::distribute(config, &builder, fleet, &records, reporter).await;
        records
            .into_iter()
            .zip(delivered)
            .map(|(record, d)| d.map(|()| record))
            .collect()
    };
    let staging = async {
        let staged = staged.await;
        match (&config.build.registry, fleet.env.swarm()) {
            (Some(registry), true) => {
                let auth = config.build.credentials.is_some();
                publish(fleet, staged, (registry, auth), reporter).await
            }
            _ => staged,
        }
    };
    let results = tokio::select! {
        r = staging => Some(r),
        _ = run.interrupt.wait() => None,
    };
    if let Some(local) = local {
        local.close(&plan.release, run.reporter).await;
    }
    let Some(results) = results else {
        discard(fleet, &plan.release, run.reporter).await;
        return Err(End::new(
            Outcome::Interrupted,
            "interrupted before the switch; every host is still on its previous release".to_string(),
        ));
    };
    let mut failed = false;
    for (h, r) in run.hosts.iter_mut().zip(results) {
        match r {
            Ok(record) => {
                h.to = Some(record);
                h.progress = Progress::Staged;
            }
            Err(e) => {
                h.fail(Outcome::Failed, e);
                failed = true;
            }
        }
    }
    if failed || run.interrupt.is_set() {
        discard(fleet, &plan.release, run.reporter).await;
        return Err(match failed {
            true => End::new(Outcome::Failed, "staging failed; no host was changed".to_string()),
            false => End::new(
                Outcome::Interrupted,
                "interrupted before the switch; every host is still on its previous release".to_string(),
            ),
        });
    }
    Ok(())
}

/// A swarm with a registry: the manager pushes the release's images there and
/// the stack names them so (see [`crate::swarm::publish`]).
async fn publish(
    fleet: &Fleet,
    staged: Vec<Result<Record, String>>,
    (registry, auth): (&str, bool),
    reporter: &dyn Reporter,
) -> Vec<Result<Record, String>> {
    fleet
        .for_each_with(staged, |m, r| async move {
            let record = r?;
            let pushed = async {
                let images = crate::swarm::release_images(m, &record).await?;
                let (cmd, text) = crate::swarm::publish(m, &record, (registry, auth), &images);
                m.remote
                    .check_with_input(&cmd.into(), text.as_bytes(), Some(super::distribute::TRANSFER_TIMEOUT))
                    .await
            };
            step(reporter, &m.host.name, Step::Images, pushed)
                .await
                .map_err(|e| format!("push to {registry}: {e}"))?;
            Ok(record)
        })
        .await
}

/// Pushes the branch (`strategy = "git"`, not `--no-push`).
async fn push(run: &Run<'_>, plan: &UpPlan) -> Result<(), End> {
    if plan.no_push {
        return Ok(());
    }
    let config = run.config;
    let auth = push_auth(run.env);
    let (remote, branch) = (config.source.remote.expose(), config.source.branch.expose());
    let timeout = config.source.push_timeout.get_ref().0;
    let mut interrupted = false;
    let pushed = step(run.reporter, "local", Step::Push, async {
        let r = git::push(plan.repo.path(), remote, branch, &auth, timeout, run.interrupt).await;
        interrupted = r.as_ref().is_err_and(|e| e.is_interrupted());
        r
    })
    .await;
    pushed.map_err(|e| match interrupted {
        true => End::new(Outcome::Interrupted, format!("{e}; no host was changed")),
        false => End::new(Outcome::Failed, format!("{e}; no host was changed")),
    })
}

/// `[build] on = "local"`: this machine's Docker builds the release, in a
/// release directory of its own (the first host's variables, compose files
/// and shared files, its project name with `-build`), removed with its
/// images once the hosts have them.
struct LocalBuild {
    dir: tempfile::TempDir,
    /// This machine, as a one-host fleet on the local transport.
    fleet: Fleet,
}

impl LocalBuild {
    async fn open(config: &Config, fleet: &Fleet, reporter: &dyn Reporter) -> Result<LocalBuild, String> {
        let dir = tempfile::Builder::new()
            .prefix("deploy-build-")
            .tempdir()
            .map_err(|e| format!("no temporary directory: {e}"))?;
        let path = dir
            .path()
            .to_str()
            .ok_or("the temporary directory's path is not UTF-8")?;
        let mut host = fleet.members[0].host.clone();
        host.name = "local".to_string();
        host.path = Text::from(path);
        host.services = None;
        // Images named apart from any host's, should this machine be one.
        host.project = format!("{}-build", host.project);
        // This machine only builds: it is no swarm manager, whatever the hosts are.
        host.engine = crate::config::Orchestrator::Compose;
        host.nodes = Vec::new();
        let mut env = fleet.env.clone();
        env.transport = TransportKind::Local;
        env.hosts = vec![host.clone()];
        let (mut local, failed) = Fleet::connect_reachable(&env, &[host], reporter).await;
        if let Some((_, e)) = failed.into_iter().next() {
            return Err(e);
        }
        if let Some((_, e)) = local.preflight(reporter).await.into_iter().next() {
            local.close().await;
            return Err(e);
        }
        let shared = copy_shared_files(config, &fleet.members[0], &dir.path().join("shared")).await;
        if let Err(e) = shared {
            local.close().await;
            return Err(e);
        }
        Ok(LocalBuild { dir, fleet: local })
    }

    fn member(&self) -> &Member {
        &self.fleet.members[0]
    }

    /// Stages and builds every service of the release here.
    async fn build(&self, config: &Config, plan: &UpPlan, reporter: &dyn Reporter) -> Result<Record, String> {
        let m = self.member();
        let shared = self.dir.path().join("shared");
        for d in &config.app.shared_dirs {
            std::fs::create_dir_all(shared.join(d.expose())).map_err(|e| e.to_string())?;
        }
        let tar = match &plan.tar {
            Some(t) => t.clone(),
            None => plan.repo.archive(&plan.commit).map_err(|e| e.to_string())?,
        };
        let files = Files {
            release: &plan.release,
            tar: Some(&tar),
            fetch: None,
        };
        let mut record = Record::new(config, m, &plan.release, &plan.commit.id, &plan.build);
        record.build = plan.build.clone();
        stage_host(config, m, &files, &record, Builds::ForOthers, None, reporter).await?;
        Ok(record)
    }

    /// Stops what still runs for the release here, removes it and its
    /// images from this machine (the hosts have them; the build cache
    /// stays), then the directory.
    async fn close(self, id: &str, reporter: &dyn Reporter) {
        let m = self.member();
        // A build, save or push still running (Ctrl-C) is stopped first.
        let _ = m
            .remote
            .run(&release::stop_tracked(&pid_file(m, id)).into(), Some(QUICK_TIMEOUT))
            .await;
        let remove = release::remove(&m.layout, &m.host.project, &[id.to_string()], None);
        if let Err(e) = m.remote.check(&remove.into(), Some(STEP_TIMEOUT)).await {
            reporter.event(Event::Warning {
                host: Some(m.host.name.clone()),
                message: format!("could not remove the local build of {id}: {e}"),
            });
        }
        self.fleet.close().await;
        drop(self.dir);
    }
}

/// The first host's shared files (`.env` and the like: compose reads them
/// for its variables, a build may read them) into `to` on this machine,
/// closed to others, for a build here to see what a build there would.
async fn copy_shared_files(config: &Config, first: &Member, to: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let files: Vec<&str> = config.app.shared_files.iter().map(|f| f.expose()).collect();
    if files.is_empty() {
        return Ok(());
    }
    let pack = crate::remote::Cmd::new("tar")
        .arg("-C")
        .arg(first.layout.shared())
        .arg("-cf")
        .arg("-")
        .arg("--")
        .args(files.iter().copied());
    let mut packed: Vec<u8> = Vec::new();
    first
        .remote
        .check_to_writer(&pack.into(), &mut packed, Some(QUICK_TIMEOUT))
        .await
        .map_err(|e| format!("cannot read the shared files of {}: {e}", first.host.name))?;
    std::fs::create_dir_all(to).map_err(|e| e.to_string())?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o700)).map_err(|e| e.to_string())?;
    let mut archive = tar::Archive::new(&packed[..]);
    archive.set_preserve_permissions(false);
    archive
        .unpack(to)
        .map_err(|e| format!("cannot unpack the shared files: {e}"))?;
    for f in &files {
        let path = to.join(f);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

/// What a host stages a release from.
struct Files<'a> {
    release: &'a str,
    /// `strategy = "upload"` (and a build on this machine): the commit's files.
    tar: Option<&'a [u8]>,
    /// `strategy = "git"`: the URL and commit the host fetches.
    fetch: Option<(&'a str, &'a str)>,
}

impl UpPlan {
    fn files(&self) -> Files<'_> {
        Files {
            release: &self.release,
            tar: self.tar.as_deref(),
            fetch: self.fetch_url.as_deref().map(|url| (url, self.commit.id.as_str())),
        }
    }
}

/// Whether and for whom a host builds a release's images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Builds {
    /// Another (the first host, this machine) builds them for it.
    No,
    /// It builds them, also for others, who read its override after the
    /// build: the content tags are made on the host in the same command.
    ForOthers,
    /// It builds its own: the content tags are made through the Engine API
    /// where the host's answers.
    Own,
}

/// Puts release `files.release` on the host and builds it as `builds` says;
/// the live release is not touched.
async fn stage_host(
    config: &Config,
    m: &Member,
    files: &Files<'_>,
    record: &Record,
    builds: Builds,
    live: Option<&str>,
    reporter: &dyn Reporter,
) -> Result<(), String> {
    let id = files.release;
    let host = m.host.name.as_str();
    let r = &m.remote;
    // One command: the layout, the commit (fetched, or in the tar), the
    // release's own files from the tar on stdin, the shared files linked.
    let env = m.compose_for(record).env_file();
    let overrides = compose::override_file(&m.host.project, &record.build, id);
    let own = record.to_json();
    let start_first: Vec<String> = config
        .app
        .zero_downtime
        .iter()
        .map(|z| z.get_ref().service.clone())
        .collect();
    let stack = crate::swarm::stack_override(&start_first);
    let mut own_files = vec![
        (record.env_file.as_str(), env.as_bytes(), 0o600),
        (OVERRIDE_FILE, overrides.as_bytes(), 0o644),
        (RECORD_FILE, own.as_bytes(), 0o644),
    ];
    let docker_config = config.build.docker_config();
    let docker_config_file = format!("{}/config.json", release::DOCKER_CONFIG_DIR);
    if let Some(text) = &docker_config {
        own_files.push((docker_config_file.as_str(), text.as_bytes(), 0o600));
    }
    let swarm = record.engine == crate::config::Orchestrator::Swarm;
    if swarm {
        own_files.push((crate::swarm::STACK_OVERRIDE, stack.as_bytes(), 0o644));
        own_files.push((
            crate::swarm::REGISTRY_OVERRIDE,
            crate::swarm::NO_REGISTRY.as_bytes(),
            0o644,
        ));
    }
    let input =
        release::files_tar(files.tar, &own_files).map_err(|e| format!("cannot pack the release's files: {e}"))?;
    let fetch = files.fetch;
    let mut script = Script::from(release::prepare(&m.layout)).then(release::stage(&m.layout, id, fetch));
    if let Some(link) = release::link_shared(&m.layout, id, &config.app) {
        script = script.then(link);
    }
    if swarm {
        // What `docker stack deploy` would refuse fails the deploy now, not at the switch.
        script = script.then(crate::swarm::validate(m, record));
    }
    let fetch_step = if fetch.is_some() { Step::Fetch } else { Step::Upload };
    let transfer = async {
        r.check_with_input(&script, &input, Some(STEP_TIMEOUT))
            .await
            .map_err(|e| e.named(&format!("stage release {id}")))
    };
    step(reporter, host, fetch_step, transfer).await?;
    if record.build.is_empty() || builds == Builds::No {
        return Ok(());
    }
    let mut args = vec!["build".to_string()];
    if config.app.no_cache {
        args.push("--no-cache".into());
    }
    args.extend(record.build.iter().cloned());
    let build = m.compose_for(record).cmd(args);
    // With the same tree and variables as the live release, its images are
    // what a build would give (from the cache): none is run. Not with `no_cache`.
    let live = live.filter(|_| !config.app.no_cache);
    let reuse = live.map(|live| release::reuse_images(&m.layout, live, id));
    // Each host building its own images names them by their content through
    // the Engine API after the build (no docker program started for it); a
    // build whose images another host or this machine ships, or without the
    // API, has the host do it in the same command.
    let engine = match (builds, record.engine) {
        (Builds::Own, crate::config::Orchestrator::Compose) => m.engine(reporter).await,
        _ => None,
    };
    let address = release::address_images(&m.layout, id);
    let address_there = engine.is_none().then_some(&address);
    // The checklist's `compose_ps` of this release takes the services resolved
    // beside the build, instead of starting compose on the host for them; a
    // checklist without one has them resolved by nothing.
    let ps_checked = config
        .verify
        .checks
        .iter()
        .any(|c| matches!(c.kind, crate::config::CheckKind::ComposePs));
    let resolve = (record.engine == crate::config::Orchestrator::Compose && ps_checked).then(|| m.resolving(record));
    // Tracked as a whole (the reuse check and the resolving too): Ctrl-C stops all of it.
    let whole = release::build(reuse.as_ref(), &build, address_there, resolve.as_ref(), &m.layout, id);
    let whole = release::tracked(&whole, &pid_file(m, id));
    let out = step(reporter, host, Step::Build, async {
        let out = r
            .run(&whole.into(), Some(BUILD_TIMEOUT))
            .await
            .map_err(|e| e.to_string())?;
        if !out.success() {
            return Err(format!(
                "compose build exited with {}:\n{}",
                out.code,
                crate::remote::tail(&format!("{}{}", out.stdout, out.stderr), 30)
            ));
        }
        if let Some(engine) = engine.filter(|_| release::built(&out.stdout).0.trim() != "reused") {
            content_tags(m, engine, record, id, &address, reporter).await?;
        }
        Ok(out)
    })
    .await?;
    let (said, services) = release::built(&out.stdout);
    if let Some(services) = services.and_then(|text| crate::compose::services(text).ok()) {
        m.resolved(id, services);
    }
    if let (Some(live), "reused") = (live, said.trim()) {
        reporter.event(Event::Info {
            host: Some(host.to_string()),
            message: format!("nothing built: the release equals the live {live}, whose images it uses"),
        });
    }
    Ok(())
}

/// Names the images release `id` built on `m` by their content through the
/// Engine API and keeps the override that names them so, for the release's
/// first command to write (see [`Member::pending_override`]). Should the API
/// fail, the host does it with the docker CLI (`address`), said with `-v`.
async fn content_tags(
    m: &Member,
    engine: &crate::engine::Engine,
    record: &Record,
    id: &str,
    address: &crate::remote::Cmd,
    reporter: &dyn Reporter,
) -> Result<(), String> {
    let tagged = futures::future::try_join_all(record.build.iter().map(|s| async move {
        let tag = engine.content_tag(&compose::image_name(&m.host.project, s, id)).await?;
        Ok::<_, String>((s.clone(), tag))
    }))
    .await;
    match tagged {
        Ok(tags) => {
            m.addressed(id, tags);
            Ok(())
        }
        Err(why) => {
            reporter.event(Event::Detail {
                host: Some(m.host.name.clone()),
                message: format!("content tags through the Engine API failed ({why}); using the docker CLI"),
            });
            m.remote
                .check(&address.clone().into(), Some(STEP_TIMEOUT))
                .await
                .map(|_| ())
                .map_err(|e| {
                    e.named(&format!("name the images of release {id} by their content"))
                        .to_string()
                })
        }
    }
}

/// Removes release `id` (never live) and its images from every host: a failed or
/// interrupted staging leaves nothing behind. Stops a build still running.
pub(super) async fn discard(fleet: &Fleet, id: &str, reporter: &dyn Reporter) {
    fleet
        .for_each(|m| async move {
            let _ = m
                .remote
                .run(&release::stop_tracked(&pid_file(m, id)).into(), Some(QUICK_TIMEOUT))
                .await;
            if let Err(e) = m
                .remote
                .check(
                    &release::remove(&m.layout, &m.host.project, &[id.to_string()], None).into(),
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

/// `--dry-run`: what would happen, host by host.
pub(super) fn describe(config: &Config, fleet: &Fleet, plan: &UpPlan, reporter: &dyn Reporter) {
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
    if !plan.no_push {
        info(
            None,
            format!("push branch `{}` to `{}`", config.source.branch, config.source.remote),
        );
    }
    if config.build.on == BuildOn::Local && !plan.build.is_empty() {
        info(
            None,
            format!(
                "build on this machine, for every host: compose build {}{}",
                plan.build.join(" "),
                match &config.build.registry {
                    Some(r) => format!("; push the images to {r}"),
                    None => String::new(),
                }
            ),
        );
    }
    for (i, m) in fleet.members.iter().enumerate() {
        let h = Some(m.host.name.as_str());
        info(
            h,
            format!(
                "live release: {}; compose {}",
                m.current.as_deref().unwrap_or("none (first deploy)"),
                m.variant.unwrap_or(compose::Variant::V2).name()
            ),
        );
        match &plan.fetch_url {
            Some(url) => info(
                h,
                format!("fetch {} from {url} into {}", plan.commit.short, m.layout.release(id)),
            ),
            None => info(h, format!("upload the commit's files to {}", m.layout.release(id))),
        }
        let record = Record::new(config, m, id, &plan.commit.id, &plan.build);
        let compose = m.compose_for(&record);
        let on = match plan.build.is_empty() {
            true => BuildOn::Hosts,
            false => config.build.on,
        };
        let how = match &config.build.registry {
            Some(r) => format!("pulled from {r}"),
            None => "streamed over SSH (those it lacks)".to_string(),
        };
        match (on, i) {
            (BuildOn::Hosts, _) if !record.build.is_empty() => info(
                h,
                format!("build: {}", compose.cmd(["build"]).args(record.build.iter()).display()),
            ),
            (BuildOn::Hosts, _) => {}
            (BuildOn::First, 0) => info(
                h,
                format!(
                    "build, for every host: {}{}",
                    compose.cmd(["build"]).args(plan.build.iter()).display(),
                    match &config.build.registry {
                        Some(r) => format!("; push the images to {r}"),
                        None => String::new(),
                    }
                ),
            ),
            (_, _) if record.build.is_empty() => {}
            (BuildOn::First, _) => info(h, format!("no build: the first host's images, {how}")),
            (BuildOn::Local, _) => info(h, format!("no build: the images built on this machine, {how}")),
        }
        if let Some(rc) = &config.release {
            if release_command::hosts(rc, fleet.members.len()).contains(&i) {
                info(
                    h,
                    format!(
                        "release command, before any host switches: {}",
                        release_command::command(m, &record, rc).display()
                    ),
                );
            }
        }
        for z in &record.zero_downtime {
            info(
                h,
                format!(
                    "switch {} start-first if compose would replace it: its n containers stay, {} starts n beside them, each must be ready (healthcheck, or its http checks), then once they have run for {}ms and {}ms (drain) have passed the old ones are stopped and removed",
                    z.service,
                    compose
                        .cmd(["up", "-d", "--no-deps", "--no-recreate", "--no-build", "--scale"])
                        .arg(format!("{}=2n", z.service))
                        .arg(z.service.as_str())
                        .display(),
                    crate::activation::SETTLE.as_millis(),
                    z.drain_ms
                ),
            );
        }
        if record.engine == crate::config::Orchestrator::Swarm {
            if let Some(r) = &config.build.registry {
                info(
                    h,
                    format!("push the release's images to {r}; the stack names them there by content tag"),
                );
            }
            let start_first: Vec<&str> = config
                .app
                .zero_downtime
                .iter()
                .map(|z| z.get_ref().service.as_str())
                .collect();
            if !start_first.is_empty() {
                info(
                    h,
                    format!("update start-first (Swarm's update_config): {}", start_first.join(", ")),
                );
            }
            info(
                h,
                format!(
                    "switch: {}; wait until every service runs its replicas on the release's images for {}s",
                    crate::swarm::deploy(m, &record).display(),
                    crate::swarm::MONITOR.as_secs()
                ),
            );
        } else {
            info(
                h,
                format!(
                    "switch: {}",
                    compose
                        .cmd(["up", "-d", "--remove-orphans", "--no-build"])
                        .args(record.services.iter())
                        .display()
                ),
            );
        }
        info(
            h,
            format!(
                "then: current -> releases/{id}, record history, keep {} releases",
                config.app.keep_releases.get_ref()
            ),
        );
    }
}
