//! A git repository of a small app (api, worker, redis) whose behaviour per
//! commit is chosen by the test: healthy or 500, slow to build, slow to start,
//! Redis late, a line in the logs.

use std::path::{Path, PathBuf};

use super::{git, images, open_tempdir};

/// What the api's health endpoint does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// 200 always.
    Ok,
    /// 500 always.
    Fails,
    /// 500 until Redis answers PING, then 200 (the incident behind the product).
    UntilRedis,
    /// 500 on hosts whose `FAIL_HEALTH` var is 1, 200 elsewhere.
    FailsWhereFlagged,
}

/// The app as one commit has it.
#[derive(Debug, Clone)]
pub struct Behaviour {
    /// What `GET /version` answers.
    pub version: String,
    pub health: Health,
    /// `RUN sleep` in the api's Dockerfile.
    pub slow_build_secs: u32,
    /// Seconds before the api starts serving.
    pub slow_start_secs: u32,
    /// Seconds before redis-server starts.
    pub redis_delay_secs: u32,
    /// A line the worker prints when it starts.
    pub worker_log: Option<String>,
    /// A reverse proxy (Caddy) publishes API_PORT and reaches the api by its
    /// service name; the api publishes nothing and drains on SIGTERM.
    pub proxied: bool,
    /// The api has a Docker healthcheck: its health endpoint answers 200.
    pub healthcheck: bool,
}

impl Behaviour {
    /// A healthy release answering `version`.
    pub fn version(version: &str) -> Behaviour {
        Behaviour {
            version: version.to_string(),
            health: Health::Ok,
            slow_build_secs: 0,
            slow_start_secs: 0,
            redis_delay_secs: 0,
            worker_log: None,
            proxied: false,
            healthcheck: false,
        }
    }

    /// A healthy release answering `version` behind a proxy (see `proxied`).
    pub fn proxied(version: &str) -> Behaviour {
        Behaviour {
            proxied: true,
            ..Behaviour::version(version)
        }
    }
}

/// The compose file: ports come from API_PORT / REDIS_PORT so hosts sharing one
/// engine do not collide. `init: true` so stops take milliseconds, not 10 s.
/// Redis starts `redis_delay` seconds after its container.
pub fn compose_file(redis_delay: u32) -> String {
    format!(
        r#"version: "3.7"
services:
  api:
    build: ./api
    init: true
    ports:
      - "${{API_BIND:-127.0.0.1}}:${{API_PORT:-18000}}:8000"
    environment:
      FAIL_HEALTH: "${{FAIL_HEALTH:-0}}"
    depends_on:
      - redis
  worker:
    build: ./worker
    init: true
    depends_on:
      - redis
  redis:
    image: deploy-test/redis:1
    init: true
    command: ["sh", "-c", "sleep {redis_delay}; exec redis-server --save '' --appendonly no --protected-mode no"]
    ports:
      - "127.0.0.1:${{REDIS_PORT:-16379}}:6379"
"#
    )
}

/// The proxy's Caddyfile: the demo's (demo/proxy/Caddyfile), to `api:8000`.
pub const CADDYFILE: &str = "{
\tadmin off
\tauto_https off
}

:80 {
\treverse_proxy {
\t\tdynamic a api 8000 {
\t\t\trefresh 100ms
\t\t}
\t\tlb_try_duration 5s
\t\tlb_try_interval 50ms
\t\ttransport http {
\t\t\tdial_timeout 250ms
\t\t}
\t}
}
";

