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

/// The id for a release planned as `planned` when `newest` is the newest release
/// a host already has: `None` if `planned` sorts after it, else the id one
/// second after `newest`'s time (so ids stay unique and in deploy order).
pub fn id_after(newest: &str, planned: &str, short_commit: &str) -> Option<String> {
    let stamp = |id: &str| id.get(..16).map(str::to_string);
    let (newest_stamp, planned_stamp) = (stamp(newest)?, stamp(planned)?);
    if planned_stamp > newest_stamp {
        return None;
    }
    let rfc = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &newest_stamp[..4],
        &newest_stamp[4..6],
        &newest_stamp[6..8],
        &newest_stamp[9..11],
        &newest_stamp[11..13],
        &newest_stamp[13..15]
    );
    let t = humantime::parse_rfc3339(&rfc).ok()?;
    Some(release_id(t + std::time::Duration::from_secs(1), short_commit))
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
}

/// Prefixes a shell body with `image_names FILE`, which prints the image each
/// `image:` line of an override file names, one per line.
macro_rules! with_image_names {
    ($body:literal) => {
        concat!(
            r#"image_names() { sed -n 's/^ *image: *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p' "$@"; }"#,
            "\n",
            $body
        )
    };
}

/// The directory in a release that holds a Docker client config with only
/// the registry's credentials (`[build] registry_user`/`registry_password`),
/// 0600: what pushes and pulls use as `DOCKER_CONFIG`, so no `docker login`
/// is left in the user's own config.
pub const DOCKER_CONFIG_DIR: &str = ".deploy-docker";

/// `cmd` with `DOCKER_CONFIG` at release `id`'s credentials when the deploy
/// has registry credentials (`auth`).
pub fn with_registry_auth(cmd: Cmd, layout: &Layout, id: &str, auth: bool) -> Cmd {
    match auth {
        true => cmd.env("DOCKER_CONFIG", format!("{}/{DOCKER_CONFIG_DIR}", layout.release(id))),
        false => cmd,
    }
}

/// A constant shell body run with positional arguments: the one way values enter
/// multi-step shell here, so they are quoted by [`Cmd`] and never spliced into code.
pub fn shell(body: &'static str, args: &[&str]) -> Cmd {
    Cmd::new("sh").arg("-c").arg(body).arg("sh").args(args.iter().copied())
}

// $1 pid file, $2 the command as shell. Records the process group, which sshd (and
// the local transport) gives each command, so the whole command can be stopped:
// the 5th field of /proc/$$/stat (the 2nd, the program's name, is `sh`).
const TRACKED: &str =
    r#"read -r _ _ _ _ pgrp _ < /proc/$$/stat && echo "$pgrp" > "$1"; (eval "$2"); rc=$?; rm -f "$1"; exit $rc"#;

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

/// Prints, one per line: the compose variants the host has (`v2 v1`, `v2`,
/// `v1` or `none`), the current release id (or `-`), whether git is present,
/// `$DOCKER_HOST` (or `-`); then the current release's record, if it has one;
/// then, when compose was looked for afresh, `@@deploy detected` and what to
/// keep in `.deploy/compose-detected`.
/// (The engine itself is asked through its API meanwhile: see `Fleet::preflight`.)
// Compose v2 is found where the
// docker CLI looks for its plugins (a file test, not two Go start-ups), else
// asked; v1 beside it by its name on PATH, and asked only where it is the only one.
const PREFLIGHT: &str = r#"
plugins="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins /usr/local/lib/docker/cli-plugins /usr/local/libexec/docker/cli-plugins /usr/lib/docker/cli-plugins /usr/libexec/docker/cli-plugins"
detect() {
  v2=""
  for d in $plugins; do [ ! -x "$d/docker-compose" ] || { v2=1; break; }; done
  if [ -n "$v2" ] || docker compose version >/dev/null 2>&1; then
    if command -v docker-compose >/dev/null 2>&1; then echo v2 v1; else echo v2; fi
  elif docker-compose version >/dev/null 2>&1; then echo v1
  else echo none; fi
}
# What was found is kept in .deploy/, with the binaries it was found from
# (path, size, mtime): asking docker-compose v1 costs a Python start-up.
cache="$1/.deploy/compose-detected"
id=$({ for b in docker docker-compose; do p=$(command -v "$b") && stat -L -c '%n %s %Y' "$p"; done
  for d in $plugins; do [ ! -e "$d/docker-compose" ] || stat -L -c '%n %s %Y' "$d/docker-compose"; done; } 2>/dev/null)
