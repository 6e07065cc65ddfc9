//! What the compose files of a commit say, read against deploy.toml: races at
//! start-up, services that stay down, unpinned images, variables nobody
//! defines, and services deploy.toml names that compose does not have.

use std::collections::{BTreeMap, BTreeSet};

use yaml_rust2::{Yaml, YamlLoader};

use super::Finding;
use crate::compose::{self, Service};
use crate::config::{CheckKind, Config};

/// A compose file as read from the commit (or the working tree, for `init`).
#[derive(Debug, Clone)]
pub struct ComposeFile {
    /// Its name as `app.compose_files` gives it.
    pub name: String,
    /// Its contents.
    pub text: String,
}

/// Container ports that usually speak HTTP.
const HTTP_PORTS: &[u16] = &[80, 443, 3000, 4000, 5000, 8000, 8008, 8080, 8081, 8443, 8888];

/// Variables every SSH session on a host has, so compose always finds them.
const SESSION_VARS: &[&str] = &["HOME", "USER", "LOGNAME", "PATH", "PWD", "SHELL"];

/// The merged services of `files` and the findings about them and deploy.toml
/// (everything but variables: see [`variables`]). A file that cannot be read
/// as compose is a ✗ finding and leaves no services.
pub fn review(config: &Config, files: &[ComposeFile]) -> (Vec<Service>, Vec<Finding>) {
    let mut parsed = Vec::new();
    let mut findings = Vec::new();
    for f in files {
        match compose::services(&f.text) {
            Ok(s) => parsed.push(s),
            Err(e) => findings.push(Finding::fail(
                "compose_file",
                format!("{} is not a compose file deploy can read: {e}", f.name),
                format!("fix {} (`docker compose -f {} config` shows where)", f.name, f.name),
            )),
        }
    }
    if !findings.is_empty() {
        return (Vec::new(), findings);
    }
    let services = compose::merged(&parsed);
    let active: Vec<&Service> = services.iter().filter(|s| s.active(&config.app.profiles)).collect();
    findings.extend(depends_on(&services, &active, config));
    findings.extend(restart(&services, &active, config));
    findings.extend(http_healthchecks(&active, config));
    findings.extend(image_tags(&active));
    findings.extend(named_services(&services, config));
    (services, findings)
}

/// A service's `depends_on` that does not wait for the other to be ready: the
/// seed's incident (an app that connects to Redis at import time, started
/// before Redis accepted connections, and never retried).
fn depends_on(all: &[Service], active: &[&Service], config: &Config) -> Vec<Finding> {
    let one_shots = compose::one_shots(all, &config.app.one_shot);
    let mut out = Vec::new();
    let mut edges = 0;
    for s in active {
        for (dep, condition) in &s.depends_on {
            edges += 1;
            let Some(d) = all.iter().find(|o| &o.name == dep) else {
                out.push(
                    Finding::fail(
                        "depends_on",
                        format!("{} depends on {dep}, which no compose file defines", s.name),
                        format!("define {dep}, or remove it from {}'s depends_on", s.name),
                    )
                    .on_service(&s.name),
                );
                continue;
            };
            let wait = |cond: &str| format!("`depends_on: {{{dep}: {{condition: {cond}}}}}` under {}", s.name);
            match condition.as_str() {
                "service_completed_successfully" => {}
                "service_healthy" if d.healthcheck.is_none() => out.push(
                    Finding::warn(
                        "depends_on",
                        format!(
                            "{} waits for {dep} to be healthy, but {dep} has no healthcheck in the compose files: unless its image defines a HEALTHCHECK, compose refuses to start {}",
                            s.name, s.name
                        ),
                        format!("give {dep} a healthcheck: {}", healthcheck_example(d, config)),
                    )
                    .on_service(&s.name),
                ),
                "service_healthy" => {}
                _ if one_shots.contains(dep) => out.push(
                    Finding::fail(
                        "depends_on",
                        format!(
                            "{} starts as soon as {dep} starts, not once it has finished: {dep} runs once (a migration?), and {} may see the old schema",
                            s.name, s.name
                        ),
                        wait("service_completed_successfully"),
                    )
                    .on_service(&s.name),
                ),
                _ if d.healthcheck.is_none() => out.push(
                    Finding::fail(
                        "depends_on",
                        format!(
                            "{} depends on {dep} without `condition: service_healthy`, and {dep} has no healthcheck: {} can start before {dep} accepts connections, and an app that connects at start-up and never retries stays broken",
                            s.name, s.name
                        ),
                        format!(
                            "give {dep} a healthcheck: {}; then make {} wait for it: {}",
                            healthcheck_example(d, config),
                            s.name,
                            wait("service_healthy")
                        ),
                    )
                    .on_service(&s.name),
                ),
                _ => out.push(
                    Finding::fail(
                        "depends_on",
                        format!(
                            "{} depends on {dep} without `condition: service_healthy`: it starts when {dep}'s container starts, before {dep}'s healthcheck passes",
                            s.name
                        ),
                        wait("service_healthy"),
                    )
                    .on_service(&s.name),
                ),
            }
        }
    }
    if out.is_empty() {
        out.push(Finding::ok(
            "depends_on",
            if edges == 0 {
                "no service depends on another".to_string()
            } else {
                format!(
                    "every depends_on waits for readiness ({edges} dependenc{})",
                    if edges == 1 { "y" } else { "ies" }
                )
            },
        ));
    }
    out
}

