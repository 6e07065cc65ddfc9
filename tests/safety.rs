//! Time limits and Ctrl-C for the push and hooks, output a host cannot use to
//! hurt the terminal, file modes on hosts, a torn history line, and check
//! tunnels that close: against real sshd hosts, Docker, Redis and git.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::app::Behaviour;
use crate::harness::deployment::{Deployment, Setup};
use crate::harness::sshd::{free_port, SshHost, USER};
use crate::harness::{git, open_tempdir, sh, wait_for, Run};

/// A TCP server that accepts connections and never says a word (a git server
/// that hangs before its SSH banner). Each accepted connection is reported.
struct SilentServer {
    port: u16,
    accepted: mpsc::Receiver<()>,
    stop: Arc<AtomicBool>,
}

impl SilentServer {
    fn start() -> SilentServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, accepted) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(s) = stream {
                    held.push(s);
                    let _ = tx.send(());
                }
            }
        });
        SilentServer { port, accepted, stop }
    }
}

impl Drop for SilentServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// `deploy <args>` started in the app's directory, its output captured.
fn spawn_deploy(d: &Deployment, args: &[&str], own_group: bool) -> Child {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("deploy"));
    cmd.args(args)
        .current_dir(d.app.path())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if own_group {
        // As a shell runs a job: Ctrl-C at the terminal goes to the whole group.
        cmd.process_group(0);
    }
    cmd.spawn().unwrap()
}

