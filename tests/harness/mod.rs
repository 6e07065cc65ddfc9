//! Test harness: run the binary, start sshd hosts, build fixture images, make
//! git repositories. Everything a test starts is stopped and removed on drop.

#![allow(dead_code)] // each test module uses a different part of the harness

pub mod app;
pub mod deployment;
pub mod engines;
pub mod fleet;
pub mod images;
pub mod prober;
pub mod sshd;
pub mod swarm;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs a command and returns stdout; panics with everything it printed if it fails.
pub fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `git -C dir args...`, with an identity so commits work on a fresh machine.
pub fn git(dir: &Path, args: &[&str]) -> String {
    sh(Command::new("git")
        .arg("-C")
        .arg(dir)
        // Repositories here belong to root or to the test user; both are ours.
        .args([
            "-c",
            "safe.directory=*",
            "-c",
            "user.name=Deploy Test",
            "-c",
            "user.email=test@example.com",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args))
}

/// Whether `known_hosts` has an entry for 127.0.0.1:`port` (hashed or not).
pub fn knows_host(known_hosts: &Path, port: u16) -> bool {
    let out = Command::new("ssh-keygen")
        .arg("-F")
        .arg(format!("[127.0.0.1]:{port}"))
        .arg("-f")
        .arg(known_hosts)
        .output()
        .expect("ssh-keygen");
    out.status.success() && !out.stdout.is_empty()
}

/// A run of the `deploy` binary.
pub struct Test {
    args: Vec<String>,
    env: BTreeMap<String, String>,
    dir: Option<PathBuf>,
}

/// What a run left.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// stdout and stderr together, for "appears nowhere" assertions.
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

impl Test {
    pub fn new() -> Test {
        Test {
            args: Vec::new(),
            env: BTreeMap::new(),
            dir: None,
        }
    }

    pub fn arg(mut self, a: impl Into<String>) -> Test {
        self.args.push(a.into());
        self
    }

    pub fn args<S: Into<String>>(mut self, a: impl IntoIterator<Item = S>) -> Test {
        self.args.extend(a.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Test {
        self.env.insert(k.into(), v.into());
        self
    }

    pub fn current_dir(mut self, d: &Path) -> Test {
        self.dir = Some(d.to_path_buf());
        self
    }

    pub fn run(self) -> Run {
        let mut cmd = assert_cmd::Command::cargo_bin("deploy").expect("the deploy binary is built");
        cmd.args(&self.args).envs(&self.env).env("NO_COLOR", "1");
        if let Some(d) = &self.dir {
            cmd.current_dir(d);
        }
        let out = cmd.output().expect("deploy runs");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// The repository's own top directory.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fresh temporary directory others can enter (tests run as root, hosts as the test user).
pub fn open_tempdir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("deploy-test-")
        .tempdir()
        .expect("tempdir");
    set_mode(dir.path(), 0o755);
    dir
}

pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Waits for `cond` up to `limit`, polling; panics with `what` if it never holds.
pub fn wait_for(what: &str, limit: std::time::Duration, mut cond: impl FnMut() -> bool) {
    wait_until(what, limit, &mut cond, |ok| *ok, |_| String::new());
}

/// Polls `look` up to `limit` until `done` holds of what it saw, and returns
/// that; panics with `what` and `say` of the last thing seen if it never does.
pub fn wait_until<T>(
    what: &str,
    limit: std::time::Duration,
    mut look: impl FnMut() -> T,
    done: impl Fn(&T) -> bool,
    say: impl Fn(&T) -> String,
) -> T {
    let start = std::time::Instant::now();
    let mut delay = std::time::Duration::from_millis(10);
    loop {
        let seen = look();
        if done(&seen) {
            return seen;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}{}",
            say(&seen)
        );
        std::thread::sleep(delay);
        delay = (delay * 2).min(std::time::Duration::from_millis(200));
    }
}

/// GET `path` on 127.0.0.1:`port`: (status, body), or None if nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    http_get_at("127.0.0.1", port, path, std::time::Duration::from_secs(5))
}

/// GET `path` on `addr`:`port`, giving up on connect or read after `limit`.
pub fn http_get_at(addr: &str, port: u16, path: &str, limit: std::time::Duration) -> Option<(u16, String)> {
    http_probe(addr, port, path, limit).answer.ok()
}

/// What [`http_probe`] saw.
pub struct Probed {
    /// (status, body), or what the connection did instead.
    pub answer: Result<(u16, String), &'static str>,
    /// How long the connect took, if it succeeded.
    pub connected_after: Option<std::time::Duration>,
}

/// GET `path` on `addr`:`port`, giving up on connect or read after `limit`:
/// (status, body), or what the connection did instead (the connect timed out or was refused, no
/// answer came in time, the connection closed without one).
pub fn http_probe(addr: &str, port: u16, path: &str, limit: std::time::Duration) -> Probed {
    let started = std::time::Instant::now();
    let mut connected_after = None;
    let answer = http_exchange(addr, port, path, limit, || connected_after = Some(started.elapsed()));
    Probed {
        answer,
        connected_after,
    }
}

/// [`http_probe`]'s request, calling `connected` once the connect succeeded.
fn http_exchange(
    addr: &str,
    port: u16,
    path: &str,
    limit: std::time::Duration,
    connected: impl FnOnce(),
) -> Result<(u16, String), &'static str> {
    use std::io::{ErrorKind, Read, Write};
    let ip: std::net::IpAddr = addr.parse().map_err(|_| "not an IP address")?;
    let mut s = std::net::TcpStream::connect_timeout(&(ip, port).into(), limit).map_err(|e| match e.kind() {
        ErrorKind::TimedOut => "the connect timed out",
        ErrorKind::ConnectionRefused => "the connect was refused",
        _ => "the connect failed",
    })?;
    connected();
    s.set_read_timeout(Some(limit))
        .map_err(|_| "the socket's read timeout could not be set")?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").map_err(|_| "the request could not be sent")?;
    let mut raw = Vec::new();
    if let Err(e) = s.read_to_end(&mut raw) {
        return Err(match e.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut if raw.is_empty() => "connected, no answer in time",
            ErrorKind::WouldBlock | ErrorKind::TimedOut => "the answer did not finish in time",
            _ => "the connection broke",
        });
    }
    let raw = String::from_utf8_lossy(&raw);
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or(if raw.is_empty() {
            "the connection closed without an answer"
        } else {
            "the answer was not HTTP"
        })?;
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// The id of a running container of compose project `project`'s `service`, if one runs.
pub fn container_of(project: &str, service: &str) -> Option<String> {
    let out = sh(Command::new("docker").args([
        "ps",
        "-q",
        "--no-trunc",
        "--filter",
        &format!("label=com.docker.compose.project={project}"),
        "--filter",
        &format!("label=com.docker.compose.service={service}"),
    ]));
    out.lines().next().map(str::to_string)
}

/// Claims number `n` of `kind` (a port, a namespace) for this test process,
/// among every test run on the machine (two suites may run at once): false if
/// a live process holds it. Claims last until the process ends.
pub fn claim(kind: &str, n: u32) -> bool {
    use std::io::Write;
    // One directory for every test process on this machine, whatever its
    // TMPDIR (scripts/test.sh gives the swarm tests one of their own).
    let dir = Path::new("/tmp/deploy-test-claims");
    let _ = std::fs::create_dir_all(dir);
    let path = dir.join(format!("{kind}-{n}"));
    let me = std::process::id();
    for _ in 0..2 {
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut f) => return write!(f, "{me}").is_ok(),
            Err(_) => {
                let holder: Option<u32> = std::fs::read_to_string(&path).ok().and_then(|s| s.trim().parse().ok());
                match holder {
                    Some(pid) if pid == me => return true,
                    Some(pid) if Path::new(&format!("/proc/{pid}")).exists() => return false,
                    // Its process is gone (or it is half-written: retried once).
                    _ => {
                        let _ = std::fs::remove_file(&path);
                    }
                }
            }
        }
    }
    false
}

