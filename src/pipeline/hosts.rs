//! Where each host of a run got to: typed, so the phases hand each other facts,
//! not strings.

use std::time::Instant;

use crate::activation::Record;
use crate::outcome::Outcome;
use crate::report::events::HostSummary;
use crate::verify::{CheckResult, Evidence, HostChecks};

/// How far a host got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Progress {
    /// Nothing done on it yet.
    Untouched,
    /// The release is on it, not live.
    Staged,
    /// `up` ran for the release: containers may have changed.
    Switched,
}

/// One host in a run.
#[derive(Debug, Clone)]
pub struct HostRun {
    pub name: String,
    pub started: Instant,
    /// The release live when the lock was taken (read under it), with its record.
    pub from: Option<Record>,
    /// The release this run makes live here.
    pub to: Option<Record>,
    pub progress: Progress,
    /// The release live at the end.
    pub live: Option<String>,
    pub outcome: Outcome,
    pub error: Option<String>,
    pub checks: Vec<CheckResult>,
    pub evidence: Option<Evidence>,
    pub rollback_checks: Vec<CheckResult>,
    /// Commands the run made on the host (counted before the connection closes).
    pub remote_commands: Option<usize>,
}

impl HostRun {
    /// A host nothing has happened on yet.
    pub fn new(name: &str) -> HostRun {
        HostRun {
            name: name.to_string(),
            started: Instant::now(),
            from: None,
            to: None,
            progress: Progress::Untouched,
            live: None,
            outcome: Outcome::Unchanged,
            error: None,
            checks: Vec::new(),
            evidence: None,
            rollback_checks: Vec::new(),
            remote_commands: None,
        }
    }

    /// The release live before this run, by id.
    pub fn before(&self) -> Option<&str> {
        self.from.as_ref().map(|r| r.release.as_str())
    }

    /// Whether this run has to switch the host (a rollback finds some already there).
    pub fn needs_switch(&self) -> bool {
        match (&self.to, self.before()) {
            (Some(to), Some(before)) => to.release != before,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }

    /// Marks the host failed with `error` (a remote error already names its host).
    pub fn fail(&mut self, outcome: Outcome, error: String) {
        self.outcome = outcome;
        self.error = Some(match self.error.take() {
            Some(before) => format!("{before}\n{error}"),
            None => error,
        });
    }

    /// Stores the checklist's results (`after_restore`: of the release put back).
    pub fn absorb(&mut self, checked: HostChecks, after_restore: bool) {
        if after_restore {
            self.rollback_checks = checked.checks;
            if self.evidence.is_none() {
                self.evidence = checked.evidence;
            }
        } else {
            self.checks = checked.checks;
            self.evidence = checked.evidence;
        }
    }

    /// The host's line in the summary.
    pub fn summary(&self) -> HostSummary {
        HostSummary {
            host: self.name.clone(),
            release: self.live.clone(),
            outcome: self.outcome.host_name().into(),
            elapsed_ms: self.started.elapsed().as_millis() as u64,
            error: self.error.clone(),
            checks: self.checks.clone(),
            evidence: self.evidence.clone(),
            rollback_checks: self.rollback_checks.clone(),
            remote_commands: self.remote_commands,
        }
    }
}
