//! Docker Compose on a host: v1 (`docker-compose`) or v2 (`docker compose`),
//! detected; commands built for a release directory; services read from the
//! compose files of a commit.

use std::collections::BTreeMap;

use yaml_rust2::{Yaml, YamlLoader};

use crate::config::{Orchestrator, Text};
use crate::remote::{Cmd, Word};

/// Which Compose a host has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    /// The `docker compose` plugin.
    V2,
    /// The standalone Python `docker-compose`.
    V1,
}

impl Variant {
    /// Parses what [`DETECT`] printed.
    pub fn parse(word: &str) -> Option<Variant> {
        match word.trim() {
            "v2" => Some(Variant::V2),
            "v1" => Some(Variant::V1),
            _ => None,
        }
    }

    /// `v1` or `v2`.
    pub fn name(self) -> &'static str {
        match self {
            Variant::V2 => "v2",
            Variant::V1 => "v1",
        }
    }
}

/// Shell that prints `v2`, `v1` or `none`: v2 is preferred when both exist.
pub const DETECT: &str = "if docker compose version >/dev/null 2>&1; then echo v2; \
elif docker-compose version >/dev/null 2>&1; then echo v1; else echo none; fi";

/// The file deploy writes into each release: `image:` for every built service, so
/// images stay addressable by release and a rollback is `up` of existing images.
pub const OVERRIDE_FILE: &str = ".deploy-compose.yml";

/// A compose invocation for one release of one project on one host.
#[derive(Debug, Clone)]
pub struct Compose {
    pub variant: Variant,
    pub project: String,
    /// The release directory commands run in.
    pub dir: String,
    /// Compose files relative to `dir`, the override last.
    pub files: Vec<String>,
    /// Environment for interpolation in the compose files.
    pub vars: BTreeMap<String, Text>,
    /// Profiles activated with `--profile`.
    pub profiles: Vec<String>,
}

impl Compose {
    /// `compose -p <project> -f ... <args>` in the release directory, with the
    /// release's [`ENV_FILE`] exported first: the `vars` travel in that 0600 file,
    /// not on command lines that every user of the host can read with `ps`.
    pub fn cmd<W: Into<Word>>(&self, args: impl IntoIterator<Item = W>) -> Cmd {
        let mut cmd = Cmd::new("sh").arg("-c").arg(WITH_ENV_FILE).arg("sh");
        cmd = match self.variant {
            Variant::V2 => cmd.arg("docker").arg("compose"),
            Variant::V1 => cmd.arg("docker-compose"),
        };
        cmd = cmd.current_dir(self.dir.as_str()).arg("-p").arg(self.project.as_str());
        for f in &self.files {
            cmd = cmd.arg("-f").arg(f.as_str());
        }
        for p in &self.profiles {
            cmd = cmd.arg("--profile").arg(p.as_str());
        }
        cmd.args(args)
    }

    /// Compose's words for a release but for its directory, which differs
    /// from one release to the next: the variant, the project, the files and
    /// the profiles. What keeps a release's resolved services (see
    /// `release::build`) is named partly by it.
    pub fn invocation(&self) -> String {
        format!("{:?}", (self.variant, &self.project, &self.files, &self.profiles))
    }

    /// The text of [`ENV_FILE`] for this host's `vars`.
    pub fn env_file(&self) -> String {
        self.vars
            .iter()
            .map(|(name, value)| format!("export {name}={}\n", crate::remote::quote::quote(value.expose())))
            .collect()
    }
}

/// The file in each release that holds the host's `vars` for compose (0600).
pub const ENV_FILE: &str = ".deploy-env";

/// Exports the release's env file (if any), then runs the arguments.
pub(crate) const WITH_ENV_FILE: &str = "[ ! -f ./.deploy-env ] || . ./.deploy-env; exec \"$@\"";

