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
    Ansible,
    Deploy,
}

pub const TOOLS: [Tool; 4] = [Tool::Floor, Tool::Manual, Tool::Ansible, Tool::Deploy];

impl Tool {
    pub fn name(self) -> &'static str {
        match self {
            Tool::Floor => "floor",
            Tool::Manual => "manual",
            Tool::Ansible => "ansible",
            Tool::Deploy => "deploy",
        }
    }
}

/// Where the tool's copy of the app lives on one host.
pub struct Site {
    /// The compose network's subnet (10.233.0.0/16 is carved up among the copies).
    pub subnet: String,
    pub dir: PathBuf,
    pub project: String,
    pub api_port: u16,
}

/// One tool's app: the repository a developer pushes from, its remote, and a site per host.
pub struct Bed {
    pub tool: Tool,
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
    pub fn new(tool: Tool, hosts: &Hosts, sizes: &[usize]) -> Bed {
        let repo = open_tempdir();
        let d = repo.path();
        let demo = repo_root().join("demo");
        for rel in [
            "docker-compose.yml",
            "api/Dockerfile",
            "api/start.sh",
            "api/www/health",
            "api/www/index.html",
            "worker/Dockerfile",
            "worker/run.sh",
            "proxy/Dockerfile",
            "proxy/Caddyfile",
        ] {
            std::fs::create_dir_all(d.join(rel).parent().unwrap()).unwrap();
            std::fs::copy(demo.join(rel), d.join(rel)).unwrap_or_else(|e| panic!("copy demo/{rel}: {e}"));
        }
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
                subnet: format!("10.233.{}.0/24", tool as usize * 64 + i),
                dir: h.app_path().join(tool.name()),
                project: format!("b{}{}", &tool.name()[..1], h.port),
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
            Tool::Ansible => {
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
                // Two configs that differ in one line: the api switched as the
                // baselines switch it (`up -d`), or start-first.
                for (path, zero_downtime) in [
                    (self.hosts_file(n), ""),
                    (self.zero_downtime_file(n), "zero_downtime = [\"api\"]\n"),
                ] {
                    let config = format!(
                        "# The benchmark's fleet of {n}: the demo app with the README's checklist.\n\
                         [app]\nname = \"bench\"\ncompose_files = [\"docker-compose.yml\", \"docker-compose.override.yml\"]\nbuild = [\"api\", \"worker\", \"proxy\"]\nkeep_releases = 3\n{zero_downtime}\n\
                         [source]\nstrategy = \"git\"\nremote = \"origin\"\nbranch = \"main\"\n\n\
                         [ssh]\nuser = \"{USER}\"\nidentity_file = \"{}\"\nknown_hosts_file = \"{}\"\n\n\
                         [environments.bench]\nparallel = {n}\ncompose = \"v2\"\n\n{tables}\
                         [verify]\ntimeout = \"30s\"\n\n\
                         [[verify.checks]]\nname = \"containers up\"\ntype = \"compose_ps\"\n\n\
                         [[verify.checks]]\nname = \"api health\"\ntype = \"http\"\nservice = \"api\"\nurl = \"http://127.0.0.1:{{{{DEMO_API_PORT}}}}/health\"\nvia = \"ssh\"\nexpect_status = [200]\n\n\
                         [[verify.checks]]\nname = \"redis from worker\"\ntype = \"exec\"\nservice = \"worker\"\ncommand = [\"redis-cli\", \"-h\", \"redis\", \"ping\"]\n\n\
                         [[verify.checks]]\nname = \"no refused connections\"\ntype = \"logs\"\nservices = [\"api\", \"worker\"]\nabsent = \"(?i)connection refused\"\n",
                        client_key().display(),
                        hosts.known_hosts().display()
                    );
                    std::fs::write(path, config).unwrap();
                }
            }
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
            Tool::Ansible => self.files.path().join(format!("fleet-{n}.ini")),
            Tool::Deploy => self.repo.path().join(format!("deploy-{n}.toml")),
        }
    }

    /// Commits a change to the api (its page names the release); returns the commit.
    /// With `start_delay`, the api starts serving that many seconds after its container.
    pub fn change_api(&mut self, start_delay: Option<u32>) -> String {
        self.releases += 1;
        let d = self.repo.path();
        std::fs::write(
            d.join("api/www/index.html"),
            format!(
                "<!doctype html>\n<p>release {} of {}</p>\n",
                self.releases,
                self.tool.name()
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

impl Drop for Bed {
    fn drop(&mut self) {
        for s in &self.sites {
            crate::harness::remove_project(&s.project);
        }
    }
}