fn finish(child: Child) -> Run {
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `kill -INT <target>` (a pid, or `-PGID` for a process group).
fn interrupt(target: &str) {
    let status = Command::new("kill").args(["-INT", "--", target]).status().unwrap();
    assert!(status.success(), "kill -INT {target}");
}

/// Whether a process whose command line contains `marker` runs (zombies have none).
fn running(marker: &str) -> bool {
    Command::new("pgrep")
        .args(["-f", marker])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Points `origin`'s push URL at a server that never answers.
fn push_into_silence(d: &Deployment, server: &SilentServer) {
    let url = format!("ssh://{USER}@127.0.0.1:{}/srv/repo.git", server.port);
    git(d.app.path(), &["remote", "set-url", "--push", "origin", &url]);
}

#[test]
fn a_push_to_a_remote_that_never_answers_gives_up_at_push_timeout() {
    let d = Deployment::new(
        Setup {
            source_extra: "push_timeout = \"2s\"".into(),
            ..Setup::default()
        },
        &Behaviour::version("A"),
    );
    let server = SilentServer::start();
    push_into_silence(&d, &server);
    let started = Instant::now();
    let (run, summary) = d.deploy_json(&[], 1);
    let took = started.elapsed();
    assert!(
        server.accepted.try_recv().is_ok(),
        "the push never reached the silent server: {}",
        run.all()
    );
    // Connect, preflight, lock and unlock take well under a second here.
    assert!(
        took < Duration::from_secs(8),
        "the run took {took:?} with push_timeout = 2s"
    );
    let error = summary["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("push to `origin` did not finish within 2s"),
        "{error}\n{}",
        run.all()
    );
    assert_eq!(summary["result"], "failed");
    assert!(!d.locked(), "the lock is released");
    assert!(d.releases().is_empty(), "a release was staged: {:?}", d.releases());
    assert!(d.current().is_none());
}

/// Threads of this process named `name`.
fn threads_named(name: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim() == name)
        .count()
}

#[test]
fn a_push_given_up_returns_at_its_limit_and_its_thread_ends_by_itself() {
    use deploy::git::{self, GitError, PushAuth};
    let app = crate::harness::app::AppRepo::new(&Behaviour::version("A"));
    let server = SilentServer::start();
    let url = format!("ssh://{USER}@127.0.0.1:{}/srv/repo.git", server.port);
    git(app.path(), &["remote", "add", "origin", &url]);
    let tmp = open_tempdir();
    let auth = PushAuth {
        known_hosts: deploy::known_hosts::KnownHosts::new(
            Some(&tmp.path().join("known_hosts")),
            deploy::config::HostKeyPolicy::Strict,
        ),
        identity_file: None,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    let result = runtime.block_on(git::push(
        &app.path().join(".git"),
        "origin",
        "main",
        &auth,
        Duration::from_secs(1),
        &deploy::interrupt::Interrupt::never(),
    ));
    let took = started.elapsed();
    assert!(
        matches!(&result, Err(GitError::PushTimedOut { remote, timeout }) if remote == "origin" && *timeout == Duration::from_secs(1)),
        "{result:?}"
    );
    assert!(took < Duration::from_millis(1500), "gave up after {took:?}");
    assert!(server.accepted.try_recv().is_ok(), "the push never connected");
    assert_eq!(
        threads_named("git push"),
        1,
        "the thread is still waiting for the server"
    );
    // libgit2's own timeouts (just above the limit) end the thread left behind.
    wait_for("the push thread to end", Duration::from_secs(10), || {
        threads_named("git push") == 0
    });
}

#[test]
fn ctrl_c_during_a_hanging_push_exits_130_with_the_lock_released() {
    let d = Deployment::new(
        Setup {
            source_extra: "push_timeout = \"5m\"".into(),
            ..Setup::default()
        },
        &Behaviour::version("A"),
    );
    let server = SilentServer::start();
    push_into_silence(&d, &server);
    let child = spawn_deploy(&d, &["test"], false);
    server
        .accepted
        .recv_timeout(Duration::from_secs(60))
        .expect("the push reaches the silent server");
    assert!(d.locked(), "the push runs under the lock");
    let sent = Instant::now();
    interrupt(&child.id().to_string());
    let run = finish(child);
    assert_eq!(run.code, 130, "{}", run.all());
    assert!(
        sent.elapsed() < Duration::from_secs(10),
        "stopping took {:?}",
        sent.elapsed()
    );
    assert!(run.all().contains("push to `origin` was interrupted"), "{}", run.all());
    assert!(!d.locked(), "the lock is released");
    assert!(d.releases().is_empty(), "a release was staged: {:?}", d.releases());
    assert!(!d.host.ssh_clients_running(), "an ssh process is left");
}

#[test]
fn ctrl_c_at_the_terminal_during_pre_deploy_stops_the_hook_and_exits_130() {
    let marker = format!("sleep 7{}", free_port());
    let d = Deployment::new(
        Setup {
            // The hook notes the signals it gets: the terminal's SIGINT is not one of them.
            extra: format!(
                "[hooks]\npre_deploy = \"trap 'echo INT >> signals' INT; trap 'echo TERM >> signals; exit 143' TERM; {marker} & wait\"\n"
            ),
            ..Setup::default()
        },
        &Behaviour::version("A"),
    );
    let child = spawn_deploy(&d, &["test"], true);
    wait_for("the hook to start", Duration::from_secs(60), || running(&marker));
    // The terminal's Ctrl-C: SIGINT to deploy's whole process group.
    let sent = Instant::now();
    interrupt(&format!("-{}", child.id()));
    let run = finish(child);
    assert_eq!(run.code, 130, "interrupted, not a failed hook:\n{}", run.all());
    assert!(
        sent.elapsed() < Duration::from_secs(10),
        "stopping took {:?}",
        sent.elapsed()
    );
    assert!(
        run.all().contains("hook pre_deploy was stopped: interrupted"),
        "{}",
        run.all()
    );
    assert!(!running(&marker), "the hook's sleep is still running");
    let signals = std::fs::read_to_string(d.app.path().join("signals")).unwrap_or_default();
    assert_eq!(
        signals, "TERM\n",
        "the hook is stopped by deploy, not by the terminal's SIGINT"
    );
    assert!(!d.app_path().join("releases").exists(), "a host was changed");
    assert!(!d.locked());
}

#[test]
fn a_hook_past_its_timeout_is_stopped_and_the_run_fails_naming_it() {
    let marker = format!("sleep 8{}", free_port());
    let d = Deployment::new(
        Setup {
            // The sleep is in the background of the hook's shell: the whole group must go.
            extra: format!("[hooks]\ntimeout = \"1s\"\npre_deploy = \"{marker} & wait\"\n"),
            ..Setup::default()
        },
        &Behaviour::version("A"),
    );
    let started = Instant::now();
    let run = d.deploy(&[], 1);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        run.all()
            .contains("hook pre_deploy did not finish within 1s ([hooks] timeout); it was stopped"),
        "{}",
        run.all()
    );
    assert!(!running(&marker), "the hook's sleep is still running");
    assert!(!d.app_path().join("releases").exists(), "a host was changed");
    assert!(!d.locked());
}

/// What the worker prints: a color, a window title (OSC ... BEL), DEL and C1 CSI.
const HOSTILE: &str = "\u{1b}[31mred\u{1b}]0;title\u{7} del\u{7f} csi\u{9b}2J end";

fn assert_no_raw_controls(run: &Run, what: &str) {
    for (name, text) in [("stdout", &run.stdout), ("stderr", &run.stderr)] {
        let bad: Vec<char> = text
            .chars()
            .filter(|c| c.is_control() && *c != '\n' && *c != '\t')
            .collect();
        assert!(bad.is_empty(), "{what}: raw {bad:?} on {name}:\n{text}");
    }
}

#[test]
fn escape_sequences_from_a_container_never_reach_the_terminal_raw() {
    let mut a = Behaviour::version("A");
    a.worker_log = Some(HOSTILE.into());
    let d = Deployment::new(
        Setup {
            extra: "[verify]\ntimeout = \"2s\"\n\n[[verify.checks]]\nname = \"always fails\"\ntype = \"exec\"\nservice = \"api\"\ncommand = [\"sh\", \"-c\", \"printf '\\\\033[1mbold\\\\007\\\\n' >&2; exit 1\"]\n".into(),
            ..Setup::default()
        },
        &a,
    );
    // The first deploy fails its check: nothing to restore (exit 4); evidence is printed.
    let run = d.deploy(&[], 4);
    assert_no_raw_controls(&run, "deploy");
    assert!(
        run.stdout
            .contains("\\x1b[31mred\\x1b]0;title\\x07 del\\x7f csi\\u{9b}2J end"),
        "the worker's line is in the evidence, escaped:\n{}",
        run.stdout
    );
    assert!(
        run.all().contains("\\x1b[1mbold\\x07"),
        "the check's stderr, escaped:\n{}",
        run.all()
    );

    wait_for("the worker's line in the logs", Duration::from_secs(20), || {
        d.run(&["logs", "test", "worker"]).stdout.contains("red")
    });
    let logs = d.run(&["logs", "test", "worker"]);
    assert_eq!(logs.code, 0, "{}", logs.all());
    assert_no_raw_controls(&logs, "deploy logs");
    assert!(logs.stdout.contains("\\x1b[31mred"), "{}", logs.stdout);

    let exec = d.run(&["exec", "test", "--", "printf", "\\033[2Jcleared\\n"]);
    assert_eq!(exec.code, 0, "{}", exec.all());
    assert_no_raw_controls(&exec, "deploy exec");
    assert!(exec.stdout.contains("\\x1b[2Jcleared"), "{}", exec.stdout);

    // JSON carries the same text, escaped, and the value is intact.
    for args in [
        vec!["logs", "test", "worker", "--output", "json"],
        vec!["verify", "test", "--output", "json"],
    ] {
        let run = d.run(&args);
        assert_no_raw_controls(&run, &args.join(" "));
        assert!(run.stdout.contains("\\u001b[31mred"), "{args:?}: {}", run.stdout);
        assert!(
            run.stdout.contains("\\u007f") && run.stdout.contains("\\u009b"),
            "{args:?}: DEL and C1 are escaped: {}",
            run.stdout
        );
        let intact = run.stdout.lines().any(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("JSON lines");
            strings(&v).iter().any(|s| s.contains(HOSTILE))
        });
        assert!(intact, "{args:?}: the line does not come back intact:\n{}", run.stdout);
    }
}

