//! The three reporters: live lines on a TTY (indicatif), plain timestamped lines
//! elsewhere, and JSON lines.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::events::{Event, Reporter, StartFirstPhase, StepStatus, Summary};
use crate::config::Secret;
use crate::verify::CheckResult;

fn secs(ms: u64) -> String {
    format!("{:.1}s", ms as f64 / 1000.0)
}

/// "4.2 of 12.3 MB sent".
fn sent(bytes: u64, total: u64) -> String {
    let mb = |b: u64| b as f64 / 1_000_000.0;
    format!("{:.1} of {:.1} MB sent", mb(bytes), mb(total))
}

/// One JSON object per line on stdout.
pub struct JsonReporter {
    pub secrets: Vec<Secret>,
}

impl Reporter for JsonReporter {
    fn event(&self, event: Event) {
        let line = serde_json::to_string(&event).expect("events serialize");
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", super::json_line(&line, &self.secrets));
        let _ = out.flush();
    }
}

/// Plain `TIME [host] step status` lines on stderr, the summary on stdout.
pub struct PlainReporter {
    pub secrets: Vec<Secret>,
    pub quiet: bool,
    /// `-vv`: the summary shows each host's number of remote commands.
    pub counts: bool,
    /// `-v`: detail events are shown.
    pub details: bool,
}

impl Reporter for PlainReporter {
    fn event(&self, event: Event) {
        let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
        let line = match &event {
            Event::Summary(s) => {
                let text = summary_table(s, self.counts);
                let _ = write!(std::io::stdout().lock(), "{}", super::human(&text, &self.secrets));
                return;
            }
            Event::Output { .. } | Event::Data { .. } | Event::Finding(_) => {
                if self.quiet && matches!(&event, Event::Finding(f) if f.level != crate::doctor::Level::Fail) {
                    return;
                }
                if let Some(text) = describe(&event) {
                    let _ = writeln!(std::io::stdout().lock(), "{}", super::human(&text, &self.secrets));
                }
                return;
            }
            _ if self.quiet && !matches!(event, Event::Warning { .. }) => return,
            Event::Detail { .. } if !self.details => return,
            // Quick steps say only how they ended; long ones also when they start.
            Event::Step {
                step,
                status: StepStatus::Started,
                ..
            } if step.is_quick() => return,
            other => describe(other),
        };
        if let Some(line) = line {
            let _ = writeln!(std::io::stderr().lock(), "{now} {}", super::human(&line, &self.secrets));
        }
    }
}

/// An event as one line for people, or None for events that have no line.
fn describe(event: &Event) -> Option<String> {
    match event {
        // Every line of it already starts with `[host]`.
        Event::Data { .. } => one_event(event),
        _ => one_event(event).map(|line| indented(&line)),
    }
}

/// Continuation lines indented, so text from a host (a command's stderr in an
/// error) can never pass for a line of deploy's own.
fn indented(text: &str) -> String {
    text.trim_end_matches('\n').replace('\n', "\n    ")
}

