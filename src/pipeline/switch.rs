//! Switching: batch by batch, each batch verified before the next; on a failure
//! (or Ctrl-C) every switched host goes back to the release it was on, and the
//! checklist runs again there.

use futures::stream::{self, StreamExt};

use super::{End, Progress, Run};
use crate::activation::{self, Record, Switching};
use crate::fleet::{step, Fleet, LockGuard, Member};
use crate::history::{Entry, Recorded};
use crate::lock;
use crate::outcome::{Change, Outcome};
use crate::remote::Cmd;
use crate::report::events::Step;
use crate::verify::{self, Evidence, HostChecks};
use crate::watchdog;

/// Why the roll-out stopped before every batch was live and verified.
enum Halt {
    /// A switch failed on a host.
    SwitchFailed(String),
    /// The checklist failed on some hosts.
    ChecksFailed(String),
    /// Ctrl-C or SIGTERM.
    Interrupted,
    /// The lock is no longer ours: no further change may be made.
    LockLost(String),
}

/// Switches every host to its `to` release, batch by batch, verifying each
/// batch; on a failure puts the switched hosts back. The run's end.
pub(super) async fn roll_out(run: &mut Run<'_>, fleet: &Fleet, guard: &LockGuard) -> End {
    let halt = match switch_batches(run, fleet, guard).await {
        Ok(()) => return End::new(Outcome::Deployed, None),
        Err(halt) => halt,
    };
    let what = match run.change {
        Change::Up => "the new release",
        Change::Rollback => "the rollback target",
    };
    let (failure, checks_failed) = match halt {
        Halt::LockLost(why) => return lock_lost(run, fleet, why).await,
        Halt::Interrupted => return interrupted(run, fleet, guard).await,
        Halt::SwitchFailed(f) => (f, false),
        Halt::ChecksFailed(f) => (f, true),
    };
    if let Some(why) = run.request.leave_failures(run.config) {
        return if checks_failed {
            for h in run
                .hosts
                .iter_mut()
                .filter(|h| h.checks.iter().any(|c| !c.ok && !c.skipped))
            {
                h.outcome = Outcome::ChecksFailed;
            }
            End::new(
                Outcome::ChecksFailed,
                format!("{failure}; {why}: {what} stays live{}", still_before(run)),
            )
        } else {
            End::new(
                Outcome::RollbackFailed,
                format!("{failure}; {why}: left as it is, a person must look now"),
            )
        };
    }
    if let Some(why) = guard.known_lost() {
        return lock_lost(run, fleet, format!("{failure}; then {why}")).await;
    }
    let restored = restore(run, fleet, guard, run.verifying()).await;
    match restored {
        Ok(()) => End::new(
            Outcome::RolledBack,
            format!("{failure}; every host was put back on the release it was on, and it passed its checks"),
        ),
        Err(also) => End::new(
            Outcome::RollbackFailed,
            format!("{failure}; {also}: a person must look now"),
        ),
    }
}

/// Ctrl-C: switched hosts go back (not re-verified: the user wants out) if the
/// lock is still ours. Exit 130 only when that worked.
async fn interrupted(run: &mut Run<'_>, fleet: &Fleet, guard: &LockGuard) -> End {
    let switched = run.hosts.iter().any(|h| h.progress == Progress::Switched);
    for h in run.hosts.iter_mut().filter(|h| h.outcome == Outcome::Unchanged) {
        h.outcome = Outcome::Interrupted;
    }
    if !switched {
        return End::new(
            Outcome::Interrupted,
            "interrupted before the switch; every host is still on its previous release".to_string(),
        );
    }
    if let Some(why) = guard.known_lost() {
        return lock_lost(run, fleet, format!("interrupted during the switch; then {why}")).await;
    }
    match restore(run, fleet, guard, false).await {
        Ok(()) => End::new(
            Outcome::Interrupted,
            "interrupted during the switch; switched hosts were put back (not verified again)".to_string(),
        ),
        Err(also) => End::new(
            Outcome::RollbackFailed,
            format!("interrupted during the switch; {also}: a person must look now"),
        ),
    }
}

