//! A nightly toolchain that builds standard libraries from source (`-Zbuild-std`), as the
//! plan cache remembers it. Which one is used, and when, is decided in `crate::build::stdlib`.

use std::path::{Path, PathBuf};

/// A nightly toolchain with `rust-src`, as the build runs it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Nightly {
    /// rustup's name for it (`nightly`, `nightly-2026-11-30`, or the active toolchain's).
    pub name: String,
    /// Its sysroot, holding `bin/cargo`, `bin/rustc` and `lib/rustlib/src/rust/library`.
    pub sysroot: PathBuf,
    /// The first line of its `rustc -vV` (`rustc 1.97.0-nightly (abcdef012 2026-11-30)`).
    pub version: String,
    /// Its `commit-hash` (empty when rustc does not know it).
    pub commit: String,
    /// The sha256 of rustup's manifest of it (`lib/rustlib/multirust-channel-manifest.toml`),
    /// which `rustup update` rewrites: a remembered toolchain is used again only while this
    /// holds (empty: not remembered).
    pub manifest_sha256: String,
}

impl Nightly {
    /// Whether this remembered toolchain is still the one installed there, unchanged.
    pub fn still_installed(&self) -> bool {
        !self.manifest_sha256.is_empty()
            && manifest_sha256(&self.sysroot) == self.manifest_sha256
            && self.cargo().is_file()
            && has_rust_src(&self.sysroot)
    }

    /// Its cargo, which the build runs instead of the active one.
    pub fn cargo(&self) -> PathBuf {
        self.sysroot.join("bin/cargo")
    }

    /// Its rustc.
    pub fn rustc(&self) -> PathBuf {
        self.sysroot.join("bin/rustc")
    }

    /// The version number alone (`1.97.0-nightly`), as cargo-zigbuild wants it.
    pub fn rustc_version(&self) -> Option<String> {
        self.version.split_whitespace().nth(1).map(str::to_string)
    }

    /// For status lines: `nightly (rustc 1.97.0-nightly 2026-11-30)`.
    pub fn describe(&self) -> String {
        let date = self
            .version
            .rsplit(' ')
            .next()
            .map(|d| d.trim_end_matches(')'))
            .filter(|d| d.len() == 10)
            .map(|d| format!(" {d}"))
            .unwrap_or_default();
        let number = self.rustc_version().unwrap_or_default();
        format!("{} (rustc {number}{date})", self.name)
    }
}

/// Whether a toolchain has the standard library's sources (`rust-src`), as `-Zbuild-std`
/// reads them.
pub(crate) fn has_rust_src(sysroot: &Path) -> bool {
    sysroot
        .join("lib/rustlib/src/rust/library/Cargo.lock")
        .is_file()
}

/// See [`Nightly::manifest_sha256`]; empty when there is no such file.
pub(crate) fn manifest_sha256(sysroot: &Path) -> String {
    std::fs::read(sysroot.join("lib/rustlib/multirust-channel-manifest.toml"))
        .map(|data| crate::blob::hex(&crate::blob::sha256(&data)).to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nightly_describes_itself_by_name_number_and_date() {
        let n = Nightly {
            name: "nightly".into(),
            sysroot: PathBuf::from("/r"),
            version: "rustc 1.97.0-nightly (0123456789 2026-11-30)".into(),
            commit: String::new(),
            manifest_sha256: String::new(),
        };
        assert!(!n.still_installed());
        assert_eq!(n.describe(), "nightly (rustc 1.97.0-nightly 2026-11-30)");
        assert_eq!(n.rustc_version().as_deref(), Some("1.97.0-nightly"));
        assert_eq!(n.cargo(), PathBuf::from("/r/bin/cargo"));
    }
}
