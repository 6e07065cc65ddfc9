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
pub fn deploy(m: &Member, record: &Record) -> Cmd {
    stack_cmd(m, record, &["deploy", "--with-registry-auth", "--prune"]).arg(record.project.as_str())
}

// $1 the stack. Prints `S<TAB>name<TAB>replicas<TAB>image` per service, then
// `T<TAB>id<TAB>name<TAB>image<TAB>desired<TAB>current<TAB>error` per task.
const STATE: &str = r#"
docker service ls --filter "label=com.docker.stack.namespace=$1" --format 'S	{{.Name}}	{{.Replicas}}	{{.Image}}' || exit $?
[ -z "$(docker service ls -q --filter "label=com.docker.stack.namespace=$1")" ] && exit 0
docker stack ps --no-trunc --format 'T	{{.ID}}	{{.Name}}	{{.Image}}	{{.DesiredState}}	{{.CurrentState}}	{{.Error}}' "$1"
"#;

/// The stack's services and tasks (see [`State`]).
pub fn state_cmd(stack: &str) -> Cmd {
    shell(STATE, &[stack])
}

/// A service of the stack, named without the stack's prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceState {
    pub name: String,
    /// Tasks wanted (`replicas`; 1 per node for a global service).
    pub desired: u32,
    /// The image its spec names (without a digest).
    pub image: String,
}

/// A task of the stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    pub id: String,
    pub service: String,
    /// `api.1`: the task's slot, as `docker service ps` names it.
    pub name: String,
    pub image: String,
    /// `Running`, `Shutdown`...
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

/// An image name without `@sha256:...`.
fn undigested(image: &str) -> &str {
    image.split('@').next().unwrap_or(image)
}

