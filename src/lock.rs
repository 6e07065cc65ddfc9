//! The deploy lock on a host: a directory made with `mkdir` (atomic), holding
//! `info.json` (who, from where, which commit, since, until). Times are the host's
//! own clock, so deployers with skewed clocks agree on expiry.

use serde::{Deserialize, Serialize};

use crate::release::{shell, Layout};
use crate::remote::Cmd;

/// Whether a lock guards a deploy or was taken by hand (a freeze).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LockKind {
    /// Held by a running deploy or rollback, which extends it while it works.
    #[default]
    Deploy,
    /// Taken with `deploy lock acquire`: it stays until released (or its `--ttl`).
    Manual,
}

/// What a lock says about its holder. `since`, `expires` and `token` come first
/// in the JSON, so the scripts on the host read them at fixed places and no
/// message can be taken for them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    /// Host time, seconds since the epoch.
    #[serde(default)]
    pub since: u64,
    /// Host time after which the lock may be taken over; 0: never.
    #[serde(default)]
    pub expires: u64,
    /// Identifies this holder, so only it can extend or release without --force.
    pub token: String,
    #[serde(default)]
    pub kind: LockKind,
    /// `user@machine` of the deployer.
    pub holder: String,
    /// What it is doing: "deploy <commit>", or the `--message`.
    pub message: String,
    /// The commit being deployed, if any.
    #[serde(default)]
    pub commit: Option<String>,
}

impl LockInfo {
    /// "alice@laptop since 2026-11-25T17:15:00Z (deploy 3f2a9c1), expires ...".
    pub fn describe(&self) -> String {
        let at = |t: u64| humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(t));
        let kind = match self.kind {
            LockKind::Deploy => "",
            LockKind::Manual => "manual lock, ",
        };
        let expiry = match self.expires {
            0 => "never expires".to_string(),
            t => format!("expires {}", at(t)),
        };
        format!(
            "{} since {} ({}), {kind}{expiry}",
            self.holder,
            at(self.since),
            self.message
        )
    }
}

/// What an acquire found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquired {
    /// The lock was free.
    Fresh,
    /// An expired lock was taken over; its last holder.
    TookOver(Option<LockInfo>),
    /// Someone else holds it.
    Held(Option<LockInfo>),
    /// Another lock operation on the host kept the lock's mutex too long.
    Busy,
    /// Expired, but the host has no flock(1) to take it over safely.
    Stuck(Option<LockInfo>),
}

