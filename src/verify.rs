//! The static check: proves that a file can run in a `FROM scratch` image — a regular
//! file, an ELF *executable* (`ET_EXEC`, or `ET_DYN` that is a static-pie program with an
//! entry point; not an object file, a shared library or a core dump) of the platform's
//! machine, class and byte order, with no `PT_INTERP` (no dynamic loader requested) and no
//! `DT_NEEDED` (no shared libraries). Static-pie binaries have a `PT_DYNAMIC` segment for
//! self-relocation; that is fine.
//!
//! The file is opened once ([`Verdict::file`]); what is packed is read from that same open
//! file, so a file swapped in at the path after the check is not what goes into the image.
//! Opening never blocks: a FIFO or a device is refused by what it is, before it is read.
//!
//! Not for: deciding what to do about a failure; callers turn a [`Verdict`] into an error.

use std::fs::File;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use object::read::elf::{Dyn, ElfFile, FileHeader, ProgramHeader};
use object::{elf, Endianness, FileKind, ReadCache, ReadRef};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::platform::Platform;

/// What kind of ELF file it is (`e_type`, and for `ET_DYN` whether it is a program).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElfKind {
    /// `ET_EXEC`.
    Executable,
    /// `ET_DYN` with an entry point and the `DF_1_PIE` flag: a PIE program.
    PositionIndependent,
    /// `ET_DYN` that is not a program.
    SharedLibrary,
    /// `ET_REL`: an object file.
    Relocatable,
    /// `ET_CORE`.
    Core,
    Other(u16),
}

impl ElfKind {
    fn runs(self) -> bool {
        matches!(self, ElfKind::Executable | ElfKind::PositionIndependent)
    }

    fn describe(self) -> String {
        match self {
            ElfKind::Executable => "an ELF executable".into(),
            ElfKind::PositionIndependent => "a position-independent ELF executable".into(),
            ElfKind::SharedLibrary => {
                "an ELF shared library (ET_DYN without an entry point and the PIE flag), not a program".into()
            }
            ElfKind::Relocatable => {
                "an ELF relocatable object (a `.o` file), not a linked program".into()
            }
            ElfKind::Core => "an ELF core dump, not a program".into(),
            ElfKind::Other(t) => format!("an ELF file of type {t}, not a program"),
        }
    }
}

/// What the ELF header and dynamic section say about a binary.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub path: PathBuf,
    /// The platform from the ELF machine type, class and byte order, if it is a supported one.
    pub platform: Option<&'static Platform>,
    /// A description of the machine for messages (`x86_64`, `aarch64`, `EM 40`).
    pub machine: String,
    pub kind: ElfKind,
    pub is_64: bool,
    pub big_endian: bool,
    /// The dynamic loader requested through `PT_INTERP`, if any.
    pub interpreter: Option<String>,
    /// The shared libraries named by `DT_NEEDED`.
    pub needed: Vec<String>,
    /// The file size in bytes, when checked.
    pub size: u64,
    /// The file that was checked, still open: pack from this, not from the path.
    pub file: Arc<File>,
}

impl Verdict {
    pub fn is_static(&self) -> bool {
        self.interpreter.is_none() && self.needed.is_empty()
    }

    /// `linux/arm64`, or the machine with its class and byte order when no platform has it.
    fn what_machine(&self) -> String {
        let order = if self.big_endian { ", big-endian" } else { "" };
        let class = if self.is_64 { "64-bit" } else { "32-bit" };
        format!("{} ({class}{order})", self.machine)
    }

    /// `Ok` when it can run in an image; otherwise the error a user sees.
    pub fn require_static(&self) -> Result<&'static Platform> {
        let name = self.path.display();
        if !self.kind.runs() {
            return Err(Error::verify(format!(
                "`{name}` is {}, so it cannot run as the image's program",
                self.kind.describe()
            ))
            .with_help(
                "pass the linked executable, e.g. target/x86_64-unknown-linux-musl/release/<name>",
            ));
        }
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
                "`{name}` is a static executable for {}, which no image platform runs",
                self.what_machine()
            ))
            .with_help(format!(
                "supported platforms: {}",
                crate::platform::supported_list()
            ))
        })
    }
}

/// What a path that is not a regular file is, for the message.
fn not_a_file(meta: &std::fs::Metadata) -> Option<&'static str> {
    let t = meta.file_type();
    if t.is_file() {
        None
    } else if t.is_dir() {
        Some("a directory")
    } else if t.is_fifo() {
        Some("a named pipe (FIFO)")
    } else if t.is_socket() {
        Some("a socket")
    } else if t.is_char_device() || t.is_block_device() {
        Some("a device")
    } else {
        Some("not a regular file")
    }
}

