//! The crate's error type.
//!
//! Every failure that concerns bundle content is a [`Violation`]: it names the file, the tensor
//! (when there is one), the spec rule that was broken (see `spec/FORMAT.md`) and what was
//! expected versus what was found. I/O failures keep the path and the operation.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::format::rules::Rule;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong reading, writing or checking a bundle.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operating-system call on `path` failed.
    #[error("{}: {op}: {source}", .path.display())]
    Io {
        /// The file or directory the operation concerned.
        path: PathBuf,
        /// What was being done ("open", "read", "rename", ...).
        op: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Bundle content (or a source checkpoint) breaks a numbered rule of the spec.
    #[error("{0}")]
    Invalid(Box<Violation>),
    /// The destination of a write already exists and replacing it was not requested.
    #[error("{}: destination already exists (pass --force / `WriteOptions::force` to replace it)", .path.display())]
    DestinationExists {
        /// The existing destination.
        path: PathBuf,
    },
    /// An option or argument given by the caller is invalid (not a property of any file).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The input lacks what the command needs (for `assess`: labelled data with a difficulty
    /// for every example); the message names what is missing.
    #[error("{0}")]
    MissingData(String),
}

impl Error {
    /// Builds an [`Error::Io`].
    pub fn io(path: impl Into<PathBuf>, op: &'static str, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            op,
            source,
        }
    }

    /// The violation, when this error is one.
    pub fn violation(&self) -> Option<&Violation> {
        match self {
            Error::Invalid(v) => Some(v),
            _ => None,
        }
    }

    /// The broken rule, when this error is a violation.
    pub fn rule(&self) -> Option<Rule> {
        self.violation().map(|v| v.rule)
    }
}

/// A broken rule: where, which rule, and expected versus found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The file whose content is at fault.
    pub path: PathBuf,
    /// The tensor concerned, if the rule is about one tensor.
    pub tensor: Option<String>,
    /// The rule of `spec/FORMAT.md` that was broken.
    pub rule: Rule,
    /// What the rule requires here.
    pub expected: String,
    /// What the file holds instead.
    pub found: String,
}

impl Violation {
    /// A violation of `rule` in `path`.
    pub fn new(
        path: impl AsRef<Path>,
        rule: Rule,
        expected: impl Into<String>,
        found: impl Into<String>,
    ) -> Self {
        Violation {
            path: path.as_ref().to_path_buf(),
            tensor: None,
            rule,
            expected: expected.into(),
            found: found.into(),
        }
    }

    /// Names the tensor concerned.
    pub fn tensor(mut self, name: impl Into<String>) -> Self {
        self.tensor = Some(name.into());
        self
    }
}

impl From<Violation> for Error {
    fn from(v: Violation) -> Self {
        Error::Invalid(Box::new(v))
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.path.display())?;
        if let Some(t) = &self.tensor {
            write!(f, "tensor {}: ", escape_name(t))?;
        }
        write!(
            f,
            "{} (rule {}): expected {}, found {}",
            self.rule.summary(),
            self.rule.number(),
            self.expected,
            self.found
        )
    }
}

/// Quotes a name read from a file so that it is safe to print to a terminal: control
/// characters, quotes and backslashes are escaped (`"fc\u{1b}[2J"` prints as `"fc\u{1b}[2J"`).
pub fn escape_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    out.push('"');
    for c in name.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A name as it may be printed in a table: unchanged when it is plain, escaped (and quoted) when
/// it holds control characters, quotes or backslashes that could confuse a terminal or a reader.
pub fn printable(name: &str) -> std::borrow::Cow<'_, str> {
    if name
        .chars()
        .any(|c| c.is_control() || c == '"' || c == '\\')
    {
        std::borrow::Cow::Owned(escape_name(name))
    } else {
        std::borrow::Cow::Borrowed(name)
    }
}

/// Shortens untrusted text for an error message (at most `max` characters, escaped).
pub fn excerpt(text: &str, max: usize) -> String {
    let mut s: String = text.chars().take(max).collect();
    if text.chars().count() > max {
        s.push('…');
    }
    escape_name(&s)
}
