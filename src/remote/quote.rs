//! Every value that goes into a remote command is quoted here, and only here.

use std::fmt;

use crate::config::{Text, REDACTED};

/// One word of a command: shown as-is, or redacted when it is a secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Word {
    value: String,
    secret: bool,
}

impl Word {
    /// The real value.
    pub fn expose(&self) -> &str {
        &self.value
    }
}

impl From<&str> for Word {
    fn from(s: &str) -> Word {
        Word {
            value: s.to_string(),
            secret: false,
        }
    }
}

impl From<String> for Word {
    fn from(value: String) -> Word {
        Word { value, secret: false }
    }
}

impl From<&String> for Word {
    fn from(s: &String) -> Word {
        Word::from(s.as_str())
    }
}

impl From<&Text> for Word {
    fn from(t: &Text) -> Word {
        Word {
            value: t.expose().to_string(),
            secret: t.is_secret(),
        }
    }
}

impl fmt::Debug for Word {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.secret {
            f.write_str(REDACTED)
        } else {
            fmt::Debug::fmt(&self.value, f)
        }
    }
}

/// Quotes `s` for a POSIX shell so it arrives as exactly one literal word.
///
/// Single quotes make everything literal (`$`, backticks, `;`, newlines) except
/// `'` itself, which is closed, escaped and reopened: `it's` becomes `'it'\''s'`.
/// Plain words that need no quoting are left bare so commands stay readable.
pub fn quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@%+,".contains(&b));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// A command built from typed parts: program, arguments, environment and the
/// directory it runs in. [`Cmd::to_shell`] is the only way it becomes a string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmd {
    program: Word,
    args: Vec<Word>,
    env: Vec<(String, Word)>,
    cwd: Option<Word>,
    stdout_to: Option<Word>,
}

impl Cmd {
    /// A command that runs `program`.
    pub fn new(program: impl Into<Word>) -> Cmd {
        Cmd {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            cwd: None,
            stdout_to: None,
        }
    }

    /// Adds one argument.
    pub fn arg(mut self, arg: impl Into<Word>) -> Cmd {
        self.args.push(arg.into());
        self
    }

    /// Adds arguments.
    pub fn args<W: Into<Word>>(mut self, args: impl IntoIterator<Item = W>) -> Cmd {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable for the command.
    ///
    /// # Panics
    /// If `name` is not a valid variable name: names come from code and config keys
    /// that were validated, never from a host.
    pub fn env(mut self, name: &str, value: impl Into<Word>) -> Cmd {
        assert!(
            name.bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "invalid environment variable name {name:?}"
        );
        self.env.push((name.to_string(), value.into()));
        self
    }

    /// Runs the command in `dir`.
    pub fn current_dir(mut self, dir: impl Into<Word>) -> Cmd {
        self.cwd = Some(dir.into());
        self
    }

    /// Writes the command's stdout to `path` (replacing it).
    pub fn stdout_to(mut self, path: impl Into<Word>) -> Cmd {
        self.stdout_to = Some(path.into());
        self
    }

    /// The command as one POSIX shell string, every value quoted.
    pub fn to_shell(&self) -> String {
        self.render(|w| quote(w.expose()))
    }

    /// The whole command as one word, for a shell that runs it (`sh -c <word>`);
    /// secret if any part of it is.
    pub fn as_word(&self) -> Word {
        let secret = self.args.iter().chain(std::iter::once(&self.program)).any(|w| w.secret)
            || self.env.iter().any(|(_, w)| w.secret)
            || self.cwd.as_ref().is_some_and(|w| w.secret);
        Word {
            value: self.to_shell(),
            secret,
        }
    }

    /// The command as a person may see it: secrets replaced by a marker.
    pub fn display(&self) -> String {
        self.render(|w| {
            if w.secret {
                REDACTED.to_string()
            } else {
                quote(w.expose())
            }
        })
    }

    fn render(&self, word: impl Fn(&Word) -> String) -> String {
        let mut out = String::new();
        if let Some(dir) = &self.cwd {
            out.push_str("cd ");
            out.push_str(&word(dir));
            out.push_str(" && ");
        }
        for (name, value) in &self.env {
            out.push_str(name);
            out.push('=');
            out.push_str(&word(value));
            out.push(' ');
        }
        out.push_str(&word(&self.program));
        for arg in &self.args {
            out.push(' ');
            out.push_str(&word(arg));
        }
        if let Some(path) = &self.stdout_to {
            out.push_str(" > ");
            out.push_str(&word(path));
        }
        out
    }
}

/// Commands run one after the other, stopping at the first that fails.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Script {
    steps: Vec<Cmd>,
}

impl Script {
    /// An empty script.
    pub fn new() -> Script {
        Script::default()
    }

    /// Adds a step.
    pub fn then(mut self, cmd: Cmd) -> Script {
        self.steps.push(cmd);
        self
    }

    /// The script as one shell string.
    pub fn to_shell(&self) -> String {
        self.steps
            .iter()
            .map(|c| format!("( {} )", c.to_shell()))
            .collect::<Vec<_>>()
            .join(" && ")
    }

    /// The script as a person may see it.
    pub fn display(&self) -> String {
        self.steps.iter().map(Cmd::display).collect::<Vec<_>>().join(" && ")
    }
}

impl From<Cmd> for Script {
    fn from(cmd: Cmd) -> Script {
        Script::new().then(cmd)
    }
}

/// What is sent to a host: `sh -c <script>`, so the login shell's own syntax
/// never matters, optionally under `timeout` so a command that outlives its
/// time is stopped on the host itself, with everything it started.
pub fn wrap(script: &Script, timeout: Option<std::time::Duration>) -> String {
    let inner = format!("sh -c {}", quote(&script.to_shell()));
    match timeout {
        // -k: if TERM is ignored, KILL 5 s later. The whole process group is signalled.
        Some(t) => format!("timeout -k 5 {} {inner}", t.as_secs_f64().max(0.001)),
        None => inner,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_words_stay_bare_and_others_are_single_quoted() {
        assert_eq!(quote("docker"), "docker");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote("$(touch /tmp/x)"), "'$(touch /tmp/x)'");
        assert_eq!(quote("a\nb"), "'a\nb'");
    }

    #[test]
    fn secrets_are_redacted_in_display_only() {
        let secret = Text::Secret(crate::config::Secret::new("hunter2"));
        let cmd = Cmd::new("redis-cli").arg("-a").arg(&secret).current_dir("/srv/app");
        assert_eq!(cmd.to_shell(), "cd /srv/app && redis-cli -a hunter2");
        assert_eq!(cmd.display(), format!("cd /srv/app && redis-cli -a {REDACTED}"));
    }

    #[test]
    fn wrap_runs_sh_under_timeout() {
        let s = Script::from(Cmd::new("echo").arg("a b"));
        assert_eq!(wrap(&s, None), r"sh -c '( echo '\''a b'\'' )'");
        assert!(wrap(&s, Some(std::time::Duration::from_secs(3))).starts_with("timeout -k 5 3 sh -c "));
    }
}