/// What a file that is not ELF is, from its first bytes (the magic numbers of the common
/// formats; the `object` crate is built for ELF only).
fn unknown_format(head: &[u8]) -> String {
    const MACHO: [[u8; 4]; 5] = [
        [0xfe, 0xed, 0xfa, 0xce],
        [0xfe, 0xed, 0xfa, 0xcf],
        [0xce, 0xfa, 0xed, 0xfe],
        [0xcf, 0xfa, 0xed, 0xfe],
        [0xca, 0xfe, 0xba, 0xbe],
    ];
    if head.starts_with(b"!<arch>\n") {
        "a static library or `ar` archive (.a), not a linked program".into()
    } else if MACHO.iter().any(|m| head.starts_with(m)) {
        "a Mach-O file (macOS), not a Linux executable".into()
    } else if head.starts_with(b"MZ") {
        "a PE file (Windows), not a Linux executable".into()
    } else if head.starts_with(b"\0asm") {
        "a WebAssembly module, not a Linux executable".into()
    } else if head.starts_with(b"#!") {
        "a script (it starts with `#!`), not a compiled binary".into()
    } else if head.starts_with(&[0x1f, 0x8b]) {
        "gzip-compressed data, not an executable".into()
    } else if head.is_empty() {
        "an empty file".into()
    } else if head.starts_with(b"\x7fELF") {
        "a damaged ELF file (its header cannot be read)".into()
    } else {
        "not an executable: its format is not ELF".into()
    }
}

/// Opens `path` and reads its ELF headers (without loading the whole file).
pub fn inspect(path: &Path) -> Result<Verdict> {
    inspect_opened(path, None)
}

/// [`inspect`] of `file`, opened before as `path` (see `crate::build::Built`), or of what
/// `path` holds now.
pub fn inspect_opened(path: &Path, opened: Option<std::fs::File>) -> Result<Verdict> {
    let fail = |what: String| {
        Error::verify(format!("`{}` is {what}", path.display())).with_help(
            "pass the path of a compiled binary, e.g. target/x86_64-unknown-linux-musl/release/<name>",
        )
    };
    let file = match opened {
        Some(file) => file,
        None => {
            let meta = std::fs::metadata(path).map_err(|e| {
                Error::verify(format!("reading `{}` failed: {e}", path.display())).with_source(e)
            })?;
            if let Some(what) = not_a_file(&meta) {
                return Err(fail(what.to_string()));
            }
            // Never blocks (a FIFO swapped in after the check above), and the open file is
            // checked again: what is read is what was opened.
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
                .open(path)
                .map_err(|e| {
                    Error::verify(format!("opening `{}` failed: {e}", path.display()))
                        .with_source(e)
                })?
        }
    };
    let meta = file.metadata().map_err(|e| {
        Error::verify(format!("reading `{}` failed: {e}", path.display())).with_source(e)
    })?;
    if let Some(what) = not_a_file(&meta) {
        return Err(fail(what.to_string()));
    }
    let size = meta.len();
    let file = Arc::new(file);
    let cache = ReadCache::new(&*file);
    let head = cache.read_bytes_at(0, size.min(16)).unwrap_or_default();
    let kind = FileKind::parse(&cache).ok();
    let parsed = match kind {
        Some(FileKind::Elf64) => read_elf::<elf::FileHeader64<Endianness>, _>(&cache, true),
        Some(FileKind::Elf32) => read_elf::<elf::FileHeader32<Endianness>, _>(&cache, false),
        _ => return Err(fail(unknown_format(head))),
    };
    let facts = parsed.map_err(|e| fail(format!("a damaged or truncated ELF file ({e})")))?;
    Ok(Verdict {
        path: path.to_path_buf(),
        platform: Platform::from_elf(
            facts.machine,
            facts.is_64,
            facts.big_endian,
            facts.arm_cpu_arch,
        ),
        machine: machine_name(facts.machine, facts.big_endian),
        kind: facts.kind,
        is_64: facts.is_64,
        big_endian: facts.big_endian,
        interpreter: facts.interpreter,
        needed: facts.needed,
        size,
        file,
    })
}

