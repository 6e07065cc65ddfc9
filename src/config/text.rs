//! Config strings: `${VAR}` interpolation and secrets that never print.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer};

/// A value that came from the environment. Debug and Display never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The real value, for the one place that must use it (a command, a login).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// What a redacted value looks like wherever it would have been shown.
pub const REDACTED: &str = "[redacted]";

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// A string value from deploy.toml after `${VAR}` interpolation.
///
/// Any value that took something from the environment is secret as a whole:
/// `"redis://:${PASS}@redis"` must not print its host part either, since the
/// parts cannot be told apart once joined.
#[derive(Clone, PartialEq, Eq)]
pub enum Text {
    /// Written in the file as it is.
    Plain(String),
    /// Took at least one `${VAR}` from the environment.
    Secret(Secret),
}

impl Text {
    /// The real value.
    pub fn expose(&self) -> &str {
        match self {
            Text::Plain(s) => s,
            Text::Secret(s) => s.expose(),
        }
    }

    /// Whether the value came (partly) from the environment.
    pub fn is_secret(&self) -> bool {
        matches!(self, Text::Secret(_))
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Self {
        Text::Plain(s.to_string())
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Text::Plain(s) => fmt::Debug::fmt(s, f),
            Text::Secret(s) => fmt::Debug::fmt(s, f),
        }
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Text::Plain(s) => f.write_str(s),
            Text::Secret(s) => fmt::Display::fmt(s, f),
        }
    }
}

/// Where `${VAR}` looks values up while a file is being parsed.
#[derive(Debug, Default, Clone)]
pub struct Variables {
    /// Values from the optional `env_file`; the process environment wins over them.
    pub file: BTreeMap<String, String>,
}

impl Variables {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().or_else(|| self.file.get(name).cloned())
    }
}

thread_local! {
    // serde gives a Deserialize impl no context of its own; the loader installs the
    // variables for the duration of one parse (see `with_variables`). Interpolating
    // while deserializing lets toml attach the value's span to a missing-variable error.
    static VARIABLES: RefCell<Option<Variables>> = const { RefCell::new(None) };
    // Every secret made during that parse, so output can be scrubbed of them.
    static SECRETS: RefCell<Vec<Secret>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with `vars` as the source of `${VAR}` values for every `Text` it
/// parses; returns its result and every secret those values produced.
pub fn with_variables<T>(vars: Variables, f: impl FnOnce() -> T) -> (T, Vec<Secret>) {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            VARIABLES.with(|v| *v.borrow_mut() = None);
            SECRETS.with(|s| s.borrow_mut().clear());
        }
    }
    VARIABLES.with(|v| *v.borrow_mut() = Some(vars));
    SECRETS.with(|s| s.borrow_mut().clear());
    let _reset = Reset;
    let out = f();
    let secrets = SECRETS.with(|s| std::mem::take(&mut *s.borrow_mut()));
    (out, secrets)
}

/// Replaces `${NAME}` with the variable's value; `$$` is a literal `$`.
/// Returns the text and whether anything came from the environment.
pub fn interpolate(raw: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<Text, String> {
    if !raw.contains('$') {
        return Ok(Text::Plain(raw.to_string()));
    }
    let mut out = String::with_capacity(raw.len());
    let mut secret = false;
    let mut rest = raw;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('{') {
            let end = tail
                .find('}')
                .ok_or_else(|| "unclosed `${`: expected `${NAME}`".to_string())?;
            let name = &tail[..end];
            let valid = !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(format!(
                    "`${{{name}}}` is not a variable name: expected letters, digits and `_`"
                ));
            }
            let value = lookup(name)
                .ok_or_else(|| format!("environment variable `{name}` is not set (and not in env_file)"))?;
            out.push_str(&value);
            secret = true;
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(if secret {
        Text::Secret(Secret(out))
    } else {
        Text::Plain(out)
    })
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        VARIABLES.with(|v| {
            let vars = v.borrow();
            let vars = vars.clone().unwrap_or_default();
            let text = interpolate(&raw, |name| vars.get(name)).map_err(de::Error::custom)?;
            if let Text::Secret(secret) = &text {
                SECRETS.with(|s| s.borrow_mut().push(secret.clone()));
            }
            Ok(text)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn look(name: &str) -> Option<String> {
        (name == "PASS").then(|| "s3cr3t".to_string())
    }

    #[test]
    fn plain_text_stays_plain() {
        assert_eq!(interpolate("a $b c", look).unwrap(), Text::from("a $b c"));
    }

    #[test]
    fn variables_make_the_whole_value_secret() {
        let t = interpolate("redis://:${PASS}@redis", look).unwrap();
        assert!(t.is_secret());
        assert_eq!(t.expose(), "redis://:s3cr3t@redis");
        assert_eq!(t.to_string(), REDACTED);
        assert_eq!(format!("{t:?}"), REDACTED);
    }

    #[test]
    fn double_dollar_is_literal() {
        assert_eq!(interpolate("$${PASS}", look).unwrap(), Text::from("${PASS}"));
    }

    #[test]
    fn missing_and_malformed_variables_are_errors() {
        assert!(interpolate("${NOPE}", look).unwrap_err().contains("`NOPE`"));
        assert!(interpolate("${PASS", look).is_err());
        assert!(interpolate("${1X}", look).is_err());
    }
}