/// An event as text for people, or None for events that have no line.
fn one_event(event: &Event) -> Option<String> {
    Some(match event {
        Event::Start {
            command,
            env,
            hosts,
            release,
            commit,
        } => format!(
            "[{env}] {command} {}{}to {} host{}: {}",
            commit
                .as_deref()
                .map(|c| format!("commit {} ", &c[..c.len().min(7)]))
                .unwrap_or_default(),
            release.as_deref().map(|r| format!("as {r} ")).unwrap_or_default(),
            hosts.len(),
            if hosts.len() == 1 { "" } else { "s" },
            hosts.join(", ")
        ),
        Event::Step { host, step, status } => match status {
            StepStatus::Started => format!("[{host}] {} ...", step.name()),
            StepStatus::Done { elapsed_ms, detail } => format!(
                "[{host}] {} done ({}){}",
                step.name(),
                secs(*elapsed_ms),
                detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default()
            ),
            StepStatus::Failed { elapsed_ms, error } => {
                format!("[{host}] {} FAILED ({}): {error}", step.name(), secs(*elapsed_ms))
            }
        },
        Event::Warning { host, message } => match host {
            Some(h) => format!("[{h}] warning: {message}"),
            None => format!("warning: {message}"),
        },
        Event::Detail { host, message } => match host {
            Some(h) => format!("[{h}] {message}"),
            None => message.clone(),
        },
        Event::Info { host, message } => match host {
            Some(h) => format!("[{h}] {message}"),
            None => message.clone(),
        },
        Event::Check { host, result } => format!("[{host}] {}", check_line(result)),
        Event::StartFirst {
            host,
            service,
            phase,
            new,
            old,
            elapsed_ms,
        } => {
            let them = |names: &[String]| match names.len() {
                1 => format!("container {}", names[0]),
                _ => format!("containers {}", names.join(", ")),
            };
            match phase {
                StartFirstPhase::Started { ready_when } => format!(
                    "[{host}] {service}: new {} started beside the old {}; waiting for its {ready_when}",
                    them(new),
                    them(old)
                ),
                StartFirstPhase::Ready => {
                    format!("[{host}] {service}: new {} ready ({})", them(new), secs(*elapsed_ms))
                }
                StartFirstPhase::NotReady { why } => format!(
                    "[{host}] {service}: new {} not ready ({}): {why}; removed, the old {} kept serving",
                    them(new),
                    secs(*elapsed_ms),
                    them(old)
                ),
                StartFirstPhase::Replaced => format!(
                    "[{host}] {service}: old {} stopped and removed ({} since the new ones started)",
                    them(old),
                    secs(*elapsed_ms)
                ),
            }
        }
        Event::Data { host, text, .. } => text
            .lines()
            .map(|l| format!("[{host}] {l}"))
            .collect::<Vec<_>>()
            .join("\n"),
        Event::Output { host, line, .. } => format!("[{host}] {line}"),
        Event::Transfer {
            host,
            sent_bytes,
            total_bytes,
        } => format!("[{host}] images: {}", sent(*sent_bytes, *total_bytes)),
        Event::Finding(f) => f.line(),
        Event::Summary(_) => return None,
    })
}

/// One check's result for people.
fn check_line(c: &CheckResult) -> String {
    if c.skipped {
        return format!("check {}: skipped ({})", c.name, c.detail);
    }
    format!(
        "check {} {} ({} attempt{}, {}): {}",
        c.name,
        if c.ok { "passed" } else { "FAILED" },
        c.attempts,
        if c.attempts == 1 { "" } else { "s" },
        secs(c.elapsed_ms),
        c.detail
    )
}

/// The closing table: host, release, outcome, time; then the result line.
pub fn summary_table(s: &Summary, counts: bool) -> String {
    let mut out = String::new();
    if !s.hosts.is_empty() {
        let w = s.hosts.iter().map(|h| h.host.len()).max().unwrap_or(4).max(4);
        let rw = s
            .hosts
            .iter()
            .map(|h| h.release.as_deref().unwrap_or("-").len())
            .max()
            .unwrap_or(7)
            .max(7);
        out.push_str(&format!(
            "{:<w$}  {:<rw$}  {:<16}  {:>6}  {:>7}\n",
            "HOST", "RELEASE", "OUTCOME", "CHECKS", "TIME"
        ));
        for h in &s.hosts {
            let run: Vec<&CheckResult> = h.checks.iter().filter(|c| !c.skipped).collect();
            let checks = if run.is_empty() {
                "-".to_string()
            } else {
                format!("{}/{}", run.iter().filter(|c| c.ok).count(), run.len())
            };
            out.push_str(&format!(
                "{:<w$}  {:<rw$}  {:<16}  {checks:>6}  {:>7}\n",
                h.host,
                h.release.as_deref().unwrap_or("-"),
                h.outcome,
                secs(h.elapsed_ms)
            ));
            if let (true, Some(n)) = (counts, h.remote_commands) {
                out.push_str(&format!("    {n} remote commands\n"));
            }
            if let Some(e) = &h.error {
                for line in e.lines() {
                    out.push_str(&format!("    {line}\n"));
                }
            }
            for c in &h.checks {
                out.push_str(&format!("    {}\n", check_line(c)));
            }
            if !h.rollback_checks.is_empty() {
                out.push_str("    after the rollback:\n");
                for c in &h.rollback_checks {
                    out.push_str(&format!("      {}\n", check_line(c)));
                }
            }
            if let Some(ev) = &h.evidence {
                out.push_str("    containers:\n");
                for c in &ev.containers {
                    out.push_str(&format!("      {} {} ({})\n", c.service, c.state, c.status));
                }
                for (service, lines) in &ev.logs {
                    out.push_str(&format!("    last {} log lines of {service}:\n", lines.len()));
                    for l in lines {
                        out.push_str(&format!("      {l}\n"));
                    }
                }
                for (container, probes) in &ev.health {
                    out.push_str(&format!("    last healthchecks of {container}:\n"));
                    for p in probes {
                        out.push_str(&format!("      {p}\n"));
                    }
                }
            }
        }
    }
    out.push_str(&format!(
        "{}{}: {}{} in {}\n",
        s.command,
        if s.env.is_empty() {
            String::new()
        } else {
            format!(" {}", s.env)
        },
        s.result.replace('_', " "),
        s.release.as_deref().map(|r| format!(" ({r})")).unwrap_or_default(),
        secs(s.elapsed_ms)
    ));
    if let Some(e) = &s.error {
        out.push_str(&format!("error: {}\n", indented(e)));
    }
    out
}