/// A network namespace with a veth link to this one: a host with its own
/// loopback, reachable at `addr`. Removed on drop.
pub struct Netns {
    pub name: String,
    pub addr: String,
    veth: String,
}

impl Netns {
    pub fn new() -> Netns {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        // Unique among the test runs on this machine; addresses in a /30 of our own.
        let n = loop {
            let n = (std::process::id() % 200 + NEXT.fetch_add(1, Ordering::SeqCst)) % 250 + 1;
            if claim("netns", n) {
                break n;
            }
        };
        let name = format!("dtest{n}");
        let veth = format!("dtv{n}");
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let _ = Command::new("ip").args(["link", "del", &format!("{veth}a")]).output();
        let outer = format!("10.231.{n}.1/30");
        let inner = format!("10.231.{n}.2/30");
        for args in [
            vec!["netns", "add", &name],
            vec![
                "link",
                "add",
                &format!("{veth}a"),
                "type",
                "veth",
                "peer",
                "name",
                &format!("{veth}b"),
            ],
            vec!["link", "set", &format!("{veth}b"), "netns", &name],
            vec!["addr", "add", &outer, "dev", &format!("{veth}a")],
            vec!["link", "set", &format!("{veth}a"), "up"],
            vec![
                "netns",
                "exec",
                &name,
                "ip",
                "addr",
                "add",
                &inner,
                "dev",
                &format!("{veth}b"),
            ],
            vec!["netns", "exec", &name, "ip", "link", "set", &format!("{veth}b"), "up"],
            vec!["netns", "exec", &name, "ip", "link", "set", "lo", "up"],
        ] {
            sh(Command::new("ip").args(&args));
        }
        Netns {
            name,
            addr: format!("10.231.{n}.2"),
            veth,
        }
    }