fresh=""
kept=""; kept_id=""
if [ -f "$cache" ]; then
  { IFS= read -r kept; while IFS= read -r l || [ -n "$l" ]; do kept_id="${kept_id:+$kept_id
}$l"; l=""; done; } < "$cache"
fi
if [ -n "$kept" ] && [ "$kept_id" = "$id" ]; then found=$kept
else found=$(detect); fresh=1; fi
echo "$found"
cur=$(readlink "$1/current" 2>/dev/null) && cur=${cur%/} && cur=${cur##*/} && echo "$cur" || echo -
command -v git >/dev/null 2>&1 && echo git || echo nogit
printf '%s\n' "${DOCKER_HOST:--}"
[ -z "$cur" ] || cat "$1/releases/$cur/$2" 2>/dev/null
# Preflight changes nothing: a run that takes the lock writes the cache (see live::read).
[ -z "$fresh" ] || printf '\n@@deploy detected\n%s\n%s\n' "$found" "$id"
true
"#;

/// `docker version`: the engine's version, where its API cannot be reached directly.
pub fn docker_version() -> Cmd {
    Cmd::new("docker").args(["version", "--format", "{{.Server.Version}}"])
}

/// Read-only facts about a host.
pub fn preflight(layout: &Layout) -> Cmd {
    shell(PREFLIGHT, &[&layout.root, crate::activation::RECORD_FILE])
}

// $1 releases, $2 shared, $3 the state dir. The state dir (lock token,
// history) is made under umask 077, so it is never readable by others even
// for a moment, and one made by an older version is closed up.
const PREPARE: &str = r#"set -e
mkdir -p "$1" "$2"
(umask 077 && mkdir -p "$3")
chmod 700 "$3"
"#;

/// Creates the layout: `releases/` and `shared/`, and `.deploy/` as 0700 (also
/// when it exists with another mode).
pub fn prepare(layout: &Layout) -> Cmd {
    shell(PREPARE, &[&layout.releases(), &layout.shared(), &layout.state()])
}

// $1 the mirror repo, $2 the release dir, $3 the URL to fetch from ("" for
// strategy upload), $4 the commit. stdin: a tar of the release's own files
// (and, for upload, the commit's files). Kept in a file first: a fetch must
// not read it.
const STAGE: &str = r#"set -e
files=$(mktemp "$2.files.XXXXXX")
trap 'rm -f "$files"' EXIT
cat > "$files"
mkdir "$2"
if [ -n "$3" ]; then
  [ -d "$1" ] || git init --bare --quiet "$1"
  git --git-dir="$1" fetch --quiet --force -- "$3" '+refs/heads/*:refs/heads/*' '+refs/tags/*:refs/tags/*' </dev/null
  if ! git --git-dir="$1" cat-file -e "$4^{commit}" 2>/dev/null; then
    echo "commit $4 is not in $3" >&2; exit 1
  fi
  git --git-dir="$1" archive --format=tar "$4" | tar -x -m -f - -C "$2"
fi
tar -x -m -f "$files" -C "$2"
"#;

/// Puts release `id` on the host: fetched (`fetch = Some((url, commit))`,
/// into the host's mirror, then exported) or not (its files come in the tar),
/// then the tar on stdin unpacked over it (see [`files_tar`]). Files get the
/// time they were unpacked (`tar -m`), not the commit's: Compose v2 sends a
/// build context file again only when its size or mtime changed, so a
/// same-size change committed within the same second as an earlier build of
/// that path (this app's or another's on the engine) would build from the
/// earlier content. The image cache goes by content, so unchanged services
/// still build to the same image.
pub fn stage(layout: &Layout, id: &str, fetch: Option<(&str, &str)>) -> Cmd {
    let (url, commit) = fetch.unwrap_or(("", ""));
    shell(STAGE, &[&layout.repo(), &layout.release(id), url, commit])
}

/// A tar of `files` (path, bytes, mode), after the entries of `base` (the
/// commit's files, for strategy upload): what [`stage`] reads on stdin.
pub fn files_tar(base: Option<&[u8]>, files: &[(&str, &[u8], u32)]) -> std::io::Result<Vec<u8>> {
    let mut out = tar::Builder::new(Vec::new());
    if let Some(base) = base {
        let mut archive = tar::Archive::new(base);
        for entry in archive.entries()? {
            let mut entry = entry?;
            let header = entry.header().clone();
            out.append(&header, &mut entry)?;
        }
    }
    for (path, bytes, mode) in files {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(*mode);
        h.set_size(bytes.len() as u64);
        h.set_mtime(0);
        out.append_data(&mut h, path, *bytes)?;
    }
    out.into_inner()
}

// $1 root, $2 release dir, $3 how many shared files follow, then the files,
// then the shared directories. A shared file must exist and is made 0600 (never
// a directory: chmod 600 would lock its owner out of it). A missing shared
// directory is made 0700; an existing one keeps the mode its operator gave it
// (a container running as another uid may need more).
const LINK_SHARED: &str = r#"set -e
root="$1"; rel="$2"; nfiles="$3"; shift 3
link() {
  mkdir -p "$(dirname "$rel/$1")"
  rm -rf "$rel/$1"
  ln -s "$root/shared/$1" "$rel/$1"
}
i=0
for p in "$@"; do
  i=$((i + 1))
  if [ "$i" -le "$nfiles" ]; then
    if [ -d "$root/shared/$p" ]; then echo "shared file $root/shared/$p is a directory (list it in app.shared_dirs)" >&2; exit 1; fi
    if [ ! -e "$root/shared/$p" ]; then echo "shared file $root/shared/$p is missing (deploy setup uploads it)" >&2; exit 1; fi
    chmod 600 "$root/shared/$p"
  else
    if [ -e "$root/shared/$p" ] && [ ! -d "$root/shared/$p" ]; then echo "shared directory $root/shared/$p is not a directory" >&2; exit 1; fi
    [ -d "$root/shared/$p" ] || (umask 077 && mkdir -p "$root/shared/$p")
  fi
  link "$p"
done
"#;

/// Links each of the app's shared files and directories into release `id`
/// (see `LINK_SHARED`); `None` when it has none.
pub fn link_shared(layout: &Layout, id: &str, app: &crate::config::App) -> Option<Cmd> {
    let files: Vec<&str> = app.shared_files.iter().map(|f| f.expose()).collect();
    let dirs: Vec<&str> = app.shared_dirs.iter().map(|d| d.expose()).collect();
    if files.is_empty() && dirs.is_empty() {
        return None;
    }
    let release = layout.release(id);
    let count = files.len().to_string();
    let mut args = vec![layout.root.as_str(), release.as_str(), count.as_str()];
    args.extend(files);
    args.extend(dirs);
    Some(shell(LINK_SHARED, &args))
}

// $1 shared, then directories. Makes the missing ones 0700.
const SHARED_DIRS: &str = r#"set -e
shared="$1"; shift
for d in "$@"; do
  if [ -e "$shared/$d" ] && [ ! -d "$shared/$d" ]; then echo "shared directory $shared/$d is not a directory" >&2; exit 1; fi
  [ -d "$shared/$d" ] || (umask 077 && mkdir -p "$shared/$d")
done
"#;

/// Creates the app's shared directories that are missing (0700), for `deploy setup`.
pub fn make_shared_dirs(layout: &Layout, app: &crate::config::App) -> Cmd {
    let shared = layout.shared();
    let mut args = vec![shared.as_str()];
    args.extend(app.shared_dirs.iter().map(|d| d.expose()));
    shell(SHARED_DIRS, &args)
}

/// The file in a release that holds when it was last started (`date +%s`, host
/// clock), written just before `up`: log checks look at lines since then.
pub const STARTED_FILE: &str = ".deploy-started";

// $1 the release's override file, $2 its started file, $3 the release, $4
// "checked" when deploy found every image there through the Engine API. Prints
// each image the override names that the engine lacks; if none is missing,
// records that the release is being started now. One `docker image inspect`
// of them all when all are there (the usual case); one each only to name
// those missing.
const BEFORE_UP: &str = with_image_names!(
    r#"
[ -f "$1" ] || { echo "no override file $1: the release was not staged completely" >&2; exit 3; }
names=$(image_names "$1")
missing=""
if [ -n "$names" ] && [ "$4" != checked ] && ! docker image inspect $names >/dev/null 2>&1; then
  missing=$(printf '%s\n' "$names" | while IFS= read -r img; do
    docker image inspect "$img" >/dev/null 2>&1 || echo "$img"
  done)
fi
if [ -n "$missing" ]; then
  echo "the images of release $3 are gone ($(echo $missing)); it cannot start without a build" >&2
  exit 3
fi
t=$(date +%s)
printf '%s\n' "$t" > "$2"
printf '@@deploy started %s\n' "$t"
"#
);

/// The line [`before_up`] prints with when the release was started (host clock).
pub const STARTED_MARK: &str = "@@deploy started ";

/// When the release was started, from the output of a command that ran [`before_up`].
pub fn started_in(stdout: &str) -> Option<i64> {
    stdout
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix(STARTED_MARK))
        .and_then(|t| t.trim().parse().ok())
}

