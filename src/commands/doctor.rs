//! `deploy doctor [ENV]`: what would break a deploy, found before one runs.
//! The commit's compose files against deploy.toml, and with ENV each host:
//! SSH, Docker and Compose, the Docker socket, disk, clock, the fetch URL as
//! the host sees it, the lock and how the last release ended. One finding per
//! line (✓ ! ✗) with its fix; exit 1 if any is ✗.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Instant, SystemTime};

use crate::cli::Cli;
use crate::config::{Config, Environment, Host, HostKeyPolicy, Strategy, TransportKind};
use crate::doctor::compose::{self as review, ComposeFile, Defined};
use crate::doctor::{host, worst, Finding, Level};
use crate::error::{Error, Exit};
use crate::fleet::{select_hosts, Fleet, Member, QUICK_TIMEOUT};
use crate::git::Repo;
use crate::pipeline::config_dir;
use crate::report::events::{Event, HostSummary, Reporter};
use crate::report::Printer;
use crate::{history, lock};

/// `git ls-remote` from a host gets this long.
const LS_REMOTE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Forwards every event but steps: doctor's output is its findings.
struct FindingsOnly<'a>(&'a dyn Reporter);

impl Reporter for FindingsOnly<'_> {
    fn event(&self, event: Event) {
        if !matches!(event, Event::Step { .. }) {
            self.0.event(event);
        }
    }
}

/// The compose files doctor reads, and where they came from.
struct Source {
    files: Vec<ComposeFile>,
    /// The project's `.env` as committed (compose reads it for interpolation).
    dotenv: Option<String>,
    /// What hosts fetch from (strategy git), or why it is not known.
    fetch_url: Result<String, String>,
    /// Findings about reading them (no repository, uncommitted changes).
    findings: Vec<Finding>,
}

/// Runs doctor; exit 0 when no finding is ✗, 1 otherwise.
pub fn run(
    cli: &Cli,
    printer: &mut Printer,
    env: Option<&str>,
    rev: Option<&str>,
    hosts: Option<&[String]>,
) -> Result<Exit, Error> {
    let config = super::load(cli, printer)?;
    if env.is_none() && hosts.is_some() {
        return Err(Error::Usage(
            "--hosts picks hosts of an environment: `deploy doctor ENV --hosts H1,H2`".into(),
        ));
    }
    let env = env.map(|e| super::environment(&config, e)).transpose()?;
    let selected = env.map(|e| select_hosts(e, hosts)).transpose()?;
    let started = Instant::now();
    let reporter = printer.reporter();
    let reporter = FindingsOnly(reporter.as_ref());
    let mut found: Vec<Finding> = Vec::new();
    let mut emit = |fs: Vec<Finding>| {
        for f in fs {
            reporter.event(Event::Finding(f.clone()));
            found.push(f);
        }
    };
    let dir = config_dir(&config);
    let source = read_source(&config, &dir, rev)?;
    emit(source.findings.clone());
    let (_, compose_findings) = review::review(&config, &source.files);
    emit(compose_findings);
    let (Some(env), Some(selected)) = (env, selected) else {
        for env in config.environments.values() {
            let defined = local_definitions(&config, &env.hosts, &dir, source.dotenv.as_deref());
            emit(review::variables(&env.name, &source.files, &defined));
        }
        return Ok(finish(&reporter, "", started, &found, Vec::new()));
    };
    if let Some(f) = host_key_policy(env) {
        emit(vec![f]);
    }
    let reports = super::runtime()?.block_on(examine(&config, env, &selected, &source, &reporter));
    // Variables first: they are about the compose files, as each host sees them.
    let mut defined = local_definitions(&config, &selected, &dir, source.dotenv.as_deref());
    for (d, r) in defined.iter_mut().zip(&reports) {
        if let Some(names) = &r.shared_env {
            d.names.extend(names.iter().cloned());
            d.unsure = false;
        }
    }
    emit(review::variables(&env.name, &source.files, &defined));
    let mut summaries = Vec::new();
    for r in reports {
        let outcome = match (r.unreachable, worst(&r.findings)) {
            (true, _) => "unreachable",
            (false, Level::Fail) => "failed",
            _ => "ok",
        };
        let error = r
            .findings
            .iter()
            .find(|f| f.level == Level::Fail)
            .map(|f| f.message.clone());
        summaries.push(HostSummary::new(
            &r.host,
            r.current.clone(),
            outcome,
            r.elapsed_ms,
            error,
        ));
        emit(r.findings);
    }
    Ok(finish(&reporter, &env.name, started, &found, summaries))
}