fn machine_name(machine: elf::Machine, big_endian: bool) -> String {
    match (machine, big_endian) {
        (elf::EM_X86_64, _) => "x86_64".to_string(),
        (elf::EM_AARCH64, false) => "aarch64".to_string(),
        (elf::EM_AARCH64, true) => "aarch64_be".to_string(),
        (elf::EM_386, _) => "i386".to_string(),
        (elf::EM_ARM, _) => "arm".to_string(),
        (elf::EM_RISCV, _) => "riscv".to_string(),
        (elf::EM_PPC64, false) => "ppc64le".to_string(),
        (elf::EM_PPC64, true) => "ppc64".to_string(),
        (elf::EM_S390, _) => "s390x".to_string(),
        (other, _) => format!("ELF machine {}", other.0),
    }
}

/// What [`read_elf`] finds.
struct Facts {
    machine: elf::Machine,
    is_64: bool,
    big_endian: bool,
    kind: ElfKind,
    interpreter: Option<String>,
    needed: Vec<String>,
    /// 32-bit arm: `Tag_CPU_arch` of the `aeabi` attributes, when there are some.
    arm_cpu_arch: Option<u64>,
}

fn read_elf<'data, Elf, R>(data: R, is_64: bool) -> object::read::Result<Facts>
where
    Elf: FileHeader<Endian = Endianness>,
    R: ReadRef<'data>,
{
    let file = ElfFile::<Elf, R>::parse(data)?;
    let endian = file.endian();
    let header = file.elf_header();
    let machine = header.e_machine(endian);
    let mut interpreter = None;
    let mut needed_in_segment = 0usize;
    let mut pie_flag = false;
    for ph in file.elf_program_headers() {
        if let Some(interp) = ph.interpreter(endian, data)? {
            let s = String::from_utf8_lossy(interp);
            interpreter = Some(s.trim_end_matches('\0').to_string());
        }
        if let Some(dynamic) = ph.dynamic(endian, data)? {
            for d in dynamic
                .iter()
                .take_while(|d| d.d_tag(endian) != elf::DT_NULL)
            {
                match d.d_tag(endian) {
                    elf::DT_NEEDED => needed_in_segment += 1,
                    elf::DT_FLAGS_1 => {
                        let flags: u64 = d.d_val(endian).into();
                        pie_flag |= flags & elf::DF_1_PIE.0 != 0;
                    }
                    _ => {}
                }
            }
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
    let entry: u64 = header.e_entry(endian).into();
    let kind = match header.e_type(endian) {
        elf::ET_EXEC => ElfKind::Executable,
        elf::ET_DYN if entry != 0 && pie_flag => ElfKind::PositionIndependent,
        elf::ET_DYN => ElfKind::SharedLibrary,
        elf::ET_REL => ElfKind::Relocatable,
        elf::ET_CORE => ElfKind::Core,
        other => ElfKind::Other(other.0),
    };
    let arm_cpu_arch = if machine == elf::EM_ARM {
        arm_cpu_arch(&file, endian, data)
    } else {
        None
    };
    Ok(Facts {
        machine,
        is_64,
        big_endian: endian == Endianness::Big,
        kind,
        interpreter,
        needed,
        arm_cpu_arch,
    })
}

/// `Tag_CPU_arch` from the `aeabi` subsection of `.ARM.attributes` (ARM's "Addenda to the
/// ABI", build attributes): what tells an ARMv6 binary from an ARMv7 one, which share
/// their ELF header. The format is small but the `object` crate reads only its framing, so
/// the tags are walked here: each value is a string or a number by the ABI's rule.
/// `None` when the section or the tag is not there or unreadable.
fn arm_cpu_arch<'data, Elf, R>(
    file: &ElfFile<'data, Elf, R>,
    endian: Endianness,
    data: R,
) -> Option<u64>
where
    Elf: FileHeader<Endian = Endianness>,
    R: ReadRef<'data>,
{
    use object::read::elf::SectionHeader as _;
    const TAG_CPU_RAW_NAME: u64 = 4;
    const TAG_CPU_NAME: u64 = 5;
    const TAG_CPU_ARCH: u64 = 6;
    const TAG_COMPATIBILITY: u64 = 32;
    let section = file
        .elf_section_table()
        .iter()
        .find(|s| s.sh_type(endian) == elf::SHT_ARM_ATTRIBUTES)?;
    let attributes = section.attributes(endian, data).ok()?;
    let mut subsections = attributes.subsections().ok()?;
    while let Ok(Some(sub)) = subsections.next() {
        if sub.vendor() != b"aeabi" {
            continue;
        }
        let mut subsubsections = sub.subsubsections();
        while let Ok(Some(subsub)) = subsubsections.next() {
            if subsub.tag() != elf::Tag_File {
                continue;
            }
            let mut reader = subsub.attributes();
            while let Ok(Some(tag)) = reader.read_tag() {
                match tag {
                    TAG_CPU_ARCH => return reader.read_integer().ok(),
                    TAG_CPU_RAW_NAME | TAG_CPU_NAME => {
                        reader.read_string().ok()?;
                    }
                    // Tag_compatibility: a flag and a vendor name.
                    TAG_COMPATIBILITY => {
                        reader.read_integer().ok()?;
                        reader.read_string().ok()?;
                    }
                    // Past 32 the value's kind follows the tag: odd a string (such as
                    // Tag_conformance, which comes first), even a number.
                    t if t > 32 && t % 2 == 1 => {
                        reader.read_string().ok()?;
                    }
                    _ => {
                        reader.read_integer().ok()?;
                    }
                }
            }
        }
    }
    None
}

/// The `malloc` a binary carries, as its read-only data tells: each allocator leaves its
/// own message strings there, and musl and glibc theirs (`strerror`'s table, the malloc
/// tunables). Stripping does not remove them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Allocator {
    Mimalloc,
    Jemalloc,
    Snmalloc,
    /// musl's own (mallocng): a musl binary with none of the above.
    Musl,
    /// glibc's (a static glibc binary).
    Glibc,
    /// None of the above could be told.
    Unknown,
}

