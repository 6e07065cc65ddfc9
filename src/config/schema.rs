//! deploy.toml as written: serde types that mirror the file, spans kept where
//! validation needs to point back at the text.

use std::collections::BTreeMap;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::text::Text;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    /// Optional file of `NAME=value` lines read for `${NAME}`, relative to deploy.toml.
    #[allow(dead_code)] // read by the loader's first pass, before interpolation
    pub env_file: Option<String>,
    pub app: App,
    #[serde(default)]
    pub source: Source,
    #[serde(default)]
    pub ssh: Ssh,
    pub environments: Option<Spanned<BTreeMap<Spanned<String>, Spanned<EnvironmentSpec>>>>,
    #[serde(default)]
    pub verify: VerifySpec,
    #[serde(default)]
    pub rollback: Rollback,
    #[serde(default)]
    pub hooks: Hooks,
    /// A command run once per deploy in the new release's image before any
    /// host switches (a database migration).
    pub release: Option<Spanned<ReleaseSpec>>,
    /// `[build]`: where the images are built, and how they reach the hosts.
    #[serde(default)]
    pub build: BuildSpec,
}

/// Where a release's images are built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum BuildOn {
    /// Every host builds its own (from the same commit).
    #[default]
    Hosts,
    /// The first selected host builds; the others receive its images.
    First,
    /// This machine's Docker builds; every host receives its images.
    Local,
}

/// `[build]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildSpec {
    #[serde(default)]
    pub on: BuildOn,
    /// Where built images go for the other hosts to pull
    /// (`registry.example.com:5000/app`); without it they are streamed over SSH.
    pub registry: Option<Spanned<Text>>,
    /// Who pushes and pulls; without it, each engine's own `docker login`.
    pub registry_user: Option<Spanned<Text>>,
    /// Its password: a `${VAR}` secret, never written in deploy.toml.
    pub registry_password: Option<Spanned<Text>>,
}

/// Where a release command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ReleaseHosts {
    /// On the first selected host only: once per deploy.
    #[default]
    First,
    /// On every selected host.
    Each,
}

/// `[release]`: `compose run --rm --no-deps <service> <command>` in the new release.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseSpec {
    /// The service whose new image runs the command.
    pub service: Spanned<String>,
    /// The command and its arguments.
    pub command: Spanned<Vec<Text>>,
    #[serde(default)]
    pub hosts: ReleaseHosts,
    /// Given up (and stopped) after this long.
    #[serde(default = "default_release_timeout")]
    pub timeout: Duration,
}

fn default_release_timeout() -> Duration {
    Duration(std::time::Duration::from_secs(10 * 60))
}

/// `[app]`: what is deployed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct App {
    /// Compose project name; key for locks and history.
    pub name: Spanned<String>,
    /// Compose files, relative to the release directory.
    #[serde(default = "default_compose_files")]
    pub compose_files: Vec<Text>,
    /// Services to build; default: every service with a `build:` section.
    pub build: Option<Vec<Text>>,
    /// Build with `--no-cache`.
    #[serde(default)]
    pub no_cache: bool,
    /// Files kept in `<path>/shared/` and linked into each release.
    #[serde(default)]
    pub shared_files: Vec<SharedFile>,
    /// Directories kept in `<path>/shared/` and linked into each release
    /// (uploads, data that outlives a release).
    #[serde(default)]
    pub shared_dirs: Vec<SharedDir>,
    /// Releases (and their images) kept on each host.
    #[serde(default = "default_keep_releases")]
    pub keep_releases: Spanned<u32>,
    /// Run `compose down` before `up` (apps that cannot run two versions at once).
    #[serde(default)]
    pub down_before_up: bool,
    /// A lock whose holder stopped extending it expires after this long.
    #[serde(default = "default_lock_timeout")]
    pub lock_timeout: Duration,
    /// Services that run once and exit 0 (migrations, seeds): `compose_ps`
    /// wants them completed, not running.
    #[serde(default)]
    pub one_shot: Vec<String>,
    /// Compose profiles to activate (`--profile`); services of others are
    /// neither built, started nor checked.
    #[serde(default)]
    pub profiles: Vec<String>,
    /// Services switched start-first: new containers beside the old ones,
    /// the old ones stopped only once the new ones are ready.
    #[serde(default)]
    pub zero_downtime: Vec<Spanned<ZeroDowntime>>,
}

/// An entry of `[app] zero_downtime`: `"api"`, or
/// `{ service = "api", drain = "5s", port = 8000 }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZeroDowntime {
    /// The compose service.
    pub service: String,
    /// How long the old containers keep running once the new ones are ready
    /// (for a proxy to notice the new ones) before they are stopped; never
    /// before the new ones have run for `activation::SETTLE`.
    pub drain: std::time::Duration,
    /// The port the service listens on in its container, for its `http`
    /// checks against a new container that has no healthcheck.
    pub port: Option<u16>,
}