/// The summary, and the exit code: 1 if any finding is ✗.
fn finish(reporter: &dyn Reporter, env: &str, started: Instant, found: &[Finding], hosts: Vec<HostSummary>) -> Exit {
    let failed = found.iter().filter(|f| f.level == Level::Fail).count();
    let warned = found.iter().filter(|f| f.level == Level::Warn).count();
    let (exit, error) = if failed > 0 {
        (
            Exit::Failed,
            Some(format!(
                "{failed} finding{} to fix (✗), {warned} worth a look (!)",
                if failed == 1 { "" } else { "s" }
            )),
        )
    } else {
        (Exit::Success, None)
    };
    reporter.event(super::summary("doctor", env, exit, started, hosts, error));
    exit
}

/// The compose files of `rev` (default HEAD); without a repository or a
/// commit, the working tree's, with a ✗ saying so.
fn read_source(config: &Config, dir: &Path, rev: Option<&str>) -> Result<Source, Error> {
    let names: Vec<String> = config
        .app
        .compose_files
        .iter()
        .map(|f| f.expose().to_string())
        .collect();
    let dotenv_name = project_env_file(&names);
    let mut findings = Vec::new();
    let repo = match Repo::discover(dir) {
        Ok(r) => Some(r),
        Err(e) => {
            findings.push(Finding::fail(
                "source",
                format!("{e}: deploy deploys commits; doctor read the working tree instead"),
                "`git init && git add -A && git commit -m 'first'` in the app's directory",
            ));
            None
        }
    };
    let commit = match (&repo, rev) {
        (Some(r), Some(rev)) => Some(r.resolve(rev)?),
        (Some(r), None) => match r.resolve("HEAD") {
            Ok(c) => Some(c),
            Err(_) => {
                findings.push(Finding::fail(
                    "source",
                    "the repository has no commit yet: deploy deploys commits; doctor read the working tree instead",
                    "commit the app (`git add -A && git commit`)",
                ));
                None
            }
        },
        (None, _) => None,
    };
    let working = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
    let mut files = Vec::new();
    for name in &names {
        let text = match (&repo, &commit) {
            (Some(repo), Some(c)) => {
                let text = repo.read_file(c, name)?;
                match (&text, working(name)) {
                    (Some(t), Some(w)) if *t != w => findings.push(Finding::warn(
                        "source",
                        format!(
                            "{name} has uncommitted changes: doctor read commit {}'s, which is what deploy deploys",
                            c.short
                        ),
                        format!("commit {name} to deploy (and check) the changes"),
                    )),
                    (None, _) => findings.push(Finding::fail(
                        "source",
                        format!("commit {} has no {name} (app.compose_files)", c.short),
                        format!("commit {name}, or fix [app] compose_files"),
                    )),
                    _ => {}
                }
                text
            }
            _ => {
                let text = working(name);
                if text.is_none() {
                    findings.push(Finding::fail(
                        "source",
                        format!("there is no {name} (app.compose_files) in {}", dir.display()),
                        "fix [app] compose_files",
                    ));
                }
                text
            }
        };
        if let Some(text) = text {
            files.push(ComposeFile {
                name: name.clone(),
                text,
            });
        }
    }
    if let Some(c) = &commit {
        if findings.iter().all(|f| f.level != Level::Fail) {
            findings.insert(
                0,
                Finding::ok(
                    "source",
                    format!(
                        "read {} from commit {} ({})",
                        names.join(", "),
                        c.short,
                        short_summary(&c.summary)
                    ),
                ),
            );
        }
    }
    let dotenv = match (&repo, &commit) {
        (Some(repo), Some(c)) => repo.read_file(c, &dotenv_name)?,
        _ => working(&dotenv_name),
    };
    let fetch_url = match (&config.source.fetch_url, &repo) {
        (Some(u), _) => Ok(u.expose().to_string()),
        (None, Some(repo)) => repo
            .remote_url(config.source.remote.expose())
            .map_err(|e| e.to_string()),
        (None, None) => Err("no git repository, so no remote to fetch from".into()),
    };
    Ok(Source {
        files,
        dotenv,
        fetch_url,
        findings,
    })
}

