//! Making a release live. Each release carries a record of how to run it
//! (compose files, services, project, compose variant), written when it was
//! staged, so putting an old release back never depends on today's deploy.toml.

use serde::{Deserialize, Serialize};

use crate::compose::{Compose, Variant, ENV_FILE, OVERRIDE_FILE};
use crate::config::Config;
use crate::fleet::{LockGuard, Member, STEP_TIMEOUT};
use crate::lock;
use crate::release;
use crate::remote::Cmd;
use crate::remote::RemoteError;

/// The file in each release that holds its [`Record`].
pub const RECORD_FILE: &str = ".deploy-release.json";

/// What activating a release needs, as it was when the release was staged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The release id.
    pub release: String,
    /// The full commit id.
    pub commit: String,
    /// The compose project it runs as.
    pub project: String,
    /// Compose files relative to the release dir, without deploy's override.
    pub compose_files: Vec<String>,
    /// The services `up` starts on this host; empty: all of them.
    pub services: Vec<String>,
    /// The services built for it (their images are named in the override file).
    pub build: Vec<String>,
    /// The env file with the host's compose variables, relative to the release dir.
    pub env_file: String,
    /// The Compose it was built and started with.
    pub compose: Variant,
    /// The compose profiles it runs with.
    #[serde(default)]
    pub profiles: Vec<String>,
    /// Written by an older `deploy` that kept no record: built from today's config.
    #[serde(skip)]
    pub inferred: bool,
}

impl Record {
    /// The record a release staged now on `m` gets.
    pub fn new(config: &Config, m: &Member, release: &str, commit: &str, build: &[String]) -> Record {
        Record {
            release: release.to_string(),
            commit: commit.to_string(),
            project: m.host.project.clone(),
            compose_files: config
                .app
                .compose_files
                .iter()
                .map(|f| f.expose().to_string())
                .collect(),
            services: m.runs(),
            build: m.builds(build),
            env_file: ENV_FILE.to_string(),
            compose: m.variant.unwrap_or(Variant::V2),
            profiles: config.app.profiles.clone(),
            inferred: false,
        }
    }

    /// For a release staged before records existed: today's config, said so by `inferred`.
    pub fn inferred(config: &Config, m: &Member, release: &str) -> Record {
        let commit = release.rsplit('-').next().unwrap_or("").to_string();
        let mut r = Record::new(config, m, release, &commit, &[]);
        r.inferred = true;
        r
    }

    /// Parses a record file; `None` for anything that is not one.
    pub fn parse(text: &str) -> Option<Record> {
        serde_json::from_str(text.trim()).ok()
    }

    /// The file's text.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a record serializes") + "\n"
    }
}

impl Member {
    /// Compose for release `record` on this host: its own files and project,
    /// with the Compose it was made with where the host still has it.
    pub fn compose_for(&self, record: &Record) -> Compose {
        let variant = if self.variants.contains(&record.compose) {
            record.compose
        } else {
            self.variant.unwrap_or(Variant::V2)
        };
        let mut files = record.compose_files.clone();
        files.push(OVERRIDE_FILE.to_string());
        Compose {
            variant,
            project: record.project.clone(),
            dir: self.layout.release(&record.release),
            files,
            vars: self.host.vars.clone(),
            profiles: record.profiles.clone(),
        }
    }

    /// The live release's record (from preflight), or one from today's config.
    pub fn live_record(&self, config: &Config) -> Option<Record> {
        let current = self.current.as_deref()?;
        Some(
            self.record
                .clone()
                .filter(|r| r.release == current)
                .unwrap_or_else(|| Record::inferred(config, self, current)),
        )
    }
}

/// Makes release `record` live from its images (built at staging, or kept): no
/// build, one command, run only while this run's `lock` holds on the
/// host. Missing images are reported at once (compose would try to pull them);
/// a service still on another image after `up` is recreated. `first` runs
/// before all of it (the old release's `down`).
pub async fn activate(m: &Member, record: &Record, lock: &LockGuard, first: Option<&Cmd>) -> Result<(), RemoteError> {
    let target = record.release.as_str();
    let compose = m.compose_for(record);
    let cmd = release::activate(
        first,
        &release::before_up(&m.layout, target),
        &compose
            .cmd(["up", "-d", "--remove-orphans", "--no-build"])
            .args(record.services.iter()),
        &release::after_up(&m.layout, &record.project, target),
        &compose.cmd(["up", "-d", "--no-build", "--force-recreate"]),
        &release::point_current(&m.layout, target),
    );
    m.remote
        .check(
            &lock::if_ours(&m.layout, lock.token(), lock.ttl(), lock.confirm(), &cmd).into(),
            Some(STEP_TIMEOUT),
        )
        .await
        .map(|_| ())
        .map_err(|e| e.named(&format!("start release {target}")))
}

/// Whether `e` says the command did not run because the lock is not ours.
pub fn lock_not_ours(e: &RemoteError) -> bool {
    matches!(e, RemoteError::Failed { code, .. } if *code == lock::NOT_OURS)
}

/// Switches the host from `from` (if any) to `to`, while `lock` is ours: `down` of the old release first where the app asks for it
/// (`down_before_up`, never with `-v`: named volumes survive), then [`activate`].
pub async fn switch(
    config: &Config,
    m: &Member,
    from: Option<&Record>,
    to: &Record,
    lock: &LockGuard,
) -> Result<(), RemoteError> {
    let down = from
        .filter(|_| config.app.down_before_up)
        .map(|prev| m.compose_for(prev).cmd(["down", "--remove-orphans"]));
    activate(m, to, lock, down.as_ref()).await
}
