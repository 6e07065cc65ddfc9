//! What doctor asks a host, and what the answers mean: Docker and Compose and
//! whether the login user reaches the engine, free disk, the clock, git, the
//! fetch URL seen from the host, the lock, and how the last release ended.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{Finding, Level};
use crate::compose::Variant;
use crate::history::{Entry, Recorded};
use crate::lock::{LockInfo, LockKind};
use crate::release::{shell, Layout};
use crate::remote::Cmd;

/// Under this much free space a disk is worth a warning.
pub const LOW_DISK_KB: u64 = 2 * 1024 * 1024;

/// Clock skew beyond this (after the round trip's own uncertainty) is worth a warning.
pub const CLOCK_SKEW: Duration = Duration::from_secs(5);

// $1 the app's path. One `key=value` line per fact; values are one line each.
// Free space is read on the nearest directory that exists (the path may not yet).
const PROBE: &str = r#"
p="$1"
oneline() { tr '\n' ' ' | sed 's/  */ /g; s/ $//'; }
free_kb() {
  d="$1"
  while [ ! -e "$d" ] && [ "$d" != / ] && [ "$d" != . ]; do d=$(dirname "$d"); done
  echo "$d $(df -Pk "$d" 2>/dev/null | awk 'NR==2 {print $4}')"
}
echo "user=$(id -un 2>/dev/null)"
echo "groups=$(id -Gn 2>/dev/null)"
echo "now=$(date +%s)"
echo "docker_host=${DOCKER_HOST:-}"
root=""
if command -v docker >/dev/null 2>&1; then
  echo "docker_cli=$(docker version --format '{{.Client.Version}}' 2>/dev/null | oneline)"
  if out=$(docker version --format '{{.Server.Version}}' 2>&1); then
    echo "docker_server=$(printf '%s' "$out" | oneline)"
    root=$(docker info --format '{{.DockerRootDir}}' 2>/dev/null | oneline)
  else
    echo "docker_error=$(printf '%s' "$out" | tail -n 3 | oneline)"
  fi
  echo "compose_v2=$(docker compose version --short 2>/dev/null | oneline)"
else
  echo "docker_cli="
fi
command -v docker-compose >/dev/null 2>&1 && echo "compose_v1=$(docker-compose version --short 2>/dev/null | oneline)"
command -v git >/dev/null 2>&1 && echo "git=$(git --version 2>/dev/null | oneline)"
command -v flock >/dev/null 2>&1 && echo "flock=yes"
echo "path_free=$(free_kb "$p")"
echo "docker_root_free=$(free_kb "${root:-/var/lib/docker}")"
if [ -d "$p" ]; then
  [ -w "$p" ] && echo "path=writable" || echo "path=readonly"
else
  d=$(dirname "$p"); while [ ! -e "$d" ] && [ "$d" != / ]; do d=$(dirname "$d"); done
  [ -w "$d" ] && echo "path=creatable" || echo "path=blocked $d"
fi
cur=$(readlink "$p/current" 2>/dev/null) && echo "current=$(basename "$cur")"
true
"#;

/// Read-only facts about a host and the app's path there.
pub fn probe(layout: &Layout) -> Cmd {
    shell(PROBE, &[&layout.root])
}

/// `git ls-remote` of the fetch URL's branch, as the host's user, never prompting.
pub fn ls_remote(url: &str, branch: &str) -> Cmd {
    Cmd::new("git")
        .env("GIT_TERMINAL_PROMPT", "0")
        .args(["ls-remote", "--", url])
        .arg(format!("refs/heads/{branch}"))
}

// $1 a shared env file. Prints `absent`, or `present` and the names it defines
// (never the values: they are secrets).
const ENV_NAMES: &str = r#"[ -f "$1" ] || { echo absent; exit 0; }
echo present
sed -n 's/^[[:space:]]*\(export[[:space:]][[:space:]]*\)\{0,1\}\([A-Za-z_][A-Za-z0-9_]*\)[[:space:]]*=.*/\2/p' "$1"
"#;

/// The variable names a shared `.env` on the host defines (see [`parse_env_names`]).
pub fn env_names(path: &str) -> Cmd {
    shell(ENV_NAMES, &[path])
}

