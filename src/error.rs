//! The error type of the library: one message that names its subject (a file, a key, a
//! target, a binary), an optional `help` line that says what to do next, a [`Kind`] that
//! says which part failed (so exit codes and JSON consumers never depend on the message
//! text), and the underlying error it came from, if any (`std::error::Error::source`).
//!
//! Not for: formatting or printing; `crate::shell::Shell::error` prints errors and
//! `crate::message` turns them into JSON.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The result type used throughout the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Kind {
    /// A wrong flag, value or combination on the command line (exit status 2).
    Usage,
    /// A value in Cargo.toml's `[*.metadata.microimage]` tables: the file and the key.
    Config { file: PathBuf, key: String },
    /// Reading the crate, preparing toolchains, or cargo's build.
    Build,
    /// The static check of a binary.
    Verify,
    /// Making the image or writing it to disk (or to a local engine with `--load`).
    Output,
    /// Talking to a registry.
    Registry,
    /// Reading an image or file the user pointed at (`inspect`).
    Input,
}

/// An error for the user: what went wrong, and what to do next.
#[derive(Debug)]
pub struct Error {
    kind: Kind,
    message: String,
    help: Option<String>,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    fn with_kind(kind: Kind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            help: None,
            source: None,
        }
    }

    /// A usage error: a wrong flag, value or combination (exit status 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Error::with_kind(Kind::Usage, message)
    }

    /// A bad value at `key` of the Cargo.toml `file`.
    pub fn config(file: &Path, key: &str, message: impl Into<String>) -> Self {
        Error::with_kind(
            Kind::Config {
                file: file.to_path_buf(),
                key: key.to_string(),
            },
            message,
        )
    }

    pub fn build(message: impl Into<String>) -> Self {
        Error::with_kind(Kind::Build, message)
    }

    pub fn verify(message: impl Into<String>) -> Self {
        Error::with_kind(Kind::Verify, message)
    }

    pub fn output(message: impl Into<String>) -> Self {
        Error::with_kind(Kind::Output, message)
    }

    pub fn registry(message: impl Into<String>) -> Self {
        Error::with_kind(Kind::Registry, message)
    }

    pub fn input(message: impl Into<String>) -> Self {
        Error::with_kind(Kind::Input, message)
    }

    /// An I/O error about `path` while writing output, with what was being done
    /// (`"reading"`, `"creating"`, …); the I/O error is kept as the source.
    pub fn io(action: &str, path: &Path, err: std::io::Error) -> Self {
        Error::output(format!("{action} `{}` failed: {err}", path.display())).with_source(err)
    }

    /// Keeps the error this one came from (`std::error::Error::source`).
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// The same error, of another kind (an I/O failure while reading a binary is a
    /// verification failure, for instance).
    pub fn of_kind(mut self, kind: Kind) -> Self {
        self.kind = kind;
        self
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

    pub fn kind(&self) -> &Kind {
        &self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn help(&self) -> Option<&str> {
        self.help.as_deref()
    }

    pub fn is_usage(&self) -> bool {
        self.kind == Kind::Usage
    }

    /// The process exit status for this error (DESIGN §1: 1 failure, 2 usage).
    pub fn exit_code(&self) -> i32 {
        if self.is_usage() {
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

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Attaches a path and an action to I/O results: `fs::read(p).path_context("reading", p)?`.
pub trait IoContext<T> {
    fn path_context(self, action: &str, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn path_context(self, action: &str, path: &Path) -> Result<T> {
        self.map_err(|e| Error::io(action, path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_decide_the_exit_code_and_sources_are_kept() {
        assert_eq!(Error::usage("x").exit_code(), 2);
        assert_eq!(
            Error::config(Path::new("/a/Cargo.toml"), "user", "x").exit_code(),
            1
        );
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        let e = Error::io("reading", Path::new("/x"), io);
        assert_eq!(e.kind(), &Kind::Output);
        let source = std::error::Error::source(&e).expect("the I/O error is kept");
        assert_eq!(source.to_string(), "gone");
        let json = serde_json::to_value(Kind::Config {
            file: "/a/Cargo.toml".into(),
            key: "user".into(),
        })
        .unwrap();
        assert_eq!(
            json,
            serde_json::json!({"kind": "config", "file": "/a/Cargo.toml", "key": "user"})
        );
    }
}
