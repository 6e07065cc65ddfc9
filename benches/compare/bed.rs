//! The test bed: N sshd hosts, and for each tool its own copy of the demo app
//! (a working repository and a bare remote) and on every host its own
//! directory, compose project and api port, so the tools never share state.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::app::BareRemote;
use crate::harness::sshd::{client_key, free_port, SshHost, USER};
use crate::harness::{git, open_tempdir, repo_root, sh};

/// The tools measured, in the order the tables list them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tool {
    /// The procedure's commands run on each host directly: no SSH, no tool.
    Floor,
    /// A bash script of `ssh host '...'` lines, host after host.
    Manual,
    /// `bench/ansible/deploy.yml`: the procedure's commands task for task.
    Ansible,
    /// `bench/ansible/minimal.yml`: four tasks, no checklist beyond the api answering.
    AnsibleMinimal,
    Deploy,
}

/// The tools of the main tables.
pub const TOOLS: [Tool; 4] = [Tool::Floor, Tool::Manual, Tool::Ansible, Tool::Deploy];
/// The tools of the variants (compose v1/v2, http/exec checks).
pub const VARIANT_TOOLS: [Tool; 4] = [Tool::Floor, Tool::Ansible, Tool::AnsibleMinimal, Tool::Deploy];

impl Tool {
    pub fn name(self) -> &'static str {
        match self {
            Tool::Floor => "floor",
            Tool::Manual => "manual",
            Tool::Ansible => "ansible",
            Tool::AnsibleMinimal => "ansible-min",
            Tool::Deploy => "deploy",
        }
    }

    /// One letter for compose project names.
    fn code(self) -> char {
        match self {
            Tool::Floor => 'f',
            Tool::Manual => 'm',
            Tool::Ansible => 'a',
            Tool::AnsibleMinimal => 'n',
            Tool::Deploy => 'd',
        }
    }
}

/// The compose every tool of a bed runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Compose {
    V2,
    V1,
}

impl Compose {
    pub fn name(self) -> &'static str {
        match self {
            Compose::V2 => "v2",
            Compose::V1 => "v1",
        }
    }

    /// The command the baselines run.
    pub fn command(self) -> &'static str {
        match self {
            Compose::V2 => "docker compose",
            Compose::V1 => "docker-compose",
        }
    }
}

/// The kind of checklist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Checks {
    /// Health through the published port (deploy: an SSH tunnel), Redis PING from the worker.
    Http,
    /// The seed's: health by `wget` inside the api's container, Redis PING from the api and the worker.
    Exec,
}

impl Checks {
    pub fn name(self) -> &'static str {
        match self {
            Checks::Http => "http",
            Checks::Exec => "exec",
        }
    }
}

/// Where the tool's copy of the app lives on one host.
pub struct Site {
    /// The compose network's subnet: a /24 no network or route here uses (see [`free_subnets`]).
    pub subnet: String,
    pub dir: PathBuf,
    pub project: String,
    pub api_port: u16,
}

/// One tool's app: the repository a developer pushes from, its remote, and a site per host.
pub struct Bed {
    pub tool: Tool,
    pub compose: Compose,
    pub repo: tempfile::TempDir,
    /// The bare repository `origin` points at; removed with the bed.
    _remote: BareRemote,
    pub sites: Vec<Site>,
    /// Files the runs read: host lists, inventories, configs per fleet size.
    pub files: tempfile::TempDir,
    releases: u32,
}

/// The hosts every tool deploys to.
pub struct Hosts {
    pub ssh: Vec<SshHost>,
    pub known: tempfile::TempDir,
}

impl Hosts {
    pub fn start(n: usize) -> Hosts {
        let ssh: Vec<SshHost> = (0..n).map(|_| SshHost::start()).collect();
        let known = open_tempdir();
        let lines: String = ssh.iter().map(|h| h.known_hosts_line() + "\n").collect();
        std::fs::write(known.path().join("known_hosts"), lines).expect("known_hosts");
        Hosts { ssh, known }
    }

    pub fn known_hosts(&self) -> PathBuf {
        self.known.path().join("known_hosts")
    }
}

