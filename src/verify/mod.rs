//! The verification checklist: every check on every host, each retried with
//! backoff until it passes or its timeout runs out. One file per kind of check.

mod compose_ps;
mod exec;
mod http;
mod logs;
mod redis;
mod tunnel;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::activation::Record;
use crate::compose::{self, Container};
use crate::config::{Check, CheckKind, Config};
use crate::fleet::{Fleet, Member, QUICK_TIMEOUT};
use crate::release::shell;
use crate::remote::Cmd;
use crate::report::events::{Event, Reporter};
use tunnel::Tunnels;

/// How one check ended on one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckResult {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub ok: bool,
    /// Not run on this host (it does not run the service the check is about).
    pub skipped: bool,
    pub attempts: u32,
    pub elapsed_ms: u64,
    /// The last answer: status and body start, Redis reply, exit code and stderr...
    pub detail: String,
}

/// What a failing host looked like: its containers and their last log lines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Evidence {
    pub containers: Vec<Container>,
    /// Service → its last log lines.
    pub logs: BTreeMap<String, Vec<String>>,
    /// Container → its last healthcheck results, for containers not healthy.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub health: BTreeMap<String, Vec<String>>,
}

/// The checklist's outcome on one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostChecks {
    pub host: String,
    pub checks: Vec<CheckResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Evidence>,
}

impl HostChecks {
    /// Whether every check passed (or was skipped).
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|c| c.ok || c.skipped)
    }

    /// "api health, redis" — the failed checks' names.
    pub fn failed_names(&self) -> Vec<String> {
        self.checks
            .iter()
            .filter(|c| !c.ok && !c.skipped)
            .map(|c| c.name.clone())
            .collect()
    }
}

/// Lines of logs kept as evidence per service.
const EVIDENCE_LINES: u32 = 50;

/// One try of a check: passed or not, and what it saw.
pub(crate) type Attempt = Result<String, String>;

/// What a check runs against: a host and its live (or new) release.
pub(crate) struct Target<'a> {
    pub config: &'a Config,
    pub member: &'a Member,
    /// The release checked, with how it runs.
    pub record: &'a Record,
    /// The host's port forwards for this checklist run.
    pub tunnels: &'a Tunnels<'a>,
    /// The release's services as `compose config` resolves them, read once per checklist run.
    pub services: &'a tokio::sync::OnceCell<Vec<compose::Service>>,
    /// When the release was last started (host clock), read once per checklist run.
    pub started: &'a tokio::sync::OnceCell<Option<i64>>,
    /// Where to say how the checks are done (`-v`).
    pub reporter: &'a dyn Reporter,
    /// `ip:port` of one container on its compose network: `http` checks go
    /// there (through the host) instead of to their URL's host and port.
    pub container: Option<&'a str>,
    /// A swarm's listed other nodes, reached for exec checks on first use.
    pub nodes: &'a crate::swarm::Nodes,
    /// The project's containers as the Engine API lists them, one request
    /// for the checks that ask at once.
    pub listing: &'a Listing,
}

/// A listing through the Engine API, shared while it is under way.
type Listed = futures::future::Shared<futures::future::BoxFuture<'static, Result<Arc<Vec<Container>>, String>>>;

/// The containers of one host's project as the Engine API lists them during
/// one checklist run: a check that asks while a listing is under way waits
/// for that one instead of asking again, so the first attempts of the checks,
/// which start together, make one request; a check that asks after it ended
/// gets a new listing (an answer never older than the question, but for the
/// listing's own time).
#[derive(Default)]
pub(crate) struct Listing {
    under_way: std::sync::Mutex<Option<Listed>>,
}

impl Listing {
    /// The listing under way, else the one `start` starts.
    pub(crate) async fn get(
        &self,
        start: impl FnOnce() -> futures::future::BoxFuture<'static, Result<Vec<Container>, String>>,
    ) -> Result<Arc<Vec<Container>>, String> {
        use futures::FutureExt;
        let listed = {
            let mut slot = self.under_way.lock().unwrap_or_else(|e| e.into_inner());
            match slot.as_ref() {
                Some(listed) if listed.peek().is_none() => listed.clone(),
                _ => {
                    let listed = start().map(|r| r.map(Arc::new)).boxed().shared();
                    *slot = Some(listed.clone());
                    listed
                }
            }
        };
        listed.await
    }
}

