//! The end of a change: each host's history line, pruning and unlocking in
//! one command, and the Engine API's list of the images to prune, asked for
//! while the release is switched and verified rather than after.

use std::time::Instant;

use crate::fleet::{Fleet, LockGuard, Member};
use crate::history::{self, Entry};
use crate::live::LiveState;
use crate::lock;
use crate::outcome::{Change, Outcome};
use crate::release;
use crate::remote::Cmd;
use crate::report::events::{Event, Reporter, Step, StepStatus};
use crate::watchdog;

use super::hosts::Progress;
use super::{End, Run, STEP_TIMEOUT};

/// The end of a change on every host (`work`, see [`closing`]), in one
/// round trip each: its history line, pruning after a successful deploy
/// (done only while the lock is still ours), and unlocking.
pub(super) async fn finish(run: &Run<'_>, fleet: &Fleet, work: Vec<Closing>, guard: &LockGuard) {
    let reporter = run.reporter;
    fleet
        .for_each_with(work, |m, closing| async move {
            let cmds = closing.commands(m, guard, reporter).await;
            if !cmds.is_empty() {
                close_host(m, cmds, reporter).await;
            }
        })
        .await;
    guard.mark_released();
}

/// How long the closing command waits for the Engine API's list of the
/// images to prune before the host lists them itself.
const PRUNE_LISTING_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

/// What the end of a change does on one host (see [`finish`]).
pub(super) struct Closing {
    /// Its watchdog stands down: first, before anything slow (a prune) can run into its deadline.
    confirm: Option<Cmd>,
    /// Its history line.
    record: Option<Cmd>,
    /// The releases to prune.
    prune: Vec<String>,
    /// Their images, as the Engine API listed them while the release was
    /// switched and verified (see [`list_while`]): for these very releases.
    listed: Option<Listed>,
    unlock: Option<Cmd>,
    /// The override of a release staged here but never switched to (a
    /// batch the run did not reach): written with the first command, never
    /// failing it (see `Member::pending_override`).
    write: Option<Cmd>,
}

impl Closing {
    /// Its commands in order. The build tags of the releases to prune are
    /// listed through the Engine API where it answers; their removal stays in
    /// the host's command, which runs only while the lock is ours.
    async fn commands(self, m: &Member, guard: &LockGuard, reporter: &dyn Reporter) -> Vec<(Step, Cmd)> {
        let mut cmds = Vec::new();
        cmds.extend(self.confirm.map(|c| (Step::Confirm, c)));
        cmds.extend(self.record.map(|c| (Step::Record, c)));
        if !self.prune.is_empty() {
            let listed = match self.listed {
                Some(listed) => listed.found,
                None => {
                    reporter.event(Event::Detail {
                        host: Some(m.host.name.clone()),
                        message: "the images to prune were not listed during the switch; listing them now".into(),
                    });
                    list(m, &self.prune, reporter).await
                }
            };
            let found = match listed {
                Some(Ok(found)) => Some(found),
                Some(Err(why)) => {
                    reporter.event(Event::Detail {
                        host: Some(m.host.name.clone()),
                        message: format!(
                            "listing the images to prune through the Engine API failed ({why}); the host lists them"
                        ),
                    });
                    None
                }
                None => None,
            };
            let remove = release::remove(&m.layout, &m.host.project, &self.prune, found.as_deref());
            cmds.push((Step::Prune, lock::if_ours(&m.layout, guard.token(), 0, 0, &remove)));
        }
        cmds.extend(self.unlock.map(|c| (Step::Unlock, c)));
        if let (Some(write), Some((_, first))) = (self.write, cmds.first_mut()) {
            *first = release::anyway_then(&write, first);
        }
        cmds
    }
}