/// A commit's summary cut to fit a line.
fn short_summary(summary: &str) -> String {
    match summary.char_indices().nth(60) {
        Some((i, _)) => format!("{}...", &summary[..i]),
        None => summary.to_string(),
    }
}

/// The `.env` compose reads for interpolation: next to the first compose file
/// (compose's project directory), relative to the release.
fn project_env_file(compose_files: &[String]) -> String {
    match compose_files.first().and_then(|f| f.rsplit_once('/')) {
        Some((dir, _)) => format!("{dir}/.env"),
        None => ".env".to_string(),
    }
}

/// What each host's compose sees, known from here: its vars, the commit's
/// `.env`, and a shared `.env` if the copy next to deploy.toml is there.
fn local_definitions(config: &Config, hosts: &[Host], dir: &Path, dotenv: Option<&str>) -> Vec<Defined> {
    let names: Vec<String> = config
        .app
        .compose_files
        .iter()
        .map(|f| f.expose().to_string())
        .collect();
    let env_file = project_env_file(&names);
    let shared = config.app.shared_files.iter().any(|f| f.expose() == env_file);
    let local_shared = shared
        .then(|| std::fs::read_to_string(dir.join(&env_file)).ok())
        .flatten()
        .map(|t| review::env_file_names(&t));
    let committed = dotenv.map(review::env_file_names).unwrap_or_default();
    hosts
        .iter()
        .map(|h| {
            let mut names: BTreeSet<String> = h.vars.keys().cloned().collect();
            names.extend(committed.iter().cloned());
            names.extend(local_shared.iter().flatten().cloned());
            Defined {
                host: h.name.clone(),
                names,
                unsure: shared && local_shared.is_none(),
            }
        })
        .collect()
}

/// `accept-new` is trust on first use: fine on a laptop, not in CI.
fn host_key_policy(env: &Environment) -> Option<Finding> {
    (env.transport == TransportKind::Ssh
        && env
            .hosts
            .iter()
            .any(|h| h.ssh.host_key_policy == HostKeyPolicy::AcceptNew))
    .then(|| {
        Finding::warn(
            "host_keys",
            format!(
                "{}: host_key_policy = \"accept-new\" trusts a host's key the first time it is seen",
                env.name
            ),
            "in CI, use \"strict\" with a known_hosts file from a secret (see the README's CI recipes)",
        )
    })
}

/// One host's findings.
struct Report {
    host: String,
    unreachable: bool,
    current: Option<String>,
    elapsed_ms: u64,
    /// The names the host's shared `.env` defines, when it has one and it was read.
    shared_env: Option<BTreeSet<String>>,
    findings: Vec<Finding>,
}

