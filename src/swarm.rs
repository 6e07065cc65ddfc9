//! `engine = "swarm"`: the release runs as a Docker Swarm stack, deployed from
//! one manager. The stack file is the release's own compose files, deploy's
//! override (its images, by release) and [`STACK_OVERRIDE`] (start-first
//! updates for `app.zero_downtime` services), given to `docker stack deploy`
//! with the host's variables exported (stack deploy interpolates from its
//! environment; it reads no `.env`). A switch is converged when every service
//! of the stack runs its desired number of tasks, all on the image its spec
//! names, and the release's built services name the release's images; a new
//! task that fails ends the wait at once, as evidence.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::activation::Record;
use crate::compose::{self, Container, OVERRIDE_FILE};
use crate::fleet::{Member, QUICK_TIMEOUT};
use crate::release::shell;
use crate::remote::{Cmd, RemoteError};
use crate::verify::Evidence;

/// The release's file of Swarm-only settings, a `-c` of the stack after
/// deploy's override.
pub const STACK_OVERRIDE: &str = ".deploy-swarm.yml";

/// The release's file naming its built images in `[build] registry` (where
/// every node pulls them from), the last `-c` of the stack; written when the
/// images were pushed, `services: {}` without a registry.
pub const REGISTRY_OVERRIDE: &str = ".deploy-registry.yml";

/// [`REGISTRY_OVERRIDE`]'s text before anything is pushed.
pub const NO_REGISTRY: &str = "# written by deploy: images are not in a registry\nservices: {}\n";

/// How long a stack may take to converge after `docker stack deploy`.
pub const CONVERGE_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// How long a converged stack is watched before the switch counts as done: a
/// task that runs for a moment and then exits is not a release that runs
/// (Swarm's own `update_config.monitor` default).
pub const MONITOR: Duration = Duration::from_secs(5);

/// The text of [`STACK_OVERRIDE`]: `update_config.order: start-first` for each
/// of `start_first` (Swarm then keeps the old task until the new one runs,
/// healthy where the service has a healthcheck).
pub fn stack_override(start_first: &[String]) -> String {
    if start_first.is_empty() {
        return "# written by deploy: no swarm-only settings\nservices: {}\n".to_string();
    }
    let mut out = String::from("# written by deploy: start-first updates (app.zero_downtime)\nservices:\n");
    for s in start_first {
        out.push_str(&format!(
            "  {}:\n    deploy:\n      update_config:\n        order: start-first\n",
            serde_json::Value::String(s.clone())
        ));
    }
    out
}

/// Exports the release's env file, and its registry credentials as the
/// Docker client's config where it has them, then runs the arguments.
const WITH_ENV_AND_AUTH: &str = r#"[ ! -f ./.deploy-env ] || . ./.deploy-env
[ ! -f ./.deploy-docker/config.json ] || export DOCKER_CONFIG="$PWD/.deploy-docker"
exec "$@""#;

/// `docker stack <args> -c <file>...` in the release's directory with the
/// host's variables exported, as compose commands are run (and the registry
/// credentials of the release, which `--with-registry-auth` hands to the nodes).
fn stack_cmd(m: &Member, record: &Record, verb: &[&str]) -> Cmd {
    let mut cmd = Cmd::new("sh")
        .arg("-c")
        .arg(WITH_ENV_AND_AUTH)
        .arg("sh")
        .arg("docker")
        .arg("stack")
        .args(verb.iter().copied())
        .current_dir(m.layout.release(&record.release));
    for f in record
        .compose_files
        .iter()
        .map(String::as_str)
        .chain([OVERRIDE_FILE, STACK_OVERRIDE, REGISTRY_OVERRIDE])
    {
        cmd = cmd.arg("-c").arg(f);
    }
    cmd
}

