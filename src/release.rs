//! Releases on a host: ids, the directory layout, and the shell that stages,
//! switches and prunes them. Values reach the shell only as quoted arguments
//! (`"$1"`, `"$2"`...) of constant scripts.

use std::time::SystemTime;

use crate::remote::Cmd;

/// `20261125T171500Z-3f2a9c1`: UTC time of the deploy and the short commit.
/// Sorting ids sorts releases by time.
pub fn release_id(now: SystemTime, short_commit: &str) -> String {
    let stamp = humantime::format_rfc3339_seconds(now).to_string();
    let compact: String = stamp.chars().filter(|c| *c != '-' && *c != ':').collect();
    format!("{compact}-{short_commit}")
}

/// Whether `s` looks like a release id (guards `--to` and names read from hosts).
pub fn is_release_id(s: &str) -> bool {
    let ok_chars = s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    ok_chars && s.len() >= 18 && s.as_bytes()[8] == b'T' && s.contains("Z-")
}

/// Where things are under an app's path on a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub root: String,
}

impl Layout {
    pub fn new(root: &str) -> Layout {
        Layout {
            root: root.trim_end_matches('/').to_string(),
        }
    }
    pub fn releases(&self) -> String {
        format!("{}/releases", self.root)
    }
    pub fn release(&self, id: &str) -> String {
        format!("{}/releases/{id}", self.root)
    }
    pub fn current(&self) -> String {
        format!("{}/current", self.root)
    }
    pub fn shared(&self) -> String {
        format!("{}/shared", self.root)
    }
    pub fn state(&self) -> String {
        format!("{}/.deploy", self.root)
    }
    pub fn history(&self) -> String {
        format!("{}/.deploy/history.jsonl", self.root)
    }
    pub fn lock(&self) -> String {
        format!("{}/.deploy/lock", self.root)
    }
    pub fn repo(&self) -> String {
        format!("{}/.deploy/repo.git", self.root)
    }
    pub fn upload(&self, id: &str) -> String {
        format!("{}/.deploy/upload-{id}.tar", self.root)
    }
}

/// A constant shell body run with positional arguments: the one way values enter
/// multi-step shell here, so they are quoted by [`Cmd`] and never spliced into code.
pub fn shell(body: &'static str, args: &[&str]) -> Cmd {
    Cmd::new("sh").arg("-c").arg(body).arg("sh").args(args.iter().copied())
}

// $1 pid file, $2 the command as shell. Records the process group, which sshd (and
// the local transport) gives each command, so the whole command can be stopped.
const TRACKED: &str = r#"awk '{print $5}' /proc/$$/stat > "$1"; sh -c "$2"; rc=$?; rm -f "$1"; exit $rc"#;

/// Runs `cmd` so that [`stop_tracked`] can stop it (and all it started) later.
pub fn tracked(cmd: &Cmd, pid_file: &str) -> Cmd {
    Cmd::new("sh")
        .arg("-c")
        .arg(TRACKED)
        .arg("sh")
        .arg(pid_file)
        .arg(cmd.as_word())
}

const STOP_TRACKED: &str =
    r#"[ -f "$1" ] || exit 0; pg=$(cat "$1"); [ -n "$pg" ] && kill -TERM -- "-$pg" 2>/dev/null; rm -f "$1"; true"#;

/// Stops a command started with [`tracked`], if it still runs.
pub fn stop_tracked(pid_file: &str) -> Cmd {
    shell(STOP_TRACKED, &[pid_file])
}

/// Prints, one per line: compose variant, current release id (or `-`), docker
/// server version (or `-`), whether git is present.
const PREFLIGHT: &str = r#"
if docker compose version >/dev/null 2>&1; then echo v2
elif docker-compose version >/dev/null 2>&1; then echo v1
else echo none; fi
cur=$(readlink "$1/current" 2>/dev/null) && basename "$cur" || echo -
docker version --format '{{.Server.Version}}' 2>/dev/null || echo -
command -v git >/dev/null 2>&1 && echo git || echo nogit
"#;

/// Read-only facts about a host.
pub fn preflight(layout: &Layout) -> Cmd {
    shell(PREFLIGHT, &[&layout.root])
}

/// Creates the layout.
pub fn prepare(layout: &Layout) -> Cmd {
    Cmd::new("mkdir")
        .arg("-p")
        .arg(layout.releases())
        .arg(layout.shared())
        .arg(layout.state())
}

const FETCH: &str = r#"set -e
[ -d "$1" ] || git init --bare --quiet "$1"
git --git-dir="$1" fetch --quiet --force -- "$2" '+refs/heads/*:refs/heads/*' '+refs/tags/*:refs/tags/*'
if ! git --git-dir="$1" cat-file -e "$3^{commit}" 2>/dev/null; then
  echo "commit $3 is not in $2" >&2; exit 1
fi
mkdir "$4"
git --git-dir="$1" archive --format=tar -o "$4.tar" "$3"
tar -x -f "$4.tar" -C "$4"
rm -f "$4.tar"
"#;

/// Fetches `commit` from `url` into the host's mirror and exports it as release `id`.
pub fn fetch_and_export(layout: &Layout, url: &str, commit: &str, id: &str) -> Cmd {
    shell(FETCH, &[&layout.repo(), url, commit, &layout.release(id)])
}

const EXTRACT: &str = r#"set -e
mkdir "$2"
tar -x -f "$1" -C "$2"
rm -f "$1"
"#;

/// Unpacks an uploaded tar as release `id`.
pub fn extract_upload(layout: &Layout, id: &str) -> Cmd {
    shell(EXTRACT, &[&layout.upload(id), &layout.release(id)])
}