/// Connects to the selected hosts and examines each one that answers.
async fn examine(
    config: &Config,
    env: &Environment,
    hosts: &[Host],
    source: &Source,
    reporter: &dyn Reporter,
) -> Vec<Report> {
    let (fleet, unreachable) = Fleet::connect_reachable(env, hosts, reporter).await;
    let mut reports = fleet.for_each(|m| examine_host(config, env, m, source)).await;
    for (name, why) in unreachable {
        let h = hosts.iter().find(|h| h.name == name).expect("a selected host");
        reports.push(Report {
            host: name.clone(),
            unreachable: true,
            current: None,
            elapsed_ms: 0,
            shared_env: None,
            findings: vec![ssh_failed(h, &why)],
        });
    }
    // In the file's order.
    reports.sort_by_key(|r| hosts.iter().position(|h| h.name == r.host));
    fleet.close().await;
    reports
}

async fn examine_host(config: &Config, env: &Environment, m: &Member, source: &Source) -> Report {
    let started = Instant::now();
    let h = &m.host;
    let mut findings = vec![ssh_ok(env, h)];
    let sent = SystemTime::now();
    let probed = m.remote.run(&host::probe(&m.layout).into(), Some(QUICK_TIMEOUT)).await;
    let answered = SystemTime::now();
    let facts = match probed {
        Ok(out) => host::Facts::parse(&out.stdout),
        Err(e) => {
            findings.push(Finding::fail(
                "probe",
                format!("the host did not answer doctor's questions: {e}"),
                "run `deploy doctor` again; if it persists, look at the host by hand",
            ));
            host::Facts::default()
        }
    };
    let git_needed = config.source.strategy == Strategy::Git;
    findings.extend(host::judge(&facts, env.compose, git_needed, h.path.expose()));
    findings.push(host::clock(facts.now(), sent, answered));
    if git_needed {
        findings.push(match &source.fetch_url {
            Err(why) => Finding::fail(
                "fetch_url",
                format!("no URL for the hosts to fetch from: {why}"),
                "set [source] fetch_url, or add the git remote [source] remote names",
            ),
            Ok(url) => {
                let branch = config.source.branch.expose();
                match m
                    .remote
                    .run(&host::ls_remote(url, branch).into(), Some(LS_REMOTE_TIMEOUT))
                    .await
                {
                    Ok(out) => host::fetch_url(url, branch, out.code, &out.stdout, &out.stderr),
                    Err(e) => host::fetch_url(url, branch, 1, "", &e.to_string()),
                }
            }
        });
    }
    let status = m.remote.run(&lock::status(&m.layout).into(), Some(QUICK_TIMEOUT)).await;
    findings.push(match status {
        Ok(out) => {
            let now = out.stdout.lines().last().and_then(|l| l.trim().parse().ok());
            host::lock(lock::parse_status(&out.stdout), now, &env.name)
        }
        Err(e) => Finding::warn("lock", format!("the lock could not be read: {e}"), "run doctor again"),
    });
    let read = m
        .remote
        .run(&history::read(&m.layout).into(), Some(QUICK_TIMEOUT))
        .await;
    match read {
        Ok(out) => {
            let history = history::parse(&out.stdout);
            findings.push(host::last_release(&history, facts.current(), &env.name));
            if let Some(w) = history.warning() {
                findings.push(Finding::warn(
                    "history",
                    w,
                    "nothing needed: the next release is recorded on a line of its own",
                ));
            }
        }
        Err(e) => findings.push(Finding::warn(
            "last_release",
            format!("the history could not be read: {e}"),
            "run doctor again",
        )),
    }
    let env_file = project_env_file(
        &config
            .app
            .compose_files
            .iter()
            .map(|f| f.expose().to_string())
            .collect::<Vec<_>>(),
    );
    let mut shared_env = None;
    if config.app.shared_files.iter().any(|f| f.expose() == env_file) {
        let path = format!("{}/{env_file}", m.layout.shared());
        if let Ok(out) = m.remote.run(&host::env_names(&path).into(), Some(QUICK_TIMEOUT)).await {
            // Absent on the host: then it defines nothing (deploy setup uploads it).
            shared_env = Some(host::parse_env_names(&out.stdout).unwrap_or_default());
        }
    }
    let findings = findings.into_iter().map(|f| f.on_host(&h.name)).collect();
    Report {
        host: h.name.clone(),
        unreachable: false,
        current: facts.current().map(str::to_string),
        elapsed_ms: started.elapsed().as_millis() as u64,
        shared_env,
        findings,
    }
}