/// The image a built service gets for a release: `<project>-<service>:<release>`.
pub fn image_name(project: &str, service: &str, release: &str) -> String {
    format!("{project}-{}:{release}", service.to_lowercase())
}

/// The override file's text for `services` built in `release`.
pub fn override_file(project: &str, services: &[String], release: &str) -> String {
    let mut out = String::from("# written by deploy: images of this release\nservices:\n");
    for s in services {
        // JSON strings are valid YAML scalars, so quoting needs nothing of our own.
        out.push_str(&format!(
            "  {}:\n    image: {}\n",
            serde_json::Value::String(s.clone()),
            serde_json::Value::String(image_name(project, s, release))
        ));
    }
    if services.is_empty() {
        out = String::from("# written by deploy: no service is built\nservices: {}\n");
    }
    out
}

/// The override file's text once the images of its built `services` (each
/// with its content tag, `<project>-<service>:sha-<12 hex of the image id>`)
/// are named by their content, with the app's `root` as every built
/// service's build context: what the content tagging on the host makes of
/// [`override_file`] (see `ADDRESS_IMAGES` in `release`), line for line.
pub fn addressed_override(services: &[(String, String)], root: &str) -> String {
    let mut out = String::from("# written by deploy: images of this release\nservices:\n");
    for (service, tag) in services {
        out.push_str(&format!(
            "  {}:\n    image: {}\n    build:\n      context: {}\n",
            serde_json::Value::String(service.clone()),
            serde_json::Value::String(tag.clone()),
            serde_json::Value::String(root.to_string())
        ));
    }
    out
}

/// A service of a compose file (or of `compose config`'s resolved output).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Service {
    /// Its key under `services:`.
    pub name: String,
    /// Whether it has a `build:` section.
    pub builds: bool,
    /// Its `image:`, if any.
    pub image: Option<String>,
    /// `restart:` as written (`no`, `always`, `unless-stopped`, `on-failure`...).
    pub restart: Option<String>,
    /// `profiles:`: it runs only when one of them is active.
    pub profiles: Vec<String>,
    /// `depends_on:` as (service, condition); the list form means `service_started`.
    pub depends_on: Vec<(String, String)>,
    /// Whether it declares a healthcheck (not disabled).
    pub healthcheck: Option<Vec<String>>,
    /// Containers wanted: `deploy.replicas` or `scale` (default 1).
    pub replicas: Option<u32>,
    /// `container_name:`.
    pub container_name: Option<String>,
    /// `ports:` that publish on the host, as written.
    pub ports: Vec<String>,
    /// Ports it serves on inside its container: `ports:` targets and `expose:`.
    pub targets: Vec<u16>,
}

impl Service {
    /// Whether it runs with these profiles active.
    pub fn active(&self, profiles: &[String]) -> bool {
        self.profiles.is_empty() || self.profiles.iter().any(|p| profiles.contains(p))
    }

    /// Whether it restarts by itself after it exits.
    pub fn restarts(&self) -> bool {
        !matches!(self.restart.as_deref(), None | Some("no") | Some("false"))
    }
}

/// The services of a compose file, in file order.
pub fn services(text: &str) -> Result<Vec<Service>, String> {
    services_if_any(text)?.ok_or_else(|| "it has no `services:` section".to_string())
}

/// The services of a compose file that may have none (an override file
/// with only `networks:`): `None` then.
pub fn services_if_any(text: &str) -> Result<Option<Vec<Service>>, String> {
    let docs = YamlLoader::load_from_str(text).map_err(|e| e.to_string())?;
    let doc = docs.first().ok_or("the file is empty")?;
    let Some(services) = doc["services"].as_hash() else {
        return Ok(None);
    };
    Ok(Some(
        services
            .iter()
            .filter_map(|(k, v)| Some(service(k.as_str()?, v)))
            .collect(),
    ))
}