/// Checks the release's stack file as Swarm will read it (merged,
/// interpolated): what `docker stack deploy` would refuse is found while
/// staging, before any switch.
pub fn validate(m: &Member, record: &Record) -> Cmd {
    Cmd::new("sh")
        .arg("-c")
        .arg(r#"sh -c "$1" >/dev/null"#)
        .arg("sh")
        .arg(stack_cmd(m, record, &["config"]).as_word())
}

/// Deploys the release's stack (services no longer in it are removed).
/// Without a registry (a single-node swarm) no registry is asked for the
/// images' digests: the release's images exist only on this engine, and an
/// engine cut off from Docker Hub would wait for it.
pub fn deploy(m: &Member, record: &Record) -> Cmd {
    let deploy = stack_cmd(m, record, &["deploy", "--with-registry-auth", "--prune"]).arg(record.project.as_str());
    Cmd::new("sh")
        .arg("-c")
        .arg(r#"r=always; grep -qs 'image:' "$1" || r=never; sh -c "$2 --resolve-image $r""#)
        .arg("sh")
        .arg(format!("{}/{REGISTRY_OVERRIDE}", m.layout.release(&record.release)))
        .arg(deploy.as_word())
}

/// Whether the stack runs what `record` (the live release of the manager
/// the run goes through, if any) says: each built service on the release's
/// image. A manager whose state does not match (the stack was changed
/// through another manager, or by hand) must not be the one that decides.
pub async fn agrees(m: &Member, record: Option<&Record>) -> Result<(), String> {
    let state = read(m, &m.host.project).await.map_err(|e| e.to_string())?;
    let Some(record) = record else {
        return match state.services.is_empty() {
            true => Ok(()),
            false => Err(format!(
                "stack {} runs, and this manager has no live release of it",
                m.host.project
            )),
        };
    };
    let images = release_images(m, record).await.map_err(|e| e.to_string())?;
    for (service, image) in &images {
        match state.services.iter().find(|s| &s.name == service) {
            Some(s) if undigested(&s.image) == undigested(image) => {}
            Some(s) => {
                return Err(format!(
                    "its {service} runs {}, not {image} of {} (this manager's live release)",
                    undigested(&s.image),
                    record.release
                ))
            }
            None => return Err(format!("it has no service {service}, which {} runs", record.release)),
        }
    }
    Ok(())
}

// $1 the stack. Prints `S<TAB>name<TAB>mode<TAB>replicas` per service (as
// `service ls` counts them), `U<TAB>name<TAB>image<TAB>update state<TAB>update
// start` per service (its spec's image, digest included, and Swarm's update
// status), then `T<TAB>id<TAB>name<TAB>image<TAB>desired<TAB>current<TAB>error`
// per task.
const STATE: &str = r#"
ids=$(docker service ls -q --filter "label=com.docker.stack.namespace=$1") || exit $?
[ -n "$ids" ] || exit 0
docker service ls --filter "label=com.docker.stack.namespace=$1" --format 'S	{{.Name}}	{{.Mode}}	{{.Replicas}}' || exit $?
docker service inspect --format 'U	{{.Spec.Name}}	{{.Spec.TaskTemplate.ContainerSpec.Image}}	{{if .UpdateStatus}}{{.UpdateStatus.State}}	{{.UpdateStatus.StartedAt}}{{else}}	{{end}}' $ids || exit $?
docker stack ps --no-trunc --format 'T	{{.ID}}	{{.Name}}	{{.Image}}	{{.DesiredState}}	{{.CurrentState}}	{{.Error}}' "$1"
"#;

/// The stack's services and tasks (see [`State`]).
pub fn state_cmd(stack: &str) -> Cmd {
    shell(STATE, &[stack])
}

/// A service of the stack, named without the stack's prefix.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceState {
    pub name: String,
    /// `replicated`, `global`, `replicated job`, `global job`.
    pub mode: String,
    /// Tasks wanted (`replicas`; 1 per eligible node for a global service).
    pub desired: u32,
    /// A job's completed tasks (`(1/1 completed)`).
    pub completed: Option<(u32, u32)>,
    /// The image its spec names (a digest included where Swarm pinned one).
    pub image: String,
    /// Swarm's update status (`updating`, `completed`, `paused`,
    /// `rollback_started`...), empty when the service was never updated.
    pub update: String,
    /// When that update started: which update the status is about.
    pub update_started: String,
}

impl ServiceState {
    fn job(&self) -> bool {
        self.mode.ends_with("job")
    }
}

/// A task of the stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    pub id: String,
    pub service: String,
    /// `api.1`: the task's slot, as `docker service ps` names it.
    pub name: String,
    /// Its image, a digest included where Swarm pinned one.
    pub image: String,
    /// `Running`, `Shutdown`, `Complete`...
    pub desired: String,
    /// `Running 3 seconds ago`, `Failed 1 second ago`...
    pub current: String,
    pub error: String,
}