/// What [`finish`] does on each host: history lines where `recorded`, and
/// with the images to prune as `listed` during the switch.
pub(super) fn closing(
    run: &Run<'_>,
    fleet: &Fleet,
    states: &[LiveState],
    end: &End,
    recorded: bool,
    guard: &LockGuard,
    listed: Vec<Option<Listed>>,
) -> Vec<Closing> {
    let user = lock::whoami();
    let time = history::now();
    let message = run.request.message().map(str::to_string);
    let keep = *run.config.app.keep_releases.get_ref() as usize;
    let prune = run.change == Change::Up && end.outcome == Outcome::Deployed;
    let mut work = Vec::new();
    let mut listed = listed.into_iter();
    for (i, ((m, h), state)) in fleet.members.iter().zip(&run.hosts).zip(states).enumerate() {
        let confirm = (guard.holds(i) && guard.confirm() > 0 && h.progress == Progress::Switched)
            .then(|| watchdog::confirm(&m.layout, guard.token()));
        let release = h.to.as_ref().map(|r| r.release.clone()).or_else(|| run.release.clone());
        let line = h.outcome.recorded(run.change, end.outcome).filter(|_| recorded);
        let record = match (line, release) {
            (Some(outcome), Some(release)) => {
                let entry = Entry {
                    commit: h
                        .to
                        .as_ref()
                        .map(|r| r.commit.clone())
                        .or_else(|| run.commit.clone())
                        .unwrap_or_else(|| state.commit_of(&release)),
                    release,
                    time: time.clone(),
                    user: user.clone(),
                    outcome,
                    from: h.before().map(str::to_string),
                    to: h.live.clone(),
                    message: message.clone(),
                    release_command: run.ran.clone(),
                    unverified: run.request.no_verify() && !run.config.verify.checks.is_empty(),
                };
                Some(history::append(&m.layout, &entry))
            }
            _ => None,
        };
        let doomed = match (prune, h.to.as_ref()) {
            (true, Some(new)) => doomed(state, &new.release, h.before(), keep),
            _ => Vec::new(),
        };
        let unswitched = h.to.as_ref().filter(|_| h.progress == Progress::Staged);
        work.push(Closing {
            confirm,
            record,
            listed: listed.next().flatten().filter(|l| l.ids == doomed),
            prune: doomed,
            unlock: guard.holds(i).then(|| lock::release(&m.layout, Some(guard.token()))),
            write: unswitched.and_then(|r| m.pending_override(&r.release)),
        });
    }
    work
}

/// Runs one host's closing commands in one round trip, each reported as a step.
async fn close_host(m: &Member, cmds: Vec<(Step, Cmd)>, reporter: &dyn Reporter) {
    let host = m.host.name.as_str();
    let started = Instant::now();
    for (s, _) in &cmds {
        reporter.event(Event::Step {
            host: host.to_string(),
            step: *s,
            status: StepStatus::Started,
        });
    }
    let only: Vec<Cmd> = cmds.iter().map(|(_, c)| c.clone()).collect();
    let results = crate::remote::batch(m.remote.as_ref(), &only, Some(STEP_TIMEOUT)).await;
    let elapsed_ms = started.elapsed().as_millis() as u64;
    for (n, (s, _)) in cmds.iter().enumerate() {
        let status = match &results {
            Ok(outs) if outs.get(n).is_some_and(|o| o.success()) => StepStatus::Done {
                elapsed_ms,
                detail: None,
            },
            Ok(outs) => StepStatus::Failed {
                elapsed_ms,
                error: outs
                    .get(n)
                    .map(|o| format!("exited with {}: {}", o.code, crate::remote::tail(&o.stdout, 5)))
                    .unwrap_or_default(),
            },
            Err(e) => StepStatus::Failed {
                elapsed_ms,
                error: e.to_string(),
            },
        };
        reporter.event(Event::Step {
            host: host.to_string(),
            step: *s,
            status,
        });
    }
}

/// What to prune on a host after release `new` went live there: the oldest
/// releases beyond `keep`, never `new` nor the one it replaced (`before`: a
/// rollback goes back to it).
fn doomed(state: &LiveState, new: &str, before: Option<&str>, keep: usize) -> Vec<String> {
    let mut ids = state.releases.clone();
    ids.push(new.to_string());
    release::to_prune(ids, keep, Some(new), before)
}

