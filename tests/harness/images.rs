//! Fixture images built `FROM scratch` (no registry here), once per run, by the
//! same script the demo uses.

use std::process::Command;
use std::sync::Mutex;

use super::{repo_root, sh};

/// busybox: sh, httpd, nc, sleep.
pub const BUSYBOX: &str = "deploy-test/busybox:1";
/// redis-server and redis-cli with their libraries, plus busybox.
pub const REDIS: &str = "deploy-test/redis:1";
/// Debian's caddy 2.6 with its libraries: the reverse proxy of zero-downtime tests.
pub const CADDY: &str = "deploy-test/caddy:1";

/// Builds the three images unless the engine already has them.
pub fn ensure() {
    static BUILT: Mutex<bool> = Mutex::new(false);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if !*built {
        sh(Command::new("bash")
            .arg(repo_root().join("scripts/build-base-images.sh"))
            .args([BUSYBOX, REDIS, CADDY]));
        *built = true;
    }
}