    /// This side's address of the link (the namespace reaches this machine there).
    pub fn outer(&self) -> String {
        let (net, _) = self.addr.rsplit_once('.').expect("an IPv4 address");
        format!("{net}.1")
    }

    /// A command run with only the namespace's network (`nsenter`): unlike
    /// `ip netns exec` it keeps this machine's /sys, cgroups included, which
    /// a dockerd needs.
    pub fn enter(&self, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/var/run/netns/{}", self.name)).arg(program);
        c
    }

    /// A command run inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &format!("{}a", self.veth)])
            .output();
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

/// Removes a compose project's containers, network and the images built for it.
pub fn remove_project(project: &str) {
    remove_project_but_images(project);
    remove_images(&project_images(project));
}

/// Removes a compose project's containers, network and volumes now, and the
/// images built for it when the test process exits.
///
/// Tests run side by side on one engine and build the same files, so the
/// classic builder gives them the same cached intermediate images. Removing
/// the last image built on such a chain removes the chain, and a build of
/// another test that has just taken a step from the cache then fails with
/// "unable to find image sha256:..." (seen in CI). While every test's images
/// stay until the end, a chain in use is never the last one's.
pub fn remove_project_images_at_exit(project: &str) {
    remove_project_but_images(project);
    let images = project_images(project);
    if images.is_empty() {
        return;
    }
    static REGISTER: std::sync::Once = std::sync::Once::new();
    REGISTER.call_once(|| {
        // SAFETY: registers a plain function, run once by exit(3) after every test.
        unsafe { libc::atexit(remove_images_at_exit) };
    });
    IMAGES_AT_EXIT.lock().unwrap_or_else(|e| e.into_inner()).extend(images);
}

static IMAGES_AT_EXIT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

extern "C" fn remove_images_at_exit() {
    let images = std::mem::take(&mut *IMAGES_AT_EXIT.lock().unwrap_or_else(|e| e.into_inner()));
    remove_images(&images);
}

/// The ids of a compose project's images that lost every tag (a test that
/// removed an image by hand while its container ran leaves it so). Compose
/// v2 labels the images it builds with their project, so these are this
/// project's own, never another test's build cache.
fn project_untagged(project: &str) -> Vec<String> {
    Command::new("docker")
        .args([
            "image",
            "ls",
            "-q",
            "--no-trunc",
            "--filter",
            "dangling=true",
            "--filter",
        ])
        .arg(format!("label=com.docker.compose.project={project}"))
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().map(str::to_string).collect())
        .unwrap_or_default()
}