impl Target<'_> {
    /// The project's containers (not one-offs): through the Engine API, or
    /// `docker ps` where that cannot be reached.
    pub(crate) async fn containers(&self) -> Result<Vec<Container>, String> {
        let m = self.member;
        if let Some(engine) = m.engine(self.reporter).await {
            if let Ok(list) = self.listed(engine).await {
                return Ok(list.as_ref().clone());
            }
        }
        let ps = m
            .remote
            .check(
                &compose::ps_cmd(&self.record.project, self.record.engine).into(),
                Some(QUICK_TIMEOUT),
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok(compose::parse_ps_of(
            &ps.stdout,
            &self.record.project,
            self.record.engine,
        ))
    }

    /// The project's containers (not one-offs) through the Engine API,
    /// shared with the checks that ask at the same time (see [`Listing`]).
    pub(crate) async fn listed(&self, engine: &crate::engine::Engine) -> Result<Arc<Vec<Container>>, String> {
        let (engine, project, kind) = (engine.clone(), self.record.project.clone(), self.record.engine);
        self.listing
            .get(move || Box::pin(async move { engine.containers(&project, kind).await }))
            .await
    }

    /// When the release was last started (see [`crate::release::STARTED_FILE`]),
    /// in seconds since the epoch on the host's clock: as its switch in this
    /// run said, else read on first use.
    pub(crate) async fn started(&self) -> Option<i64> {
        let m = self.member;
        *self
            .started
            .get_or_init(|| async {
                if self.record.release.is_empty() {
                    return None;
                }
                if let Some(at) = m.started_at(&self.record.release) {
                    return Some(at);
                }
                let file = format!(
                    "{}/{}",
                    m.layout.release(&self.record.release),
                    crate::release::STARTED_FILE
                );
                let out = m
                    .remote
                    .run(&Cmd::new("cat").arg(file).into(), Some(QUICK_TIMEOUT))
                    .await;
                out.ok().and_then(|o| o.stdout.trim().parse().ok())
            })
            .await
    }

    /// The release's services as `compose config` resolves them on the host
    /// (files merged, variables filled in), read on first use: as compose
    /// resolved them beside the release's build where that was in this run
    /// on this host, else as kept on the host for what compose reads (by
    /// that build or an earlier check), else from compose now, which keeps
    /// them. They may come from an earlier release whose compose read the
    /// same (see `release::build`): what they say of images and build
    /// contexts is that release's, so only the rest is for use.
    pub(crate) async fn services(&self) -> Result<&[compose::Service], String> {
        let m = self.member;
        self.services
            .get_or_try_init(|| async {
                if let Some(services) = m.resolved_services(&self.record.release) {
                    return Ok(services);
                }
                let resolve = crate::release::resolve(&m.resolving(self.record), &m.layout, &self.record.release);
                let out = m
                    .remote
                    .check(&resolve.into(), Some(QUICK_TIMEOUT))
                    .await
                    .map_err(|e| e.named("compose config").to_string())?;
                compose::services(&out.stdout).map_err(|e| format!("compose config: {e}"))
            })
            .await
            .map(Vec::as_slice)
    }
}

/// The check applies to this host: a host that lists its `services` skips checks
/// about services it does not run.
fn applies(check: &Check, member: &Member) -> bool {
    let Some(runs) = &member.host.services else {
        return true;
    };
    match (&check.service, &check.kind) {
        (Some(service), _) => runs.contains(service),
        (None, CheckKind::Logs { services, .. }) => services.is_empty() || services.iter().any(|s| runs.contains(s)),
        _ => true,
    }
}

/// Replaces `{{NAME}}` with the host's `vars.NAME`, so one check can follow
/// hosts that publish on different ports or addresses.
pub(crate) fn with_host_vars(text: &str, member: &Member) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or_else(|| format!("unclosed `{{{{` in {text}"))?;
        let name = after[..end].trim();
        let value = member.host.vars.get(name).ok_or_else(|| {
            format!(
                "host {} has no var `{name}` (used as {{{{{name}}}}} in the check)",
                member.host.name
            )
        })?;
        out.push_str(value.expose());
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