impl Allocator {
    /// For people: `mimalloc`, `musl's malloc`.
    pub fn describe(self) -> &'static str {
        match self {
            Allocator::Mimalloc => "mimalloc",
            Allocator::Jemalloc => "jemalloc",
            Allocator::Snmalloc => "snmalloc",
            Allocator::Musl => "musl's malloc",
            Allocator::Glibc => "glibc's malloc",
            Allocator::Unknown => "unknown malloc",
        }
    }
}

/// The C library a binary was linked with, when its strings tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Libc {
    Musl,
    Glibc,
}

/// What a binary carries at run time besides its own code (see `crate::build::runtime`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Runtime {
    pub allocator: Allocator,
    /// The allocator is mimalloc linked in by cargo-microimage (its `malloc`, with the
    /// thread that hands freed memory back), not a `#[global_allocator]` of the program's.
    pub allocator_linked: bool,
    /// cargo-microimage's PID 1 signal hook is linked in.
    pub pid1_signals: bool,
    pub libc: Option<Libc>,
    /// The default stack of threads started without a size (C code's `pthread_create`
    /// with default attributes), in bytes, for a musl binary: musl's 128 KiB unless the
    /// binary's `PT_GNU_STACK` asks for more, up to musl's cap of 8 MiB.
    pub thread_stack: Option<u64>,
}

/// musl's default thread stack (`DEFAULT_STACK_SIZE`), which a binary can raise but not
/// lower.
pub const MUSL_THREAD_STACK: u64 = 128 << 10;
/// The most musl takes from a binary (`DEFAULT_STACK_MAX`): also glibc's usual default.
pub const MUSL_THREAD_STACK_MAX: u64 = 8 << 20;

/// What musl makes of a `PT_GNU_STACK` size (`static_init_tls`, musl 1.1.21 and later).
pub fn musl_thread_stack(stack_size: u64) -> u64 {
    stack_size.clamp(MUSL_THREAD_STACK, MUSL_THREAD_STACK_MAX)
}

/// `8 MiB`, `512 KiB`, `131072 B`.
pub fn stack_text(bytes: u64) -> String {
    if bytes % (1 << 20) == 0 {
        format!("{} MiB", bytes >> 20)
    } else if bytes % (1 << 10) == 0 {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{bytes} B")
    }
}

impl Runtime {
    /// `mimalloc (linked by cargo-microimage), PID 1 signal hook, 8 MiB thread stacks`.
    pub fn describe(&self) -> String {
        let mut parts = vec![match (self.allocator, self.allocator_linked) {
            (Allocator::Mimalloc, true) => "mimalloc (linked by cargo-microimage)".to_string(),
            (Allocator::Mimalloc, false) => "mimalloc (the program's own)".to_string(),
            (other, _) => other.describe().to_string(),
        }];
        if self.pid1_signals {
            parts.push("PID 1 signal hook".to_string());
        }
        if let Some(bytes) = self.thread_stack {
            let musl = if bytes == MUSL_THREAD_STACK {
                " (musl's default)"
            } else {
                ""
            };
            parts.push(format!("{} thread stacks{musl}", stack_text(bytes)));
        }
        parts.join(", ")
    }