/// "; still on the release from before: web3, web4" for hosts a stopped
/// roll-out never switched (the fleet is mixed), or nothing.
fn still_before(run: &Run<'_>) -> String {
    let left: Vec<&str> = run
        .hosts
        .iter()
        .filter(|h| h.progress != Progress::Switched && h.to.is_some() && h.needs_switch())
        .map(|h| h.name.as_str())
        .collect();
    match left.is_empty() {
        true => String::new(),
        false => format!("; still on the release from before: {}", left.join(", ")),
    }
}

/// Switches and verifies batch after batch until all are done or one fails.
async fn switch_batches(run: &mut Run<'_>, fleet: &Fleet, guard: &LockGuard) -> Result<(), Halt> {
    let batch = run.env.batch.unwrap_or(fleet.members.len()).max(1);
    let indices: Vec<usize> = (0..fleet.members.len()).collect();
    for chunk in indices.chunks(batch) {
        if run.interrupt.is_set() {
            return Err(Halt::Interrupted);
        }
        // Each switch checks the lock on its host itself (one command); what
        // the keeper found out meanwhile stops the run before the batch.
        if let Some(why) = guard.known_lost() {
            return Err(Halt::LockLost(why));
        }
        switch_batch(run, fleet, chunk, guard).await?;
        if !run.verifying() {
            continue;
        }
        let checked = tokio::select! {
            r = verify_hosts(run, fleet, chunk, false) => Some(r),
            _ = run.interrupt.wait() => None,
        };
        let failed = absorb(run, chunk, checked.ok_or(Halt::Interrupted)?);
        if !failed.is_empty() {
            return Err(Halt::ChecksFailed(format!("checks failed: {}", failed.join("; "))));
        }
    }
    Ok(())
}

/// How far a host's switch got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    /// Nothing ran: no switch was needed, or its first command was refused for the lock.
    Nothing,
    /// It ran, whether it succeeded or not.
    Begun,
    /// It began, then a later command of it was refused for the lock.
    LostMidway,
}