/// Every string in a JSON value.
fn strings(v: &serde_json::Value) -> Vec<String> {
    match v {
        serde_json::Value::String(s) => vec![s.clone()],
        serde_json::Value::Array(a) => a.iter().flat_map(strings).collect(),
        serde_json::Value::Object(o) => o.values().flat_map(strings).collect(),
        _ => Vec::new(),
    }
}

/// Makes `path` a directory of the hosts' user with `mode`.
fn host_dir(path: &Path, mode: u32) {
    sh(Command::new("install")
        .args(["-d", "-m", &format!("{mode:o}"), "-o", USER, "-g", USER])
        .arg(path));
}

#[test]
fn host_files_are_private_shared_dirs_persist_and_a_torn_history_line_is_survived() {
    let d = Deployment::new(
        Setup {
            app_extra: "shared_files = [\".env\"]\nshared_dirs = [\"uploads\", \"data/cache\"]".into(),
            ..Setup::default()
        },
        &Behaviour::version("A"),
    );
    let root = d.app_path();
    // Hosts deployed by an older version have a .deploy/ others can read.
    host_dir(&root.join(".deploy"), 0o755);
    std::fs::write(d.app.path().join(".env"), "SECRET=1\n").unwrap();
    let setup = d.run(&["setup", "test"]);
    assert_eq!(setup.code, 0, "{}", setup.all());
    assert_eq!(
        mode(&root.join("shared/uploads")),
        0o700,
        "setup makes shared dirs 0700"
    );
    // `data/cache` is created at the deploy, when the release links it.
    std::fs::remove_dir_all(root.join("shared/data")).unwrap();
    // Someone loosened the shared file: the deploy closes it again.
    crate::harness::set_mode(&root.join("shared/.env"), 0o644);

    d.deploy(&[], 0);
    let first = d.current().unwrap();
    assert_eq!(mode(&root.join(".deploy")), 0o700);
    assert_eq!(mode(&root.join(".deploy/history.jsonl")), 0o600);
    assert_eq!(mode(&root.join("shared/.env")), 0o600);
    assert_eq!(
        mode(&root.join("shared/data/cache")),
        0o700,
        "created 0700 by the deploy"
    );
    let release = root.join("releases").join(&first);
    for dir in ["uploads", "data/cache"] {
        assert_eq!(
            std::fs::read_link(release.join(dir)).unwrap(),
            root.join("shared").join(dir),
            "{dir} is linked into the release"
        );
    }
    // The app writes an upload through the release; its operator opens the dir for a container user.
    std::fs::write(release.join("uploads/photo.txt"), "kept\n").unwrap();
    crate::harness::set_mode(&root.join("shared/uploads"), 0o750);

    // A write of the history cut short: no newline at the end.
    let history = root.join(".deploy/history.jsonl");
    let mut text = std::fs::read_to_string(&history).unwrap();
    text.push_str("{\"release\":\"2026");
    std::fs::write(&history, &text).unwrap();

    d.app.commit(&Behaviour::version("B"));
    d.deploy(&[], 0);
    let second = d.current().unwrap();
    assert_ne!(first, second);
    let new_release = root.join("releases").join(&second);
    assert_eq!(
        std::fs::read_to_string(new_release.join("uploads/photo.txt")).unwrap(),
        "kept\n",
        "the upload survives the next release"
    );
    assert_eq!(
        mode(&root.join("shared/uploads")),
        0o750,
        "an existing shared dir keeps its mode"
    );
    assert_eq!(mode(&history), 0o600);

    let text = std::fs::read_to_string(&history).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert_eq!(lines[1], "{\"release\":\"2026", "the torn line stays alone");
    let last: serde_json::Value = serde_json::from_str(lines[2]).expect("the new entry is a line of its own");
    assert_eq!(last["release"], second.as_str());

    let releases = d.run(&["releases", "test"]);
    assert_eq!(releases.code, 0, "{}", releases.all());
    assert!(
        releases.stderr.contains("skipped 1 line that is not a history entry"),
        "{}",
        releases.all()
    );
    assert!(
        releases.stdout.contains(&first) && releases.stdout.contains(&second),
        "{}",
        releases.stdout
    );
    let json = d.run(&["releases", "test", "--output", "json"]);
    assert!(
        json.stdout.contains("\"event\":\"warning\"") && json.stdout.contains("skipped 1 line"),
        "{}",
        json.stdout
    );
}

