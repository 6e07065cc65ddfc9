//! The README's CI recipes, taken from the README as written: their shell steps
//! run against a real sshd host the way GitHub Actions and GitLab CI would run
//! them (bash -eo pipefail, secrets in the environment, a fresh HOME), so a
//! recipe that stops working fails here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use yaml_rust2::{Yaml, YamlLoader};

use crate::harness::app::{Behaviour, Health};
use crate::harness::deployment::{Deployment, Setup};
use crate::harness::sshd::client_key;
use crate::harness::{git, open_tempdir, repo_root, sh};

/// The YAML block of the README whose first line is `# <file>`.
fn recipe(file: &str) -> Yaml {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in readme.lines() {
        match (&mut current, line) {
            (None, "```yaml") => current = Some(String::new()),
            (Some(_), "```") => blocks.push(current.take().unwrap()),
            (Some(text), l) => {
                text.push_str(l);
                text.push('\n');
            }
            (None, _) => {}
        }
    }
    let text = blocks
        .into_iter()
        .find(|b| b.lines().next() == Some(&format!("# {file}")))
        .unwrap_or_else(|| panic!("the README has no ```yaml block starting `# {file}`"));
    YamlLoader::load_from_str(&text).unwrap().remove(0)
}

/// A CI job's run: each shell step's exit code and what it printed.
struct Job {
    code: i32,
    output: String,
}

/// What the recipes write into the checkout.
const OUTPUTS: &[&str] = &[
    "deploy.jsonl",
    "deploy-summary.json",
    "verify.jsonl",
    "verify-summary.json",
];

/// Where a CI job runs: the checked-out app, a HOME of its own, the secrets.
struct Runner<'a> {
    checkout: &'a Path,
    home: tempfile::TempDir,
    secrets: BTreeMap<&'static str, String>,
}

impl Runner<'_> {
    /// `bash -eo pipefail` (what both CI systems run steps with) in the checkout,
    /// with `deploy` on PATH, HOME the runner's own and `env` set.
    fn bash(&self, script: &str, env: &BTreeMap<String, String>) -> (i32, String) {
        let bin = PathBuf::from(env!("CARGO_BIN_EXE_deploy"));
        let path = format!("{}:{}", bin.parent().unwrap().display(), std::env::var("PATH").unwrap());
        let out = Command::new("bash")
            .args(["--noprofile", "--norc", "-eo", "pipefail", "-c", script])
            .current_dir(self.checkout)
            .env("HOME", self.home.path())
            .env("PATH", path)
            .env("CI", "true")
            .env("NO_COLOR", "1")
            .envs(env)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), text)
    }

    /// Every job starts from a fresh checkout: no outputs of an earlier job.
    fn fresh_checkout(&self) {
        for f in OUTPUTS {
            let _ = std::fs::remove_file(self.checkout.join(f));
        }
    }

    /// `${{ secrets.NAME }}` as GitHub fills it in.
    fn expression(&self, value: &str) -> String {
        let re = regex::Regex::new(r"^\$\{\{ *secrets\.([A-Z_]+) *\}\}$").unwrap();
        let name = re
            .captures(value)
            .unwrap_or_else(|| panic!("an expression the test does not know: {value}"))[1]
            .to_string();
        self.secrets
            .get(name.as_str())
            .unwrap_or_else(|| panic!("no secret {name}"))
            .clone()
    }

    /// Runs job `job` of GitHub workflow `file` as Actions would: steps in
    /// order until one fails; `uses:` steps are GitHub's own (checkout: the
    /// app's directory is the checkout; upload-artifact: its paths must exist).
    fn github(&self, file: &str, job: &str) -> Job {
        self.fresh_checkout();
        let workflow = recipe(file);
        let steps = workflow["jobs"][job]["steps"].as_vec().expect("steps").clone();
        let mut output = String::new();
        let mut code = 0;
        // Whether a step was skipped because an earlier one failed.
        let mut skipped = false;
        let sha = git(self.checkout, &["rev-parse", "HEAD"]).trim().to_string();
        for step in &steps {
            let name = step["name"].as_str().unwrap_or("");
            if let Some(action) = step["uses"].as_str() {
                if action.starts_with("actions/upload-artifact") {
                    assert_eq!(
                        step["if"].as_str(),
                        Some("always()"),
                        "the summary is kept when the job fails too"
                    );
                    // Files of steps that never ran are not there (upload-artifact warns).
                    let paths = step["with"]["path"].as_str().unwrap();
                    for p in paths.lines().filter(|l| !l.trim().is_empty() && !skipped) {
                        assert!(self.checkout.join(p.trim()).exists(), "{name}: no {p} to keep");
                    }
                }
                continue;
            }
            if code != 0 {
                skipped = true;
                continue;
            }
            let run = step["run"].as_str().expect("a run step");
            assert!(
                !run.contains("${{"),
                "{name}: expressions belong in env:, not in the script"
            );
            if name == "Install deploy" {
                // The network is not here; the binary under test is on PATH instead.
                assert!(run.starts_with("cargo install --locked"), "{run}");
                continue;
            }
            let mut env: BTreeMap<String, String> = BTreeMap::from([
                ("GITHUB_SHA".to_string(), sha.clone()),
                ("GITHUB_ACTIONS".to_string(), "true".to_string()),
            ]);
            if let Some(vars) = step["env"].as_hash() {
                for (k, v) in vars {
                    env.insert(k.as_str().unwrap().to_string(), self.expression(v.as_str().unwrap()));
                }
            }
            let (c, text) = self.bash(run, &env);
            output.push_str(&format!("--- step {name} (exit {c})\n{text}"));
            code = c;
        }
        Job { code, output }
    }

    /// Runs job `job` of the GitLab recipe as a runner would: the template's
    /// `before_script` (it `extends`) and the job's `script`, in one shell.
    fn gitlab(&self, job: &str) -> Job {
        self.fresh_checkout();
        let ci = recipe(".gitlab-ci.yml");
        let j = &ci[job];
        let template = &ci[j["extends"].as_str().expect("extends")];
        let lines: Vec<&str> = template["before_script"]
            .as_vec()
            .unwrap()
            .iter()
            .chain(j["script"].as_vec().unwrap())
            .map(|l| l.as_str().unwrap())
            // The network is not here; the binary under test is on PATH instead.
            .filter(|l| !l.starts_with("cargo install --locked"))
            .collect();
        let sha = git(self.checkout, &["rev-parse", "--short", "HEAD"]).trim().to_string();
        let env = BTreeMap::from([
            ("CI_COMMIT_SHORT_SHA".to_string(), sha),
            ("DEPLOY_SSH_KEY".to_string(), self.secrets["DEPLOY_SSH_KEY"].clone()),
            (
                "DEPLOY_KNOWN_HOSTS".to_string(),
                self.secrets["DEPLOY_KNOWN_HOSTS"].clone(),
            ),
        ]);
        let (code, output) = self.bash(&lines.join("\n"), &env);
        for p in j["artifacts"]["paths"].as_vec().unwrap() {
            assert!(
                self.checkout.join(p.as_str().unwrap()).exists(),
                "{job}: no artifact {p:?}"
            );
        }
        assert_eq!(j["artifacts"]["when"].as_str(), Some("always"));
        Job { code, output }
    }
}

