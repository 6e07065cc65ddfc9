//! The SSH and local transports against a real sshd: exact output, timeouts,
//! host key policy, quoting, uploads, port forwards, and no process left behind.

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use deploy::config::{Config, Host};
use deploy::remote::local::LocalRemote;
use deploy::remote::ssh::SshRemote;
use deploy::remote::{Cmd, Remote, RemoteError, Script, Stream};

use crate::harness::open_tempdir;
use crate::harness::sshd::SshHost;

/// The `Host` deploy.toml would give for `host` under `policy`.
fn host_config(host: &SshHost, known_hosts: &Path, policy: &str) -> Host {
    let toml = format!(
        "[app]\nname = \"t\"\n{}\n[environments.test]\nhosts = [\"127.0.0.1\"]\npath = \"{}\"\n",
        host.ssh_toml(known_hosts, policy),
        host.app_path().display()
    );
    let config = Config::parse(Path::new("deploy.toml"), &toml).expect("valid config");
    config.environments["test"].hosts[0].clone()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn stdout_stderr_and_exit_code_come_back_exactly() {
    let host = SshHost::start();
    let tmp = open_tempdir();
    let cfg = host_config(&host, &host.known_hosts_file(tmp.path()), "strict");
    runtime().block_on(async {
        let remote = SshRemote::connect(&cfg).await.expect("connect");
        let script = Script::from(
            Cmd::new("sh")
                .arg("-c")
                .arg("printf 'out 1\\nünï\\n'; printf 'err\\n' >&2; exit 3"),
        );
        let out = remote.run(&script, None).await.unwrap();
        assert_eq!(out.stdout, "out 1\nünï\n");
        assert_eq!(out.stderr, "err\n");
        assert_eq!(out.code, 3);
        let whoami = remote
            .check(&Script::from(Cmd::new("id").arg("-un")), None)
            .await
            .unwrap();
        assert_eq!(whoami.stdout.trim(), crate::harness::sshd::USER);
        // check() turns a non-zero exit into an error naming the host and command.
        let err = remote.check(&script, None).await.unwrap_err();
        assert!(matches!(err, RemoteError::Failed { code: 3, .. }), "{err}");
        assert!(err.to_string().contains("127.0.0.1"), "{err}");

        let mut lines = Vec::new();
        let code = remote
            .stream(
                &Script::from(Cmd::new("sh").arg("-c").arg("echo a; echo b >&2; echo c")),
                None,
                &mut |s, l| lines.push((s, l.to_string())),
            )
            .await
            .unwrap();
        assert_eq!(code, 0);
        assert!(
            lines.contains(&(Stream::Stdout, "a".into()))
                && lines.contains(&(Stream::Stderr, "b".into()))
                && lines.contains(&(Stream::Stdout, "c".into())),
            "{lines:?}"
        );
        remote.close().await.unwrap();
    });
    assert!(!host.ssh_clients_running(), "ssh master left running after close");
}

#[test]
fn a_command_that_outlives_its_timeout_is_stopped_and_reported() {
    let host = SshHost::start();
    let tmp = open_tempdir();
    let cfg = host_config(&host, &host.known_hosts_file(tmp.path()), "strict");
    let marker = format!("sleep 41.{}", host.port);
    runtime().block_on(async {
        let remote = SshRemote::connect(&cfg).await.expect("connect");
        let started = Instant::now();
        let err = remote
            .run(
                &Script::from(Cmd::new("sh").arg("-c").arg(format!("{marker}; echo finished"))),
                Some(Duration::from_secs(1)),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, RemoteError::TimedOut { .. }), "{err}");
        assert!(err.to_string().contains("did not finish within 1s"), "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "took {:?}",
            started.elapsed()
        );
        remote.close().await.unwrap();
    });
    // The host side is gone too, not only our end of the channel.
    crate::harness::wait_for(
        "the timed-out command to end on the host",
        Duration::from_secs(10),
        || {
            !std::process::Command::new("pgrep")
                .arg("-f")
                .arg(&marker)
                .status()
                .unwrap()
                .success()
        },
    );
}

#[test]
fn an_unknown_host_key_is_refused_under_strict() {
    let host = SshHost::start();
    let tmp = open_tempdir();
    let empty = tmp.path().join("known_hosts");
    std::fs::write(&empty, "").unwrap();
    let cfg = host_config(&host, &empty, "strict");
    let err = runtime().block_on(SshRemote::connect(&cfg)).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, RemoteError::Connect { .. }), "{text}");
    assert!(
        text.contains("Host key verification failed"),
        "ssh's reason is shown: {text}"
    );
    assert_eq!(
        std::fs::read_to_string(&empty).unwrap(),
        "",
        "strict must not record the key"
    );
    assert!(!host.ssh_clients_running());
}

#[test]
fn accept_new_records_a_new_host_but_refuses_a_changed_key() {
    let mut host = SshHost::start();
    let tmp = open_tempdir();
    let known = tmp.path().join("known_hosts");
    std::fs::write(&known, "").unwrap();
    let cfg = host_config(&host, &known, "accept-new");
    let rt = runtime();
    rt.block_on(async {
        let remote = SshRemote::connect(&cfg).await.expect("accept-new trusts a new host");
        remote.close().await.unwrap();
    });
    assert!(
        crate::harness::knows_host(&known, host.port),
        "the new host key was not recorded"
    );

    host.change_host_key();
    let err = rt.block_on(SshRemote::connect(&cfg)).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("Host key verification failed") || text.contains("CHANGED"),
        "{text}"
    );
    assert!(!host.ssh_clients_running());
}