impl<'de> Deserialize<'de> for ZeroDowntime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Table {
            service: String,
            drain: Option<Duration>,
            port: Option<u16>,
        }
        struct Visitor;
        impl<'de> de::Visitor<'de> for Visitor {
            type Value = ZeroDowntime;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a service name, or a table like { service = \"api\", drain = \"5s\", port = 8000 }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ZeroDowntime, E> {
                Ok(ZeroDowntime {
                    service: v.to_string(),
                    drain: std::time::Duration::ZERO,
                    port: None,
                })
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<ZeroDowntime, A::Error> {
                let t = Table::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(ZeroDowntime {
                    service: t.service,
                    drain: t.drain.map_or(std::time::Duration::ZERO, |d| d.0),
                    port: t.port,
                })
            }
        }
        d.deserialize_any(Visitor)
    }
}

fn default_lock_timeout() -> Duration {
    Duration(std::time::Duration::from_secs(15 * 60))
}

fn default_compose_files() -> Vec<Text> {
    vec![Text::from("docker-compose.yml")]
}

fn default_keep_releases() -> Spanned<u32> {
    Spanned::new(0..0, 5)
}

/// How the release's files reach the hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Push with git2; hosts fetch the commit.
    #[default]
    Git,
    /// Stream the commit's files over SSH.
    Upload,
}

/// `[source]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    #[serde(default)]
    pub strategy: Strategy,
    #[serde(default = "default_remote")]
    pub remote: Text,
    #[serde(default = "default_branch")]
    pub branch: Text,
    /// What hosts fetch from; default: the remote's URL.
    pub fetch_url: Option<FetchUrl>,
    /// A push that has not finished after this long is given up.
    #[serde(default = "default_push_timeout")]
    pub push_timeout: Spanned<Duration>,
}

impl Default for Source {
    fn default() -> Self {
        Source {
            strategy: Strategy::Git,
            remote: default_remote(),
            branch: default_branch(),
            fetch_url: None,
            push_timeout: default_push_timeout(),
        }
    }
}

fn default_push_timeout() -> Spanned<Duration> {
    Spanned::new(0..0, Duration(std::time::Duration::from_secs(2 * 60)))
}

fn default_remote() -> Text {
    Text::from("origin")
}

fn default_branch() -> Text {
    Text::from("main")
}

/// How unknown host keys are treated. A changed key is refused under every policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HostKeyPolicy {
    /// Only hosts already in known_hosts.
    #[default]
    Strict,
    /// Unknown hosts are trusted on first use and recorded.
    AcceptNew,
}

impl<'de> Deserialize<'de> for HostKeyPolicy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match String::deserialize(d)?.as_str() {
            "strict" => Ok(HostKeyPolicy::Strict),
            "accept-new" => Ok(HostKeyPolicy::AcceptNew),
            "off" | "no" | "none" | "false" => Err(de::Error::custom(
                "host key checking cannot be turned off: expected \"strict\" or \"accept-new\"",
            )),
            other => Err(de::Error::custom(format!(
                "unknown host_key_policy `{other}`: expected \"strict\" or \"accept-new\""
            ))),
        }
    }
}

/// `[ssh]`: defaults for every host.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ssh {
    pub user: Option<Text>,
    pub port: Option<u16>,
    pub identity_file: Option<Text>,
    #[serde(default)]
    pub host_key_policy: HostKeyPolicy,
    pub known_hosts_file: Option<Text>,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Duration,
    pub jump: Option<Text>,
}

impl Default for Ssh {
    fn default() -> Self {
        Ssh {
            user: None,
            port: None,
            identity_file: None,
            host_key_policy: HostKeyPolicy::Strict,
            known_hosts_file: None,
            connect_timeout: default_connect_timeout(),
            jump: None,
        }
    }
}

fn default_connect_timeout() -> Duration {
    Duration(std::time::Duration::from_secs(10))
}

/// How commands reach an environment's hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum TransportKind {
    /// OpenSSH, one multiplexed master per host.
    #[default]
    Ssh,
    /// This machine, without SSH.
    Local,
}