/// Long-running services that stay down after a crash or a reboot.
fn restart(all: &[Service], active: &[&Service], config: &Config) -> Vec<Finding> {
    let one_shots = compose::one_shots(all, &config.app.one_shot);
    let mut out: Vec<Finding> = active
        .iter()
        .filter(|s| !s.restarts() && !one_shots.contains(&s.name))
        .map(|s| {
            Finding::warn(
                "restart",
                format!(
                    "{} has no restart policy: if it exits, or the host reboots, it stays down until the next deploy",
                    s.name
                ),
                format!(
                    "`restart: unless-stopped` under {} (or list it in [app] one_shot if it runs once and exits 0)",
                    s.name
                ),
            )
            .on_service(&s.name)
        })
        .collect();
    if out.is_empty() {
        out.push(Finding::ok(
            "restart",
            "every long-running service has a restart policy",
        ));
    }
    out
}

/// The port a service serves HTTP on, if it looks like it does: a known HTTP
/// port, an image that is a web server, or an `http` check naming it.
fn http_port(s: &Service, config: &Config) -> Option<u16> {
    if let Some(p) = s.targets.iter().find(|p| HTTP_PORTS.contains(p)) {
        return Some(*p);
    }
    if matches!(kind(s), Some(Kind::Http)) {
        return Some(s.targets.first().copied().unwrap_or(80));
    }
    let checked = config
        .verify
        .checks
        .iter()
        .any(|c| matches!(c.kind, CheckKind::Http { .. }) && c.service.as_deref() == Some(s.name.as_str()));
    checked.then(|| s.targets.first().copied().unwrap_or(80))
}

/// HTTP services without a healthcheck: `compose_ps` calls them ready as soon as
/// their process runs, and a service waiting for them cannot wait for more.
fn http_healthchecks(active: &[&Service], config: &Config) -> Vec<Finding> {
    let mut out = Vec::new();
    for s in active {
        let Some(port) = http_port(s, config) else { continue };
        if s.healthcheck.is_some() {
            continue;
        }
        out.push(
            Finding::warn(
                "healthcheck",
                format!(
                    "{} serves HTTP (port {port}) but has no healthcheck: `compose_ps` counts it ready as soon as it runs, before it answers",
                    s.name
                ),
                format!(
                    "`healthcheck: {{test: {}, interval: 5s, retries: 3}}` under {} (a path that answers 200 when the app is ready)",
                    test_json(&http_test(port)),
                    s.name
                ),
            )
            .on_service(&s.name),
        );
    }
    if out.is_empty() {
        out.push(Finding::ok(
            "healthcheck",
            "every service that serves HTTP has a healthcheck",
        ));
    }
    out
}

