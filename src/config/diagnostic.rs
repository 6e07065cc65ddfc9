//! Config errors that point at the text: file, line, column, the line itself
//! underlined, and what was expected.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use annotate_snippets::{AnnotationKind, Level, Renderer, Snippet};

/// One problem in a config file.
#[derive(Debug, Clone)]
pub struct Diagnostic {
    /// The file, as the user named it.
    pub path: PathBuf,
    /// What the file held when it was read.
    pub source: String,
    /// Byte range of the offending text; `None` when the problem is the file as a whole.
    pub span: Option<Range<usize>>,
    /// What is wrong and what was expected.
    pub message: String,
    /// A short label under the underline.
    pub label: Option<String>,
}

impl Diagnostic {
    /// A problem at `span` in `source`.
    pub fn new(path: &Path, source: &str, span: Option<Range<usize>>, message: String) -> Self {
        Diagnostic {
            path: path.to_path_buf(),
            source: source.to_string(),
            span: span.filter(|s| s.end <= source.len() && s.start <= s.end),
            message,
            label: None,
        }
    }

    /// Adds a label under the underlined text.
    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    /// 1-based line and column of the span's start.
    pub fn line_col(&self) -> Option<(usize, usize)> {
        let start = self.span.as_ref()?.start;
        let before = &self.source[..start];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        Some((line, col))
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path.display().to_string();
        let Some(span) = self.span.clone() else {
            return write!(f, "error: {}\n  --> {path}", self.message);
        };
        // An empty span (e.g. "expected a value" at end of line) still needs a caret.
        let span = if span.is_empty() && span.end < self.source.len() {
            span.start..span.start + 1
        } else {
            span
        };
        let mut annotation = AnnotationKind::Primary.span(span);
        if let Some(label) = &self.label {
            annotation = annotation.label(label);
        }
        let report = &[Level::ERROR
            .primary_title(&self.message)
            .element(Snippet::source(&self.source).path(&path).annotation(annotation))];
        write!(f, "{}", Renderer::plain().render(report))
    }
}

impl std::error::Error for Diagnostic {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_at_line_and_column() {
        let src = "[app]\nname = 5\n";
        let d = Diagnostic::new(Path::new("deploy.toml"), src, Some(13..14), "bad".into());
        assert_eq!(d.line_col(), Some((2, 8)));
        let shown = d.to_string();
        assert!(shown.contains("deploy.toml:2:8"), "{shown}");
        assert!(shown.contains("name = 5"), "{shown}");
        assert!(shown.contains('^'), "{shown}");
    }
}