/// Prefixes a lock script with `alone`, which makes the rest of the script the
/// only lock operation running on the host, under flock(1) (released by the
/// kernel if the process dies). A host without flock gets no mutex: its locks
/// are still taken atomically with `mkdir`, but an expired one is never taken
/// over there (two deployers could both do it); `release --force` breaks it.
/// `.deploy/` is made 0700 and files 0600. Every script takes the lock
/// directory as `$1`.
macro_rules! lock_script {
    ($body:literal) => {
        concat!(
            r#"
lock="$1"; state=${lock%/*}
{ [ -d "$state" ] || mkdir -p "$state"; } && chmod 700 "$state" || exit 1
umask 077
flocked=""
alone() {
  command -v flock >/dev/null 2>&1 || return 0
  exec 9>>"$lock.mutex" && flock -w 30 9 && flocked=1
}
# expires and token, at the start of info.json (see LockInfo), into
# $lock_expires and $lock_token by one program; in a lock written by an older
# deploy, where they are, the first of each.
fields() {
  lock_expires=""; lock_token=""
  [ -f "$lock/info.json" ] || return 0
  v=$(sed -n '1s/^{"since":[0-9]*,"expires":\([0-9]*\),"token":"\([^"]*\)".*/\1 \2/p' "$lock/info.json" 2>/dev/null)
  if [ -n "$v" ]; then lock_expires=${v%% *}; lock_token=${v#* }; return 0; fi
  lock_expires=$(grep -o '"expires":[0-9]*' "$lock/info.json" | head -n 1 | cut -d: -f2)
  lock_token=$(grep -o '"token":"[^"]*"' "$lock/info.json" | head -n 1 | cut -d'"' -f4)
}
"#,
            $body
        )
    };
}

// $2 info JSON with __SINCE__/__EXPIRES__ placeholders, $3 ttl seconds (0: never
// expires). Prints "fresh", "takeover" then the old info, "held" then the
// holder's info, "stuck" then the info of an expired lock this host cannot
// take over (no flock), or "busy".
const ACQUIRE: &str = lock_script!(
    r#"
ttl="$3"
alone || { echo busy; exit 0; }
now=$(date +%s)
if [ "$ttl" -gt 0 ]; then exp=$((now + ttl)); else exp=0; fi
write() {
  printf '%s\n' "$2" | sed "1s/^{\"since\":__SINCE__,\"expires\":__EXPIRES__,/{\"since\":$now,\"expires\":$exp,/" > "$lock/info.tmp" &&
    mv -f "$lock/info.tmp" "$lock/info.json"
}
take() {
  write "$@" && return 0
  rm -rf "$lock"; echo "cannot write $lock/info.json" >&2; exit 1
}
if mkdir "$lock" 2>/dev/null; then take "$@"; echo fresh; exit 0; fi
fields; old_exp=$lock_expires
# A lock without readable info (its holder died right after mkdir) expires from its mtime.
[ -n "$old_exp" ] || old_exp=$(( $(stat -c %Y "$lock" 2>/dev/null || echo "$now") + (ttl > 0 ? ttl : 900) ))
if [ "$old_exp" != 0 ] && [ "$old_exp" -lt "$now" ]; then
  [ -n "$flocked" ] || { echo stuck; cat "$lock/info.json" 2>/dev/null; exit 0; }
  # What earlier takeovers and releases cut short left behind.
  rm -rf "$lock".stale.* "$lock".gone.* 2>/dev/null
  old=$(cat "$lock/info.json" 2>/dev/null)
  # Renamed aside first: that needs only the state dir to be ours.
  if mv "$lock" "$lock.stale.$$" 2>/dev/null && mkdir "$lock" 2>/dev/null; then
    rm -rf "$lock.stale.$$" 2>/dev/null
    take "$@"; echo takeover; printf '%s\n' "$old"; exit 0
  fi
fi
echo held; cat "$lock/info.json" 2>/dev/null; exit 0
"#
);

/// Takes the lock unless someone else holds an unexpired one. `ttl_secs = 0`:
/// a lock that never expires (a manual one).
pub fn acquire(layout: &Layout, info: &LockInfo, ttl_secs: u64) -> Cmd {
    let mut template = info.clone();
    template.since = 0;
    template.expires = 0;
    let json = serde_json::to_string(&template).expect("lock info serializes");
    let json = json.replacen(
        "{\"since\":0,\"expires\":0,",
        "{\"since\":__SINCE__,\"expires\":__EXPIRES__,",
        1,
    );
    shell(ACQUIRE, &[&layout.lock(), &json, &ttl_secs.to_string()])
}

/// Reads [`acquire`]'s output.
pub fn parse_acquire(out: &str) -> Acquired {
    let mut lines = out.lines();
    let first = lines.next().unwrap_or("").trim();
    let info = lines
        .find(|l| l.trim_start().starts_with('{'))
        .and_then(|l| serde_json::from_str(l).ok());
    match first {
        "fresh" => Acquired::Fresh,
        "takeover" => Acquired::TookOver(info),
        "busy" => Acquired::Busy,
        "stuck" => Acquired::Stuck(info),
        _ => Acquired::Held(info),
    }
}

/// Why a lock could not be extended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Extend {
    /// Extended.
    Kept,
    /// Someone else's now, or gone: the run no longer holds it.
    NotOurs,
    /// Still ours, but past its expiry: anyone may have taken it meanwhile.
    Expired,
    /// Could not be asked (network, mutex): try again.
    Unknown(String),
}

// $2 token, $3 ttl seconds. Exit 3: not ours; 4: expired; 0: extended; else unknown.
const EXTEND: &str = lock_script!(
    r#"
alone || { echo "the lock's mutex is busy" >&2; exit 2; }
now=$(date +%s)
fields
[ "$lock_token" = "$2" ] || { echo "the lock is not ours" >&2; exit 3; }
exp=$lock_expires
if [ -z "$exp" ] || { [ "$exp" != 0 ] && [ "$exp" -lt "$now" ]; }; then echo "the lock expired" >&2; exit 4; fi
sed -i "1s/^{\"since\":\([0-9]*\),\"expires\":[0-9]*,/{\"since\":\1,\"expires\":$((now + $3)),/" "$lock/info.json" ||
  { echo "cannot write $lock/info.json" >&2; exit 2; }
# This run is alive: its watchdog (if armed) waits $4 seconds more.
# Written aside and moved into place: the watchdog never reads it half-written.
[ ! -f "$state/watchdog-$2" ] || { echo $((now + $4)) > "$state/watchdog-$2.tmp" && mv -f "$state/watchdog-$2.tmp" "$state/watchdog-$2"; }
"#
);