/// Images that are not pinned: `latest`, or no tag at all.
fn image_tags(active: &[&Service]) -> Vec<Finding> {
    let mut out = Vec::new();
    for s in active {
        // A built service's image is named by deploy for each release.
        let Some(image) = s.image.as_deref().filter(|_| !s.builds) else {
            continue;
        };
        if image.contains('@') || image.contains('$') {
            continue;
        }
        let last = image.rsplit('/').next().unwrap_or(image);
        let tag = last.split_once(':').map(|(_, t)| t);
        let problem = match tag {
            None => format!("`{image}` has no tag, which means `latest`"),
            Some("latest") => format!("`{image}` is pinned to latest"),
            Some(_) => continue,
        };
        out.push(
            Finding::warn(
                "image_tag",
                format!(
                    "{} runs {problem}: hosts may run different versions, and a rollback does not bring the old image back",
                    s.name
                ),
                format!(
                    "pin a version: `image: {}:<version>` (or a digest, `{}@sha256:...`)",
                    image.strip_suffix(":latest").unwrap_or(image),
                    image.strip_suffix(":latest").unwrap_or(image)
                ),
            )
            .on_service(&s.name),
        );
    }
    if out.is_empty() {
        out.push(Finding::ok("image_tag", "every image is pinned to a version"));
    }
    out
}

/// Services deploy.toml names (checks, `[release]`, `one_shot`, `build`, hosts'
/// `services`) that the compose files lack, or run only under a profile that is off.
fn named_services(all: &[Service], config: &Config) -> Vec<Finding> {
    let mut named: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut add = |name: &str, by: String| {
        named.entry(name.to_string()).or_default().insert(by);
    };
    for c in &config.verify.checks {
        if let Some(s) = &c.service {
            add(s, format!("check `{}`", c.name));
        }
        if let CheckKind::Logs { services, .. } = &c.kind {
            for s in services {
                add(s, format!("check `{}`", c.name));
            }
        }
    }
    if let Some(r) = &config.release {
        add(&r.service, "[release] service".into());
    }
    for s in &config.app.one_shot {
        add(s, "[app] one_shot".into());
    }
    for s in config.app.build.iter().flatten() {
        add(s.expose(), "[app] build".into());
    }
    for env in config.environments.values() {
        for h in &env.hosts {
            for s in h.services.iter().flatten() {
                add(s, format!("host {} of {}", h.name, env.name));
            }
        }
    }
    let known: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
    let mut out = Vec::new();
    for (name, by) in &named {
        let by: Vec<&str> = by.iter().map(String::as_str).collect();
        match all.iter().find(|s| &s.name == name) {
            None => out.push(
                Finding::fail(
                    "services",
                    format!(
                        "{} name{} service `{name}`, which the compose files do not have",
                        by.join(", "),
                        if by.len() == 1 { "s" } else { "" }
                    ),
                    format!("name one of the compose file's services: {}", known.join(", ")),
                )
                .on_service(name),
            ),
            Some(s) if !s.active(&config.app.profiles) => out.push(
                Finding::warn(
                    "services",
                    format!(
                        "{} name{} service `{name}`, which runs only with profile {}, and [app] profiles does not turn that on",
                        by.join(", "),
                        if by.len() == 1 { "s" } else { "" },
                        s.profiles.join(" or ")
                    ),
                    format!(
                        "add `{}` to [app] profiles, or stop naming `{name}`",
                        s.profiles.first().map(String::as_str).unwrap_or("")
                    ),
                )
                .on_service(name),
            ),
            Some(_) => {}
        }
    }
    if out.is_empty() {
        out.push(Finding::ok(
            "services",
            if named.is_empty() {
                "deploy.toml names no compose service".to_string()
            } else {
                format!(
                    "every service deploy.toml names is in the compose files ({})",
                    named.keys().map(String::as_str).collect::<Vec<_>>().join(", ")
                )
            },
        ));
    }
    out
}

/// What kind of server an image is, for a healthcheck to suggest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Redis,
    Postgres,
    Mysql,
    Mariadb,
    Mongo,
    Rabbitmq,
    Http,
}

/// The image's name without registry, path, tag or digest: `redis` for
/// `docker.io/library/redis:7@sha256:...`.
fn image_base(image: &str) -> String {
    let no_digest = image.split('@').next().unwrap_or(image);
    let last = no_digest.rsplit('/').next().unwrap_or(no_digest);
    last.split(':').next().unwrap_or(last).to_lowercase()
}

fn kind(s: &Service) -> Option<Kind> {
    let base = image_base(s.image.as_deref()?);
    let kinds: &[(&[&str], Kind)] = &[
        (&["redis", "valkey", "keydb"], Kind::Redis),
        (&["postgres", "postgis", "timescaledb"], Kind::Postgres),
        (&["mysql", "percona"], Kind::Mysql),
        (&["mariadb"], Kind::Mariadb),
        (&["mongo"], Kind::Mongo),
        (&["rabbitmq"], Kind::Rabbitmq),
        (&["nginx", "httpd", "caddy", "traefik", "haproxy", "apache"], Kind::Http),
    ];
    kinds
        .iter()
        .find(|(names, _)| names.iter().any(|n| base.starts_with(n)))
        .map(|(_, k)| *k)
}