#[test]
fn a_shared_file_that_is_a_directory_is_refused_not_chmodded() {
    let d = Deployment::new(
        Setup {
            app_extra: "shared_files = [\"conf\"]".into(),
            ..Setup::default()
        },
        &Behaviour::version("A"),
    );
    host_dir(&d.app_path().join("shared"), 0o755);
    host_dir(&d.app_path().join("shared/conf"), 0o755);
    let run = d.deploy(&[], 1);
    assert!(
        run.all().contains("is a directory (list it in app.shared_dirs)"),
        "{}",
        run.all()
    );
    assert_eq!(
        mode(&d.app_path().join("shared/conf")),
        0o755,
        "the directory was chmodded"
    );
    assert!(d.current().is_none());
}

mod tunnels {
    //! Port forwards of http and redis checks: one per target for the whole
    //! checklist on a host, closed when it ends, also when it is cut short.

    use super::*;
    use deploy::activation::Record;
    use deploy::config::Config;
    use deploy::fleet::Member;
    use deploy::remote::ssh::SshRemote;
    use deploy::remote::{Cmd, Script};
    use deploy::report::events::{Event, Reporter};

    struct Quiet;
    impl Reporter for Quiet {
        fn event(&self, _: Event) {}
    }

    /// TCP sockets in LISTEN state owned by process `pid`.
    fn listening(pid: u32) -> usize {
        let out = sh(Command::new("ss").args(["-ltnpH"]));
        out.lines().filter(|l| l.contains(&format!("pid={pid},"))).count()
    }

