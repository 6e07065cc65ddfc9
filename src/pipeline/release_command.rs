//! `[release]`: a command run in the new release's image after the build and
//! before any host switches: a database migration, typically. It runs with
//! `compose run --rm --no-deps` in the live project, so it reaches the live
//! database on the project's network. Not run by `deploy rollback`: migrations
//! must be backward compatible, so the release from before works with them.

use std::time::Instant;

use futures::stream::{self, StreamExt};

use super::{End, Run};
use crate::activation::Record;
use crate::config::{ReleaseCommand, ReleaseHosts};
use crate::fleet::{step, Fleet, LockGuard, Member, QUICK_TIMEOUT};
use crate::history::RanCommand;
use crate::outcome::Outcome;
use crate::release;
use crate::remote::{Cmd, Stream};
use crate::report::events::{Event, Reporter, Step};

/// Lines of the command's output kept for the summary when it fails.
const TAIL_LINES: usize = 30;

/// The `compose run` of the release command for `record` on `m`.
pub fn command(m: &Member, record: &Record, rc: &ReleaseCommand) -> Cmd {
    m.compose_for(record)
        .cmd(["run", "--rm", "--no-deps", "-T", "--name"])
        .arg(container_name(record))
        .arg(rc.service.as_str())
        .args(rc.command.iter())
}

/// The run's container, named so it can be removed if the run is stopped.
fn container_name(record: &Record) -> String {
    format!("{}-release-{}", record.project, record.release)
}

/// The hosts the command runs on: the first, or each.
pub fn hosts(rc: &ReleaseCommand, count: usize) -> Vec<usize> {
    match rc.hosts {
        ReleaseHosts::First => (0..count.min(1)).collect(),
        ReleaseHosts::Each => (0..count).collect(),
    }
}

/// Runs the release command where `[release] hosts` says; Err ends the run
/// before any switch (the caller removes the staged release).
pub(super) async fn run(run: &mut Run<'_>, fleet: &Fleet, guard: &LockGuard) -> Result<(), End> {
    let Some(rc) = run.config.release.as_ref() else {
        return Ok(());
    };
    guard.held(fleet).await.map_err(|why| {
        End::new(
            Outcome::Failed,
            format!("{why}; stopped before the release command, no host was changed"),
        )
    })?;
    let started = Instant::now();
    let targets: Vec<(usize, Record)> = hosts(rc, fleet.members.len())
        .into_iter()
        .filter_map(|i| Some((i, run.hosts[i].to.clone()?)))
        .collect();
    let reporter = run.reporter;
    let work = stream::iter(targets.iter().cloned())
        .map(|(i, record)| async move {
            let m = &fleet.members[i];
            (i, run_on(m, &record, rc, reporter).await)
        })
        .buffered(fleet.env.parallel.max(1))
        .collect::<Vec<_>>();
    let results = tokio::select! {
        r = work => Some(r),
        _ = run.interrupt.wait() => None,
    };
    let Some(results) = results else {
        stop(fleet, &targets).await;
        return Err(End::new(
            Outcome::Interrupted,
            "interrupted during the release command; it was stopped, every host is still on its previous release"
                .to_string(),
        ));
    };
    let shown = targets
        .first()
        .map(|(i, r)| command(&fleet.members[*i], r, rc).display())
        .unwrap_or_default();
    let mut codes = Vec::new();
    let mut failed = Vec::new();
    for (i, (code, r)) in results {
        // -1: no exit code (it timed out, or the connection broke).
        codes.push(code.unwrap_or(-1));
        if let Err(e) = r {
            run.hosts[i].fail(Outcome::Failed, e.clone());
            failed.push(format!("{}: {e}", run.hosts[i].name));
        }
    }
    run.ran = Some(RanCommand {
        hosts: targets.iter().map(|(i, _)| run.hosts[*i].name.clone()).collect(),
        command: shown,
        codes,
        elapsed_ms: started.elapsed().as_millis() as u64,
    });
    if !failed.is_empty() {
        // A run past its timeout leaves its container behind.
        stop(fleet, &targets).await;
        return Err(End::new(
            Outcome::Failed,
            format!(
                "the release command failed, no host was switched: {}",
                failed.join("; ")
            ),
        ));
    }
    Ok(())
}

/// Runs it on one host, its output streamed line by line: its exit code (if
/// it exited), and Err with what went wrong and the output's last lines.
async fn run_on(
    m: &Member,
    record: &Record,
    rc: &ReleaseCommand,
    reporter: &dyn Reporter,
) -> (Option<i32>, Result<(), String>) {
    let pid_file = format!("{}/release-{}.pid", m.layout.state(), record.release);
    let cmd = release::tracked(&command(m, record, rc), &pid_file);
    let host = m.host.name.clone();
    let mut tail: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    let mut exited = None;
    let result = step(reporter, &host, Step::Release, async {
        let mut sink = |s: Stream, line: &str| {
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(line.to_string());
            reporter.event(Event::Output {
                host: host.clone(),
                stream: if s == Stream::Stdout { "stdout" } else { "stderr" }.into(),
                line: line.to_string(),
            });
        };
        let code = m
            .remote
            .stream(&cmd.into(), Some(rc.timeout), &mut sink)
            .await
            .map_err(|e| e.to_string())?;
        exited = Some(code);
        match code {
            0 => Ok(()),
            n => Err(format!("exited with {n}")),
        }
    })
    .await;
    let result = result.map_err(|e| {
        let tail: Vec<String> = tail.into_iter().collect();
        match tail.is_empty() {
            true => e,
            false => format!("{e}; its last lines:\n{}", tail.join("\n")),
        }
    });
    (exited, result)
}

/// Stops the command wherever it may still run: its process group, then its container.
async fn stop(fleet: &Fleet, targets: &[(usize, Record)]) {
    stream::iter(targets)
        .for_each_concurrent(None, |(i, record)| async move {
            let m = &fleet.members[*i];
            let pid_file = format!("{}/release-{}.pid", m.layout.state(), record.release);
            let _ = m
                .remote
                .run(&release::stop_tracked(&pid_file).into(), Some(QUICK_TIMEOUT))
                .await;
            let rm = Cmd::new("docker").args(["rm", "-f"]).arg(container_name(record));
            let _ = m.remote.run(&rm.into(), Some(QUICK_TIMEOUT)).await;
        })
        .await;
}