/// Removes images (names, or ids of untagged ones), a batch per call. Never
/// panics (it runs in exit too).
fn remove_images(images: &[String]) {
    for batch in images.chunks(200) {
        let _ = Command::new("docker").args(["image", "rm", "-f"]).args(batch).output();
    }
}

/// The images built for a compose project: by their tags (named
/// `<project>-*`, or `<project>_*` by compose v1), and by id those that lost
/// every tag (see [`project_untagged`]).
fn project_images(project: &str) -> Vec<String> {
    let mut images = project_tags(project);
    images.extend(project_untagged(project));
    images
}

/// The tags of the images built for a compose project.
fn project_tags(project: &str) -> Vec<String> {
    // By name, never by id: the build cache gives two tests that build the
    // same files the same image id, and removing an id with -f takes every
    // tag of it, another test's (running a deploy) among them.
    Command::new("docker")
        .args([
            "image",
            "ls",
            "--format",
            "{{.Repository}}:{{.Tag}}",
            "--filter",
            &format!("reference={project}-*"),
            // Compose v1's names (the benchmark's baselines build with it).
            "--filter",
            &format!("reference={project}_*"),
        ])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().map(str::to_string).collect())
        .unwrap_or_default()
}

/// A compose project's containers, network and named volumes.
fn remove_project_but_images(project: &str) {
    let list = |args: &[&str]| -> Vec<String> {
        Command::new("docker")
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).lines().map(str::to_string).collect())
            .unwrap_or_default()
    };
    let containers = list(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=com.docker.compose.project={project}"),
    ]);
    if !containers.is_empty() {
        let _ = Command::new("docker").args(["rm", "-f"]).args(&containers).output();
    }
    let _ = Command::new("docker")
        .args(["network", "rm", &format!("{project}_default")])
        .output();
    // Named volumes too: a test leaves the engine as it found it.
    let volumes = list(&[
        "volume",
        "ls",
        "-q",
        "--filter",
        &format!("label=com.docker.compose.project={project}"),
    ]);
    if !volumes.is_empty() {
        let _ = Command::new("docker")
            .args(["volume", "rm", "-f"])
            .args(&volumes)
            .output();
    }
}

/// `deploy <args> --output json` in `dir`, followed event by event: a test
/// acts at a moment of the run (interrupts or kills it, breaks its lock,
/// cuts a link), then reads the rest.
pub struct Following {
    dir: PathBuf,
    child: std::process::Child,
    lines: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
    /// Every event read so far.
    pub events: Vec<serde_json::Value>,
}

impl Following {
    pub fn start(dir: &Path, args: &[&str]) -> Following {
        use std::io::BufRead;
        let mut child = Command::new(assert_cmd::cargo::cargo_bin("deploy"))
            .args(args)
            .args(["--output", "json"])
            .current_dir(dir)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("deploy starts");
        let lines = std::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
        Following {
            dir: dir.to_path_buf(),
            child,
            lines,
            events: Vec::new(),
        }
    }

    /// Reads events up to the first for which `at` holds; the run must not
    /// end (print its summary) before.
    pub fn until(&mut self, at: impl Fn(&serde_json::Value) -> bool) -> &mut Following {
        for line in self.lines.by_ref() {
            let e: serde_json::Value = serde_json::from_str(&line.expect("a line")).expect("a JSON line");
            assert_ne!(
                e["event"], "summary",
                "the run ended before the moment to act: {:?}",
                self.events
            );
            let now = at(&e);
            self.events.push(e);
            if now {
                return self;
            }
        }
        panic!("the run ended without a summary: {:?}", self.events);
    }