/// Pushes our lock's expiry forward (and our watchdog's deadline by
/// `confirm_secs`, see [`crate::watchdog`]); refuses a lock that is not ours or expired.
pub fn extend(layout: &Layout, token: &str, ttl_secs: u64, confirm_secs: u64) -> Cmd {
    shell(
        EXTEND,
        &[&layout.lock(), token, &ttl_secs.to_string(), &confirm_secs.to_string()],
    )
}

/// Reads [`extend`]'s exit code.
pub fn parse_extend(code: i32, stderr: &str) -> Extend {
    match code {
        0 => Extend::Kept,
        3 => Extend::NotOurs,
        4 => Extend::Expired,
        _ => Extend::Unknown(crate::remote::tail(stderr, 3)),
    }
}

// $2 token. Under the mutex, so an extension running at the same moment
// cannot write the deadline back after it is gone.
const CONFIRM: &str = lock_script!(
    r#"
alone || true
rm -f "$state/watchdog-$2" "$state/watchdog-$2.tmp"
"#
);

/// Confirms the run with `token` on the host: its watchdog stands down (see
/// [`crate::watchdog`]).
pub fn confirm_watchdog(layout: &Layout, token: &str) -> Cmd {
    shell(CONFIRM, &[&layout.lock(), token])
}

// $2 token ("" with --force).
const RELEASE: &str = lock_script!(
    r#"
alone || { echo busy; exit 0; }
[ -d "$lock" ] || { echo free; exit 0; }
if [ -z "$2" ] || { fields; [ "$lock_token" = "$2" ]; }; then
  # Renamed aside, then removed: cut short, it leaves no lock without info.
  mv "$lock" "$lock.gone.$$" && rm -rf "$lock.gone.$$"; echo released; exit 0
fi
echo held; cat "$lock/info.json" 2>/dev/null
"#
);

/// Releases our lock; with `token = None` (--force), anyone's.
pub fn release(layout: &Layout, token: Option<&str>) -> Cmd {
    shell(RELEASE, &[&layout.lock(), token.unwrap_or("")])
}

// $2 token, $3 a command (as shell), $4 ttl seconds (0: not extended), $5 the
// watchdog's confirm seconds (0: not pushed). Runs it only while the lock is
// ours and not expired, extending it (and the watchdog's deadline) first.
const IF_OURS: &str = lock_script!(
    r#"
alone || { echo "the lock's mutex is busy" >&2; exit 2; }
fields
[ "$lock_token" = "$2" ] || { echo "the lock was taken by someone else (or broken with --force): not done" >&2; exit 86; }
now=$(date +%s); exp=$lock_expires
if [ -z "$exp" ] || { [ "$exp" != 0 ] && [ "$exp" -lt "$now" ]; }; then
  echo "the lock expired (was this machine asleep?): not done" >&2; exit 86
fi
[ "$4" = 0 ] || sed -i "1s/^{\"since\":\([0-9]*\),\"expires\":[0-9]*,/{\"since\":\1,\"expires\":$((now + $4)),/" "$lock/info.json"
[ "$5" = 0 ] || [ ! -f "$state/watchdog-$2" ] || { echo $((now + $5)) > "$state/watchdog-$2.tmp" && mv -f "$state/watchdog-$2.tmp" "$state/watchdog-$2"; }
exec 9>&-
eval "$3"
"#
);

/// The exit code of a command [`if_ours`] did not run: the lock is someone else's.
pub const NOT_OURS: i32 = 86;

/// Runs `cmd` on the host only while our lock (`token`) holds there and has
/// not expired (else exits [`NOT_OURS`]), extending it by `ttl_secs` first:
/// the check and the command are one round trip. The lock's mutex is let go
/// before `cmd` runs.
pub fn if_ours(layout: &Layout, token: &str, ttl_secs: u64, confirm_secs: u64, cmd: &Cmd) -> Cmd {
    Cmd::new("sh")
        .arg("-c")
        .arg(IF_OURS)
        .arg("sh")
        .arg(layout.lock())
        .arg(token)
        .arg(cmd.as_word())
        .arg(ttl_secs.to_string())
        .arg(confirm_secs.to_string())
}

const STATUS: &str =
    r#"[ -d "$1" ] || { echo free; exit 0; }; echo held; cat "$1/info.json" 2>/dev/null; echo; date +%s"#;

/// Who holds the lock, if anyone; the host's time on the last line.
pub fn status(layout: &Layout) -> Cmd {
    shell(STATUS, &[&layout.lock()])
}