/// `user@address:port` as ssh would be told.
fn target(h: &Host) -> String {
    format!(
        "{}{}{}",
        h.ssh
            .user
            .as_ref()
            .map(|u| format!("{}@", u.expose()))
            .unwrap_or_default(),
        h.address.expose(),
        h.ssh.port.map(|p| format!(":{p}")).unwrap_or_default()
    )
}

fn known_hosts(h: &Host) -> String {
    h.ssh
        .known_hosts_file
        .as_ref()
        .map_or("~/.ssh/known_hosts".to_string(), |f| f.display().to_string())
}

fn ssh_ok(env: &Environment, h: &Host) -> Finding {
    if env.transport == TransportKind::Local {
        return Finding::ok("ssh", "local transport: this machine, no SSH");
    }
    let policy = match h.ssh.host_key_policy {
        HostKeyPolicy::Strict => "strict",
        HostKeyPolicy::AcceptNew => "accept-new",
    };
    Finding::ok(
        "ssh",
        format!(
            "reached {} with {}; host key checked against {} ({policy})",
            target(h),
            h.ssh
                .identity_file
                .as_ref()
                .map_or("ssh's default keys".to_string(), |k| k.display().to_string()),
            known_hosts(h)
        ),
    )
}

/// A host that could not be reached, with the fix ssh's words point to.
fn ssh_failed(h: &Host, why: &str) -> Finding {
    let port = h.ssh.port.unwrap_or(22);
    let addr = h.address.expose();
    let known = known_hosts(h);
    let name_in_known = if port == 22 {
        addr.to_string()
    } else {
        format!("[{addr}]:{port}")
    };
    let fix = if why.contains("has changed") || why.contains("HOST IDENTIFICATION HAS CHANGED") {
        format!("the host's key changed: if it was reinstalled, remove its old line (`ssh-keygen -R '{name_in_known}' -f {known}`) and add the new key after checking its fingerprint; if it was not, someone may be in the middle")
    } else if why.contains("Host key verification failed") || why.contains("host key is known") {
        format!("the host is not in {known}: `ssh-keyscan -p {port} {addr} >> {known}`, after checking the fingerprint with whoever runs the host")
    } else if why.contains("Permission denied") {
        let key = h
            .ssh
            .identity_file
            .as_ref()
            .map_or("your public key".to_string(), |k| format!("{}.pub", k.display()));
        format!("the host refused the key: add {key} to the login user's ~/.ssh/authorized_keys on the host")
    } else if why.contains("Connection refused") {
        format!("nothing listens for SSH at {addr} port {port}: is sshd running, and is the port right?")
    } else if why.contains("timed out") || why.contains("Timeout") {
        format!("no answer from {addr} port {port} within connect_timeout: check the address, a firewall, a VPN")
    } else if why.contains("Could not resolve") {
        format!("`{addr}` does not resolve: check the name, or use an address")
    } else {
        format!(
            "try `ssh -p {port} {}` by hand",
            target(h).split(':').next().unwrap_or(addr)
        )
    };
    Finding::fail("ssh", format!("cannot reach {}: {why}", target(h)), fix).on_host(&h.name)
}

/// The compose part of doctor for `deploy init`: `files` from the working
/// tree, read against the config just written.
pub fn compose_findings(config: &Config, files: &[ComposeFile], dir: &Path) -> Vec<Finding> {
    let names: Vec<String> = files.iter().map(|f| f.name.clone()).collect();
    let dotenv = std::fs::read_to_string(dir.join(project_env_file(&names))).ok();
    let (_, mut findings) = review::review(config, files);
    for env in config.environments.values() {
        let defined = local_definitions(config, &env.hosts, dir, dotenv.as_deref());
        findings.extend(review::variables(&env.name, files, &defined));
    }
    findings
}
