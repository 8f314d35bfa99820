//! Cargo-style output on stderr: right-aligned bold status verbs (`   Verifying`,
//! `     Packing`, `    Finished`), warnings and errors; colour only when stderr is a
//! terminal (through `anstream`). Results never go here: they go to stdout, written by the
//! CLI.

use std::fmt::Display;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

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
    /// The progress bar on screen, if any: status lines are printed above it.
    bar: Arc<Mutex<Option<indicatif::ProgressBar>>>,
}

/// A byte-count progress bar on stderr (see [`Shell::progress`]); cleared when dropped.
#[derive(Debug)]
pub struct Progress {
    bar: indicatif::ProgressBar,
    shell: Shell,
}

impl Progress {
    /// Counts `bytes` more as done.
    pub fn inc(&self, bytes: u64) {
        self.bar.inc(bytes);
    }

    /// Takes back `bytes` counted by an attempt that failed and will be retried.
    pub fn dec(&self, bytes: u64) {
        self.bar.dec(bytes);
    }

    /// A handle that counts into the same bar from another task.
    pub(crate) fn handle(&self) -> indicatif::ProgressBar {
        self.bar.clone()
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
        if let Ok(mut active) = self.shell.bar.lock() {
            *active = None;
        }
    }
}

impl Shell {
    pub fn new(verbosity: Verbosity) -> Self {
        Shell {
            verbosity,
            bar: Arc::default(),
        }
    }

    /// A progress bar for `total` bytes of the step `verb` (`Uploading`, `Packing`), drawn
    /// only when stderr is a terminal (indicatif hides it otherwise) and not with `-q`.
    /// Status lines printed while it is shown go above it.
    pub fn progress(&self, verb: &str, total: u64) -> Progress {
        let target = if self.verbosity == Verbosity::Quiet {
            indicatif::ProgressDrawTarget::hidden()
        } else {
            indicatif::ProgressDrawTarget::stderr()
        };
        let bar = indicatif::ProgressBar::with_draw_target(Some(total), target);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{prefix:>12.cyan.bold} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_prefix(verb.to_string());
        if !bar.is_hidden() {
            // Redraw (rate, ETA) even while a slow link accepts nothing new.
            bar.enable_steady_tick(std::time::Duration::from_millis(250));
        }
        if let Ok(mut active) = self.bar.lock() {
            *active = Some(bar.clone());
        }
        Progress {
            bar,
            shell: self.clone(),
        }
    }

    /// Writes one line to stderr, above the progress bar if one is shown.
    fn line(&self, text: std::fmt::Arguments) {
        let write = || {
            let mut err = anstream::stderr().lock();
            let _ = err.write_fmt(text);
            let _ = writeln!(err);
        };
        match self.bar.lock().ok().and_then(|b| b.clone()) {
            Some(bar) => bar.suspend(write),
            None => write(),
        }
    }

    pub fn verbosity(&self) -> Verbosity {
        self.verbosity
    }

    /// `{verb:>12} {message}`, the verb bold green, like cargo's `   Compiling foo`.
    pub fn status(&self, verb: &str, message: impl Display) {
        if self.verbosity != Verbosity::Quiet {
            self.line(format_args!("{STATUS}{verb:>12}{STATUS:#} {message}"));
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
            self.line(format_args!("{WARN}warning{WARN:#}: {message}"));
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

/// Sizes the way people read them: `5.20 MiB`, `812.00 KiB`, `96 B` (indicatif's).
pub fn human_size(bytes: u64) -> String {
    indicatif::HumanBytes(bytes).to_string()
}

/// A path as text: unchanged when it is UTF-8; otherwise each byte that is not part of a
/// UTF-8 character is written as `\xNN`.
pub fn path_text(path: &Path) -> String {
    let bytes = path.as_os_str().as_encoded_bytes();
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::human_size;

    #[test]
    fn sizes() {
        assert_eq!(human_size(96), "96 B");
        assert_eq!(human_size(2048), "2.00 KiB");
        assert_eq!(human_size(5 * 1024 * 1024 + 200 * 1024), "5.20 MiB");
    }
}