impl Bed {
    /// The demo app in a fresh repository, cloned (or, for `deploy`, configured) on every host.
    /// `subnets` holds one free /24 per host for this copy.
    pub fn new(tool: Tool, compose: Compose, hosts: &Hosts, sizes: &[usize], subnets: &[String]) -> Bed {
        let repo = open_tempdir();
        let d = repo.path();
        copy_demo(
            d,
            &[
                "docker-compose.yml",
                "worker/Dockerfile",
                "worker/run.sh",
                "proxy/Dockerfile",
                "proxy/Caddyfile",
            ],
        );
        copy_demo(d, &DEMO_API);
        // No api healthcheck in the benchmark's copies: the demo's runs every
        // 500 ms, an exec in the container each time, and with dozens of copies
        // of the app idle on two cores (every tool's, every host's) those
        // execs alone loaded the machine past 50, and every figure with it.
        // Every tool runs without it; deploy's start-first switch then waits
        // for its http check. (Removed from the file: compose v1 refuses an
        // override that disables a healthcheck the base file defines.)
        let file = std::fs::read_to_string(d.join("docker-compose.yml")).unwrap();
        std::fs::write(d.join("docker-compose.yml"), without_healthchecks(&file)).unwrap();
        // 4 tools × 16 hosts are more compose networks than Docker's default
        // address pools hold (about 30): each copy gets a subnet of its own.
        std::fs::write(
            d.join("docker-compose.override.yml"),
            "# The benchmark's addition to the demo: a subnet per copy of the app.\n\
             networks:\n  default:\n    ipam:\n      config:\n        - subnet: \"${BENCH_SUBNET}\"\n",
        )
        .unwrap();
        // deploy reads its config beside the repository; these stay untracked.
        std::fs::write(d.join(".gitignore"), ".env\ndeploy-*.toml\n").unwrap();
        git(d, &["init", "-q", "-b", "main"]);
        git(d, &["add", "-A"]);
        git(d, &["commit", "-q", "-m", "the demo app"]);
        let remote = BareRemote::new();
        git(d, &["remote", "add", "origin", remote.path().to_str().unwrap()]);
        git(d, &["push", "-q", "origin", "main"]);

        let sites: Vec<Site> = hosts
            .ssh
            .iter()
            .enumerate()
            .map(|(i, h)| Site {
                subnet: subnets[i].clone(),
                dir: h.app_path().join(format!("{}-{}", tool.name(), compose.name())),
                project: format!("b{}{}{}", tool.code(), &compose.name()[1..], h.port),
                api_port: free_port(),
            })
            .collect();
        if tool != Tool::Deploy {
            for site in &sites {
                sh(Command::new("runuser")
                    .args(["-u", USER, "--", "git", "clone", "-q"])
                    .arg(remote.path())
                    .arg(&site.dir));
                std::fs::write(
                    site.dir.join(".env"),
                    format!("DEMO_API_PORT={}\nBENCH_SUBNET={}\n", site.api_port, site.subnet),
                )
                .unwrap();
            }
        }
        let bed = Bed {
            tool,
            compose,
            repo,
            _remote: remote,
            sites,
            files: open_tempdir(),
            releases: 0,
        };
        for &n in sizes {
            bed.write_files(hosts, n);
        }
        bed
    }