/// Values that would run something if they were pasted into a shell unquoted.
fn hostile_args(tag: &str) -> Vec<String> {
    let pwned = format!("/tmp/pwned-{tag}");
    vec![
        "it's".into(),
        "\"double\"".into(),
        "two words".into(),
        format!("a; touch {pwned}"),
        format!("$(touch {pwned})"),
        format!("`touch {pwned}`"),
        format!("line1\ntouch {pwned}\nline3"),
        "$HOME ${PATH} \\ * ?".into(),
        String::new(),
    ]
}

async fn args_arrive_literally(remote: &dyn Remote, tag: &str) {
    let args = hostile_args(tag);
    let _ = std::fs::remove_file(format!("/tmp/pwned-{tag}"));
    // printf prints each argument followed by NUL, so the split is exact.
    let script = Script::from(Cmd::new("printf").arg("%s\\0").args(args.iter()).current_dir("/tmp"));
    let out = remote.check(&script, None).await.unwrap();
    let got: Vec<&str> = out.stdout.split('\0').collect();
    assert_eq!(
        &got[..got.len() - 1],
        args.iter().map(String::as_str).collect::<Vec<_>>().as_slice()
    );
    // And as environment values and directories.
    let env = Script::from(
        Cmd::new("sh")
            .arg("-c")
            .arg("printf %s \"$V\"")
            .env("V", args[4].as_str()),
    );
    assert_eq!(remote.check(&env, None).await.unwrap().stdout, args[4]);
    assert!(
        !Path::new(&format!("/tmp/pwned-{tag}")).exists(),
        "a quoted value ran a command"
    );
}

#[test]
fn hostile_arguments_arrive_as_one_literal_argument_each() {
    let host = SshHost::start();
    let tmp = open_tempdir();
    let cfg = host_config(&host, &host.known_hosts_file(tmp.path()), "strict");
    runtime().block_on(async {
        let remote = SshRemote::connect(&cfg).await.expect("connect");
        args_arrive_literally(&remote, &format!("ssh-{}", host.port)).await;
        remote.close().await.unwrap();
        args_arrive_literally(&LocalRemote::new("local"), &format!("local-{}", host.port)).await;
    });
}

#[test]
fn uploads_are_written_whole_with_their_mode() {
    let host = SshHost::start();
    let tmp = open_tempdir();
    let cfg = host_config(&host, &host.known_hosts_file(tmp.path()), "strict");
    let path = host.app_path().join("shared/.env");
    let bytes: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    runtime().block_on(async {
        let remote = SshRemote::connect(&cfg).await.expect("connect");
        remote.upload(&bytes, path.to_str().unwrap(), 0o600).await.unwrap();
        let stat = remote
            .check(
                &Script::from(Cmd::new("stat").arg("-c").arg("%a %U").arg(path.to_str().unwrap())),
                None,
            )
            .await
            .unwrap();
        assert_eq!(stat.stdout.trim(), format!("600 {}", crate::harness::sshd::USER));
        remote.close().await.unwrap();
    });
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
}

#[test]
fn a_port_on_the_host_is_reachable_through_a_forward() {
    let host = SshHost::start();
    let tmp = open_tempdir();
    let cfg = host_config(&host, &host.known_hosts_file(tmp.path()), "strict");
    runtime().block_on(async {
        let remote = SshRemote::connect(&cfg).await.expect("connect");
        // The host's own sshd, as seen from the host, answers with its banner.
        let local = remote.forward(&format!("127.0.0.1:{}", host.port)).await.unwrap();
        let banner = tokio::task::spawn_blocking(move || {
            let mut s = std::net::TcpStream::connect(local).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = [0u8; 8];
            s.read_exact(&mut buf).unwrap();
            buf
        })
        .await
        .unwrap();
        assert_eq!(&banner, b"SSH-2.0-");
        remote.close().await.unwrap();
    });
}

#[test]
fn dropping_a_session_closes_its_master() {
    let host = SshHost::start();
    let tmp = open_tempdir();
    let cfg = host_config(&host, &host.known_hosts_file(tmp.path()), "strict");
    runtime().block_on(async {
        let remote = SshRemote::connect(&cfg).await.expect("connect");
        assert!(host.ssh_clients_running(), "the master should be up while connected");
        drop(remote);
    });
    crate::harness::wait_for("the ssh master to exit", Duration::from_secs(5), || {
        !host.ssh_clients_running()
    });
}

#[test]
fn a_closed_port_is_reported_with_ssh_words() {
    let port = crate::harness::sshd::free_port();
    let tmp = open_tempdir();
    let known = tmp.path().join("known_hosts");
    std::fs::write(&known, "").unwrap();
    let toml = format!(
        "[app]\nname = \"t\"\n[ssh]\nport = {port}\nhost_key_policy = \"strict\"\nknown_hosts_file = \"{}\"\nconnect_timeout = \"2s\"\n[environments.test]\nhosts = [\"127.0.0.1\"]\npath = \"/srv/t\"\n",
        known.display()
    );
    let config = Config::parse(Path::new("deploy.toml"), &toml).unwrap();
    let err = runtime()
        .block_on(SshRemote::connect(&config.environments["test"].hosts[0]))
        .unwrap_err();
    assert!(err.to_string().contains("Connection refused"), "{err}");
}
