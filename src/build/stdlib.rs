//! Where a target's Rust standard library comes from (DESIGN §5, `--build-std`): rustup's
//! prebuilt one, installed with `rustup target add` when missing, or — where rustup has
//! none (a tier-3 target such as `s390x-unknown-linux-musl`, a release or mirror that
//! does not ship the target) — built from source by cargo's `-Zbuild-std`, which needs a
//! nightly toolchain with its `rust-src` component. That nightly is found as rustup would
//! choose one: the active toolchain when it is a nightly (`cargo +nightly microimage`,
//! `RUSTUP_TOOLCHAIN`, a `rust-toolchain.toml`), else an installed `nightly`.
//!
//! A target built from source is linked by zig with zig's musl (`crt1.o`, `libc.a`,
//! libunwind): rustc has no self-contained musl objects for it (see `super::toolchain`).
//!
//! Not for: choosing the C toolchain (see `super::toolchain`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{Error, Result};
pub use crate::plan::nightly::Nightly;
use crate::settings::BuildStd;
use crate::shell::Shell;

/// How cargo gets a target's standard library.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The toolchain's own (rustup's prebuilt one).
    Prebuilt,
    /// Built from source with `-Zbuild-std` on this nightly toolchain.
    FromSource(Nightly),
}

/// What cargo is told for a target whose std is built from source: the unstable flag
/// (`std` for the program, `panic_abort` for a profile with `panic = "abort"`).
pub const BUILD_STD_ARG: &str = "-Zbuild-std=std,panic_abort";

/// The rustflags for a target whose std is built from source: rustc adds no start files or
/// C library of its own (it has none for the target; zig's musl supplies them), and the
/// linker's stderr stays quiet as on a stable toolchain (nightly's `linker_messages` lint
/// showed zig's note that the prebuilt std's directory rustc names does not exist).
pub const RUSTFLAGS: &[&str] = &["-Clink-self-contained=no", "-Alinker_messages"];

/// Decides, before anything compiles, where `triple`'s standard library comes from under
/// `when`, with `sysroot` the active toolchain's and `active` the first line of its
/// `rustc -vV`; installs it with rustup where that is how it comes. An error names what
/// is missing and the one command that installs it.
pub fn source_for(
    triple: &str,
    when: BuildStd,
    sysroot: &Path,
    active: Option<&str>,
    known: Option<&Nightly>,
    shell: &Shell,
) -> Result<Source> {
    // What an earlier run found (see `crate::plan::cache::Answers::nightlies`), unless
    // rustup has installed a prebuilt std since, or the nightly changed.
    let remembered = known.filter(|n| n.still_installed());
    if let Some(nightly) = remembered {
        if when == BuildStd::Always || (when == BuildStd::Auto && !has_std(sysroot, triple)) {
            return Ok(Source::FromSource(nightly.clone()));
        }
    }
    if when == BuildStd::Always {
        return nightly(active).map(Source::FromSource).map_err(|missing| {
            Error::build(format!(
                "--build-std always builds the standard library for {triple} from source, which needs \
                 a nightly toolchain with rust-src: {}",
                missing.reason
            ))
            .with_help(missing.help)
        });
    }
    if has_std(sysroot, triple) {
        return Ok(Source::Prebuilt);
    }
    match super::ensure_target(sysroot, triple, shell) {
        Ok(()) => Ok(Source::Prebuilt),
        Err(refused) if when == BuildStd::Auto => match nightly(active) {
            Ok(nightly) => {
                shell.status(
                    "Building",
                    format!(
                        "the standard library for {triple} from source: {}",
                        refused.message()
                    ),
                );
                Ok(Source::FromSource(nightly))
            }
            Err(missing) => {
                let other = refused.help().unwrap_or_default().to_string();
                Err(Error::build(format!(
                    "{}; and it cannot be built from source here: {}",
                    refused.message(),
                    missing.reason
                ))
                .with_help(format!(
                    "{} to build it from source; or {other}",
                    missing.help
                )))
            }
        },
        Err(refused) => {
            let help = refused.help().unwrap_or_default().to_string();
            Err(refused.with_help(format!(
                "{help}; or build the standard library from source with `--build-std auto` \
                 (it needs a nightly toolchain with rust-src)"
            )))
        }
    }
}

/// Whether `sysroot` has a prebuilt standard library for `triple`.
fn has_std(sysroot: &Path, triple: &str) -> bool {
    let lib = sysroot.join("lib/rustlib").join(triple).join("lib");
    std::fs::read_dir(&lib)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with("libstd-") && name.ends_with(".rlib")
        })
}

/// Why no nightly toolchain can build a standard library, and the command that fixes it.
struct Missing {
    reason: String,
    help: String,
}

