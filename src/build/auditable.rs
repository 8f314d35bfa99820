//! Dependency data in the binary, in the cargo-auditable format: the crates linked into it
//! as JSON (auditable-serde's `VersionInfo`), zlib-compressed, in a `.dep-v0` section — what
//! trivy, grype, syft and osv-scanner read from a binary, so they see the crates of a
//! FROM-scratch image.
//!
//! How it gets there, with nothing for the user to install: before cargo runs, the data of
//! each binary's package is written to a file; cargo runs this binary as its
//! `RUSTC_WORKSPACE_WRAPPER` ([`wrap`]); when rustc links a binary of a package that has a
//! data file, an object file with the section (made with the `object` crate for the
//! target) is added to the link, with `-u AUDITABLE_VERSION_INFO` (as `-Wl,-u,…` through a C compiler driver) so that the linker keeps
//! it. A `RUSTC_WRAPPER` of the user's still runs around us, and a workspace wrapper of
//! theirs runs inside us.
//!
//! Reading it back ([`read`]) takes only that section of the file.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};

use auditable_serde::{DependencyKind, Package, Source, VersionInfo};

use crate::error::{Error, Result};
use crate::plan::graph::Crate;
use crate::platform::Platform;

/// The section cargo-auditable uses.
pub const SECTION: &str = ".dep-v0";
/// The symbol the section holds, which the link is told to keep.
const SYMBOL: &str = "AUDITABLE_VERSION_INFO";
/// Where the wrapper finds the data files (set only for the cargo build it serves).
pub const DATA_DIR: &str = "MICROIMAGE_AUDIT_DIR";
/// A workspace wrapper of the user's, which [`wrap`] runs in its place.
pub const USER_WRAPPER: &str = "MICROIMAGE_USER_WORKSPACE_WRAPPER";