    /// The warnings for a binary that `build` did not link (`verify`, `pack`): musl's own
    /// malloc, and musl's 128 KiB default thread stack.
    pub fn warnings(&self, path: &Path) -> Vec<String> {
        let mut out = Vec::new();
        if self.allocator == Allocator::Musl {
            out.push(format!(
                "`{}` uses musl's own malloc, with which allocation-heavy code runs several times slower than on \
                 glibc (3-9x, measured: the Runtime parity chapter, docs/runtime.md); `cargo microimage build` links mimalloc in by \
                 default, or give the program a global allocator such as the `mimalloc` crate",
                path.display()
            ));
        }
        if self.thread_stack == Some(MUSL_THREAD_STACK) {
            out.push(format!(
                "`{}` gives threads that C code starts without a size musl's 128 KiB stack (glibc gives 8 MiB): C \
                 libraries that start threads (librdkafka, RocksDB, gRPC) can crash with it; `cargo microimage build` \
                 links with 8 MiB, or link with `-C link-arg=-Wl,-z,stack-size=8388608`",
                path.display()
            ));
        }
        out
    }
}

/// The strings that tell them apart.
const MIMALLOC: &[u8] = b"mimalloc: ";
const JEMALLOC: &[u8] = b"<jemalloc>";
const SNMALLOC: &[u8] = b"Failed to initialise snmalloc";
const MUSL: &[u8] = b"No error information";
const GLIBC: &[u8] = b"glibc.malloc.";
/// The section `templates/runtime/rt.rs` puts its markers in (NUL-terminated names): only
/// a binary that links the runtime object has it.
const MARKERS: &str = ".microimage";
const HOOK: &[u8] = b"pid1-signals";
const LINKED_MIMALLOC: &[u8] = b"mimalloc";
/// At most this much read-only data is read (a binary with gigabytes of embedded data
/// keeps its allocator's strings among the first of it).
const SCAN_LIMIT: u64 = 256 << 20;

/// Where to look in an ELF file: its read-only data (its `.rodata*` sections; without
/// section headers, the whole file) as (offset, length) ranges, the markers section, and
/// the `PT_GNU_STACK` size.
struct Layout {
    read_only: Vec<(u64, u64)>,
    markers: Option<(u64, u64)>,
    stack_size: u64,
}

fn layout<'data, R: ReadRef<'data>>(data: R, size: u64) -> Layout {
    use object::{Object, ObjectSection};
    let (mut read_only, mut markers, mut stack_size) = (Vec::new(), None, 0);
    if let Ok(file) = object::File::parse(data) {
        for s in file.sections() {
            let name = s.name().unwrap_or_default();
            if name.starts_with(".rodata") {
                read_only.extend(s.file_range());
            } else if name == MARKERS {
                markers = s.file_range();
            }
        }
        stack_size = match &file {
            object::File::Elf64(f) => gnu_stack(f.elf_program_headers(), f.endian()),
            object::File::Elf32(f) => gnu_stack(f.elf_program_headers(), f.endian()),
            _ => 0,
        };
    }
    if read_only.is_empty() {
        read_only.push((0, size));
    }
    Layout {
        read_only,
        markers,
        stack_size,
    }
}

fn gnu_stack<P: ProgramHeader<Endian = Endianness>>(headers: &[P], endian: Endianness) -> u64 {
    headers
        .iter()
        .find(|ph| ph.p_type(endian) == elf::PT_GNU_STACK)
        .map_or(0, |ph| ph.p_memsz(endian).into())
}

