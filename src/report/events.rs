//! What the pipeline says while it works. Reporters turn these into output.

use serde::Serialize;

use crate::verify::{CheckResult, Evidence};

/// One step of the work on a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Connect,
    Preflight,
    Lock,
    Push,
    Fetch,
    Upload,
    Build,
    /// Built images on their way from the builder to another host
    /// (`[build] on = "first"`): pushed and pulled, or streamed over SSH.
    Images,
    /// The release command (`[release]`, e.g. a migration).
    Release,
    Switch,
    Verify,
    Rollback,
    Record,
    /// The run confirms a switched host: its watchdog stands down.
    Confirm,
    Prune,
    Unlock,
    Setup,
}

impl Step {
    /// Steps that normally take well under a second.
    pub fn is_quick(self) -> bool {
        matches!(
            self,
            Step::Connect | Step::Preflight | Step::Lock | Step::Record | Step::Confirm | Step::Prune | Step::Unlock
        )
    }

    /// The step in the user's words.
    pub fn name(self) -> &'static str {
        match self {
            Step::Connect => "connect",
            Step::Preflight => "preflight",
            Step::Lock => "lock",
            Step::Push => "push",
            Step::Fetch => "fetch",
            Step::Upload => "upload",
            Step::Build => "build",
            Step::Images => "images",
            Step::Release => "release command",
            Step::Switch => "switch",
            Step::Verify => "verify",
            Step::Rollback => "rollback",
            Step::Record => "record",
            Step::Confirm => "confirm",
            Step::Prune => "prune",
            Step::Unlock => "unlock",
            Step::Setup => "setup",
        }
    }
}

/// Where a step is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum StepStatus {
    Started,
    Done {
        elapsed_ms: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    Failed {
        elapsed_ms: u64,
        error: String,
    },
}

/// How one host ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostSummary {
    pub host: String,
    /// The release live on the host at the end (`None`: none, or unknown).
    pub release: Option<String>,
    /// deployed, unchanged, rolled_back, rollback_failed, failed, interrupted, skipped, ok.
    pub outcome: String,
    pub elapsed_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The checklist's results on this host (empty when it did not run).
    pub checks: Vec<CheckResult>,
    /// Containers and log tails, when a check failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Evidence>,
    /// After a rollback: the checklist's results on the restored release.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rollback_checks: Vec<CheckResult>,
    /// Commands (SSH exec channels) the run made on this host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_commands: Option<usize>,
}

impl HostSummary {
    /// A host's line without checks.
    pub fn new(
        host: &str,
        release: Option<String>,
        outcome: &str,
        elapsed_ms: u64,
        error: Option<String>,
    ) -> HostSummary {
        HostSummary {
            host: host.into(),
            release,
            outcome: outcome.into(),
            elapsed_ms,
            error,
            checks: Vec::new(),
            evidence: None,
            rollback_checks: Vec::new(),
            remote_commands: None,
        }
    }
}

/// The last word of a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub command: String,
    pub env: String,
    /// ok, failed, rolled_back, rollback_failed, locked, interrupted, checks_failed.
    pub result: String,
    pub exit_code: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    pub elapsed_ms: u64,
    pub hosts: Vec<HostSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Everything a reporter can be told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The run begins.
    Start {
        command: String,
        env: String,
        hosts: Vec<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        release: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        commit: Option<String>,
    },
    /// A step on a host (or `host = "local"` for push) started, finished or failed.
    Step {
        host: String,
        step: Step,
        #[serde(flatten)]
        status: StepStatus,
    },
    /// Something the user should know that does not stop the run.
    Warning {
        #[serde(skip_serializing_if = "Option::is_none")]
        host: Option<String>,
        message: String,
    },
    /// Detail shown with `-v`: how the work is done, not what it found.
    Detail {
        #[serde(skip_serializing_if = "Option::is_none")]
        host: Option<String>,
        message: String,
    },
    /// A line of a plan (`--dry-run`) or other informational output.
    Info {
        #[serde(skip_serializing_if = "Option::is_none")]
        host: Option<String>,
        message: String,
    },
    /// A check finished on a host.
    Check {
        host: String,
        #[serde(flatten)]
        result: CheckResult,
    },
    /// A start-first switch of one service on a host (`app.zero_downtime`).
    StartFirst {
        host: String,
        service: String,
        #[serde(flatten)]
        phase: StartFirstPhase,
        /// The new containers' names.
        new: Vec<String>,
        /// The old containers' names.
        old: Vec<String>,
        /// Since the new containers were started.
        elapsed_ms: u64,
    },
    /// What a read-only command found on a host: `text` for people, `data` for JSON.
    Data {
        host: String,
        kind: String,
        data: serde_json::Value,
        #[serde(skip)]
        text: String,
    },
    /// Images streamed to a host: how much of the stream has been sent.
    Transfer {
        host: String,
        sent_bytes: u64,
        total_bytes: u64,
    },
    /// A line a host's command printed (logs, exec).
    Output { host: String, stream: String, line: String },
    /// What `deploy doctor` found (also the compose part at the end of `deploy init`).
    Finding(crate::doctor::Finding),
    /// The end.
    Summary(Summary),
}

/// Where a start-first switch of a service is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum StartFirstPhase {
    /// The new containers run beside the old ones; waiting until they are ready.
    Started {
        /// `healthcheck` or `http checks`.
        ready_when: String,
    },
    /// Every new container is ready; the old ones are drained and stopped next.
    Ready,
    /// A new container was not ready in time: the new ones were removed, the
    /// old ones were never stopped.
    NotReady { why: String },
    /// The old containers were stopped and removed.
    Replaced,
}

/// Receives events; implementations print them.
pub trait Reporter: Send + Sync {
    /// Handles one event.
    fn event(&self, event: Event);
}