/// The compose file of an app behind a proxy: the proxy publishes API_PORT,
/// the api publishes nothing (it can run twice), optionally with a healthcheck.
pub fn proxied_compose_file(b: &Behaviour) -> String {
    let healthcheck = if b.healthcheck {
        "    healthcheck:\n      test: [\"CMD\", \"wget\", \"-q\", \"-O\", \"/dev/null\", \"http://127.0.0.1:8000/cgi-bin/health\"]\n      interval: 500ms\n      timeout: 2s\n      retries: 2\n"
    } else {
        ""
    };
    format!(
        r#"version: "3.7"
services:
  proxy:
    build: ./proxy
    ports:
      - "${{API_BIND:-127.0.0.1}}:${{API_PORT:-18000}}:80"
    depends_on:
      - api
  api:
    build: ./api
    init: true
    environment:
      FAIL_HEALTH: "${{FAIL_HEALTH:-0}}"
{healthcheck}    depends_on:
      - redis
  worker:
    build: ./worker
    init: true
    depends_on:
      - redis
  redis:
    image: deploy-test/redis:1
    init: true
    command: ["sh", "-c", "sleep {}; exec redis-server --save '' --appendonly no --protected-mode no"]
    ports:
      - "127.0.0.1:${{REDIS_PORT:-16379}}:6379"
"#,
        b.redis_delay_secs
    )
}

/// The compose file of a release with Redis on time.
pub fn compose() -> String {
    compose_file(0)
}

/// A working copy with commits; removed on drop.
pub struct AppRepo {
    pub dir: tempfile::TempDir,
}

impl AppRepo {
    /// A repository with one commit of `first`.
    pub fn new(first: &Behaviour) -> AppRepo {
        images::ensure();
        let dir = open_tempdir();
        git(dir.path(), &["init", "-q", "-b", "main"]);
        // deploy.toml (written by the harness, edited by tests) is never committed.
        std::fs::write(dir.path().join(".git/info/exclude"), "deploy.toml\n").expect("exclude");
        let repo = AppRepo { dir };
        repo.commit(first);
        repo
    }

    /// A repository with one commit of `tests/fixtures/<name>/` (its
    /// `deploy.toml` left out of the commit, and out of git's sight).
    pub fn from_fixture(name: &str) -> AppRepo {
        images::ensure();
        let dir = open_tempdir();
        let source = super::repo_root().join("tests/fixtures").join(name);
        assert!(source.is_dir(), "no fixture {}", source.display());
        copy_tree(&source, dir.path());
        git(dir.path(), &["init", "-q", "-b", "main"]);
        std::fs::write(dir.path().join(".git/info/exclude"), "deploy.toml\n.env\n").expect("exclude");
        git(dir.path(), &["add", "-A"]);
        git(dir.path(), &["commit", "-q", "-m", &format!("the {name} shape")]);
        AppRepo { dir }
    }