/// Before `up` of release `id`: fails naming its missing images (from its
/// override file), unless deploy found them all through the Engine API
/// (`checked`); when none is, marks the release started (see [`STARTED_FILE`]).
pub fn before_up(layout: &Layout, id: &str, checked: bool) -> Cmd {
    shell(
        BEFORE_UP,
        &[
            &format!("{}/{}", layout.release(id), crate::compose::OVERRIDE_FILE),
            &format!("{}/{STARTED_FILE}", layout.release(id)),
            id,
            if checked { "checked" } else { "" },
        ],
    )
}

// $1 the check after `up` (prints services running another image, else points
// `current`), $2 `up --force-recreate` without its services, $3 pointing
// `current`: what follows `up`, in `ACTIVATE` and on its own (`settle`).
macro_rules! settle {
    () => {
        r#"
stale=$(eval "$1") || exit $?
[ -n "$stale" ] || exit 0
# Each service the check printed is one quoted argument of the recreation.
recreate=$2 point=$3
set -f; set -- $stale; set +f
(eval "$recreate"' "$@"') && eval "$point"
"#
    };
}

// $1, $2, $3 as for `settle!` ($1 "": `current` is pointed at once, deploy
// checks the images through the Engine API), $4 the check before `up` ("":
// none), $5 `up`, $6 what runs first ("": nothing), $7 what runs before even
// that ("": nothing).
const ACTIVATE: &str = concat!(
    r#"
[ -z "$7" ] || (eval "$7") || exit $?
[ -z "$6" ] || (eval "$6") || exit $?
[ -z "$4" ] || (eval "$4") || exit $?
(eval "$5") || exit $?
[ -n "$1" ] || { eval "$3"; exit $?; }"#,
    settle!()
);

/// Makes a release live in one command: `write` (its override with the
/// content tags, see [`write_override`]), `first` (the watchdog, the old
/// release's `down`, where the app asks for it), [`before_up`], `up`,
/// [`after_up`] (or, without it, pointing `current` at once), and the
/// recreation of any service still on another image.
/// Each is one level deep: a long script nested twice more (a watchdog's)
/// would outgrow what one command may carry.
pub fn activate(
    write: Option<&Cmd>,
    first: Option<&Cmd>,
    before: Option<&Cmd>,
    up: &Cmd,
    after: Option<&Cmd>,
    recreate: &Cmd,
    point: &Cmd,
) -> Cmd {
    let word = |c: Option<&Cmd>| c.map(Cmd::as_word).unwrap_or_else(|| "".into());
    Cmd::new("sh")
        .arg("-c")
        .arg(ACTIVATE)
        .arg("sh")
        .arg(word(after))
        .args([recreate, point].map(Cmd::as_word))
        .arg(word(before))
        .arg(up.as_word())
        .arg(word(first))
        .arg(word(write))
}

const SETTLE: &str = settle!();

/// What [`activate`] does after `up` when given [`after_up`]: the recreation
/// of any service still on another image, then pointing `current`; for a
/// switch whose image check through the Engine API found one (or failed).
pub fn settle(after: &Cmd, recreate: &Cmd, point: &Cmd) -> Cmd {
    Cmd::new("sh")
        .arg("-c")
        .arg(SETTLE)
        .arg("sh")
        .args([after, recreate, point].map(Cmd::as_word))
}

// Each argument is a whole command line as `Cmd::to_shell` writes it (every
// value quoted), so `(eval "$c")` runs it as `sh -c "$c"` would, in a
// subshell, without starting another shell program for it.
const CHAIN: &str = r#"for c in "$@"; do (eval "$c") || exit $?; done"#;

/// The commands given, one after the other in one command, stopping at the
/// first that fails.
pub fn chain(cmds: &[Option<&Cmd>]) -> Cmd {
    Cmd::new("sh")
        .arg("-c")
        .arg(CHAIN)
        .arg("sh")
        .args(cmds.iter().flatten().map(|c| c.as_word()))
}

/// `first`, whatever it does, then `then`, whose exit is the command's.
pub fn anyway_then(first: &Cmd, then: &Cmd) -> Cmd {
    Cmd::new("sh")
        .arg("-c")
        .arg(r#"(eval "$1"); eval "$2""#)
        .arg("sh")
        .arg(first.as_word())
        .arg(then.as_word())
}

const POINT_CURRENT: &str = r#"set -e
ln -sfn "releases/$2" "$1/.current.tmp"
mv -T "$1/.current.tmp" "$1/current"
"#;

/// Points `current` at release `id`, atomically (rename over the old link).
pub fn point_current(layout: &Layout, id: &str) -> Cmd {
    shell(POINT_CURRENT, &[&layout.root, id])
}

// $1 root, $2 release id, $3 project. Prints each built service of the release
// whose running container does not use the image its override names; when
// there is none, points `current` at the release.
const AFTER_UP: &str = r#"set -e
f="$1/releases/$2/.deploy-compose.yml"
stale=""
if [ -f "$f" ]; then
  running=$(docker ps --filter "label=com.docker.compose.project=$3" --format '{{.Label "com.docker.compose.service"}} {{.Image}}')
  svc=""
  while IFS= read -r line; do
    case "$line" in
      "  "[!\ ]*:) svc=$(printf '%s' "$line" | sed 's/^ *"\{0,1\}\([^":]*\)"\{0,1\}:$/\1/') ;;
      *image:*)
        img=$(printf '%s' "$line" | sed -n 's/^ *image: *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p')
        now=$(printf '%s\n' "$running" | awk -v s="$svc" '$1 == s { print $2; exit }')
        [ -z "$now" ] || [ "$now" = "$img" ] || stale="$stale $svc" ;;
    esac
  done < "$f"
fi
if [ -n "$stale" ]; then echo $stale; exit 0; fi
ln -sfn "releases/$2" "$1/.current.tmp"
mv -T "$1/.current.tmp" "$1/current"
"#;

/// After `up` of release `id`: lists the built services whose containers run
/// another image; when there are none, points `current` at the release.
pub fn after_up(layout: &Layout, project: &str, id: &str) -> Cmd {
    shell(AFTER_UP, &[&layout.root, id, project])
}

const LIST: &str = r#"cd "$1" 2>/dev/null && for d in */; do [ -d "$d" ] && echo "${d%/}"; done; true"#;

/// Lists release directories.
pub fn list(layout: &Layout) -> Cmd {
    shell(LIST, &[&layout.releases()])
}