    /// The ssh master of `host` (the only ssh client process for its port).
    fn master_pid(host: &SshHost) -> u32 {
        let out = sh(Command::new("pgrep").arg("-f").arg(host.client_pattern()));
        let pids: Vec<u32> = out.lines().filter_map(|l| l.trim().parse().ok()).collect();
        assert_eq!(
            pids.len(),
            1,
            "expected one ssh master for port {}: {pids:?}",
            host.port
        );
        pids[0]
    }

    /// An HTTP server that answers `/ok` with 503 three times, then 200, and
    /// anything else with 503; at each request it records how many sockets the
    /// ssh master listens on (the request came through one of them).
    struct Http {
        port: u16,
        requests: Arc<AtomicUsize>,
        seen_listening: Arc<Mutex<Vec<usize>>>,
    }

    impl Http {
        fn start(master: u32) -> Http {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            let requests = Arc::new(AtomicUsize::new(0));
            let seen_listening = Arc::new(Mutex::new(Vec::new()));
            let (count, seen) = (requests.clone(), seen_listening.clone());
            std::thread::spawn(move || {
                let mut ok_asked = 0;
                for stream in listener.incoming() {
                    let Ok(mut s) = stream else { continue };
                    let mut buf = [0u8; 2048];
                    let n = s.read(&mut buf).unwrap_or(0);
                    let request = String::from_utf8_lossy(&buf[..n]).into_owned();
                    seen.lock().unwrap().push(listening(master));
                    count.fetch_add(1, Ordering::SeqCst);
                    let ok = request.starts_with("GET /ok ") && {
                        ok_asked += 1;
                        ok_asked > 3
                    };
                    let status = if ok { "200 OK" } else { "503 Service Unavailable" };
                    use std::io::Write;
                    let _ = write!(s, "HTTP/1.0 {status}\r\nContent-Length: 0\r\n\r\n");
                }
            });
            Http {
                port,
                requests,
                seen_listening,
            }
        }
    }