/// The nightly toolchain that builds standard libraries from source: the active one when
/// it is a nightly (`active`: the first line of its `rustc -vV`), else rustup's newest
/// installed nightly; it must have `rust-src` and cargo.
fn nightly(active: Option<&str>) -> std::result::Result<Nightly, Missing> {
    let reinstall = |name: &str| {
        format!("reinstall it: `rustup toolchain install {name} --component rust-src`")
    };
    let active_is_nightly = active.is_some_and(is_nightly);
    let name = if active_is_nightly {
        active_name()
    } else {
        installed_nightly().ok_or_else(|| Missing {
            reason: "no nightly toolchain is installed".to_string(),
            help: "install one: `rustup toolchain install nightly --component rust-src`"
                .to_string(),
        })?
    };
    let rustc = if active_is_nightly {
        std::env::var_os("RUSTC").map_or_else(|| PathBuf::from("rustc"), PathBuf::from)
    } else {
        let out = Command::new("rustup")
            .args(["which", "--toolchain", &name, "rustc"])
            .stdin(Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .ok_or_else(|| Missing {
                reason: format!(
                    "rustup lists the toolchain {name}, but cannot say where its rustc is"
                ),
                help: reinstall(&name),
            })?;
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    };
    let (sysroot, version, commit) = describe(&rustc).ok_or_else(|| Missing {
        reason: format!(
            "`{} -vV` of the nightly toolchain {name} failed",
            rustc.display()
        ),
        help: reinstall(&name),
    })?;
    if !crate::plan::nightly::has_rust_src(&sysroot) {
        let command = if name == "(active)" {
            "rustup component add rust-src".to_string()
        } else {
            format!("rustup component add rust-src --toolchain {name}")
        };
        return Err(Missing {
            reason: format!("the nightly toolchain {name} lacks the rust-src component"),
            help: format!("install it: `{command}`"),
        });
    }
    if !sysroot.join("bin/cargo").is_file() {
        return Err(Missing {
            reason: format!("the nightly toolchain {name} has no cargo"),
            help: reinstall(&name),
        });
    }
    Ok(Nightly {
        name,
        manifest_sha256: crate::plan::nightly::manifest_sha256(&sysroot),
        sysroot,
        version,
        commit,
    })
}

/// `rustc 1.97.0-nightly (…)` or a `-dev` build: a toolchain that takes `-Z` flags.
fn is_nightly(version: &str) -> bool {
    version
        .split_whitespace()
        .nth(1)
        .is_some_and(|v| v.contains("-nightly") || v.contains("-dev"))
}

/// The newest installed nightly, as rustup lists it: plain `nightly-<host>` first, else
/// the latest dated one (`nightly-2026-11-30-<host>`), by rustup's name for it.
fn installed_nightly() -> Option<String> {
    let out = Command::new("rustup")
        .args(["toolchain", "list"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let text = String::from_utf8_lossy(&out.stdout);
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with("nightly"))
        .collect();
    // `nightly-2026-11-30-<host>` is dated, `nightly-<host>` is not.
    let dated = |n: &&str| n.as_bytes().get(8).is_some_and(u8::is_ascii_digit);
    names
        .iter()
        .find(|n| !dated(n))
        .or_else(|| names.iter().max())
        .map(|n| n.to_string())
}

/// rustup's name for the active toolchain (`rustup show active-toolchain`).
fn active_name() -> String {
    std::env::var("RUSTUP_TOOLCHAIN")
        .ok()
        .filter(|n| !n.is_empty())
        .or_else(|| {
            let out = Command::new("rustup")
                .args(["show", "active-toolchain"])
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .output()
                .ok()
                .filter(|o| o.status.success())?;
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_else(|| "(active)".to_string())
}

/// A rustc's sysroot, first `-vV` line and commit.
fn describe(rustc: &Path) -> Option<(PathBuf, String, String)> {
    let run = |args: &[&str]| {
        Command::new(rustc)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    };
    let sysroot = PathBuf::from(run(&["--print", "sysroot"])?.trim());
    let vv = run(&["-vV"])?;
    let version = vv.lines().next()?.to_string();
    Some((sysroot, version, super::commit_of(&vv)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nightly_versions_are_told_from_releases() {
        assert!(is_nightly("rustc 1.97.0-nightly (0123456789 2026-11-30)"));
        assert!(is_nightly("rustc 1.97.0-dev"));
        assert!(!is_nightly("rustc 1.95.0 (abcdef012 2026-03-21)"));
        assert!(!is_nightly("rustc 1.96.0-beta.3 (abcdef012 2026-05-01)"));
    }
}
