//! Fixture images built `FROM scratch` (no registry here), once per run.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use super::sh;

/// busybox: sh, httpd, nc, sleep.
pub const BUSYBOX: &str = "deploy-test/busybox:1";
/// redis-server and redis-cli with their libraries, plus busybox.
pub const REDIS: &str = "deploy-test/redis:1";

/// Builds both images unless the engine already has them.
pub fn ensure() {
    static BUILT: Mutex<bool> = Mutex::new(false);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if *built {
        return;
    }
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("images");
    if !exists(BUSYBOX) {
        let ctx = root.join("busybox");
        std::fs::create_dir_all(&ctx).expect("mkdir");
        copy("/bin/busybox", &ctx.join("busybox"));
        std::fs::write(
            ctx.join("Dockerfile"),
            "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n",
        )
        .expect("Dockerfile");
        build(&ctx, BUSYBOX);
    }
    if !exists(REDIS) {
        let ctx = root.join("redis");
        let rootfs = ctx.join("rootfs");
        let _ = std::fs::remove_dir_all(&rootfs);
        for bin in ["/usr/bin/redis-server", "/usr/bin/redis-cli"] {
            copy(bin, &rootfs.join(bin.trim_start_matches('/')));
            for lib in libraries(bin) {
                copy(&lib, &rootfs.join(lib.trim_start_matches('/')));
            }
        }
        copy("/bin/busybox", &rootfs.join("bin/busybox"));
        for tool in ["sh", "sleep", "cat", "echo", "nc"] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(tool)).expect("symlink");
        }
        std::fs::create_dir_all(rootfs.join("tmp")).expect("mkdir tmp");
        std::fs::create_dir_all(rootfs.join("data")).expect("mkdir data");
        std::fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY rootfs/ /\nWORKDIR /data\nCMD [\"redis-server\", \"--save\", \"\", \"--appendonly\", \"no\", \"--protected-mode\", \"no\"]\n")
            .expect("Dockerfile");
        build(&ctx, REDIS);
    }
    *built = true;
}

fn exists(tag: &str) -> bool {
    Command::new("docker")
        .args(["image", "inspect", tag])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn build(ctx: &Path, tag: &str) {
    sh(Command::new("docker").args(["build", "-q", "-t", tag]).arg(ctx));
}

fn copy(from: &str, to: &Path) {
    std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
    std::fs::copy(from, to)
        .unwrap_or_else(|e| panic!("copy {from}: {e} (are busybox-static and redis-server installed?)"));
}

/// The shared libraries `ldd` names for `bin`, the loader included.
fn libraries(bin: &str) -> Vec<String> {
    sh(Command::new("ldd").arg(bin))
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            match line.split_once("=>") {
                Some((_, rest)) => rest
                    .split_whitespace()
                    .next()
                    .filter(|p| p.starts_with('/'))
                    .map(str::to_string),
                None => line
                    .split_whitespace()
                    .next()
                    .filter(|p| p.starts_with('/'))
                    .map(str::to_string),
            }
        })
        .collect()
}