impl Task {
    fn failed(&self) -> bool {
        ["Failed", "Rejected"].iter().any(|s| self.current.starts_with(s))
    }
    fn running(&self) -> bool {
        self.current.starts_with("Running")
    }
}

/// What [`state_cmd`] printed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    pub services: Vec<ServiceState>,
    pub tasks: Vec<Task>,
}

/// An image reference as Docker means it: `docker.io/` and `library/` are
/// implied (`redis:7` is `docker.io/library/redis:7`).
fn normal(image: &str) -> &str {
    let i = image.strip_prefix("docker.io/").unwrap_or(image);
    i.strip_prefix("library/").unwrap_or(i)
}

/// The reference without `@sha256:...`.
fn undigested(image: &str) -> &str {
    normal(image.split('@').next().unwrap_or(image))
}

/// Whether two references name the same image: digests compared where both
/// have one (Swarm pins one when it can reach the registry), else the names.
fn same_image(a: &str, b: &str) -> bool {
    match (a.contains('@'), b.contains('@')) {
        (true, true) => normal(a) == normal(b),
        _ => undigested(a) == undigested(b),
    }
}

/// Parses `(x/y completed)` of a job's replicas.
fn completed(replicas: &str) -> Option<(u32, u32)> {
    let inner = replicas.split('(').nth(1)?.strip_suffix("completed)")?.trim();
    let (x, y) = inner.split_once('/')?;
    Some((x.trim().parse().ok()?, y.trim().parse().ok()?))
}

/// Parses [`state_cmd`]'s output for stack `stack`.
pub fn parse_state(stack: &str, out: &str) -> State {
    let prefix = format!("{stack}_");
    let short = |name: &str| name.strip_prefix(&prefix).unwrap_or(name).to_string();
    let mut state = State::default();
    let mut specs: BTreeMap<String, (String, String, String)> = BTreeMap::new();
    for line in out.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        match f.as_slice() {
            ["S", name, mode, replicas] => {
                let desired = replicas
                    .split_whitespace()
                    .next()
                    .and_then(|r| r.split('/').nth(1))
                    .and_then(|d| d.parse().ok())
                    .unwrap_or(1);
                state.services.push(ServiceState {
                    name: short(name),
                    mode: mode.to_string(),
                    desired,
                    completed: completed(replicas),
                    ..ServiceState::default()
                });
            }
            ["U", name, image, update, started] => {
                specs.insert(
                    short(name),
                    (image.to_string(), update.to_string(), started.to_string()),
                );
            }
            ["T", id, name, image, desired, current, error @ ..] => {
                state.tasks.push(Task {
                    id: id.to_string(),
                    service: String::new(),
                    name: short(name),
                    image: image.to_string(),
                    desired: desired.to_string(),
                    current: current.to_string(),
                    error: error.join("\t"),
                });
            }
            _ => {}
        }
    }
    for s in &mut state.services {
        if let Some((image, update, started)) = specs.remove(&s.name) {
            (s.image, s.update, s.update_started) = (image, update, started);
        }
    }
    // A task's service is the longest service name its slot starts with (`api.1`).
    for t in &mut state.tasks {
        t.service = state
            .services
            .iter()
            .map(|s| s.name.as_str())
            .filter(|s| t.name.strip_prefix(s).is_some_and(|r| r.starts_with('.')))
            .max_by_key(|s| s.len())
            .unwrap_or_default()
            .to_string();
    }
    state
}

/// Where a stack stands against the release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every service runs its desired tasks on its image: what each runs.
    Converged(String),
    /// Not yet: what is still missing.
    Waiting(String),
    /// A new task failed, or Swarm paused or rolled back an update: which and why.
    Failed(String),
}