const LINK_SHARED: &str = r#"set -e
root="$1"; rel="$2"; shift 2
for f in "$@"; do
  if [ ! -e "$root/shared/$f" ]; then echo "shared file $root/shared/$f is missing (deploy setup uploads it)" >&2; exit 1; fi
  chmod 600 "$root/shared/$f"
  mkdir -p "$(dirname "$rel/$f")"
  rm -rf "$rel/$f"
  ln -s "$root/shared/$f" "$rel/$f"
done
"#;

/// Links each shared file into the release.
pub fn link_shared(layout: &Layout, id: &str, files: &[String]) -> Cmd {
    let release = layout.release(id);
    let mut args = vec![layout.root.as_str(), release.as_str()];
    args.extend(files.iter().map(String::as_str));
    shell(LINK_SHARED, &args)
}

/// The file in a release that holds when it was last started (`date +%s`, host
/// clock), written just before `up`: log checks look at lines since then.
pub const STARTED_FILE: &str = ".deploy-started";

/// Records that release `id` is being started now.
pub fn mark_started(layout: &Layout, id: &str) -> Cmd {
    shell(
        r#"date +%s > "$1""#,
        &[&format!("{}/{STARTED_FILE}", layout.release(id))],
    )
}

const POINT_CURRENT: &str = r#"set -e
ln -sfn "releases/$2" "$1/.current.tmp"
mv -T "$1/.current.tmp" "$1/current"
"#;

/// Points `current` at release `id`, atomically (rename over the old link).
pub fn point_current(layout: &Layout, id: &str) -> Cmd {
    shell(POINT_CURRENT, &[&layout.root, id])
}

// $1 the release's override file. Prints each image it names that the engine lacks.
const MISSING_IMAGES: &str = r#"
[ -f "$1" ] || { echo "(no $1)"; exit 0; }
sed -n 's/^ *image: *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p' "$1" | while IFS= read -r img; do
  docker image inspect "$img" >/dev/null 2>&1 || echo "$img"
done
"#;

/// Lists the images of release `id` (from its override file) that are missing.
pub fn missing_images(layout: &Layout, id: &str) -> Cmd {
    shell(
        MISSING_IMAGES,
        &[&format!("{}/{}", layout.release(id), crate::compose::OVERRIDE_FILE)],
    )
}

// $1 the release's override file, $2 project. Prints each built service whose
// running container does not use the image the override names.
const STALE_SERVICES: &str = r#"
[ -f "$1" ] || exit 0
svc=""
while IFS= read -r line; do
  case "$line" in
    "  "[!\ ]*:) svc=$(printf '%s' "$line" | sed 's/^ *"\{0,1\}\([^":]*\)"\{0,1\}:$/\1/') ;;
    *image:*)
      img=$(printf '%s' "$line" | sed -n 's/^ *image: *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p')
      running=$(docker ps --filter "label=com.docker.compose.project=$2" --filter "label=com.docker.compose.service=$svc" --format '{{.Image}}')
      [ -z "$running" ] || [ "$running" = "$img" ] || echo "$svc" ;;
  esac
done < "$1"
"#;

/// Lists the built services of release `id` whose containers run another image.
pub fn stale_services(layout: &Layout, project: &str, id: &str) -> Cmd {
    shell(
        STALE_SERVICES,
        &[
            &format!("{}/{}", layout.release(id), crate::compose::OVERRIDE_FILE),
            project,
        ],
    )
}

const LIST: &str = r#"cd "$1" 2>/dev/null && for d in */; do [ -d "$d" ] && echo "${d%/}"; done; true"#;

/// Lists release directories.
pub fn list(layout: &Layout) -> Cmd {
    shell(LIST, &[&layout.releases()])
}

const REMOVE: &str = r#"set -e
root="$1"; project="$2"; shift 2
for id in "$@"; do
  rm -rf "$root/releases/$id"
  imgs=$(docker image ls -q --filter "reference=$project-*:$id" | sort -u)
  [ -z "$imgs" ] || docker image rm -f $imgs >/dev/null
done
"#;

/// Removes releases and the images built for them.
pub fn remove(layout: &Layout, project: &str, ids: &[String]) -> Cmd {
    let mut args = vec![layout.root.as_str(), project];
    args.extend(ids.iter().map(String::as_str));
    shell(REMOVE, &args)
}

/// The releases to prune: all but the newest `keep`, never `current` nor `keep_also`.
pub fn to_prune(mut ids: Vec<String>, keep: usize, current: Option<&str>, keep_also: Option<&str>) -> Vec<String> {
    ids.retain(|id| is_release_id(id));
    ids.sort();
    let cut = ids.len().saturating_sub(keep);
    ids.into_iter()
        .take(cut)
        .filter(|id| Some(id.as_str()) != current && Some(id.as_str()) != keep_also)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_utc_stamps_with_the_commit() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_795_626_900);
        let id = release_id(t, "3f2a9c1");
        assert_eq!(id, "20261125T171500Z-3f2a9c1");
        assert!(is_release_id(&id));
        assert!(!is_release_id("../etc"));
    }

    #[test]
    fn pruning_keeps_the_newest_and_current() {
        let ids = [
            "20260101T000000Z-a",
            "20260102T000000Z-b",
            "20260103T000000Z-c",
            "20260104T000000Z-d",
        ];
        let ids: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            to_prune(ids.clone(), 2, None, None),
            vec!["20260101T000000Z-a", "20260102T000000Z-b"]
        );
        assert_eq!(
            to_prune(ids, 2, Some("20260101T000000Z-a"), None),
            vec!["20260102T000000Z-b"]
        );
    }
}
