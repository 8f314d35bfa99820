//! `cargo microimage verify BINARY…`: whether each binary can run in a `FROM scratch`
//! image (static, for a supported platform), what dependency data it records and which
//! allocator and PID 1 hook it carries. Every binary is checked; the CLI prints each.

use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::platform::Platform;
use crate::shell::Shell;
use crate::verify::{self, Runtime, Verdict};

/// What `verify` found about one binary.
#[derive(Debug)]
pub struct Checked {
    pub path: PathBuf,
    /// Its ELF facts, when it is an ELF file that could be read.
    pub verdict: Option<Verdict>,
    /// The platform it runs on in an image, when it is static and supported.
    pub platform: Option<&'static Platform>,
    /// How many crates its cargo-auditable data records, when it has any.
    pub crates: Option<usize>,
    pub runtime: Option<Runtime>,
    /// Why it cannot go into an image, if it cannot.
    pub error: Option<Error>,
}

impl Checked {
    pub fn ok(&self) -> bool {
        self.error.is_none()
    }
}

/// Checks each of `binaries`; warnings (unreadable dependency data, musl's own malloc)
/// go to `shell`.
pub fn verify(binaries: &[PathBuf], shell: &Shell) -> Vec<Checked> {
    binaries.iter().map(|path| check(path, shell)).collect()
}

fn check(path: &Path, shell: &Shell) -> Checked {
    let verdict = match verify::inspect(path) {
        Ok(v) => v,
        Err(e) => {
            return Checked {
                path: path.to_path_buf(),
                verdict: None,
                platform: None,
                crates: None,
                runtime: None,
                error: Some(e),
            }
        }
    };
    let checked = verdict.require_static();
    let crates = match crate::build::auditable::read(&verdict.file) {
        Ok(info) => info.map(|i| i.packages.len()),
        Err(e) => {
            shell.warn(format!("{}: {}", path.display(), e.message()));
            None
        }
    };
    let runtime = verify::runtime_of(&verdict);
    if checked.is_ok() {
        for warning in runtime.warnings(path) {
            shell.warn(warning);
        }
    }
    let (platform, error) = match checked {
        Ok(p) => (Some(p), None),
        Err(e) => (None, Some(e)),
    };
    Checked {
        path: path.to_path_buf(),
        verdict: Some(verdict),
        platform,
        crates,
        runtime: Some(runtime),
        error,
    }
}