/// Scans `layout` through `read_at` (a step at a time, overlapping by a pattern's length).
fn scan(layout: &Layout, read_at: &mut dyn FnMut(u64, &mut [u8]) -> usize) -> Runtime {
    let patterns = [MIMALLOC, JEMALLOC, MUSL, GLIBC, SNMALLOC];
    let finders: Vec<memchr::memmem::Finder> =
        patterns.iter().map(memchr::memmem::Finder::new).collect();
    let mut found = [false; 5];
    let overlap = patterns.iter().map(|p| p.len()).max().unwrap_or(0) as u64;
    let mut budget = SCAN_LIMIT;
    let mut buf = vec![0u8; 1 << 20];
    for &(start, len) in &layout.read_only {
        let mut at = start;
        let end = start + len.min(budget);
        while at < end && !found.iter().all(|f| *f) {
            let want = (end - at).min(buf.len() as u64) as usize;
            let n = read_at(at, &mut buf[..want]);
            if n == 0 {
                break;
            }
            for (f, finder) in found.iter_mut().zip(&finders) {
                *f |= finder.find(&buf[..n]).is_some();
            }
            let step = (n as u64).saturating_sub(overlap).max(1);
            if at + n as u64 >= end {
                break;
            }
            at += step;
        }
        budget = budget.saturating_sub(len);
    }
    let parts = parts_of(layout, read_at);
    let allocator = if found[0] {
        Allocator::Mimalloc
    } else if found[1] {
        Allocator::Jemalloc
    } else if found[4] {
        Allocator::Snmalloc
    } else if found[3] {
        Allocator::Glibc
    } else if found[2] {
        Allocator::Musl
    } else {
        Allocator::Unknown
    };
    let libc = if found[3] {
        Some(Libc::Glibc)
    } else if found[2] {
        Some(Libc::Musl)
    } else {
        None
    };
    Runtime {
        allocator,
        allocator_linked: allocator == Allocator::Mimalloc && parts.mimalloc,
        pid1_signals: parts.pid1_signals,
        libc,
        thread_stack: (libc == Some(Libc::Musl)).then(|| musl_thread_stack(parts.stack_size)),
    }
}

/// The parts of the tool's runtime a binary carries, read from its `.microimage` section
/// and `PT_GNU_STACK` only (cheap: what `build` checks every binary it links against).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkedParts {
    pub mimalloc: bool,
    pub pid1_signals: bool,
    /// `PT_GNU_STACK`'s size (0: none asked for).
    pub stack_size: u64,
}

/// [`LinkedParts`] of the binary behind `verdict`.
/// [`LinkedParts`] of the binary open as `file` (`size` bytes, checked before).
pub fn linked_parts(file: &File, size: u64) -> LinkedParts {
    use std::os::unix::fs::FileExt;
    let layout = layout(&ReadCache::new(file), size);
    parts_of(&layout, &mut |at, buf| file.read_at(buf, at).unwrap_or(0))
}

/// The parts the markers section names (a few NUL-terminated names, so a small section:
/// anything larger is not ours), and `PT_GNU_STACK`'s size.
fn parts_of(layout: &Layout, read_at: &mut dyn FnMut(u64, &mut [u8]) -> usize) -> LinkedParts {
    let mut names = Vec::new();
    if let Some((start, len)) = layout.markers.filter(|&(_, len)| len <= 4096) {
        let mut bytes = vec![0u8; len as usize];
        let n = read_at(start, &mut bytes);
        names = bytes[..n]
            .split(|&b| b == 0)
            .filter(|n| !n.is_empty())
            .map(<[u8]>::to_vec)
            .collect();
    }
    LinkedParts {
        mimalloc: names.iter().any(|n| n == LINKED_MIMALLOC),
        pid1_signals: names.iter().any(|n| n == HOOK),
        stack_size: layout.stack_size,
    }
}

/// What the binary behind `verdict` carries at run time, read from the file it checked.
pub fn runtime_of(verdict: &Verdict) -> Runtime {
    use std::os::unix::fs::FileExt;
    let file = &*verdict.file;
    let layout = layout(&ReadCache::new(file), verdict.size);
    scan(&layout, &mut |at, buf| file.read_at(buf, at).unwrap_or(0))
}

/// The same for a binary read from an image's layer (in memory, or spilled to a file).
pub fn runtime_of_data(data: &crate::blob::Data) -> Runtime {
    use std::io::{Read, Seek};
    let layout = layout(&ReadCache::new(data.reader()), data.len());
    let mut reader = data.reader();
    scan(&layout, &mut |at, buf| {
        if reader.seek(std::io::SeekFrom::Start(at)).is_err() {
            return 0;
        }
        let mut n = 0;
        while n < buf.len() {
            match reader.read(&mut buf[n..]) {
                Ok(0) | Err(_) => break,
                Ok(k) => n += k,
            }
        }
        n
    })
}

/// Checks that `path` is static and built for `expected`; the error names both.
pub fn check(path: &Path, expected: &Platform) -> Result<Verdict> {
    check_opened(path, None, expected)
}

/// [`check`] of a file opened before (see [`inspect_opened`]).
pub fn check_opened(
    path: &Path,
    opened: Option<std::fs::File>,
    expected: &Platform,
) -> Result<Verdict> {
    let verdict = inspect_opened(path, opened)?;
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