    /// The host list, Ansible inventory or deploy.toml for the first `n` hosts.
    fn write_files(&self, hosts: &Hosts, n: usize) {
        let pairs = hosts.ssh.iter().zip(&self.sites).take(n);
        match self.tool {
            Tool::Floor | Tool::Manual => {
                let lines: String = pairs
                    .map(|(h, s)| {
                        format!(
                            "{} {} {} {} {}\n",
                            h.addr,
                            h.port,
                            s.dir.display(),
                            s.project,
                            s.api_port
                        )
                    })
                    .collect();
                std::fs::write(self.hosts_file(n), lines).unwrap();
            }
            Tool::Ansible | Tool::AnsibleMinimal => {
                let mut inv = String::from("[app]\n");
                for (i, (h, s)) in pairs.enumerate() {
                    inv.push_str(&format!(
                        "h{i} ansible_host={} ansible_port={} app_dir={} project={} api_port={}\n",
                        h.addr,
                        h.port,
                        s.dir.display(),
                        s.project,
                        s.api_port
                    ));
                }
                inv.push_str(&format!(
                    "\n[app:vars]\nansible_user={USER}\nansible_ssh_private_key_file={}\n\
                     ansible_ssh_common_args='-o UserKnownHostsFile={} -o StrictHostKeyChecking=yes'\n",
                    client_key().display(),
                    hosts.known_hosts().display()
                ));
                std::fs::write(self.hosts_file(n), inv).unwrap();
            }
            Tool::Deploy => {
                let mut tables = String::new();
                for (h, s) in pairs {
                    tables.push_str(&format!(
                        "[[environments.bench.hosts]]\naddress = \"{}\"\nport = {}\npath = \"{}\"\nproject = \"{}\"\n\
                         vars = {{ DEMO_API_PORT = \"{}\", BENCH_SUBNET = \"{}\" }}\n\n",
                        h.addr,
                        h.port,
                        s.dir.display(),
                        s.project,
                        s.api_port,
                        s.subnet
                    ));
                }
                // Configs that differ in a line or a check: the api switched as
                // the baselines switch it (`up -d`) or start-first; http or exec checks.
                for (path, zero_downtime, checks) in [
                    (self.deploy_config(n, Checks::Http), "", Checks::Http),
                    (self.deploy_config(n, Checks::Exec), "", Checks::Exec),
                    (
                        self.zero_downtime_file(n),
                        "zero_downtime = [{ service = \"api\", port = 8000 }]\n",
                        Checks::Http,
                    ),
                ] {
                    let health = match checks {
                        Checks::Http => "[[verify.checks]]\nname = \"api health\"\ntype = \"http\"\nservice = \"api\"\nurl = \"http://127.0.0.1:{{DEMO_API_PORT}}/health\"\nvia = \"ssh\"\nexpect_status = [200]\n\n".to_string(),
                        Checks::Exec => API_EXEC_CHECKS.iter().map(exec_check).collect::<String>(),
                    };
                    let config = format!(
                        "# The benchmark's fleet of {n}: the demo app with the README's checklist.\n\
                         [app]\nname = \"bench\"\ncompose_files = [\"docker-compose.yml\", \"docker-compose.override.yml\"]\nbuild = [\"api\", \"worker\", \"proxy\"]\nkeep_releases = 3\n{zero_downtime}\n\
                         [source]\nstrategy = \"git\"\nremote = \"origin\"\nbranch = \"main\"\n\n\
                         [ssh]\nuser = \"{USER}\"\nidentity_file = \"{}\"\nknown_hosts_file = \"{}\"\n\n\
                         [environments.bench]\nparallel = {n}\ncompose = \"{}\"\n\n{tables}\
                         [verify]\ntimeout = \"30s\"\n\n\
                         [[verify.checks]]\nname = \"containers up\"\ntype = \"compose_ps\"\n\n\
                         {health}{worker}\
                         [[verify.checks]]\nname = \"no refused connections\"\ntype = \"logs\"\nservices = [\"api\", \"worker\"]\nabsent = \"(?i)connection refused\"\n",
                        client_key().display(),
                        hosts.known_hosts().display(),
                        self.compose.name(),
                        worker = exec_check(&WORKER_EXEC_CHECK),
                    );
                    std::fs::write(path, config).unwrap();
                }
            }
        }
    }

    /// `deploy`'s config for the first `n` hosts with the given checks.
    pub fn deploy_config(&self, n: usize, checks: Checks) -> PathBuf {
        match checks {
            Checks::Http => self.repo.path().join(format!("deploy-{n}.toml")),
            Checks::Exec => self.repo.path().join(format!("deploy-{n}-exec.toml")),
        }
    }

    /// `deploy`'s config for the first `n` hosts with `zero_downtime = ["api"]`.
    pub fn zero_downtime_file(&self, n: usize) -> PathBuf {
        self.repo.path().join(format!("deploy-{n}-zd.toml"))
    }

    /// The file that names the first `n` hosts to this tool.
    pub fn hosts_file(&self, n: usize) -> PathBuf {
        match self.tool {
            Tool::Floor | Tool::Manual => self.files.path().join(format!("fleet-{n}.hosts")),
            Tool::Ansible | Tool::AnsibleMinimal => self.files.path().join(format!("fleet-{n}.ini")),
            Tool::Deploy => self.deploy_config(n, Checks::Http),
        }
    }