/// A live line per host with a spinner (on a TTY).
pub struct LiveReporter {
    secrets: Vec<Secret>,
    multi: MultiProgress,
    bars: Mutex<BTreeMap<String, ProgressBar>>,
    /// `-vv`: the summary shows each host's number of remote commands.
    counts: bool,
    /// `-v`: detail events are shown.
    details: bool,
}

impl LiveReporter {
    pub fn new(secrets: Vec<Secret>, verbosity: i8) -> LiveReporter {
        LiveReporter {
            secrets,
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            bars: Mutex::new(BTreeMap::new()),
            counts: verbosity >= 2,
            details: verbosity >= 1,
        }
    }

    fn bar(&self, host: &str) -> ProgressBar {
        let mut bars = self.bars.lock().unwrap_or_else(|e| e.into_inner());
        bars.entry(host.to_string())
            .or_insert_with(|| {
                let bar = self.multi.add(ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template("{spinner} {prefix:.bold} {wide_msg}").expect("valid template"),
                );
                bar.set_prefix(host.to_string());
                bar.enable_steady_tick(Duration::from_millis(100));
                bar
            })
            .clone()
    }
}

impl Reporter for LiveReporter {
    fn event(&self, event: Event) {
        match &event {
            Event::Step { host, step, status } => {
                let bar = self.bar(host);
                let msg = match status {
                    StepStatus::Started => format!("{} ...", step.name()),
                    StepStatus::Done { elapsed_ms, .. } => format!("{} done ({})", step.name(), secs(*elapsed_ms)),
                    StepStatus::Failed { error, .. } => {
                        format!("{} FAILED: {}", step.name(), error.lines().next().unwrap_or(""))
                    }
                };
                bar.set_message(super::human(&msg, &self.secrets));
            }
            Event::Transfer {
                host,
                sent_bytes,
                total_bytes,
            } => {
                self.bar(host)
                    .set_message(format!("images: {}", sent(*sent_bytes, *total_bytes)));
            }
            Event::Summary(s) => {
                for bar in self.bars.lock().unwrap_or_else(|e| e.into_inner()).values() {
                    bar.finish();
                }
                let _ = write!(
                    std::io::stdout().lock(),
                    "{}",
                    super::human(&summary_table(s, self.counts), &self.secrets)
                );
            }
            Event::Output { .. } | Event::Data { .. } | Event::Finding(_) => {
                if let Some(text) = describe(&event) {
                    let _ = self
                        .multi
                        .suspend(|| writeln!(std::io::stdout().lock(), "{}", super::human(&text, &self.secrets)));
                }
            }
            Event::Detail { .. } if !self.details => {}
            other => {
                if let Some(line) = describe(other) {
                    let _ = self.multi.println(super::human(&line, &self.secrets));
                }
            }
        }
    }
}