/// Judges `state` against a release whose built services run `images`
/// (service → image). `before` is the stack as it was before the deploy: a
/// task that is not in it and failed on a service's current image, or an
/// update Swarm paused or rolled back since, fails the switch; an update
/// still going on is waited for.
pub fn judge(state: &State, images: &BTreeMap<String, String>, before: &State) -> Verdict {
    let mut waiting = Vec::new();
    let mut fine = Vec::new();
    if state.services.is_empty() {
        return Verdict::Waiting("the stack has no services".to_string());
    }
    let old_tasks: BTreeSet<&str> = before.tasks.iter().map(|t| t.id.as_str()).collect();
    for s in &state.services {
        let tasks: Vec<&Task> = state.tasks.iter().filter(|t| t.service == s.name).collect();
        if let Some(t) = tasks
            .iter()
            .find(|t| !old_tasks.contains(t.id.as_str()) && same_image(&t.image, &s.image) && t.failed())
        {
            let why = if t.error.is_empty() {
                t.current.as_str()
            } else {
                t.error.as_str()
            };
            return Verdict::Failed(format!(
                "{}: task {} on {} failed: {why}",
                s.name,
                t.name,
                undigested(&s.image)
            ));
        }
        let stale_status = before
            .services
            .iter()
            .any(|b| b.name == s.name && b.update == s.update && b.update_started == s.update_started);
        match s.update.as_str() {
            "paused" | "rollback_started" | "rollback_paused" | "rollback_completed" if !stale_status => {
                return Verdict::Failed(format!(
                    "{}: Swarm's update of it is {}",
                    s.name,
                    s.update.replace('_', " ")
                ));
            }
            "updating" | "rollback_started" => {
                waiting.push(format!("{}: Swarm is updating it", s.name));
                continue;
            }
            _ => {}
        }
        if let Some(wanted) = images.get(&s.name) {
            if undigested(&s.image) != undigested(wanted) {
                waiting.push(format!(
                    "{}: runs {} (the release's is {wanted})",
                    s.name,
                    undigested(&s.image)
                ));
                continue;
            }
        }
        if s.job() {
            match s.completed {
                Some((done, of)) if done >= of => fine.push(format!("{}: job completed {done}/{of}", s.name)),
                Some((done, of)) => waiting.push(format!("{}: job completed {done}/{of}", s.name)),
                None => waiting.push(format!("{}: job not completed", s.name)),
            }
            continue;
        }
        let live: Vec<&&Task> = tasks.iter().filter(|t| t.desired == "Running").collect();
        let ready = live
            .iter()
            .filter(|t| t.running() && same_image(&t.image, &s.image))
            .count() as u32;
        let stale = live.iter().filter(|t| !same_image(&t.image, &s.image)).count();
        let image = undigested(&s.image);
        if ready >= s.desired && stale == 0 {
            fine.push(format!("{}: {ready}/{} running {image}", s.name, s.desired));
        } else {
            let states: BTreeSet<&str> = live
                .iter()
                .map(|t| t.current.split_whitespace().next().unwrap_or(""))
                .collect();
            let states: Vec<&str> = states.into_iter().collect();
            waiting.push(format!(
                "{}: {ready}/{} running {image}{}",
                s.name,
                s.desired,
                match (stale, states.is_empty()) {
                    (0, true) => String::new(),
                    (0, false) => format!(" ({})", states.join(", ")),
                    (n, _) => format!(" ({n} task(s) still on another image)"),
                }
            ));
        }
    }
    if waiting.is_empty() {
        Verdict::Converged(fine.join("; "))
    } else {
        Verdict::Waiting(waiting.join("; "))
    }
}

/// The stack's services and tasks, read now.
pub async fn read(m: &Member, stack: &str) -> Result<State, RemoteError> {
    let out = m.remote.check(&state_cmd(stack).into(), Some(QUICK_TIMEOUT)).await?;
    Ok(parse_state(stack, &out.stdout))
}

// $1 the release dir. Deploy's override, a separator line, the registry's.
const IMAGE_FILES: &str = r#"cat "$1/.deploy-compose.yml" || exit $?
echo "---"
cat "$1/.deploy-registry.yml" 2>/dev/null || true
"#;

/// The images release `record`'s built services run (service → image), as
/// its override file names them (content tags, see `crate::release`), or
/// [`REGISTRY_OVERRIDE`] where the images were pushed.
pub async fn release_images(m: &Member, record: &Record) -> Result<BTreeMap<String, String>, RemoteError> {
    let dir = m.layout.release(&record.release);
    let out = m
        .remote
        .check(&shell(IMAGE_FILES, &[&dir]).into(), Some(QUICK_TIMEOUT))
        .await?;
    let mut images = BTreeMap::new();
    for text in out.stdout.split("\n---\n") {
        for s in compose::services(text).unwrap_or_default() {
            if let Some(image) = s.image {
                images.insert(s.name, image);
            }
        }
    }
    Ok(images)
}