fn http_test(port: u16) -> Vec<String> {
    ["CMD", "wget", "-q", "-O", "/dev/null"]
        .iter()
        .map(|s| s.to_string())
        .chain([format!("http://127.0.0.1:{port}/")])
        .collect()
}

/// A healthcheck `test` for a service of this kind, if one is well known.
fn suggested_test(s: &Service, config: &Config) -> Option<Vec<String>> {
    let words = |w: &[&str]| Some(w.iter().map(|s| s.to_string()).collect());
    match kind(s) {
        Some(Kind::Redis) => words(&["CMD", "redis-cli", "ping"]),
        Some(Kind::Postgres) => words(&["CMD", "pg_isready", "-U", "postgres"]),
        Some(Kind::Mysql) => words(&["CMD", "mysqladmin", "ping", "-h", "127.0.0.1"]),
        Some(Kind::Mariadb) => words(&["CMD", "healthcheck.sh", "--connect", "--innodb_initialized"]),
        Some(Kind::Mongo) => words(&["CMD", "mongosh", "--quiet", "--eval", "db.adminCommand('ping')"]),
        Some(Kind::Rabbitmq) => words(&["CMD", "rabbitmq-diagnostics", "-q", "ping"]),
        Some(Kind::Http) | None => http_port(s, config).map(http_test),
    }
}

/// A healthcheck `test` as compose writes it: a JSON list is YAML too.
fn test_json(test: &[String]) -> String {
    serde_json::to_string(test).unwrap_or_default()
}

/// "`healthcheck: {test: [...], ...}` under redis", with the command that
/// suits its image, or what such a command must do.
fn healthcheck_example(s: &Service, config: &Config) -> String {
    match suggested_test(s, config) {
        Some(test) => format!(
            "`healthcheck: {{test: {}, interval: 2s, timeout: 3s, retries: 15}}` under {}",
            test_json(&test),
            s.name
        ),
        None => format!(
            "`healthcheck: {{test: [\"CMD\", ...], interval: 2s, retries: 15}}` under {}, with a command that exits 0 once {} accepts connections",
            s.name, s.name
        ),
    }
}

/// How a compose file uses a variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Use {
    /// `${X:-default}`, `${X-default}`, `${X:+alt}`: fine when unset.
    Optional,
    /// `${X}` or `$X`: an empty string when unset (and a warning from compose).
    Plain,
    /// `${X:?message}`: compose refuses to run when unset.
    Required,
}

/// Every variable the compose files interpolate, with its most demanding use
/// and the first file that uses it. Comments are not read (YAML drops them).
fn variable_uses(files: &[ComposeFile]) -> BTreeMap<String, (Use, String)> {
    let re = regex::Regex::new(r"\$(?:\$|\{([A-Za-z_][A-Za-z0-9_]*)(:?[-?+])?[^}]*\}|([A-Za-z_][A-Za-z0-9_]*))")
        .expect("static regex");
    let mut uses: BTreeMap<String, (Use, String)> = BTreeMap::new();
    for f in files {
        let Ok(docs) = YamlLoader::load_from_str(&f.text) else {
            continue;
        };
        let mut strings = Vec::new();
        for d in &docs {
            collect_strings(d, &mut strings);
        }
        for s in strings {
            for c in re.captures_iter(&s) {
                let Some(name) = c.get(1).or_else(|| c.get(3)) else {
                    continue;
                };
                let how = match c.get(2).map(|m| m.as_str()) {
                    Some(":?") | Some("?") => Use::Required,
                    Some(_) => Use::Optional,
                    None => Use::Plain,
                };
                let entry = uses.entry(name.as_str().to_string()).or_insert((how, f.name.clone()));
                entry.0 = entry.0.max(how);
            }
        }
    }
    uses
}

fn collect_strings(y: &Yaml, out: &mut Vec<String>) {
    match y {
        Yaml::String(s) => out.push(s.clone()),
        Yaml::Array(list) => list.iter().for_each(|i| collect_strings(i, out)),
        Yaml::Hash(map) => {
            for (k, v) in map {
                collect_strings(k, out);
                collect_strings(v, out);
            }
        }
        _ => {}
    }
}