/// Switches the hosts of one batch, `parallel` at a time. A switch in progress
/// is never abandoned half-way.
async fn switch_batch(run: &mut Run<'_>, fleet: &Fleet, chunk: &[usize], guard: &LockGuard) -> Result<(), Halt> {
    // Host, whether it needs a switch, from, to, and its watchdog's arming.
    type Todo = (usize, bool, Option<Record>, Record, Option<Cmd>);
    let todo: Vec<Todo> = chunk
        .iter()
        .filter_map(|&i| {
            let h = &run.hosts[i];
            let to = h.to.clone()?;
            let arm = watchdog_for(run, &fleet.members[i], h.from.as_ref(), &to, guard);
            Some((i, h.needs_switch(), h.from.clone(), to, arm))
        })
        .collect();
    let reporter = run.reporter;
    let sw = Switching {
        config: run.config,
        reporter,
        interrupt: Some(run.interrupt),
    };
    let sw = &sw;
    type Switched = (usize, Reach, Result<(), String>, Option<Evidence>);
    let results: Vec<Switched> = stream::iter(todo)
        .map(|(i, needs_switch, from, to, arm)| async move {
            let m = &fleet.members[i];
            if !needs_switch {
                // Already there (a rollback to the release it runs): nothing to switch.
                return (i, Reach::Nothing, Ok(()), None);
            }
            let mut reach = Reach::Begun;
            let mut evidence = None;
            let r = step(reporter, &m.host.name, Step::Switch, async {
                let r = activation::switch(sw, m, from.as_ref(), &to, guard, arm.as_ref()).await;
                reach = match &r {
                    Err(e) if activation::lock_not_ours(e) => Reach::Nothing,
                    Err(activation::SwitchError::LockLostMidway(_)) => Reach::LostMidway,
                    _ => Reach::Begun,
                };
                if let Err(e) = &r {
                    evidence = e.evidence().cloned();
                }
                r
            })
            .await;
            (i, reach, r, evidence)
        })
        .buffer_unordered(fleet.env.parallel.max(1))
        .collect()
        .await;
    let mut failure = None;
    let mut lost = Vec::new();
    for (i, reach, r, evidence) in results {
        let h = &mut run.hosts[i];
        if let (Reach::Nothing, Err(e)) = (reach, &r) {
            // The lock was not ours there (the error says why): nothing ran.
            lost.push(e.clone());
            continue;
        }
        if evidence.is_some() {
            h.evidence = evidence;
        }
        if reach != Reach::Nothing {
            // A failed `up` may have replaced some containers: it counts as switched, to be put back.
            h.progress = Progress::Switched;
        }
        if let (Reach::LostMidway, Err(e)) = (reach, &r) {
            // Switched, and no further change may be made: the run stops as for any lost lock.
            h.fail(Outcome::Failed, e.clone());
            lost.push(e.clone());
            continue;
        }
        match r {
            Ok(()) => {
                h.live = h.to.as_ref().map(|t| t.release.clone());
                h.outcome = Outcome::Deployed;
            }
            Err(e) => {
                // Remote errors already start with the host's name.
                let named = if e.starts_with(&h.name) {
                    e.clone()
                } else {
                    format!("{}: {e}", h.name)
                };
                h.fail(Outcome::Failed, e);
                failure.get_or_insert(named);
            }
        }
    }
    if !lost.is_empty() {
        return Err(Halt::LockLost(lost.join("; ")));
    }
    match failure {
        // Ctrl-C cut a start-first switch short: put back what switched, as for any interrupt.
        Some(_) if run.interrupt.is_set() => Err(Halt::Interrupted),
        Some(f) => Err(Halt::SwitchFailed(f)),
        None => Ok(()),
    }
}

/// The command that arms the dead-man switch on a host about to switch from
/// `from` to `to` (see [`crate::watchdog`]); none on a host's first deploy
/// (nothing to go back to) or without watchdogs.
fn watchdog_for(run: &Run<'_>, m: &Member, from: Option<&Record>, to: &Record, guard: &LockGuard) -> Option<Cmd> {
    let from = from?;
    if guard.confirm() == 0 {
        return None;
    }
    let entry = Entry {
        release: to.release.clone(),
        commit: to.commit.clone(),
        time: String::new(),
        user: lock::whoami(),
        outcome: Recorded::RevertedByWatchdog,
        from: Some(from.release.clone()),
        to: Some(from.release.clone()),
        message: run.request_message(),
        release_command: None,
        unverified: false,
    };
    Some(watchdog::arm(
        &m.layout,
        guard.token(),
        guard.confirm(),
        &activation::plain(m, from),
        &entry,
    ))
}

/// The checklist on hosts `indices`: against their `to` release, or after a
/// restore against the release they were put back on.
async fn verify_hosts(run: &Run<'_>, fleet: &Fleet, indices: &[usize], restored: bool) -> Vec<HostChecks> {
    let records: Vec<Record> = run
        .hosts
        .iter()
        .zip(&fleet.members)
        .map(|(h, m)| {
            let r = if restored { h.from.clone() } else { h.to.clone() };
            r.unwrap_or_else(|| Record::inferred(run.config, m, ""))
        })
        .collect();
    verify::verify_members(run.config, fleet, indices, |i| records[i].clone(), run.reporter).await
}

/// Stores each host's check results; returns "host: check, check" for hosts that failed.
fn absorb(run: &mut Run<'_>, indices: &[usize], checked: Vec<HostChecks>) -> Vec<String> {
    let mut failed = Vec::new();
    for (&i, host) in indices.iter().zip(checked) {
        if !host.ok() {
            failed.push(format!("{}: {}", host.host, host.failed_names().join(", ")));
        }
        run.hosts[i].absorb(host, false);
    }
    failed
}