/// `None` if the file is absent, else the names it defines.
pub fn parse_env_names(out: &str) -> Option<std::collections::BTreeSet<String>> {
    let mut lines = out.lines();
    (lines.next().map(str::trim) == Some("present")).then(|| lines.map(|l| l.trim().to_string()).collect())
}

/// The probe's answers, by key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts(BTreeMap<String, String>);

impl Facts {
    /// Parses the probe's output.
    pub fn parse(out: &str) -> Facts {
        Facts(
            out.lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .collect(),
        )
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str).filter(|v| !v.is_empty())
    }

    /// The release `current` points at.
    pub fn current(&self) -> Option<&str> {
        self.get("current")
    }

    /// The host's clock, seconds since the epoch.
    pub fn now(&self) -> Option<u64> {
        self.get("now")?.parse().ok()
    }

    /// "DIR KB" → (DIR, KB).
    fn free(&self, key: &str) -> Option<(String, u64)> {
        let (dir, kb) = self.get(key)?.rsplit_once(' ')?;
        Some((dir.to_string(), kb.parse().ok()?))
    }
}

/// What the host's facts say about Docker, Compose, the socket, disk, git and
/// the path. `forced` is the environment's `compose`, if it names one.
pub fn judge(facts: &Facts, forced: Option<Variant>, git_needed: bool, path: &str) -> Vec<Finding> {
    let mut out = Vec::new();
    let user = facts.get("user").unwrap_or("the login user");
    let socket = facts.get("docker_host").unwrap_or("unix:///var/run/docker.sock");
    let docker_ok = match (
        facts.get("docker_cli"),
        facts.get("docker_server"),
        facts.get("docker_error"),
    ) {
        (None, _, _) => {
            out.push(Finding::fail(
                "docker",
                "docker is not installed (no `docker` on the login user's PATH)",
                "install Docker Engine (https://docs.docker.com/engine/install/), then `deploy doctor` again",
            ));
            false
        }
        (Some(cli), Some(server), _) => {
            out.push(Finding::ok("docker", format!("docker {server} (engine), client {cli}")));
            out.push(Finding::ok(
                "docker_socket",
                format!("{user} reaches the Docker engine at {socket}"),
            ));
            true
        }
        (Some(cli), None, error) => {
            let error = error.unwrap_or("no answer");
            out.push(Finding::ok("docker", format!("docker client {cli}")));
            let lower = error.to_lowercase();
            if lower.contains("permission denied") {
                out.push(Finding::fail(
                    "docker_socket",
                    format!("{user} cannot use the Docker socket ({socket}): {error}"),
                    format!("`sudo usermod -aG docker {user}` on the host, then reconnect (group changes apply to new logins)"),
                ));
            } else {
                out.push(Finding::fail(
                    "docker_socket",
                    format!("the Docker engine does not answer {user} at {socket}: {error}"),
                    "start it (`sudo systemctl enable --now docker`), or fix DOCKER_HOST",
                ));
            }
            false
        }
    };
    let v2 = facts.get("compose_v2");
    let v1 = facts.get("compose_v1");
    let versions = [v2.map(|v| format!("v2 ({v})")), v1.map(|v| format!("v1 ({v})"))]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(", ");
    match (forced, v2, v1) {
        (Some(Variant::V2), None, _) => out.push(Finding::fail(
            "compose",
            "the environment says `compose = \"v2\"`, and `docker compose` is not installed",
            "install the compose plugin (`apt-get install docker-compose-plugin`), or set compose = \"auto\"",
        )),
        (Some(Variant::V1), _, None) => out.push(Finding::fail(
            "compose",
            "the environment says `compose = \"v1\"`, and `docker-compose` is not installed",
            "install docker-compose, or set compose = \"auto\"",
        )),
        (None, None, None) => out.push(Finding::fail(
            "compose",
            "neither `docker compose` (v2) nor `docker-compose` (v1) is installed",
            "install the compose plugin (`apt-get install docker-compose-plugin`)",
        )),
        (forced, _, _) => {
            let used = match (forced, v2) {
                (Some(v), _) => v.name(),
                (None, Some(_)) => "v2",
                (None, None) => "v1",
            };
            let mut f = Finding::ok("compose", format!("compose {versions}; deploy uses {used}"));
            if used == "v1" {
                f = Finding::warn(
                    "compose",
                    format!("compose {versions}; deploy uses v1, which is no longer maintained"),
                    "install the compose plugin (`apt-get install docker-compose-plugin`); deploy prefers it",
                );
            }
            out.push(f);
        }
    }
    if docker_ok {
        out.push(disk(facts, "docker_root_free", "the Docker data root"));
    }
    out.push(disk(facts, "path_free", "the app's path"));
    match facts.get("path") {
        Some(p) if p.starts_with("blocked") => out.push(Finding::fail(
            "path",
            format!(
                "{path} does not exist and {user} cannot create it ({} is not writable)",
                &p[8..]
            ),
            format!("`sudo install -d -o {user} {path}` on the host, then `deploy setup`"),
        )),
        Some("readonly") => out.push(Finding::fail(
            "path",
            format!("{user} cannot write to {path}"),
            format!("`sudo chown -R {user} {path}` on the host"),
        )),
        Some("creatable") => out.push(Finding::ok(
            "path",
            format!("{path} does not exist yet; {user} can create it (`deploy setup` does)"),
        )),
        _ => out.push(Finding::ok("path", format!("{user} can write to {path}"))),
    }
    match (git_needed, facts.get("git")) {
        (true, None) => out.push(Finding::fail(
            "git",
            "git is not installed, and strategy = \"git\" fetches each release with it",
            "`apt-get install git` on the host, or strategy = \"upload\" in [source]",
        )),
        (_, Some(v)) => out.push(Finding::ok("git", v.to_string())),
        (false, None) => {}
    }
    if facts.get("flock").is_none() {
        out.push(Finding::warn(
            "flock",
            "flock(1) is missing: locks are still atomic, but an expired lock is never taken over (deploys are refused until it is broken by hand)",
            "`apt-get install util-linux` (or busybox's flock) on the host",
        ));
    }
    out
}