async fn attempt(check: &Check, target: &Target<'_>) -> Attempt {
    match &check.kind {
        CheckKind::Http { .. } => http::attempt(&check.kind, target).await,
        CheckKind::Redis { .. } => redis::attempt(&check.kind, target).await,
        CheckKind::Exec { .. } => exec::attempt(&check.kind, target).await,
        CheckKind::ComposePs => compose_ps::attempt(target).await,
        CheckKind::Logs { .. } => logs::attempt(&check.kind, target).await,
    }
}

/// A check that is judged once, after the others: a log line that must be absent
/// can appear at any moment, so it is looked for when the rest has settled.
fn settles_last(check: &Check) -> bool {
    matches!(
        &check.kind,
        CheckKind::Logs {
            absent: Some(_),
            present: None,
            ..
        }
    )
}

/// Runs one check until it passes or its time is up. See [`retry_delay`].
async fn run_check(check: &Check, target: &Target<'_>, reporter: &dyn Reporter) -> CheckResult {
    let started = Instant::now();
    let verify = &target.config.verify;
    let mut attempts = 0;
    let host = target.member.host.name.clone();
    let once = settles_last(check);
    let mut last: Option<String> = None;
    let (ok, detail) = loop {
        attempts += 1;
        let tried = Instant::now();
        let left = check.timeout.saturating_sub(started.elapsed());
        let result = match tokio::time::timeout(left.max(Duration::from_millis(100)), attempt(check, target)).await {
            Ok(r) => r,
            // Cut short by the timeout: the last real answer is the better evidence.
            Err(_) => Err(match &last {
                Some(prev) => format!("{prev} (then no answer before the timeout)"),
                None => format!("no answer within {}", humantime::format_duration(check.timeout)),
            }),
        };
        let delay = retry_delay(started.elapsed(), tried.elapsed(), verify.interval, verify.max_interval);
        match result {
            Ok(detail) => break (true, detail),
            Err(detail) if once || started.elapsed() + delay >= check.timeout => break (false, detail),
            Err(detail) => {
                last = Some(detail);
                tokio::time::sleep(delay).await;
            }
        }
    };
    let result = CheckResult {
        name: check.name.clone(),
        kind: check.kind.type_name().into(),
        ok,
        skipped: false,
        attempts,
        elapsed_ms: started.elapsed().as_millis() as u64,
        detail,
    };
    reporter.event(Event::Check {
        host,
        result: result.clone(),
    });
    result
}

/// How long to wait before the next attempt of a check that has waited
/// `waited` so far and whose last attempt took `took`: a twentieth of the time
/// already waited, so a service that becomes healthy is noticed within 5% of
/// the time it took (and within `interval` early on); never less than the last
/// attempt took, so a costly check (an exec in a container) keeps at most half
/// of the time busy; within `interval` ..= `max_interval`.
pub(crate) fn retry_delay(waited: Duration, took: Duration, interval: Duration, max_interval: Duration) -> Duration {
    (waited / 20).max(took).clamp(interval, max_interval.max(interval))
}

/// Runs `check`, or records it as skipped where the host does not run its service.
async fn run_or_skip(check: &Check, target: &Target<'_>, reporter: &dyn Reporter) -> CheckResult {
    if applies(check, target.member) {
        return run_check(check, target, reporter).await;
    }
    CheckResult {
        name: check.name.clone(),
        kind: check.kind.type_name().into(),
        ok: true,
        skipped: true,
        attempts: 0,
        elapsed_ms: 0,
        detail: "this host does not run the service".into(),
    }
}

/// Runs the checklist on one host: its checks concurrently, absent-log checks
/// last; evidence is gathered when something failed. The port forwards its
/// checks used are closed when they are done (or, if this is cut short, before
/// the host's next command).
pub async fn verify_host(config: &Config, member: &Member, record: &Record, reporter: &dyn Reporter) -> HostChecks {
    let tunnels = Tunnels::new(member.remote.as_ref());
    let services = tokio::sync::OnceCell::new();
    let started = tokio::sync::OnceCell::new();
    let nodes = crate::swarm::Nodes::default();
    let listing = Listing::default();
    let target = Target {
        config,
        member,
        record,
        tunnels: &tunnels,
        services: &services,
        started: &started,
        reporter,
        container: None,
        nodes: &nodes,
        listing: &listing,
    };
    let checks = &config.verify.checks;
    let (last, first): (Vec<&Check>, Vec<&Check>) = checks.iter().partition(|c| settles_last(c));
    let mut results = futures::future::join_all(first.into_iter().map(|c| run_or_skip(c, &target, reporter))).await;
    results.extend(futures::future::join_all(last.into_iter().map(|c| run_or_skip(c, &target, reporter))).await);
    // Report in the file's order.
    results.sort_by_key(|r| checks.iter().position(|c| c.name == r.name));
    let mut host = HostChecks {
        host: member.host.name.clone(),
        checks: results,
        evidence: None,
    };
    if !host.ok() {
        host.evidence = Some(evidence(&target).await);
    }
    tunnels.close().await;
    nodes.close().await;
    host
}