    /// Commits a change to the api (its page names the release); returns the commit.
    /// With `start_delay`, the api starts serving that many seconds after its container.
    pub fn change_api(&mut self, start_delay: Option<u32>) -> String {
        self.releases += 1;
        let d = self.repo.path();
        // The page names this benchmark run too: the same release number of an
        // earlier run must not be the same content, or a tool whose images of
        // that run are still on the engine (the baselines keep theirs; deploy
        // prunes its own) would build from the cache what the others build.
        std::fs::write(
            d.join("api/www/index.html"),
            format!(
                "<!doctype html>\n<p>release {} of {} (benchmark run {})</p>\n",
                self.releases,
                self.tool.name(),
                run_nonce()
            ),
        )
        .unwrap();
        let demo_start = std::fs::read_to_string(repo_root().join("demo/api/start.sh")).unwrap();
        let start = match start_delay {
            None => demo_start,
            Some(s) => format!("sleep {s}\n{demo_start}"),
        };
        std::fs::write(d.join("api/start.sh"), start).unwrap();
        git(d, &["commit", "-q", "-am", &format!("release {}", self.releases)]);
        self.head()
    }

    /// What the api's page says in the current commit.
    pub fn marker(&self) -> String {
        format!("release {} of {}", self.releases, self.tool.name())
    }

    pub fn head(&self) -> String {
        git(self.repo.path(), &["rev-parse", "HEAD"]).trim().to_string()
    }

    pub fn path(&self) -> &Path {
        self.repo.path()
    }
}

/// What tells this benchmark run from every other: nanoseconds since the
/// epoch when it first asked.
pub fn run_nonce() -> &'static str {
    static NONCE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NONCE.get_or_init(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        now.as_nanos().to_string()
    })
}