// $1 the registry file to write, then triples of local image, its reference
// by release and by content: tags and pushes both (the manager keeps the
// content reference, which its stack names; the release's is taken off again),
// then writes the file from stdin.
const PUBLISH: &str = r#"set -f
f="$1"; shift
while [ $# -ge 3 ]; do
  docker tag "$1" "$2" && docker tag "$1" "$3" || exit $?
  docker push -q "$2" >/dev/null && docker push -q "$3" >/dev/null
  rc=$?
  docker image rm "$2" >/dev/null 2>&1
  [ "$rc" -eq 0 ] || exit "$rc"
  shift 3
done
umask 022
cat > "$f.tmp" && mv "$f.tmp" "$f"
"#;

/// Pushes release `record`'s built images to `registry` from the manager
/// (`<registry>/<service>:<release>` and the content tag), then names the
/// content-tagged references in [`REGISTRY_OVERRIDE`]: every node pulls the
/// very image the manager has, and a service whose image did not change keeps
/// the same reference (Swarm leaves it alone). Returns the command and the
/// file's text.
pub fn publish(
    m: &Member,
    record: &Record,
    (registry, auth): (&str, bool),
    images: &BTreeMap<String, String>,
) -> (Cmd, String) {
    let mut args = vec![format!("{}/{REGISTRY_OVERRIDE}", m.layout.release(&record.release))];
    let mut text = String::from("# written by deploy: the release's images in the registry\nservices:\n");
    for (service, image) in images {
        let repo = format!("{registry}/{}", service.to_lowercase());
        let content = image
            .rsplit_once(':')
            .map(|(_, tag)| tag)
            .unwrap_or(record.release.as_str());
        let by_content = format!("{repo}:{content}");
        args.extend([image.clone(), format!("{repo}:{}", record.release), by_content.clone()]);
        text.push_str(&format!(
            "  {}:\n    image: {}\n",
            serde_json::Value::String(service.clone()),
            serde_json::Value::String(by_content)
        ));
    }
    if images.is_empty() {
        text = NO_REGISTRY.to_string();
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let cmd = crate::release::with_registry_auth(shell(PUBLISH, &args), &m.layout, &record.release, auth);
    (cmd, text)
}

/// Why a stack did not converge.
#[derive(Debug)]
pub struct NotConverged {
    pub why: String,
    pub evidence: Evidence,
}

/// Waits until the stack runs release `record` (see [`judge`]) and has kept
/// running it for [`MONITOR`], at most [`CONVERGE_TIMEOUT`], polling every
/// half second.
pub async fn wait(m: &Member, record: &Record, before: &State) -> Result<String, NotConverged> {
    let started = Instant::now();
    let images = match release_images(m, record).await {
        Ok(images) => images,
        Err(e) => {
            return Err(NotConverged {
                why: e.to_string(),
                evidence: evidence(m, &record.project).await,
            })
        }
    };
    let mut since: Option<Instant> = None;
    loop {
        let verdict = match read(m, &record.project).await {
            Ok(state) => judge(&state, &images, before),
            Err(e) => Verdict::Waiting(e.to_string()),
        };
        if !matches!(verdict, Verdict::Converged(_)) {
            since = None;
        }
        let why = match verdict {
            Verdict::Converged(said) if since.is_some_and(|t| t.elapsed() >= MONITOR) => return Ok(said),
            Verdict::Converged(_) => {
                since.get_or_insert_with(Instant::now);
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            Verdict::Failed(why) => why,
            Verdict::Waiting(why) if started.elapsed() >= CONVERGE_TIMEOUT => {
                format!("not converged after {}s: {why}", CONVERGE_TIMEOUT.as_secs())
            }
            Verdict::Waiting(_) => {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        return Err(NotConverged {
            evidence: evidence(m, &record.project).await,
            why,
        });
    }
}

// $1 lines, then pairs of a service and one of its tasks. Each task's last log
// lines, as `service<TAB>line`. Task by task: `docker service logs` of a whole
// service stops at the first of its tasks the engine no longer finds (a task
// past the history limit, removed while the logs were read), and a failing
// service is the one whose tasks come and go (seen in CI: the failed task's
// lines were lost behind "task ... not found").
const TASK_LOGS: &str = r#"
n="$1"; shift
while [ $# -ge 2 ]; do
  docker service logs --no-task-ids --no-trunc --tail "$n" "$2" 2>&1 | while IFS= read -r line || [ -n "$line" ]; do printf '%s\t%s\n' "$1" "$line"; done
  shift 2
done
"#;

/// A stack's tasks (as containers: service, state, error, slot) and the last
/// log lines of each of those tasks, by service.
pub async fn evidence(m: &Member, stack: &str) -> Evidence {
    let state = read(m, stack).await.unwrap_or_default();
    let containers = tasks_as_containers(&state);
    let mut args: Vec<&str> = vec!["50"];
    for t in state.tasks.iter().filter(|t| shown(t)) {
        args.extend([t.service.as_str(), t.id.as_str()]);
    }
    let mut logs: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if let Ok(out) = m.remote.run(&shell(TASK_LOGS, &args).into(), Some(QUICK_TIMEOUT)).await {
        for (service, line) in out.stdout.lines().filter_map(|l| l.split_once('\t')) {
            logs.entry(service.to_string()).or_default().push(line.to_string());
        }
    }
    Evidence {
        containers,
        logs,
        health: BTreeMap::new(),
    }
}

/// A task that status and evidence show: one meant to run, or one that failed.
fn shown(t: &Task) -> bool {
    t.desired == "Running" || t.failed()
}

/// Tasks in the shape of containers, for status and evidence: state is the
/// task's current state, status its error, name its slot.
pub fn tasks_as_containers(state: &State) -> Vec<Container> {
    state
        .tasks
        .iter()
        .filter(|t| shown(t))
        .map(|t| Container {
            service: t.service.clone(),
            state: t.current.split_whitespace().next().unwrap_or("").to_lowercase(),
            status: if t.error.is_empty() {
                t.current.clone()
            } else {
                format!("{} ({})", t.current, t.error)
            },
            name: t.name.clone(),
        })
        .collect()
}

// $1 the stack, $2 since (unix seconds, "" for all), then services (none: all).
// Prints `service<TAB>line` per line; a service with no task fails.
const CHECK_LOGS: &str = r#"
stack="$1"; since="$2"; shift 2
[ $# -gt 0 ] || set -- $(docker service ls --filter "label=com.docker.stack.namespace=$stack" --format '{{.Name}}' | sed "s/^${stack}_//")
for s in "$@"; do
  [ -n "$(docker service ps -q "${stack}_$s" 2>/dev/null)" ] || { echo "no task of $s" >&2; exit 1; }
  if [ -n "$since" ]; then docker service logs --raw --no-trunc --since "$since" "${stack}_$s" 2>&1; else docker service logs --raw --no-trunc "${stack}_$s" 2>&1; fi |
    while IFS= read -r line || [ -n "$line" ]; do printf '%s\t%s\n' "$s" "$line"; done
done
"#;

/// A `logs` check's lines of a stack's services, from every node that runs
/// their tasks (`docker service logs`): `service<TAB>line`.
pub fn check_logs(stack: &str, since: Option<i64>, services: &[String]) -> Cmd {
    let since = since.map(|s| s.to_string()).unwrap_or_default();
    let mut args = vec![stack, since.as_str()];
    args.extend(services.iter().map(String::as_str));
    shell(CHECK_LOGS, &args)
}

// $1 the stack, $2 the service, then the command: runs it in a running task
// container of the service on this node.
const EXEC: &str = r#"
c=$(docker ps -q --filter "label=com.docker.swarm.service.name=$1_$2" --filter status=running | head -n 1)
[ -n "$c" ] || { echo "$2: no running task on this manager" >&2; exit 1; }
shift 2
exec docker exec "$c" "$@"
"#;

/// `docker exec` in a running task container of `service` on this manager
/// (an `exec` check where the Engine API cannot be used, `deploy exec`): the
/// command's words are added by the caller (they stay secret where they are).
pub fn exec(stack: &str, service: &str) -> Cmd {
    shell(EXEC, &[stack, service])
}

/// A listed node that answered: the swarm's id of it, its name in
/// deploy.toml, and the connection.
pub type Node = (String, String, Box<dyn crate::remote::Remote>);

/// A checklist run's SSH connections to the swarm's listed `nodes`, opened on
/// first use, each with the swarm's id of its node; closed when the run ends.
#[derive(Default)]
pub struct Nodes {
    cell: tokio::sync::OnceCell<Vec<Node>>,
}

impl Nodes {
    /// (node id, host name, connection) of each listed node that answers.
    pub async fn get(&self, hosts: &[crate::config::Host]) -> &[Node] {
        self.cell
            .get_or_init(|| async {
                let reached = futures::future::join_all(hosts.iter().map(|h| async move {
                    let remote = crate::remote::connect(crate::config::TransportKind::Ssh, h)
                        .await
                        .ok()?;
                    let info = Cmd::new("docker").args(["info", "--format", "{{.Swarm.NodeID}}"]);
                    match remote.check(&info.into(), Some(QUICK_TIMEOUT)).await {
                        Ok(out) => Some((out.stdout.trim().to_string(), h.name.clone(), remote)),
                        Err(_) => {
                            let _ = remote.close().await;
                            None
                        }
                    }
                }))
                .await;
                reached.into_iter().flatten().collect()
            })
            .await
    }

    pub async fn close(self) {
        if let Some(list) = self.cell.into_inner() {
            futures::future::join_all(list.into_iter().map(|(_, _, r)| r.close())).await;
        }
    }
}

// $1 the stack, $2 the service. Prints the node id of each running task.
const TASK_NODES: &str = r#"
ids=$(docker service ps -q --filter desired-state=running "$1_$2") || exit $?
[ -n "$ids" ] || exit 0
docker inspect --format '{{.NodeID}} {{.Status.State}}' $ids | awk '$2 == "running" { print $1 }'
"#;

/// The ids of the nodes that run a task of `service`, read on the manager.
pub async fn task_nodes(m: &Member, stack: &str, service: &str) -> Result<Vec<String>, RemoteError> {
    let out = m
        .remote
        .check(&shell(TASK_NODES, &[stack, service]).into(), Some(QUICK_TIMEOUT))
        .await?;
    Ok(out.stdout.split_whitespace().map(str::to_string).collect())
}

/// The stack's services with their tasks (`docker service logs` lines):
/// `deploy logs` of a swarm environment.
pub fn logs_cmd(stack: &str, service: Option<&str>, lines: &str, follow: bool) -> Cmd {
    let body = r#"
stack="$1"; n="$2"; follow="$3"; shift 3
[ $# -gt 0 ] || set -- $(docker service ls --filter "label=com.docker.stack.namespace=$stack" --format '{{.Name}}')
[ $# -gt 0 ] || { echo "no service of stack $stack runs" >&2; exit 1; }
if [ "$follow" = 1 ]; then
  for s in "$@"; do docker service logs --follow --tail "$n" "$s" & done
  wait
else
  for s in "$@"; do docker service logs --tail "$n" "$s" || exit $?; done
fi
"#;
    let service = service.map(|s| format!("{stack}_{s}"));
    let mut args = vec![stack, lines, if follow { "1" } else { "0" }];
    args.extend(service.as_deref());
    shell(body, &args)
}

// Prints `<LocalNodeState> <ControlAvailable> <Nodes>`.
const INFO: &str = "docker info --format '{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}} {{.Swarm.Nodes}}'";

/// Whether this host's engine is an active Swarm manager, and how many nodes
/// the swarm has: the reason it cannot be used otherwise.
pub async fn preflight(m: &Member) -> Result<u32, String> {
    let out = m
        .remote
        .check(&shell(INFO, &[]).into(), Some(QUICK_TIMEOUT))
        .await
        .map_err(|e| e.to_string())?;
    let words: Vec<&str> = out.stdout.split_whitespace().collect();
    match words.as_slice() {
        ["active", "true", nodes] => nodes
            .parse()
            .map_err(|_| format!("docker info gave no number of swarm nodes: {nodes}")),
        ["active", _, _] => Err("this engine is a swarm worker, not a manager: expected the swarm's managers in `hosts`".into()),
        [state, ..] => Err(format!(
            "this engine is not part of a swarm (swarm state: {state}); expected `docker swarm init` to have been run on it"
        )),
        [] => Err("docker info printed nothing".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release() -> BTreeMap<String, String> {
        BTreeMap::from([("api".to_string(), "app-api:r2".to_string())])
    }

    const OUT: &str = "S\tapp_api\treplicated\t1/1\nS\tapp_redis\treplicated\t1/1 (max 1 per node)\n\
U\tapp_api\tapp-api:r2\tcompleted\t2026-11-29 09:00:00 +0000 UTC\n\
U\tapp_redis\tredis:7@sha256:ab\t\t\n\
T\tt1\tapp_api.1\tapp-api:r2\tRunning\tRunning 2 seconds ago\t\n\
T\tt0\tapp_api.1\tapp-api:r1\tShutdown\tShutdown 3 seconds ago\t\n\
T\tt9\tapp_redis.1\tredis:7@sha256:ab\tRunning\tRunning 1 minute ago\t\n";

    fn judged(out: &str, before: &str) -> Verdict {
        judge(&parse_state("app", out), &release(), &parse_state("app", before))
    }

    #[test]
    fn a_stack_whose_services_run_the_release_has_converged() {
        let state = parse_state("app", OUT);
        assert_eq!(state.services[1].image, "redis:7@sha256:ab");
        assert_eq!(state.tasks[2].service, "redis");
        assert!(matches!(judged(OUT, ""), Verdict::Converged(_)));
        // `docker.io/library/` is what a bare name means.
        let hub = OUT.replace("redis:7@sha256:ab", "docker.io/library/redis:7@sha256:ab");
        assert!(matches!(
            judged(&hub.replacen("docker.io/library/redis", "redis", 1), ""),
            Verdict::Converged(_)
        ));
    }

    #[test]
    fn the_old_image_a_task_still_starting_or_an_update_going_on_is_waited_for() {
        let old = OUT.replace("U\tapp_api\tapp-api:r2", "U\tapp_api\tapp-api:r1");
        assert!(matches!(judged(&old, ""), Verdict::Waiting(w) if w.contains("app-api:r1")));
        let starting = OUT.replace("Running\tRunning 2 seconds ago", "Running\tStarting 1 second ago");
        assert!(matches!(judged(&starting, ""), Verdict::Waiting(w) if w.contains("0/1")));
        // A change of settings only (same image): Swarm's update status says so.
        let updating = OUT.replace("completed\t2026-11-29 09:00:00", "updating\t2026-11-29 09:01:00");
        assert!(matches!(judged(&updating, OUT), Verdict::Waiting(w) if w.contains("updating")));
        // A task still on another digest of the same name.
        let digest = OUT.replace(
            "T\tt9\tapp_redis.1\tredis:7@sha256:ab",
            "T\tt9\tapp_redis.1\tredis:7@sha256:cd",
        );
        assert!(matches!(judged(&digest, ""), Verdict::Waiting(w) if w.contains("another image")));
    }

    #[test]
    fn a_new_failed_task_or_a_new_paused_update_fails_the_switch_but_ones_from_before_do_not() {
        let failed =
            format!("{OUT}T\tt5\tapp_api.1\tapp-api:r2\tShutdown\tFailed 1 second ago\ttask: non-zero exit (1)\n");
        assert!(matches!(judged(&failed, ""), Verdict::Failed(w) if w.contains("non-zero exit (1)")));
        assert!(matches!(judged(&failed, &failed), Verdict::Converged(_)));
        let paused = OUT.replace("completed\t2026-11-29 09:00:00", "paused\t2026-11-29 09:01:00");
        assert!(matches!(judged(&paused, OUT), Verdict::Failed(w) if w.contains("paused")));
        assert!(matches!(judged(&paused, &paused), Verdict::Converged(_)));
    }

    #[test]
    fn a_job_is_done_when_its_tasks_completed() {
        let job = "S\tapp_migrate\treplicated job\t0/1 (1/1 completed)\nU\tapp_migrate\tapp-migrate:r2\t\t\n\
T\tt1\tapp_migrate.1\tapp-migrate:r2\tComplete\tComplete 2 seconds ago\t\n";
        let images = BTreeMap::from([("migrate".to_string(), "app-migrate:r2".to_string())]);
        let state = parse_state("app", job);
        assert!(matches!(
            judge(&state, &images, &State::default()),
            Verdict::Converged(_)
        ));
        let running = job.replace("(1/1 completed)", "(0/1 completed)");
        assert!(matches!(
            judge(&parse_state("app", &running), &images, &State::default()),
            Verdict::Waiting(_)
        ));
    }

    #[test]
    fn a_task_belongs_to_the_longest_service_name_it_starts_with() {
        let out = "S\tapp_api\treplicated\t1/1\nS\tapp_api.v2\treplicated\t1/1\n\
T\tt1\tapp_api.v2.1\tx\tRunning\tRunning\t\nT\tt2\tapp_api.1\tx\tRunning\tRunning\t\n";
        let state = parse_state("app", out);
        assert_eq!(
            (state.tasks[0].service.as_str(), state.tasks[1].service.as_str()),
            ("api.v2", "api")
        );
    }
}