/// The `http` checks about `service` (`service = "..."` in the check): what
/// says a new container of it is ready when it has no healthcheck.
pub fn http_checks_of<'c>(config: &'c Config, service: &str) -> Vec<&'c Check> {
    config
        .verify
        .checks
        .iter()
        .filter(|c| matches!(c.kind, CheckKind::Http { .. }) && c.service.as_deref() == Some(service))
        .collect()
}

/// Runs `service`'s `http` checks (see [`http_checks_of`]) against one new
/// container at `address` (`ip:port` on its network, reached through the
/// host; plain HTTP, the checks' path, method, headers and Host): each retried
/// until it passes or its timeout runs out, as in the checklist, and reported
/// as "<check> on new container <name>". Err: the first one that failed.
pub async fn container_ready(
    config: &Config,
    member: &Member,
    record: &Record,
    service: &str,
    (name, address): (&str, &str),
    reporter: &dyn Reporter,
) -> Result<(), CheckResult> {
    let tunnels = Tunnels::new(member.remote.as_ref());
    let services = tokio::sync::OnceCell::new();
    let started = tokio::sync::OnceCell::new();
    let nodes = crate::swarm::Nodes::default();
    let listing = Listing::default();
    let target = Target {
        config,
        member,
        record,
        tunnels: &tunnels,
        services: &services,
        started: &started,
        reporter,
        container: Some(address),
        nodes: &nodes,
        listing: &listing,
    };
    let checks: Vec<Check> = http_checks_of(config, service)
        .into_iter()
        .map(|c| Check {
            name: format!("{} on new container {name}", c.name),
            ..c.clone()
        })
        .collect();
    let results = futures::future::join_all(checks.iter().map(|c| run_check(c, &target, reporter))).await;
    tunnels.close().await;
    match results.into_iter().find(|r| !r.ok) {
        Some(failed) => Err(failed),
        None => Ok(()),
    }
}

/// Runs the checklist on every member, `parallel` hosts at a time.
pub async fn verify_members(
    config: &Config,
    fleet: &Fleet,
    members: &[usize],
    record_of: impl Fn(usize) -> Record,
    reporter: &dyn Reporter,
) -> Vec<HostChecks> {
    use futures::stream::{self, StreamExt};
    stream::iter(members.iter().copied())
        .map(|i| {
            let record = record_of(i);
            async move { verify_host(config, &fleet.members[i], &record, reporter).await }
        })
        .buffered(fleet.env.parallel.max(1))
        .collect()
        .await
}

/// The containers' state and each service's last log lines.
async fn evidence(target: &Target<'_>) -> Evidence {
    let m = target.member;
    if target.record.engine == crate::config::Orchestrator::Swarm {
        return crate::swarm::evidence(m, &target.record.project).await;
    }
    let containers = target.containers().await.unwrap_or_default();
    let mut logs = BTreeMap::new();
    let mut health = BTreeMap::new();
    for c in &containers {
        if let Some(lines) = last_lines(m, &c.name, target.reporter).await {
            logs.entry(c.service.clone()).or_insert_with(Vec::new).extend(lines);
        }
        if matches!(c.health(), Some("unhealthy" | "starting")) {
            if let Some(p) = probes(m, &c.name, target.reporter).await {
                health.insert(c.name.clone(), p);
            }
        }
    }
    Evidence {
        containers,
        logs,
        health,
    }
}

