//! The deploy lock on a host: a directory made with `mkdir` (atomic), holding
//! `info.json` (who, from where, which commit, since, until). Times are the host's
//! own clock, so deployers with skewed clocks agree on expiry.

use serde::{Deserialize, Serialize};

use crate::release::{shell, Layout};
use crate::remote::Cmd;

/// What a lock says about its holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    /// `user@machine` of the deployer.
    pub holder: String,
    /// What it is doing: "deploy <commit>", or the `--message`.
    pub message: String,
    /// The commit being deployed, if any.
    #[serde(default)]
    pub commit: Option<String>,
    /// Identifies this holder, so only it can extend or release without --force.
    pub token: String,
    /// Host time, seconds since the epoch.
    #[serde(default)]
    pub since: u64,
    /// Host time after which the lock may be taken over.
    #[serde(default)]
    pub expires: u64,
}

impl LockInfo {
    /// "alice@laptop since 2026-11-25T17:15:00Z (deploy 3f2a9c1), expires ...".
    pub fn describe(&self) -> String {
        let at = |t: u64| humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(t));
        format!(
            "{} since {} ({}), expires {}",
            self.holder,
            at(self.since),
            self.message,
            at(self.expires)
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
}

// $1 lock dir, $2 info JSON with __SINCE__/__EXPIRES__ placeholders, $3 ttl seconds.
// Prints "fresh", or "takeover" then the old info, or "held" then the holder's info.
const ACQUIRE: &str = r#"
lock="$1"; ttl="$3"; now=$(date +%s); exp=$((now + ttl))
write() { printf '%s\n' "$2" | sed "s/\"since\":__SINCE__/\"since\":$now/; s/\"expires\":__EXPIRES__/\"expires\":$exp/" > "$lock/info.json"; }
mkdir -p "$(dirname "$lock")"
if mkdir "$lock" 2>/dev/null; then write "$@"; echo fresh; exit 0; fi
old_exp=$(sed -n 's/.*"expires":\([0-9]*\).*/\1/p' "$lock/info.json" 2>/dev/null)
# A lock without info (its holder died right after mkdir) expires from its mtime.
[ -n "$old_exp" ] || old_exp=$(( $(stat -c %Y "$lock" 2>/dev/null || echo "$now") + ttl ))
if [ "$old_exp" -lt "$now" ]; then
  stale="$lock.stale.$$"
  if mv "$lock" "$stale" 2>/dev/null && mkdir "$lock" 2>/dev/null; then
    write "$@"; echo takeover; cat "$stale/info.json" 2>/dev/null; rm -rf "$stale"; exit 0
  fi
fi
echo held; cat "$lock/info.json" 2>/dev/null; exit 0
"#;

/// Takes the lock unless someone else holds an unexpired one.
pub fn acquire(layout: &Layout, info: &LockInfo, ttl_secs: u64) -> Cmd {
    let mut template = info.clone();
    template.since = 0;
    template.expires = 0;
    let json = serde_json::to_string(&template)
        .expect("lock info serializes")
        .replace("\"since\":0", "\"since\":__SINCE__")
        .replace("\"expires\":0", "\"expires\":__EXPIRES__");
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
        _ => Acquired::Held(info),
    }
}

// $1 lock dir, $2 token, $3 ttl seconds.
const EXTEND: &str = r#"
now=$(date +%s)
grep -qF -- "\"token\":\"$2\"" "$1/info.json" 2>/dev/null || { echo "lock is not ours" >&2; exit 1; }
sed -i "s/\"expires\":[0-9]*/\"expires\":$((now + $3))/" "$1/info.json"
"#;

/// Pushes our lock's expiry forward.
pub fn extend(layout: &Layout, token: &str, ttl_secs: u64) -> Cmd {
    shell(EXTEND, &[&layout.lock(), token, &ttl_secs.to_string()])
}

// $1 lock dir, $2 token ("" with --force).
const RELEASE: &str = r#"
[ -d "$1" ] || { echo free; exit 0; }
if [ -z "$2" ] || grep -qF -- "\"token\":\"$2\"" "$1/info.json" 2>/dev/null; then rm -rf "$1"; echo released; exit 0; fi
echo held; cat "$1/info.json" 2>/dev/null
"#;

/// Releases our lock; with `token = None` (--force), anyone's.
pub fn release(layout: &Layout, token: Option<&str>) -> Cmd {
    shell(RELEASE, &[&layout.lock(), token.unwrap_or("")])
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
        let held =
            parse_acquire("held\n{\"holder\":\"a@b\",\"message\":\"m\",\"token\":\"t\",\"since\":1,\"expires\":2}\n");
        assert!(matches!(held, Acquired::Held(Some(ref i)) if i.holder == "a@b"));
    }
}