// $1 root, $2 project, $3 the build tags of the releases with their images'
// content tags as the Engine API found them ("-": the host lists them), then
// release ids. Removes each release's directory, the tags its build made
// (`<project>-<service>:<id>`) and the content tags its override (and a swarm
// release's registry file) names that no release left names.
const REMOVE: &str = with_image_names!(
    r#"set -e
root="$1"; project="$2"; found="$3"; shift 3
names=""
refs=""
[ "$found" = - ] || names="$found"
for id in "$@"; do
  for f in "$root/releases/$id/.deploy-compose.yml" "$root/releases/$id/.deploy-registry.yml"; do
    [ ! -f "$f" ] || names="$names $(image_names "$f")"
  done
  refs="$refs --filter reference=$project-*:$id"
done
set -f  # the references' `*` is docker's pattern, not the shell's
# A build tag, and the content tag of its image (`sha-` and the short id): a
# release whose override was never rewritten (stopped between its build and
# its start) does not name the content tags deploy made for it.
[ -z "$refs" ] || [ "$found" != - ] || names="$names $(docker image ls --format '{{.Repository}}:{{.Tag}} {{.Repository}}:sha-{{.ID}}' $refs)"
set +f
for id in "$@"; do rm -rf "$root/releases/$id"; done
doomed=""
for img in $(printf '%s\n' $names | sort -u); do
  # An image a remaining release names stays (a reused release names the tags
  # of the release it was reused from).
  grep -qsF "\"$img\"" "$root"/releases/*/.deploy-compose.yml "$root"/releases/*/.deploy-registry.yml || doomed="$doomed $img"
done
# One that a container still uses cannot go; it is said on stderr, not fatal.
# A content tag of a build tag that was never made is no news.
[ -z "$doomed" ] || { docker image rm $doomed 2>&1 >/dev/null | grep -v 'No such image' >&2; } || true
"#
);

/// Removes releases and the images only they use. `found`: their build
/// tags, each with its image's content tag, as the Engine API listed them
/// (see [`crate::engine::Engine::build_tags`]); `None`: the host lists them.
pub fn remove(layout: &Layout, project: &str, ids: &[String], found: Option<&[String]>) -> Cmd {
    let found = found.map_or_else(|| "-".to_string(), |f| f.join(" "));
    let mut args = vec![layout.root.as_str(), project, found.as_str()];
    args.extend(ids.iter().map(String::as_str));
    shell(REMOVE, &args)
}

// $1 the release's override file, as the build left it, $2 the app's root.
// Tags every image it names with its content (`<name>:sha-<12 hex of the image
// id>`) and makes the override name that tag instead: a release whose image of
// a service did not change names the very image the running container was made
// from, so `up -d` leaves that container alone, as compose itself does after
// an unchanged build. Each built service's build context becomes the app's
// root (the release is built by then): compose v1 counts the context's path in
// a service's config hash, and a path per release would make it recreate every
// built service at every release (v2 leaves the build out of the hash).
const ADDRESS_IMAGES: &str = with_image_names!(
    r#"set -e
f="$1"
root=$(printf '%s' "$2" | sed 's/[\\"]/\\&/g')
names=$(image_names "$f")
[ -n "$names" ] || exit 0
ids=$(docker image inspect -f '{{.Id}}' $names)
n=0
tagging=""
: > "$f.tmp"
while IFS= read -r line; do
  case "$line" in
    *image:*)
      n=$((n + 1))
      img=$(printf '%s\n' "$names" | sed -n "${n}p")
      id=$(printf '%s\n' "$ids" | sed -n "${n}p")
      id=${id#sha256:}
      tag="${img%:*}:sha-$(printf '%s' "$id" | cut -c1-12)"
      docker tag "$img" "$tag" & tagging="$tagging $!"
      printf '    image: "%s"\n    build:\n      context: "%s"\n' "$tag" "$root" >> "$f.tmp" ;;
    *) printf '%s\n' "$line" >> "$f.tmp" ;;
  esac
done < "$f"
for pid in $tagging; do wait "$pid"; done
mv "$f.tmp" "$f"
"#
);

// $1 root, $2 the live release, $3 the staged one. Prints "reused" after
// copying the live release's override into the staged one when the staged tree
// and compose variables are byte for byte the live release's, both build the
// same services and the live release's images are all there: a build would
// only hit the cache and give the very same images.
const REUSE_IMAGES: &str = with_image_names!(
    r#"
old="$1/releases/$2"; new="$1/releases/$3"
[ -f "$old/.deploy-compose.yml" ] && [ -f "$new/.deploy-compose.yml" ] || exit 0
cmp -s "$old/.deploy-env" "$new/.deploy-env" || exit 0
diff -rq --no-dereference -x .deploy-compose.yml -x .deploy-started -x '.deploy-services.*' -x .deploy-release.json -x .deploy-registry.yml -x .deploy-docker "$old" "$new" >/dev/null 2>&1 || exit 0
services() { grep -v -e 'image:' -e '^#' -e '^    build:$' -e '^      context:' "$1"; }
[ "$(services "$old/.deploy-compose.yml")" = "$(services "$new/.deploy-compose.yml")" ] || exit 0
for img in $(image_names "$old/.deploy-compose.yml"); do
  docker image inspect "$img" >/dev/null 2>&1 || exit 0
done
cp "$old/.deploy-compose.yml" "$new/.deploy-compose.yml"
echo reused
"#
);

/// Before the build of release `id`: reuses the images of the live release
/// `live` when nothing that goes into them changed (see `REUSE_IMAGES`).
pub fn reuse_images(layout: &Layout, live: &str, id: &str) -> Cmd {
    shell(REUSE_IMAGES, &[&layout.root, live, id])
}

// The services of a release, kept in `.deploy/services/` (0700, outside every
// release and so every build context) under a key, the SHA-256 of all compose
// reads for them: its invocation, the compose programs found
// (`.deploy/compose-detected`), each compose file and the `.env` beside it,
// the release's `.env` and variables (`.deploy-env`), and the environment but
// for what each login changes. A release with a kept key takes that file and
// starts no compose (v1 is a Python program: about 0.4 s idle, over a second
// beside busy builds). The 8 last used are kept. No key, so compose every
// time, where a compose file may read another one (the words `extends`,
// `include`) or without `sha256sum`. Files being resolved are made by mktemp
// (new, 0600: the variables' values are in them) and go however the script
// ends (Ctrl-C and a step's timeout stop the whole process group, a lost
// connection closes stdout); one left by a power cut goes after an hour.
// Needs $resolve (`compose config`), $dir (the release), $root (the app's
// root), $how (compose's invocation but for the directory), $store (its
// `.deploy/services`); `services_key FILES` sets $key and, where kept, $kept;
// `resolving` makes $out for them, `keep` keeps it under $key.
macro_rules! with_services_store {
    ($body:literal) => {
        concat!(
            r#"
out=""; kept=""; key=""
services_key() {
  if (cd "$dir" && ! grep -qsE 'extends|include' -- "$@"); then
    key=$({ printf 'deploy services 1\n%s\n' "$how"; cat "$root/.deploy/compose-detected"
      cd "$dir" || exit
      for f in "$@"; do printf '\n@@deploy %s\n' "$f"; cat -- "$f"; printf '\n@@deploy .env\n'; cat -- "$(dirname -- "$f")/.env"; done
      printf '\n@@deploy .env\n'; cat .env; printf '\n@@deploy vars\n'; cat .deploy-env
      printf '\n@@deploy env\n'; env | grep -v -e '^SSH_' -e '^XDG_SESSION_' -e '^PWD=' -e '^OLDPWD=' -e '^SHLVL=' -e '^_=' | LC_ALL=C sort
    } 2>/dev/null | sha256sum 2>/dev/null | cut -d ' ' -f 1)
    case "$key" in *[!0-9a-f]*|"") key="" ;; esac
  fi
  if [ -n "$key" ] && [ -s "$store/$key" ] && touch "$store/$key" 2>/dev/null; then kept="$store/$key"; fi
}
trap '[ -z "$out" ] || rm -f "$out"' EXIT
trap 'exit 129' HUP; trap 'exit 130' INT; trap 'exit 141' PIPE; trap 'exit 143' TERM
resolving() {
  if (umask 077 && mkdir -p "$store"); then
    find "$store" -maxdepth 1 -name '.resolving.*' -mmin +60 -exec rm -f {} + 2>/dev/null
    out=$(mktemp "$store/.resolving.XXXXXX" 2>/dev/null) || out=""
  fi
}
# Keeps $out (resolved, not empty) under $key, as $kept.
keep() {
  if [ -n "$out" ] && [ -s "$out" ] && [ -n "$key" ] && mv -f "$out" "$store/$key"; then
    kept="$store/$key"; out=""
    ls -1t "$store" | tail -n +9 | while IFS= read -r old; do rm -f "$store/$old"; done
  fi
}
"#,
            $body
        )
    };
}