/// One service's fields that deploy cares about.
fn service(name: &str, v: &Yaml) -> Service {
    let text = |y: &Yaml| match y {
        Yaml::String(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        Yaml::Real(r) => Some(r.clone()),
        _ => None,
    };
    let strings = |y: &Yaml| -> Vec<String> {
        y.as_vec()
            .map(|l| l.iter().filter_map(text).collect())
            .unwrap_or_default()
    };
    let depends_on = match &v["depends_on"] {
        Yaml::Array(list) => list
            .iter()
            .filter_map(text)
            .map(|s| (s, "service_started".to_string()))
            .collect(),
        Yaml::Hash(map) => map
            .iter()
            .filter_map(|(k, c)| {
                let cond = c["condition"].as_str().unwrap_or("service_started");
                Some((text(k)?, cond.to_string()))
            })
            .collect(),
        _ => Vec::new(),
    };
    let hc = &v["healthcheck"];
    let healthcheck = match hc {
        Yaml::Hash(_) if hc["disable"].as_bool() == Some(true) => None,
        Yaml::Hash(_) => match &hc["test"] {
            Yaml::Array(_) if strings(&hc["test"]).first().map(String::as_str) == Some("NONE") => None,
            Yaml::Array(_) => Some(strings(&hc["test"])),
            Yaml::String(s) => Some(vec!["CMD-SHELL".into(), s.clone()]),
            // A healthcheck block without a test tunes the image's own.
            _ => Some(Vec::new()),
        },
        _ => None,
    };
    let replicas = v["deploy"]["replicas"]
        .as_i64()
        .or_else(|| v["scale"].as_i64())
        .and_then(|n| u32::try_from(n).ok());
    let ports = v["ports"]
        .as_vec()
        .map(|l| {
            l.iter()
                .filter_map(|p| match p {
                    Yaml::Hash(_) => p["published"]
                        .as_i64()
                        .map(|n| n.to_string())
                        .or_else(|| text(&p["published"])),
                    other => text(other).filter(|s| s.contains(':')),
                })
                .collect()
        })
        .unwrap_or_default();
    // "127.0.0.1:${API_PORT}:8000/tcp" serves on 8000; a range is left out.
    let target = |p: &Yaml| match p {
        Yaml::Hash(_) => p["target"].as_i64().and_then(|n| u16::try_from(n).ok()),
        other => text(other)?.rsplit(':').next()?.split('/').next()?.parse().ok(),
    };
    let mut targets: Vec<u16> = v["ports"]
        .as_vec()
        .map(|l| l.iter().filter_map(target).collect())
        .unwrap_or_default();
    targets.extend(v["expose"].as_vec().into_iter().flatten().filter_map(target));
    Service {
        name: name.to_string(),
        builds: !matches!(v["build"], Yaml::BadValue | Yaml::Null),
        image: text(&v["image"]),
        restart: text(&v["restart"]),
        profiles: strings(&v["profiles"]),
        depends_on,
        healthcheck,
        replicas,
        container_name: text(&v["container_name"]),
        ports,
        targets,
    }
}

/// The services of several compose files merged the way compose merges them:
/// a later file's fields win, a service keeps its place of first mention.
pub fn merged(files: &[Vec<Service>]) -> Vec<Service> {
    let mut out: Vec<Service> = Vec::new();
    for file in files {
        for s in file {
            match out.iter_mut().find(|o| o.name == s.name) {
                None => out.push(s.clone()),
                Some(o) => {
                    o.builds |= s.builds;
                    o.image = s.image.clone().or(o.image.take());
                    o.restart = s.restart.clone().or(o.restart.take());
                    if !s.profiles.is_empty() {
                        o.profiles = s.profiles.clone();
                    }
                    for d in &s.depends_on {
                        o.depends_on.retain(|(n, _)| n != &d.0);
                        o.depends_on.push(d.clone());
                    }
                    o.healthcheck = s.healthcheck.clone().or(o.healthcheck.take());
                    o.replicas = s.replicas.or(o.replicas);
                    o.container_name = s.container_name.clone().or(o.container_name.take());
                    o.ports.extend(s.ports.iter().cloned());
                    o.targets.extend(s.targets.iter().copied());
                }
            }
        }
    }
    out
}

/// The services that run once and are done: listed in `one_shot`, or not
/// restarted by themselves and waited for by another service with
/// `condition: service_completed_successfully` (compose's migration pattern).
pub fn one_shots(services: &[Service], listed: &[String]) -> Vec<String> {
    services
        .iter()
        .filter(|s| {
            listed.contains(&s.name)
                || (!s.restarts()
                    && services.iter().any(|o| {
                        o.depends_on
                            .iter()
                            .any(|(n, c)| n == &s.name && c == "service_completed_successfully")
                    }))
        })
        .map(|s| s.name.clone())
        .collect()
}

/// Shell that lists the project's containers, one per line:
/// `service<TAB>state<TAB>status<TAB>name`. Labels are set by v1 and v2 alike,
/// so one parser serves both.
pub fn ps_cmd(project: &str, engine: Orchestrator) -> Cmd {
    if engine == Orchestrator::Swarm {
        return Cmd::new("docker")
            .args(["ps", "-a", "--filter"])
            .arg(format!("label=com.docker.stack.namespace={project}"))
            .arg("--format")
            .arg("{{.Label \"com.docker.swarm.service.name\"}}\t{{.State}}\t{{.Status}}\t{{.Names}}");
    }
    Cmd::new("docker")
        .args(["ps", "-a", "--filter"])
        .arg(format!("label=com.docker.compose.project={project}"))
        // One-off containers (`compose run`) are not the release's services.
        .args(["--filter", "label=com.docker.compose.oneoff=False"])
        .arg("--format")
        .arg("{{.Label \"com.docker.compose.service\"}}\t{{.State}}\t{{.Status}}\t{{.Names}}")
}

/// One container of a project.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Container {
    pub service: String,
    /// running, exited, restarting, created, ...
    pub state: String,
    /// Docker's words: "Up 3 minutes (healthy)".
    pub status: String,
    pub name: String,
}

