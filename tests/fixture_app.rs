//! The harness's own fixture: the app builds from the scratch images and serves
//! its version and health under Docker Compose, so later tests can rely on it.

use std::process::Command;
use std::time::Duration;

use crate::harness::app::{AppRepo, Behaviour, Health};
use crate::harness::sshd::free_port;
use crate::harness::{http_get, sh, wait_for};

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
