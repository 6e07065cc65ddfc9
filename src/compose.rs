//! Docker Compose on a host: v1 (`docker-compose`) or v2 (`docker compose`),
//! detected; commands built for a release directory; services read from the
//! compose files of a commit.

use std::collections::BTreeMap;

use yaml_rust2::{Yaml, YamlLoader};

use crate::config::Text;
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
        cmd.args(args)
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
const WITH_ENV_FILE: &str = "[ ! -f ./.deploy-env ] || . ./.deploy-env; exec \"$@\"";

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

/// A service of a compose file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// Its key under `services:`.
    pub name: String,
    /// Whether it has a `build:` section.
    pub builds: bool,
}

/// The services of a compose file, in file order.
pub fn services(text: &str) -> Result<Vec<Service>, String> {
    let docs = YamlLoader::load_from_str(text).map_err(|e| e.to_string())?;
    let doc = docs.first().ok_or("the file is empty")?;
    let services = doc["services"].as_hash().ok_or("it has no `services:` section")?;
    Ok(services
        .iter()
        .filter_map(|(k, v)| {
            Some(Service {
                name: k.as_str()?.to_string(),
                builds: !matches!(v["build"], Yaml::BadValue | Yaml::Null),
            })
        })
        .collect())
}

/// Shell that lists the project's containers, one per line:
/// `service<TAB>state<TAB>status<TAB>name`. Labels are set by v1 and v2 alike,
/// so one parser serves both.
pub fn ps_cmd(project: &str) -> Cmd {
    Cmd::new("docker")
        .args(["ps", "-a", "--filter"])
        .arg(format!("label=com.docker.compose.project={project}"))
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
    /// Health from the status text, where the service has a healthcheck.
    pub fn health(&self) -> Option<&'static str> {
        ["healthy", "unhealthy", "health: starting"]
            .into_iter()
            .find(|h| self.status.contains(&format!("({h})")))
            .map(|h| if h == "health: starting" { "starting" } else { h })
    }
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
        assert_eq!(
            services(yaml).unwrap(),
            vec![
                Service {
                    name: "api".into(),
                    builds: true
                },
                Service {
                    name: "redis".into(),
                    builds: false
                }
            ]
        );
    }
}