impl Container {
    /// The exit code of an exited container, from its status ("Exited (3) 2 seconds ago").
    pub fn exit_code(&self) -> Option<i32> {
        let rest = self.status.strip_prefix("Exited (")?;
        rest.split(')').next()?.parse().ok()
    }

    /// Health from the status text, where the service has a healthcheck.
    pub fn health(&self) -> Option<&'static str> {
        ["healthy", "unhealthy", "health: starting"]
            .into_iter()
            .find(|h| self.status.contains(&format!("({h})")))
            .map(|h| if h == "health: starting" { "starting" } else { h })
    }
}

/// A service's name in the app from its container's label: a stack's
/// services are labelled `<stack>_<service>`.
pub fn service_in(label: &str, project: &str, engine: Orchestrator) -> String {
    match engine {
        Orchestrator::Compose => label.to_string(),
        Orchestrator::Swarm => label
            .strip_prefix(project)
            .and_then(|r| r.strip_prefix('_'))
            .unwrap_or(label)
            .to_string(),
    }
}

/// Parses [`ps_cmd`]'s output for `project` run by `engine`.
pub fn parse_ps_of(out: &str, project: &str, engine: Orchestrator) -> Vec<Container> {
    let mut list = parse_ps(out);
    for c in &mut list {
        c.service = service_in(&c.service, project, engine);
    }
    list
}

