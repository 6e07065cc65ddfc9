//! What a host runs and keeps: the live release, the kept releases with their
//! records, and the history. Read under the lock by every change, so what a
//! failed change puts back is what was live when it began.

use std::collections::BTreeMap;

use crate::activation::{Record, RECORD_FILE};
use crate::history::{self, Entry};
use crate::release::{self, shell, Layout};
use crate::remote::Cmd;

/// A host's releases as read in one command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveState {
    /// The release `current` points at.
    pub current: Option<String>,
    /// Release directories, oldest first.
    pub releases: Vec<String>,
    /// The history file's entries.
    pub history: Vec<Entry>,
    /// History lines that could not be read (a torn write).
    pub torn_lines: usize,
    /// Each kept release's record, where it has one.
    pub records: BTreeMap<String, Record>,
}

/// `$body` after a shell function `keep_detected ROOT TEXT` that replaces
/// `ROOT/.deploy/compose-detected` with TEXT at once.
macro_rules! with_keep_detected {
    ($body:literal) => {
        concat!(
            r#"keep_detected() { printf '%s' "$2" > "$1/.deploy/compose-detected.$$" && mv -f "$1/.deploy/compose-detected.$$" "$1/.deploy/compose-detected"; }"#,
            "\n",
            $body
        )
    };
}

// $1 root, $2 the record file's name, $3 what to keep in
// .deploy/compose-detected ("": nothing). Sections start with a line
// `@@deploy <name> [arg]`, which no history line (JSON) or record can start with.
const READ: &str = with_keep_detected!(
    r#"
root="$1"
[ -z "$3" ] || keep_detected "$root" "$3" 2>/dev/null
cur=$(readlink "$root/current" 2>/dev/null) && cur=${cur%/} && echo "${cur##*/}" || echo -
echo "@@deploy releases"
ls -1 "$root/releases" 2>/dev/null | grep -E '^[0-9]{8}T[0-9]{6}Z-[A-Za-z0-9-]+$' | sort
echo "@@deploy history"
cat "$root/.deploy/history.jsonl" 2>/dev/null
echo
for d in "$root"/releases/*/; do
  f="$d$2"
  [ -f "$f" ] || continue
  d=${d%/}
  echo "@@deploy record ${d##*/}"
  cat "$f"
  echo
done
true
"#
);