/// The cargo-auditable record of `crates` (the first is the binary's package).
pub fn version_info(crates: &[Crate]) -> Result<VersionInfo> {
    let packages = crates
        .iter()
        .enumerate()
        .map(|(i, c)| {
            Ok(Package {
                name: c.name.clone(),
                version: c.version.parse().map_err(|e| {
                    Error::build(format!(
                        "`{} {}`: not a semver version ({e})",
                        c.name, c.version
                    ))
                })?,
                source: Source::from(c.source.as_str()),
                kind: DependencyKind::Runtime,
                dependencies: c.dependencies.clone(),
                root: i == 0,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(VersionInfo {
        packages,
        // Format 1: built from `cargo metadata`, procedural macros not counted as linked.
        format: 1,
    })
}

/// The section's content: the JSON of [`version_info`], zlib-compressed (at a fixed level:
/// the bytes are part of the binary, so of the image digest).
pub fn compressed(crates: &[Crate]) -> Result<Vec<u8>> {
    let json = serde_json::to_vec(&version_info(crates)?)
        .map_err(|e| Error::build(format!("serialising the dependency list failed: {e}")))?;
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(7));
    z.write_all(&json)
        .and_then(|()| z.finish())
        .map_err(|e| Error::build(format!("compressing the dependency list failed: {e}")))
}

/// The data file of the package whose Cargo.toml is `manifest`, in `dir`.
pub fn data_file(dir: &Path, manifest: &Path) -> PathBuf {
    let key = crate::blob::sha256(manifest.as_os_str().as_encoded_bytes());
    dir.join(format!("{}.zlib", &crate::blob::hex(&key)[..24]))
}

/// An ELF object file for `platform` whose `.dep-v0` section holds `data`, with the symbol
/// [`SYMBOL`] on it. The section is not allocated: it is in the file, not loaded.
pub fn object(data: &[u8], platform: &Platform) -> Result<Vec<u8>> {
    use object::write::{Object, Symbol, SymbolSection};
    use object::{
        BinaryFormat, Endianness, SectionFlags, SectionKind, SymbolFlags, SymbolKind, SymbolScope,
    };
    let endian = if platform.elf_big_endian {
        Endianness::Big
    } else {
        Endianness::Little
    };
    let mut file = Object::new(BinaryFormat::Elf, platform.object_architecture(), endian);
    file.flags = object::FileFlags::Elf {
        os_abi: object::elf::ELFOSABI_NONE,
        abi_version: 0,
        e_flags: object::elf::FileFlags(platform.elf_flags),
    };
    let section = file.add_section(
        Vec::new(),
        SECTION.as_bytes().to_vec(),
        SectionKind::ReadOnlyData,
    );
    file.section_mut(section).flags = SectionFlags::Elf {
        sh_type: object::elf::SHT_PROGBITS,
        sh_flags: object::elf::SectionFlags(0),
    };
    let offset = file.append_section_data(section, data, 1);
    file.add_symbol(Symbol {
        name: SYMBOL.as_bytes().to_vec(),
        value: offset,
        size: data.len() as u64,
        kind: SymbolKind::Data,
        scope: SymbolScope::Dynamic,
        weak: false,
        section: SymbolSection::Section(section),
        flags: SymbolFlags::None,
    });
    file.write()
        .map_err(|e| Error::build(format!("writing the dependency-data object failed: {e}")))
}

/// The value of rustc's `--flag VALUE` (or `--flag=VALUE`) in `args`.
fn flag<'a>(args: &'a [OsString], name: &str) -> Option<&'a str> {
    args.iter().enumerate().find_map(|(i, a)| {
        let a = a.to_str()?;
        if a == name {
            args.get(i + 1)?.to_str()
        } else {
            a.strip_prefix(name)?.strip_prefix('=')
        }
    })
}

/// Whether rustc's arguments make it call a linker directly rather than through a C
/// compiler driver: `-C linker=…ld` / `…lld`, or a `ld`-style `-C linker-flavor`.
fn bare_linker(args: &[OsString]) -> bool {
    let codegen: Vec<&str> = args
        .iter()
        .enumerate()
        .filter_map(|(i, a)| {
            let a = a.to_str()?;
            if a == "-C" {
                args.get(i + 1)?.to_str()
            } else {
                a.strip_prefix("-C")
            }
        })
        .collect();
    codegen.iter().any(|c| {
        c.strip_prefix("linker=").is_some_and(|l| {
            let name = Path::new(l)
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or(l);
            name.ends_with("ld") || name.ends_with("ld.exe")
        }) || c
            .strip_prefix("linker-flavor=")
            .is_some_and(|f| f.starts_with("ld") || f == "gnu-lld" || f == "gnu")
    })
}

/// The rustc workspace wrapper: `args` is `[this exe, rustc, rustc's arguments…]`. Links
/// the dependency data into binaries that have it, then runs rustc (through the user's own
/// workspace wrapper, if there is one) and returns its exit status.
pub fn wrap(args: &[OsString]) -> i32 {
    let (Some(rustc), rest) = (args.get(1), args.get(2..).unwrap_or_default()) else {
        eprintln!("error: cargo-microimage: called as a rustc wrapper without a rustc");
        return 1;
    };
    let mut extra = Vec::new();
    match inject(rest) {
        Ok(Some(object)) => {
            let mut link = OsString::from("-Clink-arg=");
            link.push(&object);
            extra.push(link);
            // POSIX `-u` (zig's linker refuses GNU `--undefined=`); through `-Wl,` unless
            // rustc calls a linker directly (rust-lld for pure-Rust cross builds).
            if bare_linker(rest) {
                extra.push("-Clink-arg=-u".into());
                extra.push(format!("-Clink-arg={SYMBOL}").into());
            } else {
                extra.push(format!("-Clink-arg=-Wl,-u,{SYMBOL}").into());
            }
        }
        Ok(None) => {}
        Err(e) => {
            eprintln!("error: cargo-microimage: {}", e.message());
            return 1;
        }
    }
    let mut cmd = match std::env::var_os(USER_WRAPPER).filter(|w| !w.is_empty()) {
        Some(user) => {
            let mut c = std::process::Command::new(user);
            c.arg(rustc);
            c
        }
        None => std::process::Command::new(rustc),
    };
    cmd.args(rest).args(extra);
    match cmd.status() {
        Ok(status) => status.code().unwrap_or(1),
        Err(e) => {
            eprintln!("error: cargo-microimage: running {rustc:?} failed: {e}");
            1
        }
    }
}

/// Writes the object file for this rustc run when it links a binary of a package with
/// dependency data; returns its path.
fn inject(args: &[OsString]) -> Result<Option<PathBuf>> {
    let Some(dir) = std::env::var_os(DATA_DIR) else {
        return Ok(None);
    };
    let bin = args
        .iter()
        .enumerate()
        .any(|(i, a)| a == "--crate-type" && args.get(i + 1).is_some_and(|t| t == "bin"))
        || args.iter().any(|a| a == "--crate-type=bin");
    if !bin || std::env::var_os("CARGO_PRIMARY_PACKAGE").is_none() {
        return Ok(None);
    }
    let manifest = match std::env::var_os("CARGO_MANIFEST_PATH") {
        Some(m) => PathBuf::from(m),
        None => match std::env::var_os("CARGO_MANIFEST_DIR") {
            Some(d) => Path::new(&d).join("Cargo.toml"),
            None => return Ok(None),
        },
    };
    let Ok(data) = std::fs::read(data_file(Path::new(&dir), &manifest)) else {
        return Ok(None);
    };
    let (Some(target), Some(out_dir), Some(name)) = (
        flag(args, "--target"),
        flag(args, "--out-dir"),
        flag(args, "--crate-name"),
    ) else {
        return Ok(None);
    };
    let platform = Platform::from_triple(target)?;
    let path = Path::new(out_dir).join(format!("{name}-microimage-deps.o"));
    std::fs::write(&path, object(&data, platform)?).map_err(|e| Error::io("writing", &path, e))?;
    Ok(Some(path))
}

/// The dependency data recorded in an ELF binary, if it has a `.dep-v0` section: only that
/// section is read, decompressed (at most 64 MiB) and parsed with auditable-serde, whose
/// `VersionInfo` checks on the way in that it is a well-formed tree (one root, no cycles).
///
/// Written here rather than with `auditable-info`: that crate wants the whole binary in
/// memory (a reader it drains, or a slice), and binaries can be a gigabyte while this tool
/// keeps its memory flat; `object`'s `ReadCache` reads the headers and the one section.
pub fn read(file: &std::fs::File) -> Result<Option<VersionInfo>> {
    use object::{Object, ObjectSection, ReadCache};
    let cache = ReadCache::new(file);
    let Ok(elf) = object::File::parse(&cache) else {
        return Ok(None);
    };
    let Some(section) = elf.section_by_name(SECTION) else {
        return Ok(None);
    };
    // cargo-auditable's own limit for the decompressed data is 8 MiB; compressed it is less.
    if section.size() > 8 << 20 {
        return Err(Error::verify(format!(
            "its {SECTION} section is {} bytes, too large to be dependency data",
            section.size()
        )));
    }
    section_of(section.data().ok())
}

fn section_of(data: Option<&[u8]>) -> Result<Option<VersionInfo>> {
    use std::io::Read;
    let Some(data) = data else { return Ok(None) };
    let mut json = Vec::new();
    flate2::read::ZlibDecoder::new(data)
        .take(64 << 20)
        .read_to_end(&mut json)
        .map_err(|e| Error::verify(format!("the recorded dependency list cannot be read: {e}")))?;
    serde_json::from_slice(&json)
        .map(Some)
        .map_err(|e| Error::verify(format!("the recorded dependency list is not valid: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crates() -> Vec<Crate> {
        let c = |name: &str, deps: Vec<usize>| Crate {
            name: name.into(),
            version: "1.0.0".into(),
            source: if name == "app" { "local" } else { "crates.io" }.into(),
            source_id: None,
            license: Some("MIT".into()),
            checksum: None,
            dependencies: deps,
        };
        vec![c("app", vec![1, 2]), c("a", vec![2]), c("b", vec![])]
    }

    #[test]
    fn bare_linkers_are_told_apart_from_compiler_drivers() {
        let args = |a: &[&str]| a.iter().map(OsString::from).collect::<Vec<_>>();
        assert!(bare_linker(&args(&["-C", "linker=rust-lld"])));
        assert!(bare_linker(&args(&["-Clinker=/usr/bin/ld"])));
        assert!(bare_linker(&args(&["-C", "linker-flavor=ld.lld"])));
        assert!(!bare_linker(&args(&["-C", "linker=/x/zigcc-aarch64.sh"])));
        assert!(!bare_linker(&args(&[
            "-C",
            "linker=cc",
            "-C",
            "opt-level=3"
        ])));
        assert!(!bare_linker(&args(&["--crate-name", "ld"])));
    }

    #[test]
    fn the_record_round_trips_through_an_object_file() {
        let data = compressed(&crates()).unwrap();
        let platform = Platform::from_oci("linux/amd64").unwrap();
        let obj = object(&data, platform).unwrap();
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("o.o");
        std::fs::write(&path, obj).unwrap();
        let info = read(&std::fs::File::open(&path).unwrap()).unwrap().unwrap();
        assert_eq!(info.packages.len(), 3);
        assert!(info.packages[0].root && info.packages[0].name == "app");
        assert_eq!(info.packages[0].dependencies, [1, 2]);
        // The same crates, the same bytes.
        assert_eq!(compressed(&crates()).unwrap(), data);
    }

    #[test]
    fn rustc_flags_are_found_in_both_spellings() {
        let args: Vec<OsString> = ["--crate-name", "app", "--target=x86_64-unknown-linux-musl"]
            .iter()
            .map(Into::into)
            .collect();
        assert_eq!(flag(&args, "--crate-name"), Some("app"));
        assert_eq!(flag(&args, "--target"), Some("x86_64-unknown-linux-musl"));
        assert_eq!(flag(&args, "--out-dir"), None);
    }
}