    fn checklist(host: &SshHost, known: &Path, http_port: u16, path: &str, redis_port: u16) -> Config {
        let toml = format!(
            "[app]\nname = \"t\"\n{}\n[environments.test]\nhosts = [\"127.0.0.1\"]\npath = \"{}\"\n\
             [verify]\ninterval = \"100ms\"\nmax_interval = \"200ms\"\ntimeout = \"20s\"\n\
             [[verify.checks]]\nname = \"web\"\ntype = \"http\"\nurl = \"http://127.0.0.1:{http_port}{path}\"\nvia = \"ssh\"\n\
             [[verify.checks]]\nname = \"cache\"\ntype = \"redis\"\naddress = \"127.0.0.1:{redis_port}\"\nvia = \"ssh\"\n",
            host.ssh_toml(known, "strict"),
            host.app_path().display()
        );
        Config::parse(Path::new("deploy.toml"), &toml).expect("valid config")
    }

    #[test]
    fn check_tunnels_are_reused_by_every_attempt_and_closed_when_the_checklist_ends() {
        let host = SshHost::start();
        let tmp = open_tempdir();
        let known = host.known_hosts_file(tmp.path());
        let redis_port = free_port();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let placeholder = checklist(&host, &known, 1, "/ok", redis_port);
            let target = placeholder.environments["test"].hosts[0].clone();
            let remote = SshRemote::connect(&target).await.expect("connect");
            let master = master_pid(&host);
            let before = listening(master);
            let http = Http::start(master);
            let config = checklist(&host, &known, http.port, "/ok", redis_port);
            let member = Member::new(target.clone(), Box::new(remote));
            let release = Record::inferred(&config, &member, "r1");

            // Redis comes up only after the checks have been failing for a while.
            let mut redis: Option<Child> = None;
            let late_redis = async {
                while http.requests.load(Ordering::SeqCst) < 3 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                redis = Some(
                    Command::new("redis-server")
                        .args(["--port", &redis_port.to_string(), "--bind", "127.0.0.1"])
                        .args(["--save", "", "--appendonly", "no"])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()
                        .expect("redis-server"),
                );
            };
            let (checked, ()) = tokio::join!(
                deploy::verify::verify_host(&config, &member, &release, &Quiet),
                late_redis
            );
            assert!(checked.ok(), "{checked:#?}");
            let attempts = |name: &str| checked.checks.iter().find(|c| c.name == name).map(|c| c.attempts);
            assert_eq!(attempts("web"), Some(4), "{checked:#?}");
            assert!(attempts("cache") >= Some(2), "redis passed at once: {checked:#?}");
            let seen = http.seen_listening.lock().unwrap().clone();
            assert!(seen.len() >= 4, "{seen:?}");
            // Each request came through a forward, and there was never more than
            // one per target (web, cache) however many attempts were made.
            assert!(
                seen.iter().all(|n| (before + 1..=before + 2).contains(n)),
                "listening sockets of the ssh master at each request (before: {before}): {seen:?}"
            );
            assert_eq!(listening(master), before, "the tunnels are closed after the checklist");

            // Cut short (as Ctrl-C does to a checklist): closed before the next command.
            let failing = checklist(&host, &known, http.port, "/never", redis_port);
            let asked = http.requests.load(Ordering::SeqCst);
            let cut = async {
                while http.requests.load(Ordering::SeqCst) < asked + 2 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            };
            tokio::select! {
                _ = deploy::verify::verify_host(&failing, &member, &release, &Quiet) => panic!("the check cannot pass"),
                _ = cut => {}
            }
            assert!(
                listening(master) > before,
                "the forwards were open while the checks ran"
            );
            member
                .remote
                .run(&Script::from(Cmd::new("true")), None)
                .await
                .expect("a command after the cut");
            assert_eq!(listening(master), before, "the tunnels of the cut checklist are closed");

            if let Some(mut r) = redis {
                let _ = r.kill();
                let _ = r.wait();
            }
            let Member { remote, .. } = member;
            remote.close().await.unwrap();
        });
    }
}