/// Puts every switched host back on the release it was on, then (`verify`)
/// runs the checklist there. Err says what did not come back.
async fn restore(run: &mut Run<'_>, fleet: &Fleet, guard: &LockGuard, verify: bool) -> Result<(), String> {
    let todo: Vec<(usize, Option<Record>)> = run
        .hosts
        .iter()
        .enumerate()
        .filter(|(_, h)| h.progress == Progress::Switched)
        .map(|(i, h)| (i, h.from.clone()))
        .collect();
    let reporter = run.reporter;
    // A restore is never cut short: there is nothing left to put back to.
    let sw = Switching {
        config: run.config,
        reporter,
        interrupt: None,
    };
    let sw = &sw;
    let results: Vec<(usize, Result<(), String>)> = stream::iter(todo)
        .map(|(i, from)| async move {
            let m = &fleet.members[i];
            let r = step(reporter, &m.host.name, Step::Rollback, async {
                match &from {
                    Some(record) => activation::activate(sw, m, record, guard, None)
                        .await
                        .map_err(|e| e.to_string()),
                    None => {
                        Err("this was the host's first deploy: there is no previous release to put back".to_string())
                    }
                }
            })
            .await;
            (i, r)
        })
        .buffer_unordered(fleet.env.parallel.max(1))
        .collect()
        .await;
    let mut not_back = Vec::new();
    let mut back = Vec::new();
    for (i, r) in results {
        let h = &mut run.hosts[i];
        match r {
            Ok(()) => {
                h.live = h.before().map(str::to_string);
                h.outcome = Outcome::RolledBack;
                back.push(i);
            }
            Err(e) => {
                not_back.push(h.name.clone());
                h.fail(
                    Outcome::RollbackFailed,
                    format!("putting the release from before back failed: {e}"),
                );
            }
        }
    }
    // Hosts that never switched but failed the checklist (a rollback that found
    // them on its target) were on their own release all along: check them too.
    if verify {
        back.extend(
            run.hosts
                .iter()
                .enumerate()
                .filter(|(_, h)| h.progress != Progress::Switched && h.checks.iter().any(|c| !c.ok && !c.skipped))
                .map(|(i, _)| i),
        );
        back.sort_unstable();
        let checked = verify_hosts(run, fleet, &back, true).await;
        let mut failed = Vec::new();
        for (&i, host) in back.iter().zip(checked) {
            if !host.ok() {
                failed.push(format!("{}: {}", host.host, host.failed_names().join(", ")));
                run.hosts[i].outcome = Outcome::RollbackFailed;
            }
            run.hosts[i].absorb(host, true);
        }
        if !failed.is_empty() {
            let mut why = format!("the release put back fails its checks too: {}", failed.join("; "));
            if !not_back.is_empty() {
                why = format!("{} could not be put back; {why}", not_back.join(", "));
            }
            return Err(why);
        }
    }
    match not_back.is_empty() {
        true => Ok(()),
        false => Err(format!("{} could not be put back", not_back.join(", "))),
    }
}

/// The lock is gone: nothing more may change. Hosts already switched stay as
/// they are, for a person to look at; a staged release no host switched to is
/// removed (it is this run's own, nobody else's).
async fn lock_lost(run: &mut Run<'_>, fleet: &Fleet, why: String) -> End {
    let switched: Vec<String> = run
        .hosts
        .iter()
        .filter(|h| h.progress == Progress::Switched)
        .map(|h| h.name.clone())
        .collect();
    if switched.is_empty() {
        if let (Change::Up, Some(id)) = (run.change, run.release.clone()) {
            super::up::discard(fleet, &id, run.reporter).await;
        }
        return End::new(
            Outcome::Failed,
            format!("{why}; stopped before the switch, every host is still on its previous release"),
        );
    }
    End::new(
        Outcome::RollbackFailed,
        format!(
            "{why}; stopped without the lock after switching {}: nothing was put back, a person must look now",
            switched.join(", ")
        ),
    )
}
