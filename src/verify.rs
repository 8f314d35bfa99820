//! The static check: reads a binary as ELF (with the `object` crate) and proves it can run
//! in a `FROM scratch` image — the right machine type for its platform, no `PT_INTERP`
//! (no dynamic loader requested) and no `DT_NEEDED` (no shared libraries). Static-pie
//! binaries have a `PT_DYNAMIC` segment for self-relocation; that is fine.
//!
//! Not for: deciding what to do about a failure; callers turn a [`Verdict`] into an error.

use std::fs::File;
use std::path::{Path, PathBuf};

use object::read::elf::{Dyn, ElfFile, FileHeader, ProgramHeader};
use object::{elf, Endianness, FileKind, ReadCache, ReadRef};

use crate::error::{Error, IoContext, Result};
use crate::platform::Platform;

/// What the ELF header and dynamic section say about a binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub path: PathBuf,
    /// The platform from the ELF machine type, if it is a supported one.
    pub platform: Option<&'static Platform>,
    /// A description of the machine for messages (`x86_64`, `aarch64`, `EM 40`).
    pub machine: String,
    /// The dynamic loader requested through `PT_INTERP`, if any.
    pub interpreter: Option<String>,
    /// The shared libraries named by `DT_NEEDED`.
    pub needed: Vec<String>,
    /// The file size in bytes.
    pub size: u64,
}

impl Verdict {
    pub fn is_static(&self) -> bool {
        self.interpreter.is_none() && self.needed.is_empty()
    }

    /// `Ok` when static and for a supported platform; otherwise the error a user sees.
    pub fn require_static(&self) -> Result<&'static Platform> {
        let name = self.path.display();
        if !self.is_static() {
            let mut needs = Vec::new();
            if !self.needed.is_empty() {
                needs.push(format!("the shared libraries {}", self.needed.join(", ")));
            }
            if let Some(interp) = &self.interpreter {
                needs.push(format!("the dynamic loader {interp}"));
            }
            return Err(Error::verify(format!(
                "`{name}` is dynamically linked: it needs {}, which a FROM-scratch image does not have",
                needs.join(" and ")
            ))
            .with_help(
                "build for a musl target (x86_64-unknown-linux-musl or aarch64-unknown-linux-musl), which links \
                 statically by default; if it already is one, look for `-C target-feature=-crt-static` in \
                 RUSTFLAGS or .cargo/config.toml, or a -sys crate that links a system library dynamically \
                 (enable its `static`/`vendored` feature)",
            ));
        }
        self.platform.ok_or_else(|| {
            Error::verify(format!(
                "`{name}` is a static binary for {}, which no image platform supports",
                self.machine
            ))
            .with_help(format!(
                "supported platforms: {}",
                crate::platform::supported_list()
            ))
        })
    }
}

/// Reads the ELF headers of `path` (without loading the whole file).
pub fn inspect(path: &Path) -> Result<Verdict> {
    let file = File::open(path).path_context("opening", path)?;
    let size = file.metadata().path_context("reading", path)?.len();
    let cache = ReadCache::new(file);
    let not_elf = |what: &str| {
        Error::verify(format!("`{}` is not a Linux executable: {what}", path.display()))
            .with_help("pass the path of a compiled binary, e.g. target/x86_64-unknown-linux-musl/release/<name>")
    };
    let kind = FileKind::parse(&cache).map_err(|_| not_elf("unknown file format"))?;
    let mut verdict = match kind {
        FileKind::Elf64 => read_elf::<elf::FileHeader64<Endianness>, _>(&cache, true),
        FileKind::Elf32 => read_elf::<elf::FileHeader32<Endianness>, _>(&cache, false),
        other => return Err(not_elf(&format!("it is a {other:?} file, not ELF"))),
    }
    .map_err(|e| not_elf(&format!("malformed ELF ({e})")))?;
    verdict.path = path.to_path_buf();
    verdict.size = size;
    Ok(verdict)
}

fn read_elf<'data, Elf, R>(data: R, is_64: bool) -> object::read::Result<Verdict>
where
    Elf: FileHeader<Endian = Endianness>,
    R: ReadRef<'data>,
{
    let file = ElfFile::<Elf, R>::parse(data)?;
    let endian = file.endian();
    let machine = file.elf_header().e_machine(endian);
    let mut interpreter = None;
    let mut needed_in_segment = 0usize;
    for ph in file.elf_program_headers() {
        if let Some(interp) = ph.interpreter(endian, data)? {
            let s = String::from_utf8_lossy(interp);
            interpreter = Some(s.trim_end_matches('\0').to_string());
        }
        if let Some(dynamic) = ph.dynamic(endian, data)? {
            needed_in_segment += dynamic
                .iter()
                .take_while(|d| d.d_tag(endian) != elf::DT_NULL)
                .filter(|d| d.d_tag(endian) == elf::DT_NEEDED)
                .count();
        }
    }
    let mut needed = Vec::new();
    let table = file.elf_section_table().dynamic_table(endian, data)?;
    for entry in &table {
        if entry.tag == elf::DT_NEEDED {
            let name = table.string(entry)?;
            needed.push(String::from_utf8_lossy(name).into_owned());
        }
    }
    // Without section headers the names are out of reach, but the count is not.
    while needed.len() < needed_in_segment {
        needed.push("(unnamed library)".to_string());
    }
    let platform = Platform::from_elf(machine, is_64);
    let machine_name = match machine {
        elf::EM_X86_64 => "x86_64".to_string(),
        elf::EM_AARCH64 => "aarch64".to_string(),
        elf::EM_386 => "i386".to_string(),
        elf::EM_ARM => "arm".to_string(),
        elf::EM_RISCV => "riscv".to_string(),
        other => format!("ELF machine {}", other.0),
    };
    Ok(Verdict {
        path: PathBuf::new(),
        platform,
        machine: machine_name,
        interpreter,
        needed,
        size: 0,
    })
}

/// Checks that `path` is static and built for `expected`; the error names both.
pub fn check(path: &Path, expected: &Platform) -> Result<Verdict> {
    let verdict = inspect(path)?;
    let platform = verdict.require_static()?;
    if platform != expected {
        return Err(Error::verify(format!(
            "`{}` is a binary for {} ({}), but the image platform is {}",
            path.display(),
            platform,
            verdict.machine,
            expected
        ))
        .with_help(format!(
            "build it for {} or pass it for the platform it was built for",
            expected.triple
        )));
    }
    Ok(verdict)
}