/// A compose file without its services' `healthcheck:` blocks (at 4 spaces).
fn without_healthchecks(compose: &str) -> String {
    let mut out = String::new();
    let mut skipping = false;
    for line in compose.lines() {
        let indent = line.len() - line.trim_start().len();
        if skipping && (indent > 4 || line.trim().is_empty()) {
            continue;
        }
        skipping = indent == 4 && line.trim_start().starts_with("healthcheck:");
        if !skipping {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// `count` /24 subnets in 10.224.0.0/11 that overlap no Docker network's subnet
/// and no route of this machine: a fixed choice met a network left by someone
/// else on a CI engine ("Pool overlaps with other one on this address space").
pub fn free_subnets(count: usize) -> Vec<String> {
    let mut used: Vec<(u32, u32)> = Vec::new();
    let ids = sh(Command::new("docker").args(["network", "ls", "-q"]));
    for id in ids.split_whitespace() {
        let subnets = sh(Command::new("docker").args([
            "network",
            "inspect",
            id,
            "--format",
            "{{range .IPAM.Config}}{{.Subnet}} {{end}}",
        ]));
        used.extend(subnets.split_whitespace().filter_map(cidr));
    }
    let routes = sh(Command::new("ip").args(["-4", "route", "show", "table", "all"]));
    used.extend(routes.lines().filter_map(|l| l.split_whitespace().find_map(cidr)));
    let overlaps = |(a, la): (u32, u32), (b, lb): (u32, u32)| {
        let len = la.min(lb);
        let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
        a & mask == b & mask
    };
    let free: Vec<String> = (0..(1u32 << 13))
        .map(|k| ((10u32 << 24) | (224 << 16) | (k << 8), 24))
        .filter(|&c| !used.iter().any(|&u| overlaps(c, u)))
        .take(count)
        .map(|(a, _)| format!("{}.{}.{}.0/24", a >> 24, (a >> 16) & 255, (a >> 8) & 255))
        .collect();
    assert_eq!(free.len(), count, "not enough free /24 subnets in 10.224.0.0/11");
    free
}

/// "a.b.c.d/len" (or a bare address) as (address, prefix length).
fn cidr(s: &str) -> Option<(u32, u32)> {
    let (addr, len) = s.split_once('/').unwrap_or((s, "32"));
    let ip: std::net::Ipv4Addr = addr.parse().ok()?;
    Some((u32::from(ip), len.parse().ok().filter(|l| *l <= 32)?))
}

/// The ids of the engine's dangling images (untagged, no child): what a
/// rebuild of a `:latest` leaves behind.
pub fn dangling_images() -> std::collections::BTreeSet<String> {
    sh(Command::new("docker").args(["image", "ls", "-q", "--no-trunc", "--filter", "dangling=true"]))
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// Removes the dangling images that were not there `before`, once nothing
/// builds any more: the baselines rebuild `:latest` at every release and never
/// remove the image it named before. Not forced: one a container uses stays.
pub fn remove_dangling_images_since(before: &std::collections::BTreeSet<String>) {
    let new: Vec<String> = dangling_images().difference(before).cloned().collect();
    for batch in new.chunks(200) {
        let _ = Command::new("docker").args(["image", "rm"]).args(batch).output();
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        for s in &self.sites {
            crate::harness::remove_project(&s.project);
        }
    }
}

/// The demo api's files (under `demo/`).
const DEMO_API: [&str; 4] = ["api/Dockerfile", "api/start.sh", "api/www/health", "api/www/index.html"];

/// Copies the files `rels` of `demo/` to the same paths under `to`.
fn copy_demo(to: &Path, rels: &[&str]) {
    let demo = repo_root().join("demo");
    for rel in rels {
        std::fs::create_dir_all(to.join(rel).parent().unwrap()).unwrap();
        std::fs::copy(demo.join(rel), to.join(rel)).unwrap_or_else(|e| panic!("copy demo/{rel}: {e}"));
    }
}

/// The phases [`build_phases`] starts a build at.
pub const BUILD_PHASES: [f64; 4] = [0.0, 0.25, 0.5, 0.75];

/// What [`build_phases`] measured.
pub struct BuildPhases {
    /// The engine, as `docker info` names it: version and storage driver.
    pub engine: String,
    /// ms per phase of [`BUILD_PHASES`], in its order.
    pub ms: Vec<Vec<f64>>,
    /// When each of those builds ended: ms from the nearest whole second of
    /// the wall clock (-500 to +500; a wrapping quantity taken where it does not wrap).
    pub ended_at: Vec<Vec<f64>>,
}

/// The demo api's build (its Dockerfile and files: two `COPY` steps), with
/// its page changed each time as a run's change does, started `reps` times
/// at each of [`BUILD_PHASES`] of the wall clock's second, the phases taking
/// turns. Its images are removed when it returns or panics.
pub fn build_phases(reps: usize) -> BuildPhases {
    /// Removes the images it was given when dropped.
    struct Images(Vec<String>);
    impl Drop for Images {
        fn drop(&mut self) {
            if !self.0.is_empty() {
                let _ = Command::new("docker")
                    .args(["image", "rm", "-f"])
                    .args(&self.0)
                    .output();
            }
        }
    }
    let dir = open_tempdir();
    let d = dir.path();
    copy_demo(d, &DEMO_API);
    let project = format!("deploy-bench-phase-{}", run_nonce());
    let image = format!("{project}:latest");
    std::fs::write(
        d.join("compose.yml"),
        format!("services:\n  api:\n    build: api\n    image: {image}\n"),
    )
    .unwrap();
    let mut images = Images(Vec::new());
    let mut ms = vec![Vec::new(); BUILD_PHASES.len()];
    let mut ended_at = vec![Vec::new(); BUILD_PHASES.len()];
    for r in 0..reps {
        // The phases take turns, each after another one every time.
        for k in 0..BUILD_PHASES.len() {
            let i = (k + r) % BUILD_PHASES.len();
            let phase = BUILD_PHASES[i];
            // Content no earlier run built: the engine's cache must not answer.
            std::fs::write(
                d.join("api/www/index.html"),
                format!("<p>phase {i}, time {r}, benchmark run {}</p>\n", run_nonce()),
            )
            .unwrap();
            crate::measure::wait_for_phase(phase);
            let started = std::time::Instant::now();
            let out = Command::new("docker")
                .args(["compose", "-p", &project, "-f", "compose.yml", "build", "-q"])
                .current_dir(d)
                .output()
                .expect("docker compose");
            let took = started.elapsed().as_secs_f64() * 1000.0;
            let ended = ((crate::measure::second_fraction() + 0.5).rem_euclid(1.0) - 0.5) * 1000.0;
            let id = Command::new("docker")
                .args(["image", "inspect", "-f", "{{.Id}}", &image])
                .output()
                .expect("docker image inspect");
            let id = String::from_utf8_lossy(&id.stdout).trim().to_string();
            if !id.is_empty() {
                images.0.push(id);
            }
            assert!(
                out.status.success(),
                "compose build: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            ms[i].push(took);
            ended_at[i].push(ended);
        }
    }
    let engine = Command::new("docker")
        .args([
            "info",
            "--format",
            "Docker {{.ServerVersion}}, storage driver {{.Driver}}",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "engine unknown".into());
    BuildPhases { engine, ms, ended_at }
}

/// An exec check: (name, service, command).
type ExecCheck = (&'static str, &'static str, &'static [&'static str]);

/// The `exec` variant's checks in the api's container: its health and Redis.
const API_EXEC_CHECKS: [ExecCheck; 2] = [
    (
        "api health",
        "api",
        &["wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8000/health"],
    ),
    (
        "redis from api",
        "api",
        &[
            "sh",
            "-c",
            "printf 'PING\\r\\nQUIT\\r\\n' | nc redis 6379 | grep -q PONG",
        ],
    ),
];

/// Every variant's Redis check from the worker.
const WORKER_EXEC_CHECK: ExecCheck = ("redis from worker", "worker", &["redis-cli", "-h", "redis", "ping"]);

/// Whether check `name` is one of the `exec` variant's exec checks.
pub fn is_exec_check(name: &str) -> bool {
    API_EXEC_CHECKS
        .iter()
        .chain([&WORKER_EXEC_CHECK])
        .any(|(n, _, _)| *n == name)
}

/// An exec check as a `[[verify.checks]]` table (JSON strings are TOML basic
/// strings).
fn exec_check((name, service, command): &ExecCheck) -> String {
    let quoted = |v: &str| serde_json::to_string(v).expect("a JSON string");
    format!(
        "[[verify.checks]]\nname = {}\ntype = \"exec\"\nservice = {}\ncommand = {}\n\n",
        quoted(name),
        quoted(service),
        serde_json::to_string(command).expect("a JSON array")
    )
}

/// The engine's own time for the `exec` variant's commands (the api's two
/// and the worker's), ms each: create, start (attached, until the command
/// ends) and inspect of an exec, on the engine's socket here (no SSH), in the
/// containers of compose project `project`. `alone`: one after another;
/// `together`: each one's time when the three run at once, as one host's
/// checklist runs them.
#[derive(Default)]
pub struct EngineExecs {
    pub alone_ms: Vec<f64>,
    pub together_ms: Vec<f64>,
}

/// [`EngineExecs`] of `project`, `reps` rounds (each: the three alone, then
/// together), through `deploy`'s own Engine API client with the local
/// transport: an exec check's attempt without SSH.
pub fn engine_execs(project: &str, reps: usize) -> EngineExecs {
    let targets: Vec<(String, &'static [&'static str])> = API_EXEC_CHECKS
        .iter()
        .chain([&WORKER_EXEC_CHECK])
        .map(|(_, service, command)| {
            let id = crate::harness::container_of(project, service)
                .unwrap_or_else(|| panic!("no running {service} in {project}"));
            (id, *command)
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let here = deploy::remote::local::LocalRemote::new("bench");
        let engine = deploy::engine::Engine::connect(&here, "/var/run/docker.sock")
            .await
            .expect("the engine's socket");
        let one = |container: &str, command: &'static [&'static str]| {
            let engine = &engine;
            let container = container.to_string();
            async move {
                let started = std::time::Instant::now();
                let (code, said) = engine
                    .exec(&container, command, std::time::Duration::from_secs(10))
                    .await
                    .expect("an exec");
                assert_eq!(code, 0, "{command:?} in {container}: {said}");
                started.elapsed().as_secs_f64() * 1000.0
            }
        };
        let mut execs = EngineExecs::default();
        for _ in 0..reps {
            for (c, command) in &targets {
                execs.alone_ms.push(one(c, command).await);
            }
            let together = futures::future::join_all(targets.iter().map(|(c, command)| one(c, command))).await;
            execs.together_ms.extend(together);
        }
        execs
    })
}

/// What [`ssh_costs`] measured on one of the hosts, ms each.
pub struct SshCosts {
    /// The key exchange the client and server agree on by default (`ssh -v`).
    pub default_kex: String,
    /// `ssh host true` with the default key exchange, and with curve25519-sha256.
    pub default_ms: Vec<f64>,
    pub curve_ms: Vec<f64>,
    /// With a master connected as `deploy` connects (`ssh -M -f -N`, the
    /// default key exchange): the master's start, the first command through
    /// it right after, and the next one.
    pub master_ms: Vec<f64>,
    pub first_ms: Vec<f64>,
    pub next_ms: Vec<f64>,
    /// A new master's first command sent [`FIRST_LATER`] after the master
    /// went to the background, rather than at once.
    pub first_later_ms: Vec<f64>,
}

/// How long after a master's start [`SshCosts::first_later_ms`] sends its
/// first command: past the 40 ms a Linux client delays an ACK.
pub const FIRST_LATER: std::time::Duration = std::time::Duration::from_millis(100);

/// Where `deploy`'s connect step and its first command spend their time on
/// this machine, with the system's `ssh` to `host`, `reps` times each: the
/// handshake with the default key exchange (OpenSSH 9.2 here: a
/// post-quantum hybrid, which `deploy` keeps) against a classical one, and a
/// master connection's first command against its next.
pub fn ssh_costs(host: &SshHost, known_hosts: &Path, reps: usize) -> SshCosts {
    let base = |extra: &[&str]| {
        let mut c = Command::new("ssh");
        c.args(["-p", &host.port.to_string(), "-i"])
            .arg(client_key())
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
            .args([
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "BatchMode=yes",
                "-F",
                "/dev/null",
            ])
            .args(extra);
        c
    };
    let target = format!("{USER}@{}", host.addr);
    let timed = |mut c: Command| -> f64 {
        let started = std::time::Instant::now();
        let out = c.output().expect("ssh");
        assert!(out.status.success(), "ssh: {}", String::from_utf8_lossy(&out.stderr));
        started.elapsed().as_secs_f64() * 1000.0
    };
    let said = base(&["-v"]).arg(&target).arg("true").output().expect("ssh -v");
    let default_kex = String::from_utf8_lossy(&said.stderr)
        .lines()
        .find_map(|l| l.split_once("kex: algorithm: ").map(|(_, k)| k.trim().to_string()))
        .unwrap_or_else(|| "unknown".into());
    let dir = open_tempdir();
    let mut costs = SshCosts {
        default_kex,
        default_ms: Vec::new(),
        curve_ms: Vec::new(),
        master_ms: Vec::new(),
        first_ms: Vec::new(),
        next_ms: Vec::new(),
        first_later_ms: Vec::new(),
    };
    for i in 0..reps {
        // Each master has a control socket of its own: `-O exit` returns
        // before a master removed its socket, and a new master finding one
        // there would not multiplex at all.
        let ctl = dir.path().join(format!("master-{i}"));
        let ctl_arg = ctl.to_str().expect("utf-8 path");
        let later = dir.path().join(format!("master-later-{i}"));
        let later_arg = later.to_str().expect("utf-8 path");
        let mut c = base(&[]);
        c.arg(&target).arg("true");
        costs.default_ms.push(timed(c));
        let mut c = base(&["-o", "KexAlgorithms=curve25519-sha256"]);
        c.arg(&target).arg("true");
        costs.curve_ms.push(timed(c));
        let mut c = base(&["-S", ctl_arg, "-M", "-f", "-N", "-o", "ControlPersist=yes"]);
        c.arg(&target);
        costs.master_ms.push(timed(c));
        for into in [&mut costs.first_ms, &mut costs.next_ms] {
            let mut c = base(&["-S", ctl_arg]);
            c.arg(&target).arg("true");
            into.push(timed(c));
        }
        let _ = base(&["-S", ctl_arg, "-O", "exit"]).arg(&target).output();
        let mut c = base(&["-S", later_arg, "-M", "-f", "-N", "-o", "ControlPersist=yes"]);
        c.arg(&target);
        timed(c);
        std::thread::sleep(FIRST_LATER);
        let mut c = base(&["-S", later_arg]);
        c.arg(&target).arg("true");
        costs.first_later_ms.push(timed(c));
        let _ = base(&["-S", later_arg, "-O", "exit"]).arg(&target).output();
    }
    costs
}