// $1 root, $2 what to keep in .deploy/compose-detected.
const KEEP_DETECTED: &str = with_keep_detected!(r#"keep_detected "$1" "$2""#);

/// Keeps `detected` (what preflight found of compose) in `.deploy/`, as
/// [`read`] does before it reads.
pub fn keep_detected(layout: &Layout, detected: &str) -> Cmd {
    shell(KEEP_DETECTED, &[&layout.root, detected])
}

/// Prints the live state of the app at `layout`; keeps `detected` (what
/// preflight found of compose) in `.deploy/` first, if given.
pub fn read(layout: &Layout, detected: Option<&str>) -> Cmd {
    shell(READ, &[&layout.root, RECORD_FILE, detected.unwrap_or("")])
}

/// Parses [`read`]'s output.
pub fn parse(out: &str) -> LiveState {
    let mut state = LiveState::default();
    let mut lines = out.lines();
    state.current = lines
        .next()
        .map(str::trim)
        .filter(|c| release::is_release_id(c))
        .map(str::to_string);
    let mut section = String::new();
    let mut record_of = String::new();
    let mut record_text = String::new();
    let mut history_text = String::new();
    let finish_record = |state: &mut LiveState, id: &mut String, text: &mut String| {
        if let Some(r) = Record::parse(text).filter(|r| &r.release == id) {
            state.records.insert(id.clone(), r);
        }
        id.clear();
        text.clear();
    };
    for line in lines {
        if let Some(head) = line.strip_prefix("@@deploy ") {
            if section == "record" {
                finish_record(&mut state, &mut record_of, &mut record_text);
            }
            let mut words = head.split_whitespace();
            section = words.next().unwrap_or("").to_string();
            if section == "record" {
                record_of = words.next().unwrap_or("").to_string();
            }
            continue;
        }
        match section.as_str() {
            "releases" if release::is_release_id(line.trim()) => state.releases.push(line.trim().to_string()),
            "history" => {
                history_text.push_str(line);
                history_text.push('\n');
            }
            "record" => {
                record_text.push_str(line);
                record_text.push('\n');
            }
            _ => {}
        }
    }
    if section == "record" {
        finish_record(&mut state, &mut record_of, &mut record_text);
    }
    let history = history::parse(&history_text);
    state.torn_lines = history.skipped;
    state.history = history.entries;
    state
}

impl LiveState {
    /// Releases that went live and passed their checks (a deploy, or a
    /// rollback to them; not one that went live with `--no-verify`).
    pub fn good(&self) -> Vec<&str> {
        self.history
            .iter()
            .filter(|e| matches!(e.outcome, history::Recorded::Deployed | history::Recorded::Rollback))
            .filter(|e| !e.unverified)
            .filter_map(|e| e.to.as_deref().filter(|to| *to == e.release))
            .collect()
    }

    /// The newest release directory, live or not.
    pub fn newest(&self) -> Option<&str> {
        self.releases.last().map(String::as_str)
    }

    /// The commit of release `id`, from its record or history; else the id's suffix.
    pub fn commit_of(&self, id: &str) -> String {
        self.records
            .get(id)
            .map(|r| r.commit.clone())
            .or_else(|| self.history.iter().find(|e| e.release == id).map(|e| e.commit.clone()))
            .unwrap_or_else(|| id.rsplit('-').next().unwrap_or("").to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The live state as the host's shell reads it: `current` named however
    /// its link is written (a person's `ln -sfn releases/<TAB>` ends in `/`),
    /// the releases, and their records.
    #[test]
    fn the_host_reads_current_however_its_link_is_written() {
        let root = tempfile::tempdir().unwrap();
        let layout = Layout {
            root: root.path().to_str().unwrap().to_string(),
        };
        let id = "20260102T000000Z-bbbbbbb";
        std::fs::create_dir_all(root.path().join("releases").join(id)).unwrap();
        std::fs::create_dir_all(root.path().join("releases/20260101T000000Z-aaaaaaa")).unwrap();
        let record = format!(
            r#"{{"release":"{id}","commit":"bbbb","project":"p","compose_files":["a.yml"],"services":[],"build":[],"env_file":".deploy-env","compose":"v2"}}"#
        );
        std::fs::write(root.path().join("releases").join(id).join(RECORD_FILE), record).unwrap();
        for link in [format!("releases/{id}"), format!("releases/{id}/")] {
            let _ = std::fs::remove_file(root.path().join("current"));
            std::os::unix::fs::symlink(&link, root.path().join("current")).unwrap();
            let state = parse(&crate::release::run_here(&read(&layout, None)).1);
            assert_eq!(state.current.as_deref(), Some(id), "{link}");
            assert_eq!(state.releases.len(), 2, "{link}");
            assert!(state.records.contains_key(id), "{link}");
        }
    }

    #[test]
    fn sections_parse_into_state() {
        let out = "20260102T000000Z-bbbbbbb\n@@deploy releases\n20260101T000000Z-aaaaaaa\n20260102T000000Z-bbbbbbb\n\
@@deploy history\n{\"release\":\"20260101T000000Z-aaaaaaa\",\"commit\":\"aaaa\",\"time\":\"t\",\"user\":\"u\",\"outcome\":\"deployed\",\"to\":\"20260101T000000Z-aaaaaaa\"}\n{\"torn\n\n\
@@deploy record 20260101T000000Z-aaaaaaa\n{\"release\":\"20260101T000000Z-aaaaaaa\",\"commit\":\"aaaa\",\"project\":\"p\",\"compose_files\":[\"a.yml\"],\"services\":[],\"build\":[],\"env_file\":\".deploy-env\",\"compose\":\"v1\"}\n\n";
        let s = parse(out);
        assert_eq!(s.current.as_deref(), Some("20260102T000000Z-bbbbbbb"));
        assert_eq!(s.releases.len(), 2);
        assert_eq!(s.history.len(), 1);
        assert_eq!(s.torn_lines, 1);
        assert_eq!(s.good(), vec!["20260101T000000Z-aaaaaaa"]);
        assert_eq!(s.records["20260101T000000Z-aaaaaaa"].compose_files, vec!["a.yml"]);
        assert_eq!(s.commit_of("20260102T000000Z-bbbbbbb"), "bbbbbbb");
    }
}
