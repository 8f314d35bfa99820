//! Cargo-style output on stderr: right-aligned bold status verbs (`   Verifying`,
//! `     Packing`, `    Finished`), warnings and errors; colour only when stderr is a
//! terminal (through `anstream`). Results never go here: they go to stdout, written by the
//! CLI.

use std::fmt::Display;
use std::io::Write;

use anstyle::{AnsiColor, Style};

use crate::error::Error;

const STATUS: Style = AnsiColor::Green.on_default().bold();
const WARN: Style = AnsiColor::Yellow.on_default().bold();
const ERROR: Style = AnsiColor::Red.on_default().bold();
const HELP: Style = AnsiColor::Cyan.on_default().bold();

/// How much to say on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Verbosity {
    Quiet,
    #[default]
    Normal,
    Verbose,
}

/// Writes status lines to stderr the way cargo does.
#[derive(Debug, Clone, Default)]
pub struct Shell {
    verbosity: Verbosity,
}

impl Shell {
    pub fn new(verbosity: Verbosity) -> Self {
        Shell { verbosity }
    }

    pub fn verbosity(&self) -> Verbosity {
        self.verbosity
    }

    /// `{verb:>12} {message}`, the verb bold green, like cargo's `   Compiling foo`.
    pub fn status(&self, verb: &str, message: impl Display) {
        if self.verbosity != Verbosity::Quiet {
            let mut err = anstream::stderr().lock();
            let _ = writeln!(err, "{STATUS}{verb:>12}{STATUS:#} {message}");
        }
    }

    /// A status line shown only with `-v`.
    pub fn verbose(&self, verb: &str, message: impl Display) {
        if self.verbosity == Verbosity::Verbose {
            self.status(verb, message);
        }
    }

    pub fn warn(&self, message: impl Display) {
        if self.verbosity != Verbosity::Quiet {
            let mut err = anstream::stderr().lock();
            let _ = writeln!(err, "{WARN}warning{WARN:#}: {message}");
        }
    }

    /// Prints an error and its help line (always, even when quiet).
    pub fn error(&self, error: &Error) {
        let mut err = anstream::stderr().lock();
        let _ = writeln!(err, "{ERROR}error{ERROR:#}: {}", error.message());
        if let Some(help) = error.help() {
            let _ = writeln!(err, "\n{HELP}help{HELP:#}: {help}");
        }
    }
}

/// Sizes the way people read them: `5.2 MiB`, `812.0 KiB`, `96 B`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::human_size;

    #[test]
    fn sizes() {
        assert_eq!(human_size(96), "96 B");
        assert_eq!(human_size(2048), "2.0 KiB");
        assert_eq!(human_size(5 * 1024 * 1024 + 200 * 1024), "5.2 MiB");
    }
}
