//! What keeps a user's files safe while the tool writes beside them:
//!
//! - [`lock`]: an exclusive lock (`flock`) on the directory an output is written into, held
//!   while writing, so two runs writing there take turns instead of overwriting each
//!   other's results;
//! - [`clean_stale`]: with that lock held no other run can be writing there, so any
//!   temporary of ours left there (`.microimage-*`, by a run that was killed) is stale and
//!   removed — only ours, only then;
//! - [`Temporary`]: temporaries registered while they exist, removed by a handler of
//!   SIGINT and SIGTERM before the process ends (as the signal would end it); a run
//!   killed with SIGKILL leaves them to [`clean_stale`].

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use crate::error::{Error, Result};
use crate::shell::Shell;

/// The prefix of every temporary the tool makes beside an output.
pub const PREFIX: &str = ".microimage-";

/// An exclusive lock on a directory, released when dropped.
#[derive(Debug)]
pub struct Lock {
    _dir: File,
}

/// Locks `dir` (created if needed) for writing an output into it; waits, saying so, while
/// another run holds it.
pub fn lock(dir: &Path, shell: &Shell) -> Result<Lock> {
    use rustix::fs::{flock, FlockOperation};
    std::fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))?;
    let file = File::open(dir).map_err(|e| Error::io("opening", dir, e))?;
    if flock(&file, FlockOperation::NonBlockingLockExclusive).is_err() {
        shell.status(
            "Waiting",
            format!(
                "for another cargo-microimage writing into `{}`",
                dir.display()
            ),
        );
        flock(&file, FlockOperation::LockExclusive)
            .map_err(|e| Error::io("locking", dir, e.into()))?;
    }
    Ok(Lock { _dir: file })
}

/// Removes the temporaries of earlier runs from `dir` (call with [`lock`] held).
pub fn clean_stale(dir: &Path, _held: &Lock) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(PREFIX) {
            remove(&entry.path());
        }
    }
}

fn remove(path: &Path) {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            // Renamed first, then removed: a writer still working in it by path (the run
            // being interrupted) can then add nothing to it while it is emptied, which would
            // leave it behind. The new name is still one of ours, for `clean_stale`.
            static COUNT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let dead = path.with_file_name(format!("{PREFIX}removed-{}-{n}", std::process::id()));
            let doomed = if std::fs::rename(path, &dead).is_ok() {
                dead
            } else {
                path.to_path_buf()
            };
            let _ = std::fs::remove_dir_all(doomed);
        }
        Ok(_) => {
            let _ = std::fs::remove_file(path);
        }
        Err(_) => {}
    }
}

/// The temporaries that exist now.
fn registry() -> &'static Mutex<Vec<PathBuf>> {
    static TEMPORARIES: OnceLock<Mutex<Vec<PathBuf>>> = OnceLock::new();
    TEMPORARIES.get_or_init(|| {
        handle_signals();
        Mutex::default()
    })
}

/// Once: a thread that, on SIGINT or SIGTERM, removes the registered temporaries and then
/// ends the process the way the signal would have.
fn handle_signals() {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) else {
        return;
    };
    std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            if let Ok(paths) = registry().lock() {
                for p in paths.iter() {
                    remove(p);
                }
            }
            let _ = signal_hook::low_level::emulate_default_handler(signal);
            std::process::exit(128 + signal);
        }
    });
}

/// A temporary path, removed if the process is interrupted while it exists. Dropping it
/// only forgets it (its owner — a `tempfile` value — deletes it, or renames it into place).
#[derive(Debug)]
pub struct Temporary {
    path: PathBuf,
}

impl Temporary {
    pub fn register(path: &Path) -> Temporary {
        if let Ok(mut paths) = registry().lock() {
            paths.push(path.to_path_buf());
        }
        Temporary {
            path: path.to_path_buf(),
        }
    }
}

impl Drop for Temporary {
    fn drop(&mut self) {
        if let Ok(mut paths) = registry().lock() {
            paths.retain(|p| p != &self.path);
        }
    }
}

/// `fsync`s a directory, so that renames into it are on disk.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("syncing", dir, e))
}
