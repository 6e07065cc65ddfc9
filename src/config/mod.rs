//! deploy.toml: loading, `${VAR}` interpolation and validation into the model
//! the rest of the tool works with.

pub mod diagnostic;
pub mod schema;
pub mod text;

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

use regex::Regex;
use toml::Spanned;

pub use diagnostic::Diagnostic;
pub use schema::{
    App, BuildOn, CheckType, Hooks, HostKeyPolicy, Orchestrator, ReleaseHosts, Rollback, Source, Strategy,
    TransportKind, Via, ZeroDowntime,
};
pub use text::{Secret, Text, REDACTED};

use schema::{CheckSpec, EnvironmentSpec, HostSpec};

/// Environment names that would be read as a subcommand.
pub const RESERVED_NAMES: &[&str] = crate::cli::SUBCOMMANDS;

/// A loaded, validated deploy.toml.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from.
    pub path: PathBuf,
    /// The file's text, for errors found after loading (in the compose files).
    pub text: String,
    /// `[app]`.
    pub app: App,
    /// `[source]`.
    pub source: Source,
    /// Environments by name.
    pub environments: BTreeMap<String, Environment>,
    /// `[verify]`.
    pub verify: Verify,
    /// `[rollback]`.
    pub rollback: Rollback,
    /// `[hooks]`.
    pub hooks: Hooks,
    /// `[release]`: the release command (migrations), if any.
    pub release: Option<ReleaseCommand>,
    /// `[build]`.
    pub build: Build,
    /// Every value that came from the environment, to scrub from any output.
    pub secrets: Vec<Secret>,
}

/// `[build]`, validated.
#[derive(Debug, Clone, Default)]
pub struct Build {
    /// Where the images are built.
    pub on: BuildOn,
    /// `host[:port][/path]` the builder pushes to and the hosts pull from
    /// (`on = "first"`); `None`: images are streamed over SSH.
    pub registry: Option<String>,
    /// The registry's user and password (a secret); `None`: each engine's own
    /// `docker login`.
    pub credentials: Option<(Text, Text)>,
}

impl Build {
    /// A Docker client config (`config.json`) holding only the registry's
    /// credentials, for `DOCKER_CONFIG` of the commands that push and pull;
    /// `None` without credentials.
    pub fn docker_config(&self) -> Option<String> {
        use base64::Engine as _;
        let (registry, (user, password)) = (self.registry.as_deref()?, self.credentials.as_ref()?);
        let host = registry.split('/').next().unwrap_or(registry);
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", user.expose(), password.expose()));
        Some(serde_json::json!({ "auths": { host: { "auth": auth } } }).to_string() + "\n")
    }
}

/// `[release]`, validated.
#[derive(Debug, Clone)]
pub struct ReleaseCommand {
    /// The service whose new image runs it.
    pub service: String,
    /// The command and its arguments.
    pub command: Vec<Text>,
    /// Once (first host) or on each host.
    pub hosts: ReleaseHosts,
    /// Stopped after this long.
    pub timeout: std::time::Duration,
}

/// A named set of hosts to deploy to.
#[derive(Debug, Clone)]
pub struct Environment {
    /// Its key under `[environments]`.
    pub name: String,
    /// The hosts, in the file's order.
    pub hosts: Vec<Host>,
    /// Hosts worked on at once.
    pub parallel: usize,
    /// Hosts switched per batch (rolling); `None`: all at once.
    pub batch: Option<usize>,
    /// How commands reach the hosts.
    pub transport: TransportKind,
    /// Compose forced by config; `None`: detected per host.
    pub compose: Option<crate::compose::Variant>,
    /// Compose on each host, or a Swarm whose managers are the hosts.
    pub engine: Orchestrator,
}

impl Environment {
    /// Whether the app runs as a Swarm stack (the hosts are its managers).
    pub fn swarm(&self) -> bool {
        self.engine == Orchestrator::Swarm
    }
}

/// One server of an environment, with every default filled in.
#[derive(Debug, Clone)]
pub struct Host {
    /// What the user calls it in output.
    pub name: String,
    /// Address or ssh alias.
    pub address: Text,
    /// How to log in.
    pub ssh: SshTarget,
    /// The app's directory on the host.
    pub path: Text,
    /// Compose project name.
    pub project: String,
    /// The compose services this host runs; `None`: all of them.
    pub services: Option<Vec<String>>,
    /// Environment for compose on the host.
    pub vars: BTreeMap<String, Text>,
    /// Compose on this host, or a Swarm it manages (its environment's `engine`).
    pub engine: Orchestrator,
    /// A swarm manager's view of the swarm's other nodes (`nodes`): where an
    /// exec check reaches a task that does not run on the manager.
    pub nodes: Vec<Host>,
}

/// SSH settings for one host.
#[derive(Debug, Clone)]
pub struct SshTarget {
    pub user: Option<Text>,
    pub port: Option<u16>,
    pub identity_file: Option<PathBuf>,
    pub host_key_policy: HostKeyPolicy,
    pub known_hosts_file: Option<PathBuf>,
    pub connect_timeout: std::time::Duration,
    pub jump: Option<Text>,
}

/// `[verify]` with its checks validated.
#[derive(Debug, Clone)]
pub struct Verify {
    pub timeout: std::time::Duration,
    pub interval: std::time::Duration,
    pub max_interval: std::time::Duration,
    pub checks: Vec<Check>,
}

/// One item of the checklist.
#[derive(Debug, Clone)]
pub struct Check {
    /// Its name in reports.
    pub name: String,
    /// Give up after this long.
    pub timeout: std::time::Duration,
    /// The compose service the check is about: hosts that list their `services`
    /// and do not run it skip the check.
    pub service: Option<String>,
    /// What it checks.
    pub kind: CheckKind,
}