// $1 the reuse check ("" when a build is wanted anyway), $2 the build, $3 the
// content tagging ("": deploy tags through the Engine API after it), $4 what
// resolves the release's services (`compose config`; "": none), $5 the
// release's directory, $6 the app's root, $7 compose's invocation but for the
// directory; then the app's compose files (relative to $5). Prints "reused"
// when the live release's images serve.
// The services are resolved beside the build (on the other cores), unless
// kept (see `with_services_store!`), waited for whatever the build did, and
// printed after a line `@@deploy services` when the build passed and compose
// resolved them.
const BUILD: &str = with_services_store!(
    r#"
reuse="$1"; build="$2"; address="$3"; resolve="$4"; dir="$5"; root="$6"; how="$7"
shift 7; store="$root/.deploy/services"
[ -z "$resolve" ] || services_key "$@"
if [ -n "$resolve" ] && [ -z "$kept" ]; then
  resolving
  [ -z "$out" ] || (sh -c "$resolve" > "$out" 2>/dev/null || : > "$out") &
fi
finish() {
  wait
  [ "$1" != 0 ] || keep
  if [ "$1" = 0 ] && [ -n "$kept" ]; then echo "@@deploy services"; cat "$kept"
  elif [ "$1" = 0 ] && [ -n "$out" ] && [ -s "$out" ]; then echo "@@deploy services"; cat "$out"; fi
  [ -z "$out" ] || rm -f "$out"
  exit "$1"
}
if [ -n "$reuse" ] && [ "$(sh -c "$reuse" 2>/dev/null)" = reused ]; then echo reused; finish 0; fi
sh -c "$build" || finish $?
[ -z "$address" ] || sh -c "$address"
finish $?
"#
);

// $1 what resolves the release's services (`compose config`), $2 the
// release's directory, $3 the app's root, $4 compose's invocation but for the
// directory; then the app's compose files (relative to $2). Prints the
// services as kept (see `with_services_store!`), else as compose resolves
// them, keeping them; compose's exit code and errors as its own.
const RESOLVE: &str = with_services_store!(
    r#"
resolve="$1"; dir="$2"; root="$3"; how="$4"
shift 4; store="$root/.deploy/services"
services_key "$@"
[ -z "$kept" ] || exec cat -- "$kept"
[ -z "$key" ] || resolving
[ -n "$out" ] || exec sh -c "$resolve"
sh -c "$resolve" > "$out" || exit $?
keep
if [ -n "$kept" ]; then cat -- "$kept"; else cat -- "$out"; fi
"#
);

/// The line of [`build`]'s output after which the release's services follow.
pub const SERVICES_MARK: &str = "@@deploy services\n";

/// What resolves a release's services (beside its build, or for a check of
/// it), and what names them for keeping (see `with_services_store!`).
pub struct Resolving<'a> {
    /// `compose config` of the release.
    pub config: Cmd,
    /// Compose's words but for the release's directory (see [`crate::compose::Compose::invocation`]).
    pub invocation: String,
    /// The app's compose files, relative to the release's directory.
    pub files: &'a [String],
}

/// One command for the build of release `id`: reuse the live release's
/// images when `reuse` says so (see `REUSE_IMAGES`), else `build`, then
/// `address` (content tags), if given; meanwhile `resolving`, if any,
/// resolves its services in its directory, or takes them as kept for what
/// compose reads (in `.deploy/services/`). Prints `reused` when nothing was built; then,
/// when compose resolved them, [`SERVICES_MARK`] and the services (read with
/// [`built`]).
pub fn build(
    reuse: Option<&Cmd>,
    build: &Cmd,
    address: Option<&Cmd>,
    resolving: Option<&Resolving>,
    layout: &Layout,
    id: &str,
) -> Cmd {
    let word = |c: Option<&Cmd>| c.map(Cmd::as_word).unwrap_or_else(|| "".into());
    let mut cmd = Cmd::new("sh")
        .arg("-c")
        .arg(BUILD)
        .arg("sh")
        .arg(word(reuse))
        .arg(build.as_word())
        .arg(word(address))
        .arg(word(resolving.map(|r| &r.config)))
        .arg(layout.release(id))
        .arg(layout.root.as_str())
        .arg(resolving.map(|r| r.invocation.as_str()).unwrap_or(""));
    if let Some(r) = resolving {
        cmd = cmd.args(r.files.iter().map(String::as_str));
    }
    cmd
}

/// Release `id`'s services, as kept for what compose reads (see
/// [`build`]), else as `resolving`'s `compose config` prints them, which
/// keeps them for the next time.
pub fn resolve(resolving: &Resolving, layout: &Layout, id: &str) -> Cmd {
    Cmd::new("sh")
        .arg("-c")
        .arg(RESOLVE)
        .arg("sh")
        .arg(resolving.config.as_word())
        .arg(layout.release(id))
        .arg(layout.root.as_str())
        .arg(resolving.invocation.as_str())
        .args(resolving.files.iter().map(String::as_str))
}

/// [`build`]'s output split: what the build said (`reused`, or compose's
/// output) and, where compose resolved them, the release's services as
/// `compose config` printed them. The mark is looked for last: what the build
/// printed before it (a Dockerfile's own output) cannot pose as the services,
/// and YAML cannot hold the mark at the start of a line.
pub fn built(stdout: &str) -> (&str, Option<&str>) {
    if let Some(rest) = stdout.strip_prefix(SERVICES_MARK) {
        return ("", Some(rest));
    }
    match stdout.rsplit_once(&format!("\n{SERVICES_MARK}")) {
        Some((said, services)) => (said, Some(services)),
        None => (stdout, None),
    }
}