/// `[environments.<name>]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentSpec {
    pub hosts: Option<Spanned<Vec<Spanned<HostSpec>>>>,
    pub path: Option<Text>,
    pub project: Option<Spanned<String>>,
    #[serde(default)]
    pub vars: BTreeMap<VarName, Text>,
    #[serde(default = "default_parallel")]
    pub parallel: Spanned<u32>,
    pub batch: Option<Spanned<u32>>,
    #[serde(default)]
    pub transport: TransportKind,
    /// Which Compose to use on the hosts; `auto` prefers v2 where both exist.
    #[serde(default)]
    pub compose: ComposeChoice,
    /// What runs the app: compose on each host, or a Docker Swarm whose
    /// managers are `hosts`.
    pub engine: Option<Spanned<Orchestrator>>,
    /// A swarm's other nodes, reached over SSH for exec checks of the tasks
    /// that run there.
    pub nodes: Option<Spanned<Vec<Spanned<HostSpec>>>>,
}

/// `engine = "compose" | "swarm"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Orchestrator {
    /// `compose up` on every host (the default).
    #[default]
    Compose,
    /// `docker stack deploy` on one manager of a Swarm.
    Swarm,
}

/// `compose = "auto" | "v1" | "v2"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ComposeChoice {
    #[default]
    Auto,
    V1,
    V2,
}

fn default_parallel() -> Spanned<u32> {
    Spanned::new(0..0, 4)
}

/// One entry of `hosts`: a name, or a table that overrides what it needs.
#[derive(Debug, Clone)]
pub enum HostSpec {
    /// `"ec2-1.example.com"`.
    Name(Text),
    /// `{ address = "10.0.1.7", port = 2222, ... }`.
    Table(HostTable),
}

impl<'de> Deserialize<'de> for HostSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> de::Visitor<'de> for Visitor {
            type Value = HostSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a host name or a table with `address`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<HostSpec, E> {
                Text::deserialize(de::value::StrDeserializer::<E>::new(v)).map(HostSpec::Name)
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<HostSpec, A::Error> {
                HostTable::deserialize(de::value::MapAccessDeserializer::new(map)).map(HostSpec::Table)
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// A host written as a table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostTable {
    pub address: Text,
    pub port: Option<u16>,
    pub user: Option<Text>,
    pub identity_file: Option<Text>,
    pub path: Option<Text>,
    pub project: Option<Spanned<String>>,
    /// The compose services this host runs; checks on other services skip it.
    pub services: Option<Vec<String>>,
    #[serde(default)]
    pub vars: BTreeMap<VarName, Text>,
}

/// `[verify]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifySpec {
    #[serde(default = "default_check_timeout")]
    pub timeout: Duration,
    #[serde(default = "default_interval")]
    pub interval: Duration,
    #[serde(default = "default_max_interval")]
    pub max_interval: Duration,
    #[serde(default)]
    pub checks: Vec<Spanned<CheckSpec>>,
}

impl Default for VerifySpec {
    fn default() -> Self {
        VerifySpec {
            timeout: default_check_timeout(),
            interval: default_interval(),
            max_interval: default_max_interval(),
            checks: Vec::new(),
        }
    }
}

fn default_check_timeout() -> Duration {
    Duration(std::time::Duration::from_secs(60))
}

fn default_interval() -> Duration {
    Duration(std::time::Duration::from_millis(100))
}

fn default_max_interval() -> Duration {
    Duration(std::time::Duration::from_secs(5))
}

/// The kinds of check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckType {
    Http,
    Redis,
    Exec,
    ComposePs,
    Logs,
}

/// Where a network check starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    /// Through an SSH tunnel from the host: nothing needs to be exposed.
    #[default]
    Ssh,
    /// From the machine running `deploy`.
    Direct,
}

/// `[[verify.checks]]` as written; which fields apply depends on `type`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckSpec {
    pub name: Spanned<Text>,
    #[serde(rename = "type")]
    pub kind: CheckType,
    pub timeout: Option<Spanned<Duration>>,
    // http
    pub url: Option<Spanned<Text>>,
    pub method: Option<Spanned<String>>,
    pub body: Option<Spanned<Text>>,
    pub headers: Option<Spanned<BTreeMap<String, Text>>>,
    pub expect_status: Option<Spanned<Vec<u16>>>,
    pub expect_body: Option<Spanned<Pattern>>,
    // http, redis
    pub via: Option<Spanned<Via>>,
    // redis
    pub address: Option<Spanned<Text>>,
    pub password: Option<Spanned<Text>>,
    // exec
    pub service: Option<Spanned<String>>,
    pub command: Option<Spanned<Vec<Text>>>,
    // logs
    pub services: Option<Spanned<Vec<String>>>,
    pub since_deploy: Option<Spanned<bool>>,
    pub absent: Option<Spanned<Pattern>>,
    pub present: Option<Spanned<Pattern>>,
}

/// `[rollback]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollback {
    #[serde(default = "yes")]
    pub automatic: bool,
    /// A host that switched puts the release from before back by itself unless
    /// the run confirms it within this long (the dead-man switch); default:
    /// the longest check's timeout + 60 s.
    pub confirm_timeout: Option<Duration>,
}

