//! The dead-man switch. Before a host switches, a watchdog starts on it,
//! detached from the SSH session: unless the run confirms the host in time
//! (its outcome decided: verified, or put back by the run itself), the
//! watchdog puts the release from before back with that release's own
//! activation, records why in the history, and frees the dead run's lock. A
//! run that lives pushes the deadline with every lock extension, so only a run
//! that vanished (killed, its machine asleep, its network gone) is undone.
//!
//! On the host: `.deploy/watchdog-<token>` holds the deadline (seconds since
//! the epoch, host clock); removing it confirms. The log is
//! `.deploy/watchdog-<token>.log`.

use crate::history::Entry;
use crate::release::{shell, Layout};
use crate::remote::Cmd;

/// The marker in the watchdog's command line (`ps`, `pgrep -f`).
pub const PROCESS_NAME: &str = "deploy-watchdog";

/// The watchdog's deadline file for the run with `token`.
pub fn file(layout: &Layout, token: &str) -> String {
    format!("{}/watchdog-{token}", layout.state())
}

// The watchdog itself. $1 deadline file, $2 the lock dir, $3 the run's token,
// $4 the revert (as shell), $5 the history file, $6 its line (time: __TIME__).
// The lock is looked at and changed only under its mutex (as lock.rs does):
// before the revert, the lock must still be the vanished run's, and it is
// extended so nobody takes it over while the revert runs; after it, it is
// freed only if it is still that run's. A revert that fails keeps the lock and
// says so in the history: a person must look.
const WATCH: &str = r#"
w="$1"; lock="$2"; token="$3"
while :; do
  d=$(cat "$w" 2>/dev/null) || exit 0          # confirmed: nothing to do
  case "$d" in ''|*[!0-9]*) sleep 1; continue ;; esac
  [ "$(date +%s)" -lt "$d" ] || break
  sleep 1
done
mutex() { command -v flock >/dev/null 2>&1 || return 0; exec 9>>"$lock.mutex" && flock -w 30 9; }
ours() {
  t=$(sed -n '1s/^{"since":[0-9]*,"expires":[0-9]*,"token":"\([^"]*\)".*/\1/p' "$lock/info.json" 2>/dev/null)
  [ -n "$t" ] && [ "$t" = "$token" ]
}
mutex
if ! ours || [ ! -f "$w" ]; then
  exec 9>&-
  echo "$(date -u) not reverting: confirmed, or the lock is no longer the vanished run's (someone else deploys)"
  rm -f "$w"; exit 0
fi
now=$(date +%s)
sed -i "1s/^{\"since\":\([0-9]*\),\"expires\":[0-9]*,/{\"since\":\1,\"expires\":$((now + 900)),/" "$lock/info.json"
exec 9>&-
echo "$(date -u) the run did not confirm in time: putting the release from before back"
sh -c "$4"; rc=$?
echo "$(date -u) revert exited with $rc"
now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
if [ "$rc" = 0 ]; then
  printf '%s\n' "$6" | sed "s/__TIME__/$now/" >> "$5"
  mutex
  if ours; then mv "$lock" "$lock.gone.$$" 2>/dev/null && rm -rf "$lock.gone.$$"; fi
  exec 9>&-
else
  printf '%s\n' "$6" | sed "s/__TIME__/$now/; s/\"outcome\":\"reverted_by_watchdog\"/\"outcome\":\"rollback_failed\"/" >> "$5"
  echo "$(date -u) the lock stays: a person must look"
fi
rm -f "$w"
"#;

// $1 deadline file, $2 seconds, then WATCH's arguments. Starts the watchdog in
// a session of its own, its output to the log, detached from this command.
const ARM: &str = r#"
umask 077
w="$1"; secs="$2"; shift 2
echo $(( $(date +%s) + secs )) > "$w" || exit 1
setsid sh -c "$WATCH" deploy-watchdog "$w" "$@" </dev/null >>"$w.log" 2>&1 &
"#;

/// Starts the watchdog of the run with `token` on the host: unless confirmed
/// within `secs` (pushed by each lock extension), it runs `revert` and appends
/// `entry` (its `time` filled in then) to the history.
pub fn arm(layout: &Layout, token: &str, secs: u64, revert: &Cmd, entry: &Entry) -> Cmd {
    let mut line = entry.clone();
    line.time = "__TIME__".into();
    let line = serde_json::to_string(&line).expect("history entry serializes");
    let w = file(layout, token);
    Cmd::new("sh")
        .arg("-c")
        .arg(ARM)
        .arg("sh")
        .arg(&w)
        .arg(secs.to_string())
        .arg(layout.lock())
        .arg(token)
        .arg(revert.as_word())
        .arg(layout.history())
        .arg(line)
        .env("WATCH", WATCH)
}

/// Confirms the host for the run with `token`: its watchdog ends within a second.
pub fn confirm(layout: &Layout, token: &str) -> Cmd {
    crate::lock::confirm_watchdog(layout, token)
}

// $1 the state dir. Prints "token deadline" for each watchdog still armed.
const PENDING: &str = r#"
for w in "$1"/watchdog-*; do
  [ -f "$w" ] || continue
  case "$w" in *.log|*.tmp) continue ;; esac
  printf '%s %s\n' "${w##*/watchdog-}" "$(cat "$w" 2>/dev/null)"
done
true
"#;

/// Lists the armed watchdogs: parse with [`parse_pending`].
pub fn pending(layout: &Layout) -> Cmd {
    shell(PENDING, &[&layout.state()])
}

/// Reads [`pending`]'s output: (token, deadline) for each armed watchdog.
pub fn parse_pending(out: &str) -> Vec<(String, u64)> {
    out.lines()
        .filter_map(|l| {
            let (token, deadline) = l.split_once(' ')?;
            Some((token.to_string(), deadline.trim().parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_watchdogs_parse() {
        assert_eq!(
            parse_pending("abc-1 1795900000\nbroken\n"),
            vec![("abc-1".to_string(), 1_795_900_000)]
        );
    }
}