/// After the build: names release `id`'s images by their content in its override.
pub fn address_images(layout: &Layout, id: &str) -> Cmd {
    shell(
        ADDRESS_IMAGES,
        &[
            &format!("{}/{}", layout.release(id), crate::compose::OVERRIDE_FILE),
            &layout.root,
        ],
    )
}

// $1 a release's file, $2 its new text: replaced at once (a reader sees the
// old or the new); nothing where the release's directory is gone.
const WRITE_FILE: &str = r#"[ -d "${1%/*}" ] || exit 0
printf '%s' "$2" > "$1.tmp" && mv "$1.tmp" "$1""#;

/// Replaces release `id`'s override with `text`: the content tags that
/// deploy made through the Engine API after the build (see
/// [`crate::compose::addressed_override`]), written by the first command that
/// starts something of the release, not by a round trip of its own.
pub fn write_override(layout: &Layout, id: &str, text: &str) -> Cmd {
    shell(
        WRITE_FILE,
        &[
            &format!("{}/{}", layout.release(id), crate::compose::OVERRIDE_FILE),
            text,
        ],
    )
}

// $1 a release's override file (after its build). Prints the id and the
// platform of each image it names, a line each, in the file's order (its
// services' order).
const IMAGE_IDS: &str = with_image_names!(
    r#"set -e
names=$(image_names "$1")
[ -z "$names" ] || docker image inspect -f '{{.Id}} {{.Os}}/{{.Architecture}}' $names
"#
);

/// The ids of release `id`'s images with their platform (`sha256:... linux/amd64`),
/// a line each, in its override's order.
pub fn image_ids(layout: &Layout, id: &str) -> Cmd {
    shell(
        IMAGE_IDS,
        &[&format!("{}/{}", layout.release(id), crate::compose::OVERRIDE_FILE)],
    )
}

// $@ image ids. Prints the engine's platform, then those ids it does not have.
const MISSING_IMAGES: &str = r#"docker version -f '{{.Server.Os}}/{{.Server.Arch}}' || exit 1
for id in "$@"; do docker image inspect "$id" >/dev/null 2>&1 || printf '%s\n' "$id"; done
"#;

/// The engine's platform (`linux/amd64`) on the first line, then those of
/// the image `ids` it lacks (one per line).
pub fn missing_images(ids: &[&str]) -> Cmd {
    shell(MISSING_IMAGES, ids)
}

// $@ image ids: `docker save` of them, gzip'd, on stdout. sh has no
// pipefail: both exits are read, so a failed save (or gzip) is not a short
// stream taken for whole.
const SAVE_IMAGES: &str = r#"exec 3>&1
said=$( { { docker save "$@"; echo "save $?" >&4; } | { gzip -1 >&3; echo "gzip $?" >&4; }; } 4>&1 )
case "$said" in
  *"save 0"*"gzip 0"*|*"gzip 0"*"save 0"*) exit 0 ;;
  *) echo "docker save | gzip: $said" >&2; exit 1 ;;
esac
"#;

/// Writes the images `ids` to stdout as one compressed `docker save` stream.
pub fn save_images(ids: &[&str]) -> Cmd {
    shell(SAVE_IMAGES, ids)
}

/// Reads a (compressed) `docker save` stream on stdin into the engine.
pub fn load_images() -> Cmd {
    Cmd::new("docker").arg("load").arg("-q")
}