/// A host and an app whose deploy.toml is what a repository would commit for
/// CI: environment `prod`, host keys strict, the key and known_hosts where the
/// recipe writes them. (Named as `~/.ssh/...`: deploy reads `~` from HOME,
/// while ssh's own defaults come from the passwd entry, which the test must not
/// write to.)
fn ci_deployment() -> Deployment {
    let d = Deployment::new(
        Setup {
            extra: "[verify]\ntimeout = \"5s\"\n\n[[verify.checks]]\nname = \"api health\"\ntype = \"http\"\nurl = \"http://127.0.0.1:{API_PORT}/cgi-bin/health\"\nvia = \"direct\"\n".into(),
            ..Setup::default()
        },
        &Behaviour::version("one"),
    );
    let path = d.app.path().join("deploy.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let text = regex::Regex::new(r#"(?m)^identity_file = .*$"#)
        .unwrap()
        .replace(&text, "identity_file = \"~/.ssh/id_ed25519\"");
    let text = regex::Regex::new(r#"(?m)^known_hosts_file = .*$"#)
        .unwrap()
        .replace(&text, "known_hosts_file = \"~/.ssh/known_hosts\"");
    std::fs::write(&path, text.replace("[environments.test]", "[environments.prod]")).unwrap();
    // The app's later commits (`git add -A`) must not take in a job's outputs:
    // in CI they never reach the repository.
    let exclude = d.app.path().join(".git/info/exclude");
    let mut ignored = std::fs::read_to_string(&exclude).unwrap();
    ignored.push_str(&OUTPUTS.join("\n"));
    std::fs::write(exclude, ignored + "\n").unwrap();
    d
}

fn runner(d: &Deployment) -> Runner<'_> {
    Runner {
        checkout: d.app.path(),
        home: open_tempdir(),
        secrets: BTreeMap::from([
            ("DEPLOY_SSH_KEY", std::fs::read_to_string(client_key()).unwrap()),
            ("DEPLOY_KNOWN_HOSTS", d.host.known_hosts_line()),
        ]),
    }
}

/// What CI starts from: the commit is pushed (CI runs because it was).
fn push(d: &Deployment) {
    git(d.app.path(), &["push", "-q", "origin", "main"]);
}

fn summary(d: &Deployment, file: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(d.app.path().join(file)).unwrap();
    let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{file}: {e}: {text}"));
    assert_eq!(v["event"], "summary", "{v}");
    v
}

#[test]
fn the_github_actions_recipe_deploys_maps_exit_codes_keeps_the_summary_and_verifies() {
    let d = ci_deployment();
    push(&d);
    let ci = runner(&d);
    let job = ci.github(".github/workflows/deploy.yml", "deploy");
    assert_eq!(job.code, 0, "{}", job.output);
    assert!(job.output.contains("deployed and verified"), "{}", job.output);
    assert_eq!(d.version().as_deref(), Some("one"));
    let s = summary(&d, "deploy-summary.json");
    assert_eq!(
        (s["result"].as_str(), s["exit_code"].as_u64()),
        (Some("ok"), Some(0)),
        "{s}"
    );
    for line in std::fs::read_to_string(d.app.path().join("deploy.jsonl"))
        .unwrap()
        .lines()
    {
        serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    }
    let sha = git(d.app.path(), &["rev-parse", "HEAD"]).trim().to_string();
    assert_eq!(d.history().last().unwrap()["message"], format!("CI {sha}"));
    use std::os::unix::fs::PermissionsExt;
    let key = std::fs::metadata(ci.home.path().join(".ssh/id_ed25519")).unwrap();
    assert_eq!(key.permissions().mode() & 0o777, 0o600);

    // A release that fails its checks: exit 3 fails the job, says why, and
    // the summary is kept; the previous release serves.
    d.app.commit(&Behaviour {
        health: Health::Fails,
        ..Behaviour::version("two")
    });
    push(&d);
    let job = ci.github(".github/workflows/deploy.yml", "deploy");
    assert_eq!(job.code, 3, "{}", job.output);
    assert!(
        job.output
            .contains("::error::the release failed its checks; the previous release is back and verified"),
        "{}",
        job.output
    );
    assert_eq!(summary(&d, "deploy-summary.json")["result"], "rolled_back");
    assert_eq!(d.version().as_deref(), Some("one"));

    // The scheduled verify: the live release passes.
    let job = ci.github(".github/workflows/verify.yml", "verify");
    assert_eq!(job.code, 0, "{}", job.output);
    assert_eq!(summary(&d, "verify-summary.json")["result"], "ok");

    // Strict host keys: a known_hosts secret with another key for the host is refused.
    let other = open_tempdir();
    sh(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(other.path().join("key")));
    let other_key = std::fs::read_to_string(other.path().join("key.pub")).unwrap();
    let mut impostor = runner(&d);
    let fields: Vec<&str> = other_key.split_whitespace().collect();
    impostor.secrets.insert(
        "DEPLOY_KNOWN_HOSTS",
        format!("[127.0.0.1]:{} {} {}", d.host.port, fields[0], fields[1]),
    );
    let live = d.current();
    let job = impostor.github(".github/workflows/deploy.yml", "deploy");
    assert_eq!(job.code, 1, "{}", job.output);
    assert!(job.output.contains("::error::deploy failed (exit 1)"), "{}", job.output);
    assert_eq!(summary(&d, "deploy-summary.json")["result"], "failed");
    assert_eq!(d.current(), live, "nothing changed");

    // accept-new in deploy.toml is refused before deploy runs.
    let path = d.app.path().join("deploy.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("host_key_policy = \"strict\"", "host_key_policy = \"accept-new\""),
    )
    .unwrap();
    let job = ci.github(".github/workflows/deploy.yml", "deploy");
    assert_eq!(job.code, 1, "{}", job.output);
    assert!(
        job.output
            .contains("::error::deploy.toml says host_key_policy = \"accept-new\""),
        "{}",
        job.output
    );
    assert!(
        !job.output.contains("--- step Deploy"),
        "deploy never ran: {}",
        job.output
    );
}

#[test]
fn the_gitlab_recipe_deploys_fails_the_job_on_a_bad_release_and_verifies() {
    let d = ci_deployment();
    push(&d);
    let ci = runner(&d);
    let job = ci.gitlab("deploy");
    assert_eq!(job.code, 0, "{}", job.output);
    assert_eq!(d.version().as_deref(), Some("one"));
    assert_eq!(summary(&d, "deploy-summary.json")["result"], "ok");
    let short = git(d.app.path(), &["rev-parse", "--short", "HEAD"]).trim().to_string();
    assert_eq!(d.history().last().unwrap()["message"], format!("CI {short}"));

    d.app.commit(&Behaviour {
        health: Health::Fails,
        ..Behaviour::version("two")
    });
    push(&d);
    let job = ci.gitlab("deploy");
    assert_eq!(job.code, 3, "{}", job.output);
    assert!(job.output.contains("the release failed its checks"), "{}", job.output);
    assert_eq!(d.version().as_deref(), Some("one"));

    let job = ci.gitlab("verify");
    assert_eq!(job.code, 0, "{}", job.output);
    assert_eq!(summary(&d, "verify-summary.json")["result"], "ok");
}