fn disk(facts: &Facts, key: &str, what: &str) -> Finding {
    let gb = |kb: u64| format!("{:.1} GB", kb as f64 / 1024.0 / 1024.0);
    match facts.free(key) {
        None => Finding::warn(
            "disk",
            format!("free space on {what} could not be read"),
            "check `df -h` on the host",
        ),
        Some((dir, kb)) if kb < LOW_DISK_KB => Finding::warn(
            "disk",
            format!("only {} free on {what} ({dir}): a build or a pull can fill it", gb(kb)),
            "free space (`docker system prune` removes what no container uses) or grow the disk; deploy keeps `keep_releases` releases and their images",
        ),
        Some((dir, kb)) => Finding::ok("disk", format!("{} free on {what} ({dir})", gb(kb))),
    }
}

/// The host's clock against this machine's, from the probe's `now` and the
/// times the probe was sent and answered.
pub fn clock(host_now: Option<u64>, sent: SystemTime, answered: SystemTime) -> Finding {
    let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64();
    let Some(host_now) = host_now else {
        return Finding::warn(
            "clock",
            "the host's clock could not be read",
            "check `date` on the host",
        );
    };
    let (s, a) = (secs(sent), secs(answered));
    // The host read its clock somewhere between sent and answered, to the second.
    let skew = host_now as f64 + 0.5 - (s + a) / 2.0;
    let slack = (a - s) / 2.0 + 0.5;
    let beyond = skew.abs() - slack;
    if beyond <= CLOCK_SKEW.as_secs_f64() {
        return Finding::ok(
            "clock",
            format!(
                "clock within {}s of this machine's",
                (skew.abs().max(slack)).ceil() as u64
            ),
        );
    }
    Finding::warn(
        "clock",
        format!(
            "clock is {}s {} this machine's: locks expire by the host's clock and release ids come from this machine's, so times in history and lock messages disagree",
            skew.abs().round() as u64,
            if skew > 0.0 { "ahead of" } else { "behind" }
        ),
        "run NTP on both (`timedatectl set-ntp true`, or chrony)",
    )
}