    /// Writes `text` to `rel` and commits it; returns the commit id.
    pub fn commit_file(&self, rel: &str, text: &str, message: &str) -> String {
        write(self.path(), rel, text);
        git(self.path(), &["add", "-A"]);
        git(self.path(), &["commit", "-q", "-m", message]);
        git(self.path(), &["rev-parse", "HEAD"]).trim().to_string()
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes the app as `b` describes and commits it; returns the commit id.
    pub fn commit(&self, b: &Behaviour) -> String {
        let d = self.path();
        if b.proxied {
            write(d, "docker-compose.yml", &proxied_compose_file(b));
            write(d, "proxy/Caddyfile", CADDYFILE);
            write(
                d,
                "proxy/Dockerfile",
                &format!("FROM {}\nCOPY Caddyfile /etc/caddy/Caddyfile\n", images::CADDY),
            );
        } else {
            write(d, "docker-compose.yml", &compose_file(b.redis_delay_secs));
        }
        let slow = if b.slow_build_secs > 0 {
            // A nonce so the slow step is never served from the build cache.
            let nonce = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            format!("RUN sleep {} && echo {nonce}\n", b.slow_build_secs)
        } else {
            String::new()
        };
        write(
            d,
            "api/Dockerfile",
            &format!(
                "FROM {}\n{slow}COPY www /www\nCOPY start.sh /start.sh\nCMD [\"sh\", \"/start.sh\"]\n",
                images::BUSYBOX
            ),
        );
        write(
            d,
            "api/start.sh",
            &format!(
                "echo api {} starting\necho \"$FAIL_HEALTH\" > /www/fail\nsleep {}\n{}",
                b.version,
                b.slow_start_secs,
                if b.proxied {
                    // Drains as demo/api/start.sh does: stops accepting on
                    // SIGTERM, lets requests in flight finish.
                    "httpd -f -v -p 8000 -h /www &\npid=$!\ntrap 'kill \"$pid\"; sleep 0.5; exit 0' TERM INT\nwait \"$pid\"\n"
                } else {
                    "exec httpd -f -v -p 8000 -h /www\n"
                }
            ),
        );
        write(d, "api/www/version", &format!("{}\n", b.version));
        let health = match b.health {
            Health::Ok => "printf 'Content-Type: text/plain\\r\\n\\r\\nok\\n'\n".to_string(),
            Health::Fails => "printf 'Status: 500 Internal Server Error\\r\\nContent-Type: text/plain\\r\\n\\r\\nboom\\n'\n".to_string(),
            Health::FailsWhereFlagged => "if [ \"$(cat /www/fail)\" = 1 ]; then\n  printf 'Status: 500 Internal Server Error\\r\\nContent-Type: text/plain\\r\\n\\r\\nflagged\\n'\nelse\n  printf 'Content-Type: text/plain\\r\\n\\r\\nok\\n'\nfi\n".to_string(),
            Health::UntilRedis => "if echo PING | nc -w 1 redis 6379 | grep -q PONG; then\n  printf 'Content-Type: text/plain\\r\\n\\r\\nok\\n'\nelse\n  printf 'Status: 500 Internal Server Error\\r\\nContent-Type: text/plain\\r\\n\\r\\nredis not ready\\n'\nfi\n".to_string(),
        };
        write(d, "api/www/cgi-bin/health", &format!("#!/bin/sh\n{health}"));
        super::set_mode(&d.join("api/www/cgi-bin/health"), 0o755);
        let log = b
            .worker_log
            .as_ref()
            .map_or(String::new(), |l| format!("echo {}\n", shell_quote(l)));
        write(
            d,
            "worker/Dockerfile",
            &format!(
                "FROM {}\nCOPY run.sh /run.sh\nCMD [\"sh\", \"/run.sh\"]\n",
                images::BUSYBOX
            ),
        );
        write(
            d,
            "worker/run.sh",
            &format!("echo worker {} started\n{log}exec sleep 2147483647\n", b.version),
        );
        git(d, &["add", "-A"]);
        git(
            d,
            &["commit", "-q", "--allow-empty", "-m", &format!("release {}", b.version)],
        );
        git(d, &["rev-parse", "HEAD"]).trim().to_string()
    }
}

/// A bare repository to push to, by path or over SSH. Removed on drop.
pub struct BareRemote {
    pub dir: tempfile::TempDir,
}

impl BareRemote {
    /// Owned by the current user, for pushes by path (git refuses other owners' repositories).
    pub fn new() -> BareRemote {
        let dir = open_tempdir();
        git(dir.path(), &["init", "-q", "--bare", "-b", "main", "repo.git"]);
        BareRemote { dir }
    }

    /// Owned by the hosts' user, so pushes and fetches over SSH can write to it.
    pub fn for_ssh() -> BareRemote {
        super::sshd::ensure_user();
        let remote = BareRemote::new();
        super::sh(
            std::process::Command::new("chown")
                .arg("-R")
                .arg(format!("{0}:{0}", super::sshd::USER))
                .arg(remote.dir.path()),
        );
        remote
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("repo.git")
    }

    /// The URL that reaches it through `host`'s sshd.
    pub fn ssh_url(&self, port: u16) -> String {
        format!("ssh://{}@127.0.0.1:{port}{}", super::sshd::USER, self.path().display())
    }
}

/// Copies the files under `from` into `to`.
fn copy_tree(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("read fixture") {
        let entry = entry.expect("fixture entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            std::fs::create_dir_all(&target).expect("mkdir");
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

fn write(dir: &Path, rel: &str, text: &str) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}