/// The images of releases `ids`, as the Engine API listed them.
pub(super) struct Listed {
    ids: Vec<String>,
    /// `None`: the Engine API is not reachable here.
    found: Option<Result<Vec<String>, String>>,
}

/// The build tags of releases `ids` of `m`'s project through the Engine API
/// (see [`crate::engine::Engine::build_tags`]), connecting to it first if
/// no one has. Quick or not at all: in the closing command, the confirm is
/// due before the watchdog's deadline.
async fn list(m: &Member, ids: &[String], reporter: &dyn Reporter) -> Option<Result<Vec<String>, String>> {
    let listed = async {
        let engine = m.engine(reporter).await?;
        Some(engine.build_tags(&m.host.project, ids).await)
    };
    within_limit(listed).await
}

/// `listing`, or an error after [`PRUNE_LISTING_LIMIT`].
async fn within_limit(
    listing: impl std::future::Future<Output = Option<Result<Vec<String>, String>>>,
) -> Option<Result<Vec<String>, String>> {
    tokio::time::timeout(PRUNE_LISTING_LIMIT, listing)
        .await
        .unwrap_or_else(|_| {
            Some(Err(format!(
                "no answer within {}",
                humantime::format_duration(PRUNE_LISTING_LIMIT)
            )))
        })
}

/// For each host, the releases a successful deploy will prune there, once
/// its new release is staged: what [`list_while`] lists.
pub(super) fn to_list(run: &Run<'_>, states: &[LiveState]) -> Vec<Option<Vec<String>>> {
    let keep = *run.config.app.keep_releases.get_ref() as usize;
    run.hosts
        .iter()
        .zip(states)
        .map(|(h, state)| match (run.change, h.to.as_ref()) {
            (Change::Up, Some(new)) => Some(doomed(state, &new.release, h.before(), keep)).filter(|d| !d.is_empty()),
            _ => None,
        })
        .collect()
}

/// Runs `work` (the switch and the checklist of a staged release) while each
/// host's Engine API lists the images of the releases in `lists` (see
/// [`to_list`]), so the closing command need not wait for that list (tens of
/// milliseconds on an engine with many images). Read-only; under the lock
/// nothing else makes or removes those releases' images meanwhile, and the
/// host's command still removes only what no remaining release names. A run
/// that does not end deployed prunes nothing: its listing is dropped, not
/// waited for.
pub(super) async fn list_while(
    fleet: &Fleet,
    lists: Vec<Option<Vec<String>>>,
    reporter: &dyn Reporter,
    work: impl std::future::Future<Output = End>,
) -> (End, Vec<Option<Listed>>) {
    let listing = futures::future::join_all(fleet.members.iter().zip(lists).map(|(m, ids)| async move {
        let ids = ids?;
        // The connection as the switch makes it (or has made it); only the
        // listing itself is held to the limit.
        let found = match m.engine(reporter).await {
            Some(engine) => within_limit(async { Some(engine.build_tags(&m.host.project, &ids).await) }).await,
            None => None,
        };
        if let Some(Ok(found)) = &found {
            reporter.event(Event::Detail {
                host: Some(m.host.name.clone()),
                message: format!(
                    "{} image name(s) of release(s) {} to prune after a successful deploy, listed through the Engine API during the switch",
                    found.len(),
                    ids.join(", ")
                ),
            });
        }
        Some(Listed { ids, found })
    }));
    let work = std::pin::pin!(work);
    let listing = std::pin::pin!(listing);
    match futures::future::select(work, listing).await {
        futures::future::Either::Left((end, listing)) => {
            let listed = match end.outcome {
                Outcome::Deployed => listing.await,
                _ => Vec::new(),
            };
            (end, listed)
        }
        futures::future::Either::Right((listed, work)) => (work.await, listed),
    }
}