/// What `git ls-remote` from the host says about the fetch URL.
pub fn fetch_url(url: &str, branch: &str, code: i32, stdout: &str, stderr: &str) -> Finding {
    if code == 0 && stdout.lines().any(|l| l.ends_with(&format!("refs/heads/{branch}"))) {
        let id: String = stdout.chars().take(7).collect();
        return Finding::ok(
            "fetch_url",
            format!("the host can fetch {url} (branch {branch} at {id})"),
        );
    }
    if code == 0 {
        return Finding::warn(
            "fetch_url",
            format!("the host reaches {url}, which has no branch {branch} yet"),
            format!("push {branch} (`deploy up` does, unless --no-push)"),
        );
    }
    // git says what went wrong first, then generic advice.
    let said = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    let fix = if said.contains("Host key verification failed") || said.contains("host key") {
        "add the git server's host key to the host user's ~/.ssh/known_hosts (`ssh-keyscan` it there, after checking its fingerprint)".to_string()
    } else if said.contains("Permission denied")
        || said.contains("Authentication failed")
        || said.contains("could not read Username")
    {
        "give the host's user read access: a deploy key in its ~/.ssh, added to the repository (read-only)".to_string()
    } else if said.contains("does not appear to be a git repository") || said.contains("not found") {
        "the URL names no repository the host can see: check [source] fetch_url (or the remote's URL)".to_string()
    } else if said.contains("Could not resolve") {
        "the host cannot resolve the git server's name: check its DNS, or set [source] fetch_url to an address it can reach".to_string()
    } else {
        "check [source] fetch_url (or the remote's URL): it must be reachable from the host, as the host's user"
            .to_string()
    };
    Finding::fail(
        "fetch_url",
        format!(
            "the host cannot fetch {url}: {}",
            if said.is_empty() {
                format!("git exited with {code}")
            } else {
                said
            }
        ),
        fix,
    )
}

/// The lock as `lock::status` found it, judged at the host's time `now`.
pub fn lock(holder: Option<Option<LockInfo>>, now: Option<u64>, env: &str) -> Finding {
    match holder {
        None => Finding::ok("lock", "the lock is free"),
        Some(None) => Finding::warn(
            "lock",
            "the lock is held, and its holder left no information",
            format!("if no deploy runs, `deploy lock {env} release --force`"),
        ),
        Some(Some(info)) => {
            let expired = info.expires != 0 && now.is_some_and(|n| info.expires < n);
            match (info.kind, expired) {
                (_, true) => Finding::warn(
                    "lock",
                    format!(
                        "an expired lock of {} (its deploy died?): the next deploy takes it over",
                        info.describe()
                    ),
                    format!("nothing needed; `deploy lock {env} release --force` removes it now"),
                ),
                (LockKind::Manual, false) => Finding::warn(
                    "lock",
                    format!("locked by hand: {}; deploys are refused (exit 5)", info.describe()),
                    format!("when the freeze is over: `deploy lock {env} release` (by its holder) or `--force`"),
                ),
                (LockKind::Deploy, false) => Finding::warn(
                    "lock",
                    format!("a deploy holds the lock: {}", info.describe()),
                    "wait for it to finish (`deploy status` shows it)".to_string(),
                ),
            }
        }
    }
}