/// Parses [`ps_cmd`]'s output.
pub fn parse_ps(out: &str) -> Vec<Container> {
    out.lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            Some(Container {
                service: f.next()?.to_string(),
                state: f.next()?.to_string(),
                status: f.next()?.to_string(),
                name: f.next()?.to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_for_each_variant() {
        let mut c = Compose {
            variant: Variant::V2,
            project: "shop".into(),
            dir: "/srv/shop/releases/1".into(),
            files: vec!["docker-compose.yml".into(), OVERRIDE_FILE.into()],
            vars: BTreeMap::from([("API_PORT".to_string(), Text::from("8000"))]),
            profiles: Vec::new(),
        };
        let shell = c.cmd(["up", "-d"]).to_shell();
        assert!(shell.starts_with("cd /srv/shop/releases/1 && sh -c "), "{shell}");
        assert!(
            shell.ends_with(" sh docker compose -p shop -f docker-compose.yml -f .deploy-compose.yml up -d"),
            "{shell}"
        );
        assert!(!shell.contains("8000"), "vars stay off the command line: {shell}");
        assert_eq!(c.env_file(), "export API_PORT=8000\n");
        c.variant = Variant::V1;
        assert!(c.cmd(["ps"]).to_shell().contains("docker-compose -p shop"));
    }

    #[test]
    fn override_names_images_by_release() {
        let text = override_file("shop", &["api".into()], "20261125T171500Z-3f2a9c1");
        assert!(text.contains("image: \"shop-api:20261125T171500Z-3f2a9c1\""), "{text}");
    }

    #[test]
    fn the_addressed_override_is_what_the_host_makes_of_it() {
        let tags = [("api".to_string(), "shop-api:sha-0123456789ab".to_string())];
        assert_eq!(
            addressed_override(&tags, "/srv/shop \"new\""),
            "# written by deploy: images of this release\nservices:\n  \"api\":\n    image: \"shop-api:sha-0123456789ab\"\n    build:\n      context: \"/srv/shop \\\"new\\\"\"\n"
        );
    }

    #[test]
    fn ps_lines_parse_with_health() {
        let c = parse_ps("api\trunning\tUp 2 minutes (healthy)\tshop-api-1\n");
        assert_eq!(c[0].service, "api");
        assert_eq!(c[0].health(), Some("healthy"));
    }
}

#[cfg(test)]
mod service_tests {
    use super::*;

    #[test]
    fn reads_services_and_build_sections() {
        let yaml = "services:\n  api:\n    build: .\n  redis:\n    image: redis\n";
        let s = services(yaml).unwrap();
        assert_eq!((s[0].name.as_str(), s[0].builds), ("api", true));
        assert_eq!((s[1].name.as_str(), s[1].builds), ("redis", false));
        assert_eq!(s[1].image.as_deref(), Some("redis"));
    }

    #[test]
    fn reads_what_the_checklist_needs_from_v1_and_v2_config_output() {
        let yaml = "services:\n  migrate:\n    image: busybox\n    restart: \"no\"\n  api:\n    depends_on:\n      migrate:\n        condition: service_completed_successfully\n        required: true\n      redis:\n        condition: service_healthy\n    deploy:\n      replicas: 2\n    ports:\n    - \"127.0.0.1:80:8000\"\n  redis:\n    healthcheck:\n      test:\n      - CMD\n      - redis-cli\n      - ping\n  worker:\n    depends_on: [redis]\n    scale: 3\n    profiles: [jobs]\n    restart: always\n";
        let s = services(yaml).unwrap();
        assert_eq!(one_shots(&s, &[]), vec!["migrate"]);
        assert_eq!(s[1].replicas, Some(2));
        assert_eq!(s[1].ports, vec!["127.0.0.1:80:8000"]);
        assert_eq!(s[1].targets, vec![8000]);
        assert_eq!(
            s[2].healthcheck.as_deref(),
            Some(&["CMD".to_string(), "redis-cli".into(), "ping".into()][..])
        );
        assert_eq!(
            s[3].depends_on,
            vec![("redis".to_string(), "service_started".to_string())]
        );
        assert!(!s[3].active(&[]) && s[3].active(&["jobs".into()]));
        assert_eq!(one_shots(&s, &["worker".into()]), vec!["migrate", "worker"]);
    }
}
