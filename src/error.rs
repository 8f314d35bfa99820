//! The error type of the library: one message that names its subject (a file, a key, a
//! target, a binary), an optional `help` line that says what to do next, and whether the
//! error is a usage error (exit status 2) or a failure (exit status 1).
//!
//! Not for: formatting or printing; `crate::shell::Shell::error` prints errors.

use std::fmt;
use std::path::Path;

/// The result type used throughout the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error for the user: what went wrong, and what to do next.
#[derive(Debug)]
pub struct Error {
    message: String,
    help: Option<String>,
    usage: bool,
}

impl Error {
    /// A failure (exit status 1).
    pub fn new(message: impl Into<String>) -> Self {
        Error {
            message: message.into(),
            help: None,
            usage: false,
        }
    }

    /// A usage error: a wrong flag, value or combination (exit status 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Error {
            usage: true,
            ..Error::new(message)
        }
    }

    /// An I/O error about `path`, with what was being done (`"reading"`, `"creating"`, …).
    pub fn io(action: &str, path: &Path, err: std::io::Error) -> Self {
        Error::new(format!("{action} `{}` failed: {err}", path.display()))
    }

    /// Adds the line that tells the user what to do next.
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Prefixes the message with context, keeping the help line.
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn help(&self) -> Option<&str> {
        self.help.as_deref()
    }

    pub fn is_usage(&self) -> bool {
        self.usage
    }

    /// The process exit status for this error (DESIGN §1: 1 failure, 2 usage).
    pub fn exit_code(&self) -> i32 {
        if self.usage {
            2
        } else {
            1
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// Attaches a path and an action to I/O results: `fs::read(p).path_context("reading", p)?`.
pub trait IoContext<T> {
    fn path_context(self, action: &str, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn path_context(self, action: &str, path: &Path) -> Result<T> {
        self.map_err(|e| Error::io(action, path, e))
    }
}