// $@ pairs of image id and name: each id gets that name.
const TAG_IMAGES: &str = r#"set -e
while [ $# -ge 2 ]; do docker tag "$1" "$2"; shift 2; done
"#;

/// Names each image id: `pairs` of (id, name).
pub fn tag_images(pairs: &[(&str, &str)]) -> Cmd {
    let args: Vec<&str> = pairs.iter().flat_map(|(id, name)| [*id, *name]).collect();
    shell(TAG_IMAGES, &args)
}

// $@ pairs of image id and registry reference: each id is tagged so and
// pushed; the references are taken off again whatever happened (stopped by
// a discard too: the trap), and the exit is the first failure's.
const PUSH_IMAGES: &str = r#"set -f
refs=""
rc=0
trap '[ -z "$refs" ] || docker image rm $refs >/dev/null 2>&1; exit 143' TERM INT
while [ $# -ge 2 ]; do
  docker tag "$1" "$2" || { rc=1; break; }
  refs="$refs $2"
  shift 2
done
if [ "$rc" -eq 0 ]; then
  for r in $refs; do docker push -q "$r" >/dev/null || { rc=1; break; }; done
fi
[ -z "$refs" ] || docker image rm $refs >/dev/null 2>&1
exit "$rc"
"#;

/// Pushes each image id as its registry reference: `pairs` of (id, reference).
pub fn push_images(pairs: &[(&str, &str)]) -> Cmd {
    let args: Vec<&str> = pairs.iter().flat_map(|(id, r)| [*id, *r]).collect();
    shell(PUSH_IMAGES, &args)
}

// $@ triples of registry reference, the image id it must be, and the name the
// release gives it. Pulls each, refuses one whose id is not the expected one,
// names the image for the release and takes the reference off again: stopped
// or failed at any point, what is left is named for the release (which a
// discard removes) or not there at all.
const PULL_IMAGES: &str = r#"cur=""
trap '[ -z "$cur" ] || docker image rm "$cur" >/dev/null 2>&1; exit 143' TERM INT
while [ $# -ge 3 ]; do
  cur="$1"
  docker pull -q "$1" >/dev/null || exit 1
  got=$(docker image inspect -f '{{.Id}}' "$1")
  if [ "$got" != "$2" ]; then
    docker image rm "$1" >/dev/null 2>&1
    echo "the registry's $1 is image $got, not $2 that was built" >&2
    exit 1
  fi
  docker tag "$2" "$3" && docker image rm "$1" >/dev/null || exit 1
  cur=""
  shift 3
done
"#;

/// Pulls each registry reference, checks it is the image id given and
/// names it: `triples` of (reference, id, name).
pub fn pull_images(triples: &[(&str, &str, &str)]) -> Cmd {
    let args: Vec<&str> = triples.iter().flat_map(|(r, id, name)| [*r, *id, *name]).collect();
    shell(PULL_IMAGES, &args)
}

/// Takes names off images (the images stay while another name holds them).
pub fn untag_images(names: &[&str]) -> Cmd {
    shell(r#"docker image rm "$@" >/dev/null"#, names)
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

/// A command run here by `sh`, as a host would run it: its exit code and
/// what it printed (the tests of the host scripts).
#[cfg(test)]
pub(crate) fn run_here(cmd: &Cmd) -> (Option<i32>, String) {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd.to_shell())
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8(out.stdout).unwrap())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_services_are_what_follows_the_last_mark() {
        assert_eq!(built("Building api\nok\n"), ("Building api\nok\n", None));
        assert_eq!(
            built("reused\n@@deploy services\nservices:\n  api: {}\n"),
            ("reused", Some("services:\n  api: {}\n"))
        );
        assert_eq!(built("@@deploy services\nservices: {}\n"), ("", Some("services: {}\n")));
        // A Dockerfile that prints the mark cannot pose as the services.
        let out =
            "Step 2/2 : RUN echo\n@@deploy services\nservices:\n  fake: {}\n@@deploy services\nservices:\n  api: {}\n";
        let (said, services) = built(out);
        assert_eq!(services, Some("services:\n  api: {}\n"));
        assert!(said.ends_with("fake: {}"), "{said}");
    }

    /// The services resolved beside a build are kept in `.deploy/services/`,
    /// named by what compose read for them: a later release that reads the
    /// same takes them and starts no compose; a changed file or variable, or
    /// a compose file that may read another, has compose resolve them again.
    /// Nothing of it is left in a release (a build context), and the 8 last
    /// used are kept.
    #[test]
    fn resolved_services_are_kept_by_what_compose_read() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let layout = Layout {
            root: root.path().to_str().unwrap().to_string(),
        };
        let runs = root.path().join("runs");
        // The "compose config": notes each start, prints the services.
        let config = Cmd::new("sh")
            .arg("-c")
            .arg(r#"echo x >> "$1"; printf 'services:\n  api: {}\n'"#)
            .arg("sh")
            .arg(runs.to_str().unwrap());
        let files = ["docker-compose.yml".to_string()];
        let resolving = Resolving {
            config,
            invocation: "V1 p".into(),
            files: &files,
        };
        let starts = || std::fs::read_to_string(&runs).unwrap_or_default().lines().count();
        let store = root.path().join(".deploy/services");
        let kept = || -> Vec<String> {
            let mut names: Vec<String> = std::fs::read_dir(&store)
                .map(|d| {
                    d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            names.sort();
            names
        };
        let release = |id: &str, compose: &str, env: &str| {
            let dir = root.path().join("releases").join(id);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("docker-compose.yml"), compose).unwrap();
            std::fs::write(dir.join(".deploy-env"), env).unwrap();
        };
        // What a release holds beyond what the test put there.
        let left_in = |id: &str| -> Vec<String> {
            std::fs::read_dir(root.path().join("releases").join(id))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| ![".env", ".deploy-env", "docker-compose.yml"].contains(&n.as_str()))
                .collect()
        };
        let build_of = |id: &str, script: &str| {
            run_here(&build(
                None,
                &Cmd::new("sh").arg("-c").arg(script),
                None,
                Some(&resolving),
                &layout,
                id,
            ))
        };
        let services = "@@deploy services\nservices:\n  api: {}\n".to_string();
        let compose = "services:\n  api:\n    build: .\n";

        release("20260101T000000Z-a", compose, "export A=1\n");
        assert_eq!(build_of("20260101T000000Z-a", "true"), (Some(0), services.clone()));
        assert_eq!(starts(), 1);
        let first = kept();
        assert_eq!(first.len(), 1);
        assert!(
            first[0].len() == 64 && first[0].bytes().all(|b| b.is_ascii_hexdigit()),
            "{first:?}"
        );
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&store.join(&first[0])), 0o600);
        assert_eq!(mode(&store), 0o700);
        assert!(left_in("20260101T000000Z-a").is_empty());

        // The same files and variables, another release: no compose started.
        release("20260102T000000Z-b", compose, "export A=1\n");
        assert_eq!(build_of("20260102T000000Z-b", "true"), (Some(0), services.clone()));
        assert_eq!(starts(), 1);
        assert_eq!(kept(), first);
        assert!(left_in("20260102T000000Z-b").is_empty());

        // A variable changed: compose again, kept under another key.
        release("20260103T000000Z-c", compose, "export A=2\n");
        assert_eq!(build_of("20260103T000000Z-c", "true").0, Some(0));
        assert_eq!(starts(), 2);
        assert_eq!(kept().len(), 2);

        // The compose file changed, or the `.env` beside it: compose again.
        release(
            "20260104T000000Z-d",
            "services:\n  api:\n    build: .\n    scale: 2\n",
            "export A=1\n",
        );
        assert_eq!(build_of("20260104T000000Z-d", "true").0, Some(0));
        assert_eq!(starts(), 3);
        release("20260105T000000Z-e", compose, "export A=1\n");
        std::fs::write(root.path().join("releases/20260105T000000Z-e/.env"), "REPLICAS=3\n").unwrap();
        assert_eq!(build_of("20260105T000000Z-e", "true").0, Some(0));
        assert_eq!(starts(), 4);
        assert_eq!(kept().len(), 4);

        // A compose file that may read another is resolved every time, and nothing is kept.
        let extending = "services:\n  api:\n    extends:\n      file: common.yml\n      service: api\n";
        for id in ["20260106T000000Z-f", "20260107T000000Z-g"] {
            release(id, extending, "export A=1\n");
            assert_eq!(build_of(id, "true"), (Some(0), services.clone()));
            assert!(left_in(id).is_empty());
        }
        assert_eq!(starts(), 6);
        assert_eq!(kept().len(), 4);

        // A failed build prints no services.
        release("20260108T000000Z-h", compose, "export A=1\n");
        assert_eq!(build_of("20260108T000000Z-h", "exit 3"), (Some(3), String::new()));
        assert_eq!(starts(), 6);

        // The 8 last used are kept: with every kept file older than the
        // first key's next use, that use makes it the one that stays.
        for n in 0..3 {
            let id = format!("2026020{n}T000000Z-v");
            release(&id, compose, &format!("export A=1\nexport N={n}\n"));
            assert_eq!(build_of(&id, "true").0, Some(0));
        }
        assert_eq!(starts(), 9);
        assert_eq!(kept().len(), 7);
        let age = |name: &str, stamp: &str| {
            let ok = std::process::Command::new("touch")
                .args(["-d", stamp])
                .arg(store.join(name))
                .status()
                .unwrap()
                .success();
            assert!(ok);
        };
        for name in kept() {
            age(&name, "2020-01-02");
        }
        age(&first[0], "2020-01-01");
        release("20260301T000000Z-z", compose, "export A=1\n");
        assert_eq!(build_of("20260301T000000Z-z", "true").0, Some(0));
        assert_eq!(starts(), 9, "the first key was taken");
        for n in 7..9 {
            let id = format!("2026030{n}T000000Z-w");
            release(&id, compose, &format!("export A=1\nexport N={n}\n"));
            assert_eq!(build_of(&id, "true").0, Some(0));
        }
        assert_eq!(kept().len(), 8);
        assert!(kept().contains(&first[0]), "{:?}", kept());

        // Stopped mid-build (Ctrl-C and the step's timeout TERM the process
        // group): the file being resolved, with the variables in it, goes too.
        release("20260401T000000Z-k", compose, "export A=1\nexport SECRET=s3\n");
        let whole = build(
            None,
            &Cmd::new("sh").arg("-c").arg("sleep 0.2; kill -TERM 0; sleep 5"),
            None,
            Some(&resolving),
            &layout,
            "20260401T000000Z-k",
        );
        let out = std::process::Command::new("setsid")
            .args(["-w", "sh", "-c"])
            .arg(whole.to_shell())
            .output()
            .unwrap();
        assert_ne!(out.status.code(), Some(0));
        let left: Vec<String> = std::fs::read_dir(&store)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(left.is_empty(), "{left:?}");

        // A check's services (`resolve`), on a release this run did not
        // build: as a build kept them for the same reads, no compose started.
        let resolved = |r: &Resolving, id: &str| {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(resolve(r, &layout, id).to_shell())
                .output()
                .unwrap();
            let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
            (out.status.code(), text(out.stdout), text(out.stderr))
        };
        let plain = (Some(0), "services:\n  api: {}\n".to_string(), String::new());
        let before = (starts(), kept());
        assert_eq!(resolved(&resolving, "20260102T000000Z-b"), plain);
        assert_eq!((starts(), kept()), before);
        // Nothing kept for what it reads: compose, kept for the next check.
        release("20260501T000000Z-r", compose, "export A=1\nexport R=1\n");
        assert_eq!(resolved(&resolving, "20260501T000000Z-r"), plain);
        assert_eq!(starts(), before.0 + 1);
        assert_eq!(resolved(&resolving, "20260501T000000Z-r"), plain);
        assert_eq!(starts(), before.0 + 1);
        assert!(left_in("20260501T000000Z-r").is_empty());
        let with_r = kept();
        assert_eq!(with_r.len(), 8);
        assert_ne!(with_r, before.1);
        // A compose file that may read another: compose every time.
        assert_eq!(resolved(&resolving, "20260106T000000Z-f"), plain);
        assert_eq!(resolved(&resolving, "20260106T000000Z-f"), plain);
        assert_eq!(starts(), before.0 + 3);
        // Compose fails: its exit code and its words; nothing kept, nothing left.
        // (What it printed before failing is not passed on: a half-resolved
        // file has the variables' values in it too.)
        let failing = Resolving {
            config: Cmd::new("sh").arg("-c").arg(
                "printf 'services:\\n  api:\\n    environment: {SECRET: s3}\\n'; echo 'no such service' >&2; exit 4",
            ),
            invocation: "V1 p".into(),
            files: &files,
        };
        release("20260502T000000Z-s", compose, "export A=1\nexport S=1\n");
        assert_eq!(
            resolved(&failing, "20260502T000000Z-s"),
            (Some(4), String::new(), "no such service\n".to_string())
        );
        assert_eq!(kept(), with_r);

        // Stopped while compose resolves (a step's timeout or a lost
        // connection): the file being resolved goes too.
        let slow = Resolving {
            config: Cmd::new("sh")
                .arg("-c")
                .arg("printf 'services:\\n  api: {}\\n'; kill -TERM 0; sleep 5"),
            invocation: "V1 p".into(),
            files: &files,
        };
        release("20260503T000000Z-t", compose, "export A=1\nexport SECRET=s3\n");
        let out = std::process::Command::new("setsid")
            .args(["-w", "sh", "-c"])
            .arg(resolve(&slow, &layout, "20260503T000000Z-t").to_shell())
            .output()
            .unwrap();
        assert_ne!(out.status.code(), Some(0));
        assert!(out.stdout.is_empty(), "{:?}", String::from_utf8_lossy(&out.stdout));
        assert_eq!(kept(), with_r);
    }

    /// `settle` (the end of `ACTIVATE` too) recreates what the check after
    /// `up` names, then points `current`; with nothing named, nothing more.
    #[test]
    fn settling_recreates_the_services_the_check_names_then_points() {
        let run = |after: &str| {
            run_here(&settle(
                &Cmd::new("sh").arg("-c").arg(after),
                &Cmd::new("echo").arg("recreate"),
                &Cmd::new("echo").arg("point"),
            ))
        };
        assert_eq!(run("echo api worker"), (Some(0), "recreate api worker\npoint\n".into()));
        assert_eq!(run("true"), (Some(0), String::new()));
        assert_eq!(run("exit 3").0, Some(3));
        // What the check printed is words, each one argument: never code, never a pattern.
        assert_eq!(
            run("echo 'a$1' '*' '$(echo no)'"),
            (Some(0), "recreate a$1 * $(echo no)\npoint\n".into())
        );
    }

    /// `activate` runs its parts in order, stops at the first that fails,
    /// and without the check after `up` points `current` at once.
    #[test]
    fn activating_runs_its_parts_in_order_and_points_at_once_without_the_check() {
        let echo = |w: &str| Cmd::new("echo").arg(w);
        let run = |first: Option<&Cmd>, after: Option<&Cmd>| {
            run_here(&activate(
                Some(&echo("write")),
                first,
                Some(&echo("before")),
                &echo("up"),
                after,
                &echo("recreate"),
                &echo("point"),
            ))
        };
        let said = |s: &str| (Some(0), s.to_string());
        assert_eq!(
            run(Some(&echo("first")), None),
            said("write\nfirst\nbefore\nup\npoint\n")
        );
        let stale = Cmd::new("echo").arg("api");
        assert_eq!(
            run(None, Some(&stale)),
            said("write\nbefore\nup\nrecreate api\npoint\n")
        );
        assert_eq!(run(None, Some(&Cmd::new("true"))), said("write\nbefore\nup\n"));
        let failing = Cmd::new("sh").arg("-c").arg("exit 5");
        assert_eq!(run(Some(&failing), None), (Some(5), "write\n".into()));
    }

    #[test]
    fn the_start_is_the_last_mark_the_switch_printed() {
        assert_eq!(
            started_in("Creating api\n@@deploy started 1795626900\n"),
            Some(1_795_626_900)
        );
        assert_eq!(started_in("@@deploy started 1\n@@deploy started 2\n"), Some(2));
        assert_eq!(started_in("no mark\n"), None);
        assert_eq!(started_in("@@deploy started soon\n"), None);
    }

    #[test]
    fn ids_are_utc_stamps_with_the_commit() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_795_626_900);
        let id = release_id(t, "3f2a9c1");
        assert_eq!(id, "20261125T171500Z-3f2a9c1");
        assert!(is_release_id(&id));
        assert!(!is_release_id("../etc"));
        // A host already has this second's release: the next second is taken.
        assert_eq!(
            id_after("20261125T171500Z-3f2a9c1", "20261125T171500Z-3f2a9c1", "3f2a9c1").as_deref(),
            Some("20261125T171501Z-3f2a9c1")
        );
        assert_eq!(
            id_after("20261125T235959Z-aaaaaaa", "20261125T235958Z-3f2a9c1", "3f2a9c1").as_deref(),
            Some("20261126T000000Z-3f2a9c1")
        );
        assert_eq!(
            id_after("20261125T171459Z-3f2a9c1", "20261125T171500Z-3f2a9c1", "3f2a9c1"),
            None
        );
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