/// How the last release on the host ended, from its history; `current` is
/// what the host's `current` link points at.
pub fn last_release(history: &[Entry], current: Option<&str>, env: &str) -> Finding {
    let Some(last) = history.last() else {
        return match current {
            None => Finding::ok("last_release", "nothing deployed yet"),
            Some(c) => Finding::warn(
                "last_release",
                format!("release {c} is live, and the host has no history of it"),
                format!("`deploy {env}` records the next release"),
            ),
        };
    };
    let short: String = last.commit.chars().take(7).collect();
    let what = format!(
        "release {} (commit {short}) by {} at {}",
        last.release, last.user, last.time
    );
    let live = current.unwrap_or("none");
    let mut f = match last.outcome {
        Recorded::Deployed | Recorded::Rollback if last.unverified => Finding::warn(
            "last_release",
            format!("{what} went live with --no-verify: nobody checked it"),
            format!("`deploy verify {env}`"),
        ),
        Recorded::Deployed => Finding::ok("last_release", format!("last: {what} deployed and verified")),
        Recorded::Rollback => Finding::ok("last_release", format!("last: rolled back to {what}, verified")),
        Recorded::Failed => Finding::warn(
            "last_release",
            format!("the last deploy, {what}, failed before it went live; {live} still serves"),
            format!("see `deploy releases {env}`, fix, and deploy again"),
        ),
        Recorded::RolledBack => Finding::warn(
            "last_release",
            format!("the last deploy, {what}, failed its checks and was rolled back; {live} serves"),
            format!("see `deploy releases {env}` for the failed checks, fix, and deploy again"),
        ),
        Recorded::Interrupted => Finding::warn(
            "last_release",
            format!("the last deploy, {what}, was interrupted; {live} serves"),
            format!("`deploy verify {env}`, then deploy again"),
        ),
        Recorded::ChecksFailed => Finding::fail(
            "last_release",
            format!("{what} is live and failed its checks (it was left live)"),
            format!("deploy a fix, or `deploy rollback {env}`"),
        ),
        Recorded::RollbackFailed => Finding::fail(
            "last_release",
            format!("the last deploy, {what}, failed and putting the previous release back failed too"),
            format!("a person must look: `deploy status {env}`, then `deploy rollback {env} --to RELEASE`"),
        ),
        Recorded::RevertedByWatchdog => Finding::warn(
            "last_release",
            format!(
                "the run that deployed {what} vanished before it was verified; the host's watchdog put {live} back"
            ),
            "see .deploy/watchdog-*.log on the host, then deploy again".to_string(),
        ),
    };
    if f.level != Level::Fail {
        if let (Some(to), Some(cur)) = (&last.to, current) {
            if to != cur {
                f = Finding::warn(
                    "last_release",
                    format!("{cur} is live, but the history's last line says {to} should be: `current` was changed by hand?"),
                    format!("`deploy verify {env}`, or deploy again"),
                );
            }
        }
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_judge_docker_compose_disk_and_path() {
        let facts = Facts::parse(
            "user=deploy\nnow=1\ndocker_cli=28.1\ndocker_server=20.10.24\ncompose_v2=2.40.3\ncompose_v1=1.29.2\ngit=git version 2.39\nflock=yes\npath_free=/srv 1048576\ndocker_root_free=/var/lib/docker 9999999\npath=creatable\n",
        );
        let lines: Vec<String> = judge(&facts, None, true, "/srv/app")
            .iter()
            .map(Finding::line)
            .collect();
        assert!(
            lines.contains(&"✓ docker 20.10.24 (engine), client 28.1".to_string()),
            "{lines:#?}"
        );
        assert!(
            lines.contains(&"✓ compose v2 (2.40.3), v1 (1.29.2); deploy uses v2".to_string()),
            "{lines:#?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("! only 1.0 GB free on the app's path (/srv)")),
            "{lines:#?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("✓ 9.5 GB free on the Docker data root")),
            "{lines:#?}"
        );
        let denied = Facts::parse("user=deploy\ndocker_cli=28.1\ndocker_error=permission denied while trying to connect to the Docker daemon socket\n");
        let lines: Vec<String> = judge(&denied, None, false, "/srv/app")
            .iter()
            .map(Finding::line)
            .collect();
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("✗ deploy cannot use the Docker socket")
                    && l.contains("usermod -aG docker deploy")),
            "{lines:#?}"
        );
    }

    #[test]
    fn clock_skew_allows_for_the_round_trip() {
        let t = UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(
            clock(Some(1_000_000), t, t + Duration::from_millis(300)).level,
            Level::Ok
        );
        let f = clock(Some(1_003_600), t, t + Duration::from_millis(300));
        assert!(
            f.line().starts_with("! clock is 3600s ahead of this machine's"),
            "{}",
            f.line()
        );
        assert_eq!(clock(Some(999_990), t, t).level, Level::Warn);
    }

    #[test]
    fn env_names_parse() {
        assert_eq!(parse_env_names("absent\n"), None);
        assert_eq!(parse_env_names("present\nA\nB\n").unwrap().len(), 2);
    }
}