impl Default for Rollback {
    fn default() -> Self {
        Rollback {
            automatic: true,
            confirm_timeout: None,
        }
    }
}

fn yes() -> bool {
    true
}

/// `[hooks]`: local commands run by `sh -c`; a non-zero exit aborts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hooks {
    pub pre_deploy: Option<Text>,
    pub post_deploy: Option<Text>,
    pub on_failure: Option<Text>,
    /// A hook still running after this long is stopped (with all it started).
    #[serde(default = "default_hook_timeout")]
    pub timeout: Spanned<Duration>,
}

impl Default for Hooks {
    fn default() -> Self {
        Hooks {
            pre_deploy: None,
            post_deploy: None,
            on_failure: None,
            timeout: default_hook_timeout(),
        }
    }
}

fn default_hook_timeout() -> Spanned<Duration> {
    Spanned::new(0..0, Duration(std::time::Duration::from_secs(10 * 60)))
}

/// A duration written as a string: `"500ms"`, `"10s"`, `"2m"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Duration(pub std::time::Duration);

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = Duration;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a duration string like \"500ms\", \"10s\" or \"2m\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                humantime::parse_duration(v).map(Duration).map_err(|e| {
                    E::custom(format!(
                        "invalid duration `{v}` ({e}): expected a number and a unit, like \"500ms\", \"10s\" or \"2m\""
                    ))
                })
            }
        }
        d.deserialize_str(Visitor)
    }
}

/// A regular expression, compiled when the file is read.
#[derive(Debug, Clone)]
pub struct Pattern(pub regex::Regex);

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = Text::deserialize(d)?;
        regex::Regex::new(text.expose()).map(Pattern).map_err(|e| {
            // regex's message repeats the pattern and draws its own pointer over
            // several lines; keep only the reason, the file excerpt shows the rest.
            let msg = e.to_string();
            let reason = msg
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("invalid")
                .trim()
                .trim_start_matches("error: ")
                .to_string();
            de::Error::custom(format!(
                "this regex does not compile: {reason}; expected a regular expression (Rust regex syntax)"
            ))
        })
    }
}

/// A path under `<path>/shared/`: relative, without `..`, not empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedFile(Text);

impl SharedFile {
    /// The path.
    pub fn expose(&self) -> &str {
        self.0.expose()
    }
}

/// Whether `p` is a usable path under `<path>/shared/`: relative, no `..` or
/// `.`, no empty part.
fn is_shared_path(p: &str) -> bool {
    !(p.is_empty() || p.starts_with('/') || p.split('/').any(|part| part == ".." || part == "." || part.is_empty()))
}

impl<'de> Deserialize<'de> for SharedFile {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let t = Text::deserialize(d)?;
        if !is_shared_path(t.expose()) {
            return Err(de::Error::custom(
                "a shared file is a path relative to <path>/shared/: expected something like \".env\" or \"config/app.ini\", without `..`",
            ));
        }
        Ok(SharedFile(t))
    }
}

/// A directory under `<path>/shared/` (like Capistrano's linked_dirs): relative,
/// without `..`, not empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedDir(Text);

impl SharedDir {
    /// The path.
    pub fn expose(&self) -> &str {
        self.0.expose().trim_end_matches('/')
    }
}

impl<'de> Deserialize<'de> for SharedDir {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let t = Text::deserialize(d)?;
        let p = t.expose();
        // A trailing slash is how people write directories; it is not an empty part.
        if !is_shared_path(p.strip_suffix('/').unwrap_or(p)) {
            return Err(de::Error::custom(
                "a shared directory is a path relative to <path>/shared/: expected something like \"uploads\" or \"storage/cache\", without `..`",
            ));
        }
        Ok(SharedDir(t))
    }
}

/// A URL git fetches from; never something git would read as an option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchUrl(Text);

impl FetchUrl {
    /// The URL.
    pub fn expose(&self) -> &str {
        self.0.expose()
    }
}

impl std::fmt::Display for FetchUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl<'de> Deserialize<'de> for FetchUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let t = Text::deserialize(d)?;
        if t.expose().is_empty() || t.expose().starts_with('-') {
            return Err(de::Error::custom(
                "expected a git URL or path (it cannot start with `-`)",
            ));
        }
        Ok(FetchUrl(t))
    }
}

/// An environment variable name for compose on the hosts: `[A-Za-z_][A-Za-z0-9_]*`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct VarName(pub String);

impl<'de> Deserialize<'de> for VarName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let ok = s.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok {
            return Err(de::Error::custom(format!(
                "`{s}` is not a variable name: expected letters, digits and `_`, not starting with a digit"
            )));
        }
        Ok(VarName(s))
    }
}