/// What a check does, with exactly the fields its type needs.
#[derive(Debug, Clone)]
pub enum CheckKind {
    /// An HTTP request whose status (and optionally body) must match.
    Http {
        method: String,
        url: Text,
        body: Option<Text>,
        headers: BTreeMap<String, Text>,
        expect_status: Vec<u16>,
        expect_body: Option<Regex>,
        via: Via,
    },
    /// RESP `PING` must answer `PONG`.
    Redis {
        address: Text,
        password: Option<Text>,
        via: Via,
    },
    /// `compose exec -T <service> <command>` must exit 0.
    Exec { service: String, command: Vec<Text> },
    /// Every service running; healthy where it has a healthcheck.
    ComposePs,
    /// Log lines of `services` (all when empty) must (not) match.
    Logs {
        services: Vec<String>,
        since_deploy: bool,
        absent: Option<Regex>,
        present: Option<Regex>,
    },
}

impl CheckKind {
    /// The `type` as written in deploy.toml.
    pub fn type_name(&self) -> &'static str {
        match self {
            CheckKind::Http { .. } => "http",
            CheckKind::Redis { .. } => "redis",
            CheckKind::Exec { .. } => "exec",
            CheckKind::ComposePs => "compose_ps",
            CheckKind::Logs { .. } => "logs",
        }
    }
}

