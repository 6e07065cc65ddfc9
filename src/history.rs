//! `.deploy/history.jsonl` on each host: one JSON object per deploy or rollback.

use serde::{Deserialize, Serialize};

use crate::release::{shell, Layout};
use crate::remote::Cmd;

/// What a history line says happened to its release on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Recorded {
    /// Switched and live.
    Deployed,
    /// Failed before it went live; nothing changed.
    Failed,
    /// Went live, failed, and the previous release was put back.
    RolledBack,
    /// Went live, failed, and putting the previous release back failed too.
    RollbackFailed,
    /// A `deploy rollback` made this release live again.
    Rollback,
    /// Interrupted; the host is on `to`.
    Interrupted,
    /// Live, but its checks failed and it was left live (`--no-rollback`).
    ChecksFailed,
    /// Its run vanished before confirming it; the host's watchdog put the
    /// release from before back (the dead-man switch).
    RevertedByWatchdog,
}

/// One line of history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The release this line is about.
    pub release: String,
    pub commit: String,
    /// RFC 3339, UTC.
    pub time: String,
    /// `user@machine`.
    pub user: String,
    pub outcome: Recorded,
    /// The release live before.
    #[serde(default)]
    pub from: Option<String>,
    /// The release live after.
    #[serde(default)]
    pub to: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    /// It went live with `--no-verify` where checks exist: not known good.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unverified: bool,
    /// The release command that ran for this release, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_command: Option<RanCommand>,
}

/// A release command that ran (see `[release]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RanCommand {
    /// Where it ran (the first host, or each).
    pub hosts: Vec<String>,
    /// The command as shown to people (secrets redacted).
    pub command: String,
    /// Its exit code on each host, in `hosts` order.
    pub codes: Vec<i32>,
    pub elapsed_ms: u64,
}

// $1 the history file, $2 the line. Under umask 077 in a 0700 `.deploy/` (one
// made by an older version is closed up). A last line cut short (no newline at
// the end) is ended first, so it cannot swallow this entry.
const APPEND: &str = r#"set -e
umask 077
dir=${1%/*}
[ -d "$dir" ] || mkdir -p "$dir"
chmod 700 "$dir" 2>/dev/null || true
if [ -s "$1" ] && [ -n "$(tail -c 1 "$1")" ]; then printf '\n' >> "$1"; fi
printf '%s\n' "$2" >> "$1"
chmod 600 "$1" 2>/dev/null || true
"#;

/// Appends `entry` on a line of its own.
pub fn append(layout: &Layout, entry: &Entry) -> Cmd {
    let line = serde_json::to_string(entry).expect("history entry serializes");
    shell(APPEND, &[&layout.history(), &line])
}

/// Prints the history file (nothing if there is none).
pub fn read(layout: &Layout) -> Cmd {
    shell(r#"cat "$1" 2>/dev/null; true"#, &[&layout.history()])
}

/// A host's history as read: its entries, and how many lines were not entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    /// The entries, oldest first.
    pub entries: Vec<Entry>,
    /// Lines that are not entries (a write cut short, an edit): skipped.
    pub skipped: usize,
}

impl History {
    /// What to tell the user about skipped lines, if there were any.
    pub fn warning(&self) -> Option<String> {
        (self.skipped > 0).then(|| {
            format!(
                "history.jsonl: skipped {} line{} that {} not a history entry (a write cut short?)",
                self.skipped,
                if self.skipped == 1 { "" } else { "s" },
                if self.skipped == 1 { "is" } else { "are" },
            )
        })
    }
}

impl std::ops::Deref for History {
    type Target = [Entry];
    fn deref(&self) -> &[Entry] {
        &self.entries
    }
}

/// Parses the file; lines that are not entries are skipped and counted (see
/// [`History::warning`]; callers report it, this module prints nothing).
pub fn parse(text: &str) -> History {
    let mut history = History::default();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str(line) {
            Ok(entry) => history.entries.push(entry),
            Err(_) => history.skipped += 1,
        }
    }
    history
}

/// Now, RFC 3339 UTC.
pub fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(release: &str) -> String {
        format!(
            r#"{{"release":"{release}","commit":"abc","time":"2026-01-01T00:00:00Z","user":"u@m","outcome":"deployed"}}"#
        )
    }

    #[test]
    fn a_torn_line_is_skipped_and_counted_the_next_entry_kept() {
        let a = entry("20260101T000000Z-a");
        let b = entry("20260102T000000Z-b");
        let text = format!("{a}\n{}\n{b}\n", &a[..20]);
        let h = parse(&text);
        assert_eq!(h.entries.len(), 2);
        assert_eq!(h.entries[1].release, "20260102T000000Z-b");
        assert_eq!(h.skipped, 1);
        assert!(h.warning().unwrap().contains("skipped 1 line "), "{:?}", h.warning());
        assert_eq!(parse(&format!("{a}\n")).warning(), None);
    }
}
