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
}

const APPEND: &str = r#"mkdir -p "$(dirname "$1")" && printf '%s\n' "$2" >> "$1""#;

/// Appends `entry`.
pub fn append(layout: &Layout, entry: &Entry) -> Cmd {
    let line = serde_json::to_string(entry).expect("history entry serializes");
    shell(APPEND, &[&layout.history(), &line])
}

/// Prints the history file (nothing if there is none).
pub fn read(layout: &Layout) -> Cmd {
    shell(r#"cat "$1" 2>/dev/null; true"#, &[&layout.history()])
}

/// Parses the file; lines that are not entries (a torn write) are skipped.
pub fn parse(text: &str) -> Vec<Entry> {
    text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// The release to go back to from `current`: the newest earlier release that was
/// deployed successfully (or rolled back to), whose directory still exists.
pub fn previous_good(entries: &[Entry], current: &str, existing: &[String]) -> Option<String> {
    entries
        .iter()
        .rev()
        .filter(|e| matches!(e.outcome, Recorded::Deployed | Recorded::Rollback))
        .map(|e| e.to.clone().unwrap_or_else(|| e.release.clone()))
        .find(|id| id != current && existing.contains(id) && id.as_str() < current)
        .or_else(|| {
            // History lost or edited: fall back to the newest older directory.
            let mut older: Vec<&String> = existing.iter().filter(|id| id.as_str() < current).collect();
            older.sort();
            older.last().map(|s| s.to_string())
        })
}

/// Now, RFC 3339 UTC.
pub fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}
