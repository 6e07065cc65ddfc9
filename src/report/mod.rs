//! All output goes through here: the printer knows the output format, quiet and
//! verbose, and scrubs every secret from what it prints.

pub mod events;
pub mod progress;

use std::io::{IsTerminal, Write};

use crate::cli::{Color, OutputFormat};
use crate::config::{Secret, REDACTED};
use crate::error::{chain, Error};

/// Prints results and errors in the chosen format.
#[derive(Debug)]
pub struct Printer {
    format: OutputFormat,
    verbosity: i8,
    color: bool,
    secrets: Vec<Secret>,
}

impl Printer {
    /// A printer for the global flags.
    pub fn new(format: OutputFormat, verbose: u8, quiet: bool, color: Color) -> Self {
        let color = match color {
            Color::Always => true,
            Color::Never => false,
            Color::Auto => std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        };
        Printer {
            format,
            verbosity: if quiet { -1 } else { verbose.min(3) as i8 },
            color,
            secrets: Vec::new(),
        }
    }

    /// Adds values that must never be printed.
    pub fn add_secrets(&mut self, secrets: &[Secret]) {
        self.secrets.extend(secrets.iter().cloned());
    }

    /// The chosen format.
    pub fn format(&self) -> OutputFormat {
        self.format
    }

    /// Whether colors are on.
    pub fn color(&self) -> bool {
        self.color
    }

    /// The reporter for a run's events: JSON lines, live lines on a TTY, or plain lines.
    pub fn reporter(&self) -> Box<dyn events::Reporter> {
        let secrets = self.secrets.clone();
        match self.format {
            OutputFormat::Json => Box::new(progress::JsonReporter { secrets }),
            OutputFormat::Human if std::io::stderr().is_terminal() && self.verbosity >= 0 => {
                Box::new(progress::LiveReporter::new(secrets))
            }
            OutputFormat::Human => Box::new(progress::PlainReporter {
                secrets,
                quiet: self.verbosity < 0,
            }),
        }
    }

    /// Replaces every secret value in `text`.
    pub fn redact(&self, text: &str) -> String {
        redact(text, &self.secrets)
    }

    /// A result line for people (stdout); nothing in JSON mode or when quiet.
    pub fn info(&self, text: &str) {
        if self.format == OutputFormat::Human && self.verbosity >= 0 {
            let _ = writeln!(std::io::stdout(), "{}", self.redact(text));
        }
    }

    /// Detail shown with -v (stderr, so stdout stays the result).
    pub fn verbose(&self, text: &str) {
        if self.verbosity >= 1 {
            let _ = writeln!(std::io::stderr(), "{}", self.redact(text));
        }
    }

    /// A warning (stderr), shown unless quiet.
    pub fn warn(&self, text: &str) {
        if self.verbosity >= 0 {
            let _ = writeln!(std::io::stderr(), "warning: {}", self.redact(text));
        }
    }

    /// One JSON object on its own line (stdout), in JSON mode only.
    pub fn json(&self, value: &serde_json::Value) {
        if self.format == OutputFormat::Json {
            let _ = writeln!(std::io::stdout(), "{}", self.redact(&value.to_string()));
        }
    }

    /// The error that ended the command: stderr for people; in JSON mode also a
    /// result object on stdout so a pipeline always gets one.
    pub fn error(&self, err: &Error) {
        let text = self.redact(&chain(err));
        let shown = if text.starts_with("error") {
            text.clone()
        } else {
            format!("error: {text}")
        };
        let _ = writeln!(std::io::stderr(), "{shown}");
        if self.format == OutputFormat::Json {
            let value = serde_json::json!({
                "event": "result",
                "result": "error",
                "exit_code": err.exit() as u8,
                "error": text,
            });
            let _ = writeln!(std::io::stdout(), "{value}");
        }
    }
}

/// Replaces each secret's value in `text` with a marker. Values shorter than
/// three characters are left alone: scrubbing every `a` would make output unreadable
/// while protecting nothing a guess would not find.
pub fn redact(text: &str, secrets: &[Secret]) -> String {
    let mut out = text.to_string();
    for secret in secrets {
        let value = secret.expose();
        if value.len() < 3 {
            continue;
        }
        // Inside JSON a value with quotes, backslashes or control characters is escaped.
        let escaped = serde_json::to_string(value).unwrap_or_default();
        let escaped = escaped.trim_matches('"');
        for form in [value, escaped] {
            if out.contains(form) {
                out = out.replace(form, REDACTED);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_the_json_escaped_form_too() {
        let s = [Secret::new("pa\"ss\\word")];
        let json = serde_json::json!({ "line": "got pa\"ss\\word" }).to_string();
        assert!(!redact(&json, &s).contains("ss"), "{}", redact(&json, &s));
    }

    #[test]
    fn redacts_every_occurrence() {
        let s = [Secret::new("hunter2")];
        assert_eq!(redact("a hunter2 b hunter2", &s), format!("a {REDACTED} b {REDACTED}"));
    }
}
