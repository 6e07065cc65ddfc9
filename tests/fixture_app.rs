//! The harness's own fixture: the app builds from the scratch images and serves
//! its version and health under Docker Compose, so later tests can rely on it.

use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

use crate::harness::app::{AppRepo, Behaviour, Health};
use crate::harness::sshd::free_port;
use crate::harness::{sh, wait_for};

/// GET `path` on 127.0.0.1:`port`: (status, body), or None if nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let status = raw.split_whitespace().nth(1)?.parse().ok()?;
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

struct Project {
    dir: std::path::PathBuf,
    name: String,
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = Command::new("docker-compose")
            .args(["-p", &self.name, "down", "-v", "--rmi", "local", "-t", "1"])
            .current_dir(&self.dir)
            .output();
    }
}

#[test]
fn the_fixture_app_builds_and_answers_under_compose() {
    let mut b = Behaviour::version("A");
    b.health = Health::UntilRedis;
    b.redis_delay_secs = 1;
    let app = AppRepo::new(&b);
    let (api, redis) = (free_port(), free_port());
    let project = Project {
        dir: app.path().to_path_buf(),
        name: format!("fixture{api}"),
    };
    sh(Command::new("docker-compose")
        .args(["-p", &project.name, "up", "-d", "--build"])
        .env("API_PORT", api.to_string())
        .env("REDIS_PORT", redis.to_string())
        .current_dir(app.path()));
    wait_for("the api to answer", Duration::from_secs(30), || {
        http_get(api, "/version").is_some()
    });
    assert_eq!(http_get(api, "/version").unwrap(), (200, "A\n".to_string()));
    // Health follows Redis: 200 once it answers PING.
    wait_for("health 200 once redis is up", Duration::from_secs(30), || {
        http_get(api, "/cgi-bin/health").is_some_and(|(s, _)| s == 200)
    });
    let logs = sh(Command::new("docker-compose")
        .args(["-p", &project.name, "logs", "--no-color", "worker"])
        .current_dir(app.path()));
    assert!(logs.contains("worker A started"), "{logs}");
}
