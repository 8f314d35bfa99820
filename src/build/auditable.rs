//! Dependency data in the binary, in the cargo-auditable format: the crates linked into it
//! as JSON (auditable-serde's `VersionInfo`), zlib-compressed, in a `.dep-v0` section — what
//! trivy, grype, syft and osv-scanner read from a binary, so they see the crates of a
//! FROM-scratch image.
//!
//! How it gets there, with nothing for the user to install: before cargo runs, each
//! binary's crate list is written down; when rustc links the binary, the workspace wrapper
//! (`super::wrapper`) adds an object file with the section ([`object`], made with the
//! `object` crate for the target), with `-u AUDITABLE_VERSION_INFO` (as `-Wl,-u,…` through
//! a C compiler driver) so that the linker keeps it.
//!
//! Reading it back ([`read`]) takes only that section of the file.

use std::io::Write;

use auditable_serde::{DependencyKind, Package, Source, VersionInfo};

use crate::error::{Error, Result};
use crate::plan::graph::Crate;
use crate::platform::Platform;

/// The section cargo-auditable uses.
pub const SECTION: &str = ".dep-v0";
/// The symbol the section holds, which the link is told to keep.
pub const SYMBOL: &str = "AUDITABLE_VERSION_INFO";

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
}