    /// Takes the lock of environment `test` away from the run: broken with
    /// `--force`, then held by hand with the message `FREEZE`.
    pub fn take_the_lock_away(&self) {
        for args in [
            &["lock", "test", "release", "--force"][..],
            &["lock", "test", "acquire", "--message", "FREEZE"][..],
        ] {
            let run = Test::new().args(args.iter().copied()).current_dir(&self.dir).run();
            assert_eq!(run.code, 0, "{}", run.all());
        }
    }

    /// Sends signal `name` (`INT`, `KILL`...) to the run.
    pub fn signal(&self, name: &str) {
        sh(Command::new("kill").args([format!("-{name}"), self.child.id().to_string()]));
    }

    /// Reads the rest: the exit code and every event.
    pub fn finish(mut self) -> (Option<i32>, Vec<serde_json::Value>) {
        let rest = self
            .lines
            .by_ref()
            .map(|l| serde_json::from_str(&l.expect("a line")).expect("a JSON line"));
        self.events.extend(rest.collect::<Vec<serde_json::Value>>());
        (self.child.wait().expect("deploy ends").code(), self.events)
    }
}

/// `deploy <args>` in `dir` with JSON output, SIGINT as soon as an event
/// satisfies `at` (the run must not end before): its exit code, every event
/// it printed, and when the signal was sent.
pub fn interrupt_json_at(
    dir: &Path,
    args: &[&str],
    at: impl Fn(&serde_json::Value) -> bool,
) -> (Option<i32>, Vec<serde_json::Value>, std::time::Instant) {
    let mut run = Following::start(dir, args);
    run.until(at);
    let sent = std::time::Instant::now();
    run.signal("INT");
    let (code, events) = run.finish();
    (code, events, sent)
}

/// The names in this machine's temporary directory that start with `prefix`.
pub fn temp_entries(prefix: &str) -> std::collections::BTreeSet<String> {
    std::fs::read_dir(std::env::temp_dir())
        .expect("the temporary directory")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect()
}

/// The host's `docker` for a test: a wrapper (first on sshd's `PATH`) that
/// notes every call in `calls` and refuses `docker tag`, which the Engine API
/// does instead; and `docker-compose` (v1), noted as `compose <args>`.
/// Its directory, the file of calls and the sshd setting.
pub fn noting_docker() -> (tempfile::TempDir, std::path::PathBuf, String) {
    use std::os::unix::fs::PermissionsExt;
    let bin = tempfile::tempdir().unwrap();
    let (docker, calls) = (bin.path().join("docker"), bin.path().join("calls"));
    std::fs::write(
        &docker,
        format!(
            "#!/bin/sh\necho \"$*\" >> {}\ncase \"$1 $2\" in\n  'tag '*|'image tag') echo 'docker tag: refused by the test' >&2; exit 97 ;;\nesac\nexec /usr/bin/docker \"$@\"\n",
            calls.display()
        ),
    )
    .unwrap();
    // Compose v1, noted as `compose ...` like v2's `docker compose ...`.
    let v1 = bin.path().join("docker-compose");
    std::fs::write(
        &v1,
        format!(
            "#!/bin/sh\necho \"compose $*\" >> {}\nexec /usr/bin/docker-compose \"$@\"\n",
            calls.display()
        ),
    )
    .unwrap();
    std::fs::write(&calls, "").unwrap();
    std::fs::set_permissions(bin.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&v1, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&docker, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&calls, std::fs::Permissions::from_mode(0o666)).unwrap();
    let sshd = format!(
        "SetEnv PATH={}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n",
        bin.path().display()
    );
    (bin, calls, sshd)
}
