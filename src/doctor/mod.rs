//! `deploy doctor`'s findings: what would break a deploy, found before one
//! runs. [`compose`] reads the commit's compose files against deploy.toml (no
//! host needed; `deploy init` runs it too), [`host`] looks at each host.

pub mod compose;
pub mod host;

use serde::Serialize;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// Looked at, and fine (✓).
    Ok,
    /// A risk worth fixing; a deploy would still work (!).
    Warn,
    /// A deploy would fail, or the app would break (✗).
    Fail,
}

impl Level {
    /// ✓, ! or ✗.
    pub fn mark(self) -> &'static str {
        match self {
            Level::Ok => "✓",
            Level::Warn => "!",
            Level::Fail => "✗",
        }
    }
}

/// One thing doctor looked at, and what it found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// ✓, ! or ✗.
    pub level: Level,
    /// What was looked at, a stable name (`depends_on`, `restart`, `ssh`, `disk`, ...).
    pub check: String,
    /// The host it is about, for host findings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The compose service it is about, where there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// What was found, for people.
    pub message: String,
    /// What to do about it (absent when there is nothing to do).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Finding {
    /// A ✓ finding.
    pub fn ok(check: &str, message: impl Into<String>) -> Finding {
        Finding::new(Level::Ok, check, message, None)
    }

    /// A ! finding with its fix.
    pub fn warn(check: &str, message: impl Into<String>, fix: impl Into<String>) -> Finding {
        Finding::new(Level::Warn, check, message, Some(fix.into()))
    }

    /// A ✗ finding with its fix.
    pub fn fail(check: &str, message: impl Into<String>, fix: impl Into<String>) -> Finding {
        Finding::new(Level::Fail, check, message, Some(fix.into()))
    }

    fn new(level: Level, check: &str, message: impl Into<String>, fix: Option<String>) -> Finding {
        Finding {
            level,
            check: check.to_string(),
            host: None,
            service: None,
            message: message.into(),
            fix,
        }
    }

    /// The same finding about `service`.
    pub fn on_service(mut self, service: &str) -> Finding {
        self.service = Some(service.to_string());
        self
    }

    /// The same finding about `host`.
    pub fn on_host(mut self, host: &str) -> Finding {
        self.host = Some(host.to_string());
        self
    }

    /// The finding as one line for people: mark, host, message, fix.
    pub fn line(&self) -> String {
        format!(
            "{} {}{}{}",
            self.level.mark(),
            self.host.as_deref().map(|h| format!("[{h}] ")).unwrap_or_default(),
            self.message,
            self.fix.as_deref().map(|f| format!("; fix: {f}")).unwrap_or_default()
        )
    }
}

/// The worst level among `findings` (`Ok` when there are none).
pub fn worst(findings: &[Finding]) -> Level {
    findings.iter().map(|f| f.level).max().unwrap_or(Level::Ok)
}