/// Reads [`status`]'s output: `None` when free; the holder (if readable) otherwise.
pub fn parse_status(out: &str) -> Option<Option<LockInfo>> {
    let mut lines = out.lines();
    match lines.next().map(str::trim) {
        Some("held") => Some(
            lines
                .find(|l| l.trim_start().starts_with('{'))
                .and_then(|l| serde_json::from_str(l).ok()),
        ),
        _ => None,
    }
}

/// A token no other deploy will have.
pub fn new_token() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{:x}-{:x}", std::process::id(), nanos)
}

/// `user@machine` of whoever runs deploy.
pub fn whoami() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(user_from_passwd)
        .unwrap_or_else(|| "unknown".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    format!("{user}@{host}")
}

/// The login name of this process's uid (CI runners often have no $USER).
fn user_from_passwd() -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self").ok()?.uid().to_string();
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 2 && f[2] == uid).then(|| f[0].to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acquire_output_parses() {
        assert_eq!(parse_acquire("fresh\n"), Acquired::Fresh);
        let held = parse_acquire(
            "held\n{\"since\":1,\"expires\":2,\"token\":\"t\",\"kind\":\"manual\",\"holder\":\"a@b\",\"message\":\"m\"}\n",
        );
        assert!(matches!(held, Acquired::Held(Some(ref i)) if i.holder == "a@b"));
    }

    /// The lock scripts read a lock's expiry and token with one program
    /// (`sed`; checked with a `grep` that fails), and a lock written by an
    /// older deploy (its fields elsewhere) where they are; `extend` says
    /// which it found: not ours (3) or expired (4).
    #[test]
    fn the_lock_scripts_read_expiry_and_token_in_either_layout() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let layout = Layout {
            root: root.path().to_str().unwrap().to_string(),
        };
        let lock = std::path::PathBuf::from(layout.lock());
        std::fs::create_dir_all(&lock).unwrap();
        let shim = root.path().join("shim");
        std::fs::create_dir_all(&shim).unwrap();
        std::fs::write(shim.join("grep"), "#!/bin/sh\nexit 1\n").unwrap();
        std::fs::set_permissions(shim.join("grep"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = format!("{}:{}", shim.display(), std::env::var("PATH").unwrap());
        let sh = |cmd: &Cmd, no_grep: bool| {
            let mut c = std::process::Command::new("sh");
            c.arg("-c").arg(cmd.to_shell());
            if no_grep {
                c.env("PATH", &path);
            }
            let out = c.output().unwrap();
            (out.status.code(), String::from_utf8(out.stdout).unwrap())
        };
        let write = |info: &str| std::fs::write(lock.join("info.json"), info).unwrap();
        let if_ours_run =
            |token: &str, no_grep: bool| sh(&if_ours(&layout, token, 0, 0, &Cmd::new("echo").arg("ran")), no_grep);
        let extend_code = |token: &str| sh(&extend(&layout, token, 60, 0), false).0;
        let future = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 600;
        // Today's layout, no newline at its end: read by sed alone.
        write(&format!(
            r#"{{"since":1,"expires":{future},"token":"tok en","kind":"deploy","holder":"a@b","message":"m"}}"#
        ));
        assert_eq!(if_ours_run("tok en", true), (Some(0), "ran\n".into()));
        assert_eq!(extend_code(&new_token()), Some(3));
        assert_eq!(extend_code("tok en"), Some(0));
        // An older layout: found where it is.
        write(&format!(
            "{}\n",
            r#"{"token":"old","holder":"a@b","since":1,"expires":EXP,"message":"m"}"#
                .replace("EXP", &future.to_string())
        ));
        assert_eq!(if_ours_run("old", false), (Some(0), "ran\n".into()));
        assert_eq!(extend_code("tok en"), Some(3));
        // Expired, and never expiring.
        write(
            "{\"since\":1,\"expires\":2,\"token\":\"tok\",\"kind\":\"deploy\",\"holder\":\"a@b\",\"message\":\"m\"}\n",
        );
        assert_eq!(extend_code("tok"), Some(4));
        assert_eq!(if_ours_run("tok", true).0, Some(NOT_OURS));
        write(
            "{\"since\":1,\"expires\":0,\"token\":\"tok\",\"kind\":\"manual\",\"holder\":\"a@b\",\"message\":\"m\"}\n",
        );
        assert_eq!(if_ours_run("tok", true), (Some(0), "ran\n".into()));
        // No info at all: no one's.
        std::fs::remove_file(lock.join("info.json")).unwrap();
        assert_eq!(if_ours_run("tok", false).0, Some(NOT_OURS));
    }
}