/// A config that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file (or its env_file) is wrong somewhere.
    #[error("{0}")]
    Invalid(Box<Diagnostic>),
}

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let source = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.to_path_buf(),
            source: e,
        })?;
        Config::parse(path, &source)
    }

    /// Validates `source`, which was read from `path` (used for messages and relative paths).
    pub fn parse(path: &Path, source: &str) -> Result<Config, ConfigError> {
        let checker = Checker { path, source };
        let vars = checker.variables()?;
        let (parsed, secrets) = text::with_variables(vars, || toml::from_str::<schema::File>(source));
        let file = parsed.map_err(|e| checker.error(e.span(), e.message().to_string()))?;
        checker.validate(file, secrets)
    }

    /// The environment called `name`, or a message listing the ones there are.
    pub fn environment(&self, name: &str) -> Option<&Environment> {
        self.environments.get(name)
    }

    /// How long a switched host waits for its run to confirm it before its
    /// watchdog puts the release from before back: `[rollback]
    /// confirm_timeout`, or the longest check's timeout + 60 s.
    pub fn confirm_timeout(&self) -> std::time::Duration {
        self.rollback.confirm_timeout.map(|d| d.0).unwrap_or_else(|| {
            let longest = self.verify.checks.iter().map(|c| c.timeout).max();
            longest.unwrap_or(self.verify.timeout) + std::time::Duration::from_secs(60)
        })
    }

    /// Refuses a `zero_downtime` service that cannot run twice at once: one
    /// that publishes host `ports:` or sets `container_name:` in one of `files`
    /// (each compose file as named in `app.compose_files`, with its text), or,
    /// when `files` are all of them, one that none of them defines. The error
    /// points at the entry in deploy.toml and names the compose file.
    pub fn refuse_zero_downtime(&self, files: &[(String, String)], all: bool) -> Result<(), ConfigError> {
        if self.app.zero_downtime.is_empty() {
            return Ok(());
        }
        let checker = Checker {
            path: &self.path,
            source: &self.text,
        };
        let mut parsed = Vec::new();
        for (name, text) in files {
            let services = crate::compose::services_if_any(text).map_err(|e| {
                checker.error(
                    None,
                    format!("{name} is not a compose file ({e}): app.zero_downtime cannot be checked against it"),
                )
            })?;
            parsed.push((name, services.unwrap_or_default()));
        }
        for entry in &self.app.zero_downtime {
            let service = &entry.get_ref().service;
            let mut defined = false;
            for (file, services) in &parsed {
                let Some(s) = services.iter().find(|s| &s.name == service) else {
                    continue;
                };
                defined = true;
                if !s.ports.is_empty() {
                    return Err(checker.at(
                        entry,
                        format!(
                            "service `{service}` of {file} publishes host ports ({}) and is in app.zero_downtime: a second container of it cannot bind those ports while the old one runs, so it cannot start beside it. Expected the port published by a reverse proxy instead: a service of the same compose file (Caddy, Traefik, nginx, HAProxy) that publishes it and reaches `{service}` by its service name; then remove `ports:` from `{service}` (README: Zero-downtime switch)",
                            s.ports.join(", ")
                        ),
                    ));
                }
                if let Some(name) = &s.container_name {
                    return Err(checker.at(
                        entry,
                        format!(
                            "service `{service}` of {file} sets container_name `{name}` and is in app.zero_downtime: container names are unique, so a second container of it cannot be created beside the old one. Expected no container_name (compose names each container itself) and a reverse proxy in front that reaches `{service}` by its service name (Caddy, Traefik, nginx, HAProxy; README: Zero-downtime switch)"
                        ),
                    ));
                }
            }
            if all && !defined {
                let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
                return Err(checker.at(
                    entry,
                    format!(
                        "app.zero_downtime: `{service}` is not a service of {}: expected the name of a service under `services:`",
                        names.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Validation of one file: knows its text, so every error can point into it.
struct Checker<'a> {
    path: &'a Path,
    source: &'a str,
}

impl Checker<'_> {
    fn error(&self, span: Option<Range<usize>>, message: String) -> ConfigError {
        ConfigError::Invalid(Box::new(Diagnostic::new(self.path, self.source, span, message)))
    }

    fn at<T>(&self, spanned: &Spanned<T>, message: String) -> ConfigError {
        let span = spanned.span();
        self.error((!span.is_empty()).then_some(span), message)
    }

    fn dir(&self) -> PathBuf {
        match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }

    /// The optional `env_file` is read before interpolation, so look for it alone first.
    fn variables(&self) -> Result<text::Variables, ConfigError> {
        #[derive(serde::Deserialize)]
        struct Head {
            env_file: Option<Spanned<String>>,
        }
        // A syntax error here is reported by the full parse, with the same span.
        let Ok(Head {
            env_file: Some(env_file),
        }) = toml::from_str::<Head>(self.source)
        else {
            return Ok(text::Variables::default());
        };
        let file = self.dir().join(env_file.get_ref());
        let iter = dotenvy::from_path_iter(&file)
            .map_err(|e| self.at(&env_file, format!("cannot read env_file {}: {e}", file.display())))?;
        let mut vars = text::Variables::default();
        for item in iter {
            // dotenvy's error would quote the offending line, which may hold a secret.
            let (k, v) = item.map_err(|_| {
                self.at(
                    &env_file,
                    format!("{} is not a list of NAME=value lines", file.display()),
                )
            })?;
            vars.file.insert(k, v);
        }
        Ok(vars)
    }

    fn validate(&self, file: schema::File, secrets: Vec<Secret>) -> Result<Config, ConfigError> {
        let name_re = Regex::new("^[a-z0-9][a-z0-9_-]*$").expect("static regex");
        if !name_re.is_match(file.app.name.get_ref()) {
            return Err(self.at(
                &file.app.name,
                "app.name is the compose project name: expected lowercase letters, digits, `-` and `_`, starting with a letter or digit".into(),
            ));
        }
        if *file.app.keep_releases.get_ref() == 0 {
            return Err(self.at(
                &file.app.keep_releases,
                "keep_releases must keep at least the live release: expected 1 or more".into(),
            ));
        }
        for (value, what) in [
            (&file.source.push_timeout, "source.push_timeout"),
            (&file.hooks.timeout, "hooks.timeout"),
        ] {
            if value.get_ref().0.is_zero() {
                return Err(self.at(
                    value,
                    format!("{what} must be longer than zero: expected a duration like \"2m\""),
                ));
            }
        }
        self.shared_paths(&file.app)?;
        let no_envs = BTreeMap::new();
        let envs = file.environments.as_ref().map_or(&no_envs, |e| e.get_ref());
        if envs.is_empty() {
            return Err(self.error(
                None,
                "no environments: expected at least one `[environments.<name>]` table with `hosts` and `path`".into(),
            ));
        }
        let mut environments = BTreeMap::new();
        for (name, env) in envs {
            let environment = self.environment(&file, &name_re, name, env)?;
            environments.insert(name.get_ref().clone(), environment);
        }
        let verify = &file.verify;
        if verify.interval.0 > verify.max_interval.0 {
            return Err(self.error(
                None,
                "verify.interval is longer than verify.max_interval: expected interval <= max_interval".into(),
            ));
        }
        let mut checks = Vec::new();
        let mut names = BTreeSet::new();
        for spec in &verify.checks {
            let check = self.check(spec, verify.timeout.0)?;
            if !names.insert(check.name.clone()) {
                return Err(self.at(
                    &spec.get_ref().name,
                    format!("two checks are named `{}`: expected unique names", check.name),
                ));
            }
            checks.push(check);
        }
        self.zero_downtime(&file.app)?;
        Ok(Config {
            path: self.path.to_path_buf(),
            text: self.source.to_string(),
            app: file.app.clone(),
            source: file.source.clone(),
            environments,
            verify: Verify {
                timeout: verify.timeout.0,
                interval: verify.interval.0,
                max_interval: verify.max_interval.0,
                checks,
            },
            rollback: file.rollback.clone(),
            hooks: file.hooks.clone(),
            release: self.release(file.release.as_ref())?,
            build: self.build(&file.build)?,
            secrets,
        })
    }

    /// `[build]`: a registry is a repository prefix (no scheme, no tag), and
    /// only where one host builds for the others.
    fn build(&self, spec: &schema::BuildSpec) -> Result<Build, ConfigError> {
        let registry = match &spec.registry {
            None => None,
            Some(r) => {
                let re = Regex::new(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?(/[a-z0-9]+([._-][a-z0-9]+)*)*$")
                    .expect("static regex");
                let value = r.get_ref().expose();
                // Docker reads a first part without a dot, a port or
                // `localhost` as a Docker Hub account: never push there by accident.
                let host = value.split('/').next().unwrap_or_default();
                let names_a_registry = host.contains('.') || host.contains(':') || host == "localhost";
                if !re.is_match(value) || !names_a_registry {
                    return Err(self.at(
                        r,
                        "build.registry is where images are pushed: expected `host[:port][/path]` in lowercase, the host with a dot, a port or `localhost` (else Docker takes it for a Docker Hub account), without a scheme or tag, e.g. \"registry.example.com:5000/app\"".into(),
                    ));
                }
                if spec.on == BuildOn::Hosts {
                    return Err(self.at(
                        r,
                        "build.registry is used when one place builds for every host: set `on = \"first\"` or `on = \"local\"` in [build], or remove the registry".into(),
                    ));
                }
                Some(value.to_string())
            }
        };
        let credentials = match (&spec.registry_user, &spec.registry_password) {
            (None, None) => None,
            (Some(u), None) | (None, Some(u)) if registry.is_some() => {
                return Err(self.at(
                    u,
                    "build.registry_user and build.registry_password go together: expected both, or neither (then each engine's own `docker login` is used)".into(),
                ))
            }
            (Some(u), Some(p)) if registry.is_some() => {
                if !p.get_ref().is_secret() {
                    return Err(self.at(
                        p,
                        "build.registry_password is written in deploy.toml: expected a `${VAR}` from the environment, e.g. \"${REGISTRY_PASSWORD}\"".into(),
                    ));
                }
                Some((u.get_ref().clone(), p.get_ref().clone()))
            }
            (Some(u), _) | (None, Some(u)) => {
                return Err(self.at(
                    u,
                    "build.registry_user and build.registry_password are the registry's credentials: expected a build.registry".into(),
                ))
            }
        };
        Ok(Build {
            on: spec.on,
            registry,
            credentials,
        })
    }

    /// `[release]`: a service and a command that are not empty, a timeout above zero.
    fn release(&self, spec: Option<&Spanned<schema::ReleaseSpec>>) -> Result<Option<ReleaseCommand>, ConfigError> {
        let Some(spec) = spec else { return Ok(None) };
        let r = spec.get_ref();
        if r.service.get_ref().trim().is_empty() {
            return Err(self.at(
                &r.service,
                "release.service is empty: expected the compose service whose new image runs the command, e.g. \"api\""
                    .into(),
            ));
        }
        if r.command.get_ref().is_empty() {
            return Err(self.at(&r.command, "release.command is empty: expected the command and its arguments, e.g. [\"python\", \"-m\", \"alembic\", \"upgrade\", \"head\"]".into()));
        }
        if r.timeout.0.is_zero() {
            return Err(self.at(
                spec,
                "release.timeout must be longer than zero: expected a duration like \"10m\"".into(),
            ));
        }
        Ok(Some(ReleaseCommand {
            service: r.service.get_ref().clone(),
            command: r.command.get_ref().clone(),
            hosts: r.hosts,
            timeout: r.timeout.0,
        }))
    }

    fn environment(
        &self,
        file: &schema::File,
        name_re: &Regex,
        name: &Spanned<String>,
        env: &Spanned<EnvironmentSpec>,
    ) -> Result<Environment, ConfigError> {
        let env_name = name.get_ref();
        if RESERVED_NAMES.contains(&env_name.as_str()) {
            return Err(self.at(
                name,
                format!("an environment cannot be named `{env_name}`: that is a subcommand; expected another name"),
            ));
        }
        if !name_re.is_match(env_name) {
            return Err(self.at(
                name,
                format!("environment name `{env_name}`: expected lowercase letters, digits, `-` and `_`"),
            ));
        }
        let spec = env.get_ref();
        for (value, what) in [(&spec.parallel, "parallel")] {
            if *value.get_ref() == 0 {
                return Err(self.at(value, format!("{what} must be at least 1")));
            }
        }
        if let Some(batch) = &spec.batch {
            if *batch.get_ref() == 0 {
                return Err(self.at(batch, "batch must be at least 1".into()));
            }
        }
        let mut host_specs = spec.hosts.as_ref().map(|h| h.get_ref().clone()).unwrap_or_default();
        if host_specs.is_empty() {
            if spec.transport == TransportKind::Local {
                // A local environment is this machine; naming it is optional.
                host_specs.push(Spanned::new(0..0, HostSpec::Name(Text::from("localhost"))));
            } else {
                let span = spec.hosts.as_ref().map_or(env.span(), |h| h.span());
                return Err(self.error(
                    Some(span),
                    format!("environment `{env_name}` has no hosts: expected `hosts = [\"server.example.com\"]`"),
                ));
            }
        }
        let project_default = match &spec.project {
            Some(p) => self.project(name_re, p)?,
            None => file.app.name.get_ref().clone(),
        };
        let dir = self.dir();
        let expand = |t: &Text| expand_path(&dir, t.expose());
        let ssh = &file.ssh;
        let hosts_of = |host_specs: &[Spanned<HostSpec>]| -> Result<Vec<Host>, ConfigError> {
            let mut hosts = Vec::new();
            let mut seen = BTreeSet::new();
            for (i, host) in host_specs.iter().enumerate() {
                let mut target = SshTarget {
                    user: ssh.user.clone(),
                    port: ssh.port,
                    identity_file: ssh.identity_file.as_ref().map(expand),
                    host_key_policy: ssh.host_key_policy,
                    known_hosts_file: ssh.known_hosts_file.as_ref().map(expand),
                    connect_timeout: ssh.connect_timeout.0,
                    jump: ssh.jump.clone(),
                };
                let (address, path, project, services, vars) = match host.get_ref() {
                    HostSpec::Name(address) => (
                        address.clone(),
                        spec.path.clone(),
                        project_default.clone(),
                        None,
                        plain_vars(&spec.vars),
                    ),
                    HostSpec::Table(t) => {
                        if t.port.is_some() {
                            target.port = t.port;
                        }
                        if t.user.is_some() {
                            target.user = t.user.clone();
                        }
                        if let Some(key) = &t.identity_file {
                            target.identity_file = Some(expand(key));
                        }
                        let project = match &t.project {
                            Some(p) => self.project(name_re, p)?,
                            None => project_default.clone(),
                        };
                        let mut vars = plain_vars(&spec.vars);
                        vars.extend(plain_vars(&t.vars));
                        (
                            t.address.clone(),
                            t.path.clone().or_else(|| spec.path.clone()),
                            project,
                            t.services.clone(),
                            vars,
                        )
                    }
                };
                let Some(path) = path else {
                    return Err(self.at(
                    host,
                    format!("host {} of environment `{env_name}` has no path: expected `path = \"/srv/app\"` in the environment or the host", i + 1),
                ));
                };
                if !path.expose().starts_with('/') && spec.transport == TransportKind::Ssh {
                    return Err(self.at(
                        host,
                        format!(
                            "the path of host {} of `{env_name}` is relative: expected an absolute path on the host",
                            i + 1
                        ),
                    ));
                }
                let path = if spec.transport == TransportKind::Local && !path.expose().starts_with('/') {
                    let abs = std::path::absolute(dir.join(path.expose())).unwrap_or_else(|_| dir.join(path.expose()));
                    Text::Plain(abs.display().to_string())
                } else {
                    path
                };
                let name = if address.is_secret() {
                    format!("host-{}", i + 1)
                } else {
                    match target.port {
                        Some(port) if host_has_port(host.get_ref()) => format!("{}:{port}", address.expose()),
                        _ => address.expose().to_string(),
                    }
                };
                if !seen.insert((address.expose().to_string(), target.port, path.expose().to_string())) {
                    return Err(self.at(host, format!("host `{name}` is listed twice in `{env_name}`")));
                }
                hosts.push(Host {
                    name,
                    address,
                    ssh: target,
                    path,
                    project,
                    services,
                    vars,
                    engine: Orchestrator::Compose,
                    nodes: Vec::new(),
                });
            }
            Ok(hosts)
        };
        let mut hosts = hosts_of(&host_specs)?;
        let engine = self.engine(file, env)?;
        let nodes = match &spec.nodes {
            Some(n) if engine != Orchestrator::Swarm => {
                return Err(self.at(
                    n,
                    "nodes are a swarm's other nodes: expected them only with engine = \"swarm\"".into(),
                ))
            }
            Some(n) => hosts_of(n.get_ref())?,
            None => Vec::new(),
        };
        for h in &mut hosts {
            h.engine = engine;
            h.nodes = nodes.clone();
        }
        Ok(Environment {
            name: env_name.clone(),
            hosts,
            parallel: *spec.parallel.get_ref() as usize,
            batch: spec.batch.as_ref().map(|b| *b.get_ref() as usize),
            transport: spec.transport,
            compose: match spec.compose {
                schema::ComposeChoice::Auto => None,
                schema::ComposeChoice::V1 => Some(crate::compose::Variant::V1),
                schema::ComposeChoice::V2 => Some(crate::compose::Variant::V2),
            },
            engine,
        })
    }

    /// `engine`: a Swarm runs the whole stack from one manager (the first
    /// host that answers), so what only compose on a host can do is refused:
    /// per-host `services`, `profiles` (a stack file has none),
    /// and `down_before_up` (a stack is updated in place).
    fn engine(&self, file: &schema::File, env: &Spanned<EnvironmentSpec>) -> Result<Orchestrator, ConfigError> {
        let Some(engine) = env.get_ref().engine.as_ref() else {
            return Ok(Orchestrator::Compose);
        };
        if *engine.get_ref() == Orchestrator::Compose {
            return Ok(Orchestrator::Compose);
        }
        let hosts = env
            .get_ref()
            .hosts
            .as_ref()
            .map(|h| h.get_ref().as_slice())
            .unwrap_or_default();
        let per_host =
            |f: fn(&schema::HostTable) -> bool| hosts.iter().any(|h| matches!(h.get_ref(), HostSpec::Table(t) if f(t)));
        let refusal = if per_host(|t| t.services.is_some()) {
            Some("a host lists its own `services`: in a Swarm the stack runs every service and Swarm places the tasks; expected no `services` on swarm managers")
        } else if per_host(|t| t.path.is_some() || t.project.is_some() || !t.vars.is_empty()) {
            Some("a manager has its own `path`, `project` or `vars`: every manager speaks for the same stack, so a run through another one must find the same releases and give the stack the same values; expected them on the environment")
        } else if file.release.is_some() {
            Some("[release]: a release command runs with `compose run` on the host, outside the stack's network; expected none (run it as a `deploy.mode: replicated-job` service of the stack)")
        } else if !file.app.one_shot.is_empty() {
            Some("app.one_shot: Swarm restarts a service whose task exits; expected a job for a one-shot task (`deploy: mode: replicated-job`), which deploy waits to complete")
        } else if !file.app.profiles.is_empty() {
            Some("app.profiles: a stack file has no profiles (`docker stack deploy` refuses them); expected no profiles, or a compose file for the stack without the services of other profiles")
        } else if file.app.down_before_up {
            Some("app.down_before_up: a stack is updated in place, service by service; expected no down_before_up")
        } else {
            None
        };
        match refusal {
            Some(why) => Err(self.at(engine, format!("engine = \"swarm\": {why}"))),
            None => Ok(Orchestrator::Swarm),
        }
    }

    /// `[app] zero_downtime`: each entry a service named once, not a one-shot
    /// (it exits: there is nothing to keep serving), and not with
    /// `down_before_up` (which stops the old release before the new one starts).
    fn zero_downtime(&self, app: &App) -> Result<(), ConfigError> {
        let mut seen = BTreeSet::new();
        for entry in &app.zero_downtime {
            let service = &entry.get_ref().service;
            if service.trim().is_empty() {
                return Err(self.at(
                    entry,
                    "app.zero_downtime: expected compose service names, like [\"api\"]".into(),
                ));
            }
            if !seen.insert(service.clone()) {
                return Err(self.at(entry, format!("app.zero_downtime lists `{service}` twice")));
            }
            if app.one_shot.contains(service) {
                return Err(self.at(
                    entry,
                    format!("`{service}` is in app.one_shot and app.zero_downtime: a one-shot service exits, so there is no old container to keep serving; expected it in one of them"),
                ));
            }
            if entry.get_ref().port == Some(0) {
                return Err(self.at(
                    entry,
                    "port 0: expected the port the service listens on in its container".into(),
                ));
            }
        }
        if app.down_before_up {
            if let Some(first) = app.zero_downtime.first() {
                return Err(self.at(
                    first,
                    "app.down_before_up stops the old release before the new one starts, app.zero_downtime starts the new containers first: expected one of them".into(),
                ));
            }
        }
        Ok(())
    }

    /// A shared directory is linked into the release whole: no other shared
    /// path may be it or lie inside it (linking that one would write through
    /// the directory's link into `shared/`); no path is listed twice.
    fn shared_paths(&self, app: &App) -> Result<(), ConfigError> {
        let files = app.shared_files.iter().map(|f| ("file", f.expose()));
        let dirs = app.shared_dirs.iter().map(|d| ("directory", d.expose()));
        let all: Vec<(&str, &str)> = files.chain(dirs).collect();
        for (i, (kind, path)) in all.iter().enumerate() {
            for (other_kind, other) in &all[i + 1..] {
                let within = |outer: &str, inner: &str| inner.strip_prefix(outer).is_some_and(|r| r.starts_with('/'));
                let clash = path == other
                    || (*kind == "directory" && within(path, other))
                    || (*other_kind == "directory" && within(other, path));
                if clash {
                    return Err(self.error(
                        None,
                        format!(
                            "shared {kind} `{path}` and shared {other_kind} `{other}` overlap: expected each shared path once, none inside a shared directory (app.shared_files, app.shared_dirs)"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    fn project(&self, name_re: &Regex, p: &Spanned<String>) -> Result<String, ConfigError> {
        if name_re.is_match(p.get_ref()) {
            Ok(p.get_ref().clone())
        } else {
            Err(self.at(
                p,
                "a compose project name: expected lowercase letters, digits, `-` and `_`".into(),
            ))
        }
    }

    fn check(&self, spanned: &Spanned<CheckSpec>, default_timeout: std::time::Duration) -> Result<Check, ConfigError> {
        let c = spanned.get_ref();
        let name = c.name.get_ref().to_string();
        let type_name = match c.kind {
            CheckType::Http => "http",
            CheckType::Redis => "redis",
            CheckType::Exec => "exec",
            CheckType::ComposePs => "compose_ps",
            CheckType::Logs => "logs",
        };
        // Fields that only some types take: name them if given to another type.
        let fields: [FieldUse; 15] = [
            ("url", c.url.as_ref().map(|s| s.span()), &[CheckType::Http]),
            ("method", c.method.as_ref().map(|s| s.span()), &[CheckType::Http]),
            ("body", c.body.as_ref().map(|s| s.span()), &[CheckType::Http]),
            ("headers", c.headers.as_ref().map(|s| s.span()), &[CheckType::Http]),
            (
                "expect_status",
                c.expect_status.as_ref().map(|s| s.span()),
                &[CheckType::Http],
            ),
            (
                "expect_body",
                c.expect_body.as_ref().map(|s| s.span()),
                &[CheckType::Http],
            ),
            (
                "via",
                c.via.as_ref().map(|s| s.span()),
                &[CheckType::Http, CheckType::Redis],
            ),
            ("address", c.address.as_ref().map(|s| s.span()), &[CheckType::Redis]),
            ("password", c.password.as_ref().map(|s| s.span()), &[CheckType::Redis]),
            (
                "service",
                c.service.as_ref().map(|s| s.span()),
                &[CheckType::Exec, CheckType::Http, CheckType::Redis],
            ),
            ("command", c.command.as_ref().map(|s| s.span()), &[CheckType::Exec]),
            ("services", c.services.as_ref().map(|s| s.span()), &[CheckType::Logs]),
            (
                "since_deploy",
                c.since_deploy.as_ref().map(|s| s.span()),
                &[CheckType::Logs],
            ),
            ("absent", c.absent.as_ref().map(|s| s.span()), &[CheckType::Logs]),
            ("present", c.present.as_ref().map(|s| s.span()), &[CheckType::Logs]),
        ];
        for (field, span, types) in fields {
            if let Some(span) = span {
                if !types.contains(&c.kind) {
                    return Err(self.error(
                        Some(span),
                        format!("`{field}` does not apply to check `{name}` of type {type_name}"),
                    ));
                }
            }
        }
        let needs = |field: &str, example: &str| {
            self.at(
                spanned,
                format!("check `{name}` of type {type_name} needs `{field}`: expected {example}"),
            )
        };
        let via = c.via.as_ref().map(|v| *v.get_ref()).unwrap_or_default();
        let kind = match c.kind {
            CheckType::Http => {
                let url = c
                    .url
                    .as_ref()
                    .ok_or_else(|| needs("url", "`url = \"http://127.0.0.1:8000/health\"`"))?;
                let u = url.get_ref().expose();
                if !(u.starts_with("http://") || u.starts_with("https://")) {
                    return Err(self.at(
                        url,
                        "not an HTTP URL: expected `http://host:port/path` or `https://...`".into(),
                    ));
                }
                let method = match &c.method {
                    None => "GET".to_string(),
                    Some(m) => {
                        let upper = m.get_ref().to_ascii_uppercase();
                        if !["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"].contains(&upper.as_str()) {
                            return Err(self.at(
                                m,
                                "unknown HTTP method: expected GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS".into(),
                            ));
                        }
                        upper
                    }
                };
                let expect_status = match &c.expect_status {
                    None => vec![200],
                    Some(s) => {
                        if s.get_ref().is_empty() || s.get_ref().iter().any(|code| !(100..=599).contains(code)) {
                            return Err(self.at(
                                s,
                                "expect_status: expected a list of HTTP status codes between 100 and 599".into(),
                            ));
                        }
                        s.get_ref().clone()
                    }
                };
                CheckKind::Http {
                    method,
                    url: url.get_ref().clone(),
                    body: c.body.as_ref().map(|b| b.get_ref().clone()),
                    headers: c.headers.as_ref().map(|h| h.get_ref().clone()).unwrap_or_default(),
                    expect_status,
                    expect_body: c.expect_body.as_ref().map(|p| p.get_ref().0.clone()),
                    via,
                }
            }
            CheckType::Redis => {
                let address = c
                    .address
                    .as_ref()
                    .ok_or_else(|| needs("address", "`address = \"127.0.0.1:6379\"`"))?;
                let ok = address
                    .get_ref()
                    .expose()
                    .rsplit_once(':')
                    .is_some_and(|(h, p)| !h.is_empty() && (p.parse::<u16>().is_ok() || p.contains("{{")));
                if !ok {
                    return Err(self.at(
                        address,
                        "not a Redis address: expected `host:port`, like \"127.0.0.1:6379\"".into(),
                    ));
                }
                CheckKind::Redis {
                    address: address.get_ref().clone(),
                    password: c.password.as_ref().map(|p| p.get_ref().clone()),
                    via,
                }
            }
            CheckType::Exec => {
                let service = c
                    .service
                    .as_ref()
                    .ok_or_else(|| needs("service", "`service = \"api\"`"))?;
                let command = c
                    .command
                    .as_ref()
                    .ok_or_else(|| needs("command", "`command = [\"redis-cli\", \"ping\"]`"))?;
                if command.get_ref().is_empty() {
                    return Err(self.at(
                        command,
                        "command is empty: expected the program and its arguments".into(),
                    ));
                }
                CheckKind::Exec {
                    service: service.get_ref().clone(),
                    command: command.get_ref().clone(),
                }
            }
            CheckType::ComposePs => CheckKind::ComposePs,
            CheckType::Logs => {
                if c.absent.is_none() && c.present.is_none() {
                    return Err(needs(
                        "absent",
                        "`absent = \"(?i)connection refused\"` or `present = \"...\"`",
                    ));
                }
                CheckKind::Logs {
                    services: c.services.as_ref().map(|s| s.get_ref().clone()).unwrap_or_default(),
                    since_deploy: c.since_deploy.as_ref().is_none_or(|s| *s.get_ref()),
                    absent: c.absent.as_ref().map(|p| p.get_ref().0.clone()),
                    present: c.present.as_ref().map(|p| p.get_ref().0.clone()),
                }
            }
        };
        let timeout = match &c.timeout {
            Some(t) if t.get_ref().0.is_zero() => return Err(self.at(t, "timeout must be longer than zero".into())),
            Some(t) => t.get_ref().0,
            None => default_timeout,
        };
        let service = c.service.as_ref().map(|s| s.get_ref().clone());
        Ok(Check {
            name,
            timeout,
            service,
            kind,
        })
    }
}

/// A check field: its name, where it was written (if at all), and the types that take it.
type FieldUse<'a> = (&'a str, Option<Range<usize>>, &'a [CheckType]);

fn host_has_port(spec: &HostSpec) -> bool {
    matches!(spec, HostSpec::Table(t) if t.port.is_some())
}

/// `vars` keyed by plain names.
fn plain_vars(vars: &BTreeMap<schema::VarName, Text>) -> BTreeMap<String, Text> {
    vars.iter().map(|(k, v)| (k.0.clone(), v.clone())).collect()
}

/// `~/x` from $HOME; a relative path from the config's directory.
fn expand_path(dir: &Path, raw: &str) -> PathBuf {
    if let Some(rest) = raw.strip_prefix("~/") {
        if let Some(home) = std::env::var_os("HOME") {
            return PathBuf::from(home).join(rest);
        }
    }
    let p = PathBuf::from(raw);
    if p.is_absolute() {
        p
    } else {
        dir.join(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str =
        "[app]\nname = \"shop\"\n{APP}\n[environments.prod]\nhosts = [\"web1.example.com\"]\npath = \"/srv/shop\"\n{REST}";

    fn parse(app: &str, rest: &str) -> Result<Config, String> {
        let text = BASE.replace("{APP}", app).replace("{REST}", rest);
        Config::parse(Path::new("deploy.toml"), &text).map_err(|e| e.to_string())
    }

    #[test]
    fn a_swarm_environment_refuses_what_only_compose_on_a_host_can_do() {
        let c = parse("", "engine = \"swarm\"\n").unwrap();
        let env = c.environment("prod").unwrap();
        assert!(env.swarm() && env.hosts.iter().all(|h| h.engine == Orchestrator::Swarm));
        assert!(!parse("", "").unwrap().environment("prod").unwrap().swarm());
        let c = parse(
            "",
            "engine = \"swarm\"\n[build]\non = \"first\"\nregistry = \"127.0.0.1:5000/app\"\n",
        )
        .unwrap();
        assert_eq!(c.build.registry.as_deref(), Some("127.0.0.1:5000/app"));
        for (app, says) in [
            ("one_shot = [\"migrate\"]", "replicated-job"),
            ("profiles = [\"tools\"]", "a stack file has no profiles"),
            ("down_before_up = true", "updated in place"),
        ] {
            let e = parse(app, "engine = \"swarm\"\n").unwrap_err();
            assert!(e.contains(says) && e.contains("deploy.toml:"), "{app}: {e}");
        }
        let text = "[app]\nname = \"shop\"\n[environments.prod]\nengine = \"swarm\"\npath = \"/srv/shop\"\nhosts = [{ address = \"m1\", services = [\"api\"] }]\n";
        let e = Config::parse(Path::new("deploy.toml"), text).unwrap_err().to_string();
        assert!(e.contains("its own `services`"), "{e}");
        let text = text.replace("services = [\"api\"]", "project = \"other\"");
        let e = Config::parse(Path::new("deploy.toml"), &text).unwrap_err().to_string();
        assert!(e.contains("its own `path`, `project` or `vars`"), "{e}");
        let e = parse(
            "",
            "engine = \"swarm\"\n[release]\nservice = \"api\"\ncommand = [\"migrate\"]\n",
        )
        .unwrap_err();
        assert!(e.contains("outside the stack's network"), "{e}");
        let c = parse("", "engine = \"swarm\"\nnodes = [\"worker1.example.com\"]\n").unwrap();
        let manager = &c.environment("prod").unwrap().hosts[0];
        assert_eq!(
            manager.nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(),
            ["worker1.example.com"]
        );
        let e = parse("", "nodes = [\"worker1.example.com\"]\n").unwrap_err();
        assert!(e.contains("only with engine = \"swarm\""), "{e}");
        let e = parse("", "engine = \"kubernetes\"\n").unwrap_err();
        assert!(e.contains("unknown variant"), "{e}");
    }

    #[test]
    fn push_and_hook_timeouts_default_and_cannot_be_zero() {
        let c = parse("", "").unwrap();
        assert_eq!(c.source.push_timeout.get_ref().0, std::time::Duration::from_secs(120));
        assert_eq!(c.hooks.timeout.get_ref().0, std::time::Duration::from_secs(600));
        let c = parse("", "[source]\npush_timeout = \"2s\"\n[hooks]\ntimeout = \"1s\"\n").unwrap();
        assert_eq!(c.source.push_timeout.get_ref().0, std::time::Duration::from_secs(2));
        assert_eq!(c.hooks.timeout.get_ref().0, std::time::Duration::from_secs(1));
        let e = parse("", "[source]\npush_timeout = \"0s\"\n").unwrap_err();
        assert!(
            e.contains("push_timeout must be longer than zero") && e.contains("deploy.toml:"),
            "{e}"
        );
        let e = parse("", "[hooks]\ntimeout = \"0ms\"\n").unwrap_err();
        assert!(e.contains("hooks.timeout must be longer than zero"), "{e}");
    }

    #[test]
    fn build_defaults_to_the_hosts_and_a_registry_must_name_one() {
        let c = parse("", "").unwrap();
        assert_eq!((c.build.on, c.build.registry.as_deref()), (BuildOn::Hosts, None));
        let c = parse("", "[build]\non = \"first\"\n").unwrap();
        assert_eq!((c.build.on, c.build.registry.as_deref()), (BuildOn::First, None));
        for (registry, kept) in [
            ("registry.example.com:5000/app", "registry.example.com:5000/app"),
            ("127.0.0.1:5000", "127.0.0.1:5000"),
            ("localhost/team/app", "localhost/team/app"),
            ("ghcr.io/acme", "ghcr.io/acme"),
        ] {
            let c = parse("", &format!("[build]\non = \"local\"\nregistry = \"{registry}\"\n")).unwrap();
            assert_eq!(c.build.registry.as_deref(), Some(kept), "{registry}");
        }
        for (bad, says) in [
            // Docker Hub accounts, not registries: never pushed to by accident.
            ("on = \"first\"\nregistry = \"acme\"", "Docker Hub"),
            ("on = \"first\"\nregistry = \"acme/app\"", "Docker Hub"),
            (
                "on = \"first\"\nregistry = \"https://r.example.com/app\"",
                "without a scheme",
            ),
            (
                "on = \"first\"\nregistry = \"r.example.com/app:1\"",
                "without a scheme or tag",
            ),
            ("on = \"first\"\nregistry = \"R.example.com/App\"", "lowercase"),
            ("registry = \"r.example.com/app\"", "set `on = \"first\"`"),
            ("on = \"everywhere\"", "unknown variant"),
        ] {
            let e = parse("", &format!("[build]\n{bad}\n")).unwrap_err();
            assert!(e.contains(says) && e.contains("deploy.toml:"), "{bad}: {e}");
        }
    }

    #[test]
    fn zero_downtime_takes_names_or_tables() {
        let c = parse(
            "zero_downtime = [\"api\", { service = \"web\", drain = \"2s\", port = 8000 }]",
            "",
        )
        .unwrap();
        let z: Vec<&ZeroDowntime> = c.app.zero_downtime.iter().map(|z| z.get_ref()).collect();
        assert_eq!(z[0].service, "api");
        assert_eq!((z[0].drain, z[0].port), (std::time::Duration::ZERO, None));
        assert_eq!(z[1].service, "web");
        assert_eq!((z[1].drain, z[1].port), (std::time::Duration::from_secs(2), Some(8000)));
        for (bad, says) in [
            ("zero_downtime = [\"api\", \"api\"]", "lists `api` twice"),
            ("zero_downtime = [\"\"]", "expected compose service names"),
            ("zero_downtime = [{ service = \"api\", port = 0 }]", "port 0"),
            ("zero_downtime = [{ drain = \"1s\" }]", "missing field `service`"),
            (
                "zero_downtime = [{ service = \"api\", drain = \"soon\" }]",
                "invalid duration",
            ),
        ] {
            let e = parse(bad, "").unwrap_err();
            assert!(e.contains(says) && e.contains("deploy.toml:"), "{bad}: {e}");
        }
    }

    #[test]
    fn zero_downtime_services_must_be_able_to_run_twice() {
        let c = parse("zero_downtime = [\"api\"]", "").unwrap();
        let files = |text: &str| vec![("docker-compose.yml".to_string(), text.to_string())];
        let ok = "services:\n  proxy:\n    image: caddy\n    ports: [\"80:80\"]\n  api:\n    build: .\n";
        c.refuse_zero_downtime(&files(ok), true).unwrap();
        let ports = "services:\n  api:\n    build: .\n    ports:\n      - target: 8000\n        published: 8080\n";
        let e = c.refuse_zero_downtime(&files(ports), true).unwrap_err().to_string();
        assert!(
            e.contains("service `api` of docker-compose.yml publishes host ports (8080)"),
            "{e}"
        );
        // An override file that adds a container_name is named, not the base file.
        let both = vec![
            (
                "docker-compose.yml".to_string(),
                "services:\n  api:\n    build: .\n".to_string(),
            ),
            (
                "prod.yml".to_string(),
                "services:\n  api:\n    container_name: api\n".to_string(),
            ),
        ];
        let e = c.refuse_zero_downtime(&both, true).unwrap_err().to_string();
        assert!(e.contains("service `api` of prod.yml sets container_name `api`"), "{e}");
        // A file without services (networks only) is a compose file too.
        let mut with_networks = files(ok);
        with_networks.push(("nets.yml".into(), "networks:\n  default: {}\n".into()));
        c.refuse_zero_downtime(&with_networks, true).unwrap();
        // Not defined anywhere: refused only when every file was read.
        let other = files("services:\n  web:\n    build: .\n");
        assert!(c.refuse_zero_downtime(&other, true).is_err());
        c.refuse_zero_downtime(&other, false).unwrap();
    }

    #[test]
    fn shared_dirs_are_relative_and_hold_no_other_shared_path() {
        let c = parse(
            "shared_dirs = [\"uploads\", \"storage/cache/\"]\nshared_files = [\".env\"]",
            "",
        )
        .unwrap();
        let dirs: Vec<&str> = c.app.shared_dirs.iter().map(|d| d.expose()).collect();
        assert_eq!(dirs, ["uploads", "storage/cache"]);
        for bad in ["\"../x\"", "\"/srv/x\"", "\"a/../b\"", "\".\"", "\"\"", "\"a//b\""] {
            let e = parse(&format!("shared_dirs = [{bad}]"), "").unwrap_err();
            assert!(e.contains("a shared directory is a path relative"), "{bad}: {e}");
        }
        for (files, dirs) in [
            ("[\"public/robots.txt\"]", "[\"public\"]"),
            ("[]", "[\"data\", \"data/cache\"]"),
            ("[\"uploads\"]", "[\"uploads\"]"),
            ("[\".env\", \".env\"]", "[]"),
        ] {
            let e = parse(&format!("shared_files = {files}\nshared_dirs = {dirs}"), "").unwrap_err();
            assert!(e.contains("overlap"), "{files} {dirs}: {e}");
        }
        // A name that only starts like a shared directory is not inside it.
        parse("shared_files = [\"public2/x\"]\nshared_dirs = [\"public\"]", "").unwrap();
    }
}