/// Container `name`'s last [`EVIDENCE_LINES`] log lines: through the Engine
/// API, else `docker logs` on the host; `None` when neither answers.
pub(crate) async fn last_lines(m: &Member, name: &str, reporter: &dyn Reporter) -> Option<Vec<String>> {
    if let Some(engine) = m.engine(reporter).await {
        if let Ok(lines) = engine.logs(name, None, Some(EVIDENCE_LINES)).await {
            return Some(lines);
        }
    }
    let cmd = shell(
        r#"docker logs --tail "$1" "$2" 2>&1"#,
        &[&EVIDENCE_LINES.to_string(), name],
    );
    let out = m.remote.run(&cmd.into(), Some(QUICK_TIMEOUT)).await.ok()?;
    Some(out.stdout.lines().map(str::to_string).collect())
}

/// Container `name`'s last healthcheck results ([`health_log`]): through
/// the Engine API, else `docker inspect` on the host.
pub(crate) async fn probes(m: &Member, name: &str, reporter: &dyn Reporter) -> Option<Vec<String>> {
    if let Some(engine) = m.engine(reporter).await {
        if let Ok(p) = engine.health_log(name).await {
            return Some(p);
        }
    }
    let cmd = Cmd::new("docker")
        .args(["inspect", "--format", "{{json .State.Health.Log}}"])
        .arg(name);
    let out = m.remote.run(&cmd.into(), Some(QUICK_TIMEOUT)).await.ok()?;
    Some(health_log(&out.stdout))
}

/// Docker's health log (JSON) as one line per probe: "exit 1: PING failed".
pub(crate) fn health_log(json: &str) -> Vec<String> {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "ExitCode")]
        exit_code: i64,
        #[serde(rename = "Output")]
        output: String,
    }
    let probes: Vec<Probe> = serde_json::from_str(json.trim()).unwrap_or_default();
    probes
        .iter()
        .map(|p| format!("exit {}: {}", p.exit_code, excerpt(&p.output, 300)))
        .collect()
}

/// The first `n` characters of `s`, on one line.
pub fn excerpt(s: &str, n: usize) -> String {
    let flat: String = s
        .trim()
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect();
    if flat.chars().count() > n {
        format!("{}...", flat.chars().take(n).collect::<String>())
    } else {
        flat
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn checks_that_ask_for_the_containers_at_once_share_one_listing_and_a_later_one_lists_again() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let listing = Listing::default();
        let started = Arc::new(AtomicUsize::new(0));
        let (release, held) = tokio::sync::oneshot::channel::<()>();
        let held = futures::FutureExt::shared(held);
        let start = |n: &'static str| {
            let (started, held) = (started.clone(), held.clone());
            move || -> futures::future::BoxFuture<'static, Result<Vec<Container>, String>> {
                started.fetch_add(1, Ordering::SeqCst);
                Box::pin(async move {
                    let _ = held.await;
                    Ok(vec![Container {
                        service: n.into(),
                        state: "running".into(),
                        status: String::new(),
                        name: n.into(),
                    }])
                })
            }
        };
        // Three checks ask while the first listing is held open: one request, one answer.
        let asking = futures::future::join3(
            listing.get(start("first")),
            listing.get(start("second")),
            listing.get(start("third")),
        );
        let (a, b, c) = tokio::join!(asking, async { release.send(()).unwrap() }).0;
        assert_eq!(started.load(Ordering::SeqCst), 1);
        for answer in [a, b, c] {
            assert_eq!(answer.unwrap()[0].name, "first");
        }
        // Asked after it ended: listed afresh.
        assert_eq!(listing.get(start("later")).await.unwrap()[0].name, "later");
        assert_eq!(started.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn retries_come_sooner_than_a_twentieth_of_the_wait_and_no_busier_than_half() {
        let ms = Duration::from_millis;
        let (interval, max) = (ms(100), ms(5000));
        // Early on: every interval.
        assert_eq!(retry_delay(ms(0), ms(2), interval, max), ms(100));
        assert_eq!(retry_delay(ms(1900), ms(2), interval, max), ms(100));
        // A check that has waited 10 s tries every 0.5 s; after 5 minutes, at the ceiling.
        assert_eq!(retry_delay(ms(10_000), ms(2), interval, max), ms(500));
        assert_eq!(retry_delay(ms(300_000), ms(2), interval, max), ms(5000));
        // An attempt that took 300 ms is followed by at least 300 ms of rest.
        assert_eq!(retry_delay(ms(1000), ms(300), interval, max), ms(300));
    }
}