/// Parses [`state_cmd`]'s output for stack `stack`.
pub fn parse_state(stack: &str, out: &str) -> State {
    let prefix = format!("{stack}_");
    let mut state = State::default();
    for line in out.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        match f.as_slice() {
            ["S", name, replicas, image] => {
                let desired = replicas
                    .split_whitespace()
                    .next()
                    .and_then(|r| r.split('/').nth(1))
                    .and_then(|d| d.parse().ok())
                    .unwrap_or(1);
                state.services.push(ServiceState {
                    name: name.strip_prefix(&prefix).unwrap_or(name).to_string(),
                    desired,
                    image: undigested(image).to_string(),
                });
            }
            ["T", id, name, image, desired, current, error @ ..] => {
                let slot = name.strip_prefix(&prefix).unwrap_or(name);
                state.tasks.push(Task {
                    id: id.to_string(),
                    service: String::new(),
                    name: slot.to_string(),
                    image: undigested(image).to_string(),
                    desired: desired.to_string(),
                    current: current.to_string(),
                    error: error.join("\t"),
                });
            }
            _ => {}
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
    /// A new task failed: which and why.
    Failed(String),
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

/// Judges `state` against a release whose built services run `images`
/// (service → image); a task not in `before` (the ids from before the deploy)
/// that failed on a service's current image fails the switch.
pub fn judge(state: &State, images: &BTreeMap<String, String>, before: &BTreeSet<String>) -> Verdict {
    let mut waiting = Vec::new();
    let mut fine = Vec::new();
    if state.services.is_empty() {
        return Verdict::Waiting("the stack has no services".to_string());
    }
    for s in &state.services {
        let tasks: Vec<&Task> = state.tasks.iter().filter(|t| t.service == s.name).collect();
        if let Some(t) = tasks
            .iter()
            .find(|t| !before.contains(&t.id) && t.image == s.image && t.failed())
        {
            let why = if t.error.is_empty() {
                t.current.as_str()
            } else {
                t.error.as_str()
            };
            return Verdict::Failed(format!("{}: task {} on {} failed: {why}", s.name, t.name, s.image));
        }
        if let Some(wanted) = images.get(&s.name) {
            if &s.image != wanted {
                waiting.push(format!("{}: runs {} (the release's is {wanted})", s.name, s.image));
                continue;
            }
        }
        let live: Vec<&&Task> = tasks.iter().filter(|t| t.desired == "Running").collect();
        let ready = live.iter().filter(|t| t.running() && t.image == s.image).count() as u32;
        let stale = live.iter().filter(|t| t.image != s.image).count();
        if ready >= s.desired && stale == 0 {
            fine.push(format!("{}: {ready}/{} running {}", s.name, s.desired, s.image));
        } else {
            let states: BTreeSet<&str> = live
                .iter()
                .map(|t| t.current.split_whitespace().next().unwrap_or(""))
                .collect();
            let states: Vec<&str> = states.into_iter().collect();
            waiting.push(format!(
                "{}: {ready}/{} running {}{}",
                s.name,
                s.desired,
                s.image,
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

/// Why a stack did not converge.
#[derive(Debug)]
pub struct NotConverged {
    pub why: String,
    pub evidence: Evidence,
}

/// Waits until the stack runs release `record` (see [`judge`]) and has kept
/// running it for [`MONITOR`], at most [`CONVERGE_TIMEOUT`], polling every
/// half second.
pub async fn wait(m: &Member, record: &Record, before: &BTreeSet<String>) -> Result<String, NotConverged> {
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

// $1 the stack, $2 lines. Each service's last log lines, as `service<TAB>line`.
const SERVICE_LOGS: &str = r#"
for s in $(docker service ls --filter "label=com.docker.stack.namespace=$1" --format '{{.Name}}'); do
  docker service logs --no-task-ids --no-trunc --tail "$2" "$s" 2>&1 | while IFS= read -r line || [ -n "$line" ]; do printf '%s\t%s\n' "${s#"$1"_}" "$line"; done
done
"#;

/// A stack's tasks (as containers: service, state, error, slot) and each
/// service's last log lines.
pub async fn evidence(m: &Member, stack: &str) -> Evidence {
    let state = read(m, stack).await.unwrap_or_default();
    let containers = tasks_as_containers(&state);
    let mut logs: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if let Ok(out) = m
        .remote
        .run(&shell(SERVICE_LOGS, &[stack, "50"]).into(), Some(QUICK_TIMEOUT))
        .await
    {
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

/// Tasks in the shape of containers, for status and evidence: state is the
/// task's current state, status its error, name its slot.
pub fn tasks_as_containers(state: &State) -> Vec<Container> {
    state
        .tasks
        .iter()
        .filter(|t| t.desired == "Running" || t.failed())
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
        ["active", "true", nodes] => Ok(nodes.parse().unwrap_or(1)),
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

    fn record() -> BTreeMap<String, String> {
        BTreeMap::from([("api".to_string(), "app-api:r2".to_string())])
    }

    const OUT: &str = "S\tapp_api\t1/1\tapp-api:r2\nS\tapp_redis\t1/1 (max 1 per node)\tredis:7@sha256:ab\n\
T\tt1\tapp_api.1\tapp-api:r2\tRunning\tRunning 2 seconds ago\t\n\
T\tt0\tapp_api.1\tapp-api:r1\tShutdown\tShutdown 3 seconds ago\t\n\
T\tt9\tapp_redis.1\tredis:7@sha256:ab\tRunning\tRunning 1 minute ago\t\n";

    #[test]
    fn a_stack_whose_services_run_the_release_has_converged() {
        let state = parse_state("app", OUT);
        assert_eq!(state.services[1].image, "redis:7");
        assert_eq!(state.tasks[2].service, "redis");
        assert!(matches!(
            judge(&state, &record(), &BTreeSet::new()),
            Verdict::Converged(_)
        ));
    }

    #[test]
    fn the_old_image_or_a_task_still_starting_is_waited_for() {
        let old = OUT.replace("app_api\t1/1\tapp-api:r2", "app_api\t1/1\tapp-api:r1");
        assert!(
            matches!(judge(&parse_state("app", &old), &record(), &BTreeSet::new()), Verdict::Waiting(w) if w.contains("app-api:r1"))
        );
        let starting = OUT.replace("Running\tRunning 2 seconds ago", "Running\tStarting 1 second ago");
        assert!(
            matches!(judge(&parse_state("app", &starting), &record(), &BTreeSet::new()), Verdict::Waiting(w) if w.contains("0/1"))
        );
    }

    #[test]
    fn a_new_task_that_failed_fails_the_switch_but_one_from_before_does_not() {
        let failed =
            format!("{OUT}T\tt5\tapp_api.1\tapp-api:r2\tShutdown\tFailed 1 second ago\ttask: non-zero exit (1)\n");
        let state = parse_state("app", &failed);
        assert!(
            matches!(judge(&state, &record(), &BTreeSet::new()), Verdict::Failed(w) if w.contains("non-zero exit (1)"))
        );
        let before = BTreeSet::from(["t5".to_string()]);
        assert!(matches!(judge(&state, &record(), &before), Verdict::Converged(_)));
    }
}
