//! How a change to a live release ended: for the whole run and for each host.
//! One enum knows its exit code, its names in JSON and the history line it
//! leaves, so no outcome is ever spelled as a loose string.

use crate::error::Exit;
use crate::history::Recorded;

/// Which change a run makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// `deploy up`: a new release, built from a commit.
    Up,
    /// `deploy rollback`: a release the hosts kept.
    Rollback,
}

impl Change {
    /// The command's name in events and summaries.
    pub fn command(self) -> &'static str {
        match self {
            Change::Up => "deploy",
            Change::Rollback => "rollback",
        }
    }
}

/// How a run (or one host in it) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The run's release is live (and passed its checks where they ran).
    Deployed,
    /// Nothing changed here (another host failed first, or `--dry-run`).
    Unchanged,
    /// `--dry-run`: the plan was printed (run only).
    DryRun,
    /// Failed before anything live changed.
    Failed,
    /// Went live, failed, and the release from before was put back and verified.
    RolledBack,
    /// Putting the release from before back failed, or it fails its checks too.
    RollbackFailed,
    /// Someone else holds the lock (run only).
    Locked,
    /// Live with failing checks, left so on purpose (`--no-rollback`).
    ChecksFailed,
    /// Ctrl-C or SIGTERM; cleaned up.
    Interrupted,
}

impl Outcome {
    /// The process's exit code when this is the run's outcome.
    pub fn exit(self) -> Exit {
        match self {
            Outcome::Deployed | Outcome::Unchanged | Outcome::DryRun => Exit::Success,
            Outcome::Failed => Exit::Failed,
            Outcome::RolledBack => Exit::RolledBack,
            Outcome::RollbackFailed => Exit::RollbackFailed,
            Outcome::Locked => Exit::Locked,
            Outcome::ChecksFailed => Exit::ChecksFailed,
            Outcome::Interrupted => Exit::Interrupted,
        }
    }

    /// The summary's `result` when this is the run's outcome.
    pub fn result_name(self) -> &'static str {
        match self {
            Outcome::Deployed | Outcome::Unchanged => "ok",
            other => other.host_name(),
        }
    }

    /// A host's `outcome` in the summary.
    pub fn host_name(self) -> &'static str {
        match self {
            Outcome::Deployed => "deployed",
            Outcome::Unchanged => "unchanged",
            Outcome::DryRun => "dry_run",
            Outcome::Failed => "failed",
            Outcome::RolledBack => "rolled_back",
            Outcome::RollbackFailed => "rollback_failed",
            Outcome::Locked => "locked",
            Outcome::ChecksFailed => "checks_failed",
            Outcome::Interrupted => "interrupted",
        }
    }

    /// The history line a host with this outcome gets, in a run of `change`
    /// that ended with `run`.
    pub fn recorded(self, change: Change, run: Outcome) -> Option<Recorded> {
        Some(match (self, change) {
            (Outcome::Deployed, Change::Up) => Recorded::Deployed,
            (Outcome::Deployed, Change::Rollback) => Recorded::Rollback,
            (Outcome::Failed, _) => Recorded::Failed,
            (Outcome::RolledBack, _) => Recorded::RolledBack,
            (Outcome::RollbackFailed, _) => Recorded::RollbackFailed,
            (Outcome::ChecksFailed, _) => Recorded::ChecksFailed,
            (Outcome::Interrupted, _) => Recorded::Interrupted,
            // Nothing happened here: a run that was stopped says so, a run that
            // failed elsewhere failed here too, a run that succeeded left it be.
            (Outcome::Unchanged, _) => match run {
                Outcome::Interrupted => Recorded::Interrupted,
                Outcome::Deployed | Outcome::Unchanged | Outcome::DryRun | Outcome::Locked => return None,
                _ => Recorded::Failed,
            },
            (Outcome::DryRun | Outcome::Locked, _) => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_has_one_exit_code_and_name() {
        assert_eq!(Outcome::RolledBack.exit() as u8, 3);
        assert_eq!(Outcome::Deployed.result_name(), "ok");
        assert_eq!(Outcome::Deployed.host_name(), "deployed");
        assert_eq!(
            Outcome::Deployed.recorded(Change::Rollback, Outcome::Deployed),
            Some(Recorded::Rollback)
        );
        // A host that never changed in a failed run records the failure.
        assert_eq!(
            Outcome::Unchanged.recorded(Change::Up, Outcome::Failed),
            Some(Recorded::Failed)
        );
        assert_eq!(Outcome::Unchanged.recorded(Change::Up, Outcome::Locked), None);
    }
}
