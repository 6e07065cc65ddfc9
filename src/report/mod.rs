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
                Box::new(progress::LiveReporter::new(secrets, self.verbosity))
            }
            OutputFormat::Human => Box::new(progress::PlainReporter {
                secrets,
                quiet: self.verbosity < 0,
                counts: self.verbosity >= 2,
                details: self.verbosity >= 1,
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
            let _ = writeln!(std::io::stdout(), "{}", human(text, &self.secrets));
        }
    }

    /// Detail shown with -v (stderr, so stdout stays the result).
    pub fn verbose(&self, text: &str) {
        if self.verbosity >= 1 {
            let _ = writeln!(std::io::stderr(), "{}", human(text, &self.secrets));
        }
    }

    /// A warning (stderr), shown unless quiet.
    pub fn warn(&self, text: &str) {
        if self.verbosity >= 0 {
            let _ = writeln!(std::io::stderr(), "warning: {}", human(text, &self.secrets));
        }
    }

    /// A document the command exists to print (a completion script, a man
    /// page), written to stdout as it is, in every format.
    pub fn document(&self, text: &str) {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    }

    /// One JSON object on its own line (stdout), in JSON mode only.
    pub fn json(&self, value: &serde_json::Value) {
        if self.format == OutputFormat::Json {
            let _ = writeln!(std::io::stdout(), "{}", json_line(&value.to_string(), &self.secrets));
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
        let _ = writeln!(std::io::stderr(), "{}", printable(&shown));
        if self.format == OutputFormat::Json {
            let value = serde_json::json!({
                "event": "result",
                "result": "error",
                "exit_code": err.exit() as u8,
                "error": text,
            });
            let _ = writeln!(std::io::stdout(), "{}", json_line(&value.to_string(), &[]));
        }
    }
}

/// `text` made safe to print for people: every control character but tab and
/// newline is shown as an escape (`\x1b`, `\x7f`, `\u{9b}`) instead of
/// reaching the terminal, where a host's log line could otherwise move the
/// cursor, retitle the window or rewrite what was printed before (C0, DEL, C1).
/// Every human reporter and the [`Printer`] print through [`human`], which ends here.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| c.is_control() && c != '\n' && c != '\t';
    if !text.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            c if !unsafe_char(c) => out.push(c),
            c if (c as u32) < 0x80 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Human output: secrets replaced, then control characters made visible.
pub fn human(text: &str, secrets: &[Secret]) -> String {
    printable(&redact(text, secrets)).into_owned()
}

/// A line of JSON made safe for a terminal without changing its value:
/// serde_json escapes C0 itself but writes DEL and C1 raw; outside strings
/// JSON has no such characters, so each becomes a `\u00XX` escape.
pub fn json_line(line: &str, secrets: &[Secret]) -> String {
    let line = redact(line, secrets);
    if !line.chars().any(char::is_control) {
        return line;
    }
    let mut out = String::with_capacity(line.len() + 8);
    for c in line.chars() {
        if c.is_control() {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
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
    fn control_characters_are_shown_not_sent_to_the_terminal() {
        let raw = "\u{1b}[31mred\u{1b}]0;title\u{7}\r\u{7f}\u{9b}2J\tok\nnext";
        let shown = printable(raw);
        assert_eq!(shown, "\\x1b[31mred\\x1b]0;title\\x07\\x0d\\x7f\\u{9b}2J\tok\nnext");
        assert!(!shown.chars().any(|c| c.is_control() && c != '\n' && c != '\t'));
        assert!(matches!(printable("plain text"), std::borrow::Cow::Borrowed(_)));
    }

    #[test]
    fn json_lines_escape_c0_del_and_c1_and_keep_their_value() {
        let value = serde_json::json!({ "line": "\u{1b}[1m\u{7}\u{7f}\u{85}\u{9b}x" });
        let line = json_line(&value.to_string(), &[]);
        assert!(!line.chars().any(char::is_control), "{line:?}");
        let back: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(back, value);
        assert!(line.contains("\\u001b[1m"), "{line}");
    }

    #[test]
    fn redacts_every_occurrence() {
        let s = [Secret::new("hunter2")];
        assert_eq!(redact("a hunter2 b hunter2", &s), format!("a {REDACTED} b {REDACTED}"));
    }
}