/// What one host's compose can see: its `vars`, the commit's `.env`, and a
/// shared `.env` where one is linked into each release.
#[derive(Debug, Clone, Default)]
pub struct Defined {
    /// The host's name.
    pub host: String,
    /// Names known to be defined on the host.
    pub names: BTreeSet<String>,
    /// A shared `.env` that could not be read: a name missing from `names` may be there.
    pub unsure: bool,
}

/// The names a `.env` file (`NAME=value` lines, `export` allowed) defines. Values are never kept.
pub fn env_file_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let l = l.strip_prefix("export ").unwrap_or(l).trim_start();
            let (name, _) = l.split_once('=')?;
            let name = name.trim_end();
            let ok = !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            ok.then(|| name.to_string())
        })
        .collect()
}

/// Variables the compose files use without a default that some host of `env`
/// does not define. `hosts` is what each host of the environment can see.
pub fn variables(env: &str, files: &[ComposeFile], hosts: &[Defined]) -> Vec<Finding> {
    let uses = variable_uses(files);
    let mut out = Vec::new();
    let mut fine = Vec::new();
    for (name, (how, file)) in &uses {
        if *how == Use::Optional || SESSION_VARS.contains(&name.as_str()) {
            continue;
        }
        let missing: Vec<&Defined> = hosts.iter().filter(|h| !h.names.contains(name)).collect();
        if missing.is_empty() {
            fine.push(name.as_str());
            continue;
        }
        let on = if missing.len() == hosts.len() {
            String::new()
        } else {
            format!(
                " on {}",
                missing.iter().map(|h| h.host.as_str()).collect::<Vec<_>>().join(", ")
            )
        };
        let effect = match how {
            Use::Required => "compose refuses to start the app",
            _ => "compose puts an empty string in its place",
        };
        let fix = format!(
            "add `{name} = \"...\"` to [environments.{env}] vars (or to the host's table), or give it a default in {file}: `${{{name}:-...}}`"
        );
        if missing.iter().all(|h| h.unsure) {
            out.push(Finding::warn(
                "variables",
                format!(
                    "{file} uses ${{{name}}}, which {env}'s vars do not define{on}; a shared .env may, but doctor cannot read it from here (run `deploy doctor {env}` to read the hosts' copy)"
                ),
                fix,
            ));
        } else {
            out.push(Finding::fail(
                "variables",
                format!("{file} uses ${{{name}}}, which is not defined for {env}{on}: {effect}"),
                fix,
            ));
        }
    }
    if out.is_empty() {
        out.push(Finding::ok(
            "variables",
            if fine.is_empty() {
                format!("the compose files use no variable without a default ({env})")
            } else {
                format!(
                    "every variable the compose files use without a default is defined for {env} ({})",
                    fine.join(", ")
                )
            },
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        let text =
            format!("[app]\nname = \"shop\"\n\n[environments.prod]\nhosts = [\"web1\"]\npath = \"/srv/shop\"\n{extra}");
        Config::parse(std::path::Path::new("deploy.toml"), &text).unwrap()
    }

    fn file(text: &str) -> Vec<ComposeFile> {
        vec![ComposeFile {
            name: "docker-compose.yml".into(),
            text: text.into(),
        }]
    }

    fn checks(findings: &[Finding], check: &str) -> Vec<String> {
        findings
            .iter()
            .filter(|f| f.check == check)
            .map(Finding::line)
            .collect()
    }

    #[test]
    fn the_seeds_race_names_a_redis_healthcheck() {
        let (_, f) = review(
            &config(""),
            &file("services:\n  api:\n    build: .\n    restart: always\n    depends_on: [redis]\n  redis:\n    image: redis:7\n    restart: always\n"),
        );
        let lines = checks(&f, "depends_on");
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].starts_with("✗ api depends on redis without `condition: service_healthy`"),
            "{}",
            lines[0]
        );
        assert!(lines[0].contains(r#"test: ["CMD","redis-cli","ping"]"#), "{}", lines[0]);
        assert!(
            lines[0].contains("`depends_on: {redis: {condition: service_healthy}}` under api"),
            "{}",
            lines[0]
        );
    }

    #[test]
    fn waiting_for_health_or_completion_is_fine() {
        let (_, f) = review(
            &config(""),
            &file("services:\n  migrate:\n    build: .\n  api:\n    build: .\n    restart: always\n    depends_on:\n      migrate: {condition: service_completed_successfully}\n      redis: {condition: service_healthy}\n  redis:\n    image: redis:7.2\n    restart: always\n    healthcheck:\n      test: [CMD, redis-cli, ping]\n"),
        );
        assert_eq!(
            checks(&f, "depends_on"),
            vec!["✓ every depends_on waits for readiness (2 dependencies)"]
        );
        assert_eq!(
            checks(&f, "restart"),
            vec!["✓ every long-running service has a restart policy"],
            "a migration needs none"
        );
    }

    #[test]
    fn restart_latest_http_and_named_services() {
        let c = config("[[verify.checks]]\nname = \"hc\"\ntype = \"exec\"\nservice = \"apii\"\ncommand = [\"true\"]\n");
        let (_, f) = review(
            &c,
            &file("services:\n  api:\n    build: .\n    ports: [\"127.0.0.1:${API_PORT}:8000\"]\n  cache:\n    image: memcached\n    restart: always\n  proxy:\n    image: nginx:latest\n    restart: always\n  db:\n    image: postgres@sha256:abc\n    restart: always\n"),
        );
        let restart = checks(&f, "restart");
        assert_eq!(restart.len(), 1, "{restart:?}");
        assert!(restart[0].starts_with("! api has no restart policy"), "{restart:?}");
        let http = checks(&f, "healthcheck");
        assert_eq!(http.len(), 2, "{http:?}");
        assert!(
            http[0].contains("api serves HTTP (port 8000)") && http[0].contains("http://127.0.0.1:8000/"),
            "{http:?}"
        );
        assert!(http[1].contains("proxy serves HTTP (port 80)"), "{http:?}");
        let tags = checks(&f, "image_tag");
        assert_eq!(tags.len(), 2, "{tags:?}");
        assert!(
            tags[0].contains("`memcached` has no tag") && tags[1].contains("`nginx:latest` is pinned to latest"),
            "{tags:?}"
        );
        let named = checks(&f, "services");
        assert!(
            named[0].starts_with("✗ check `hc` names service `apii`") && named[0].contains("api, cache, proxy, db"),
            "{named:?}"
        );
    }

    #[test]
    fn variables_without_defaults_must_be_defined_on_every_host() {
        let files = file("services:\n  api:\n    image: \"app:${TAG}\"\n    # ${IN_A_COMMENT}\n    command: [\"sh\", \"-c\", \"echo $$HOME ${GREETING:-hi}\"]\n    ports: [\"${BIND:?set BIND}:80\"]\n    environment:\n      HOME_DIR: $HOME\n");
        let host = |name: &str, names: &[&str], unsure: bool| Defined {
            host: name.into(),
            names: names.iter().map(|s| s.to_string()).collect(),
            unsure,
        };
        let f = variables(
            "prod",
            &files,
            &[host("web1", &["TAG", "BIND"], false), host("web2", &["BIND"], false)],
        );
        let lines: Vec<String> = f.iter().map(Finding::line).collect();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].starts_with(
                "✗ docker-compose.yml uses ${TAG}, which is not defined for prod on web2: compose puts an empty string"
            ),
            "{lines:?}"
        );
        let f = variables("prod", &files, &[host("web1", &["TAG"], false)]);
        assert!(
            f[0].line().contains("${BIND}") && f[0].line().contains("compose refuses"),
            "{:?}",
            f[0]
        );
        let f = variables("prod", &files, &[host("web1", &["TAG"], true)]);
        assert_eq!(
            f[0].level,
            super::super::Level::Warn,
            "a shared .env doctor cannot read: {:?}",
            f[0]
        );
        let f = variables("prod", &files, &[host("web1", &["TAG", "BIND"], false)]);
        assert_eq!(
            f[0].line(),
            "✓ every variable the compose files use without a default is defined for prod (BIND, TAG)"
        );
    }

    #[test]
    fn env_file_names_keep_names_only() {
        let names = env_file_names("# c\nexport A=1\nB = two\n9X=no\nC=x=y\n\n");
        assert_eq!(names.into_iter().collect::<Vec<_>>(), vec!["A", "B", "C"]);
    }
}
