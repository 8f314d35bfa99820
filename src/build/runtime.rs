//! The runtime linked into the binaries `build` compiles (DESIGN §9), so that the program
//! in the image runs as it would on a normal host:
//!
//! - **mimalloc** instead of musl's malloc (`--allocator`): musl's takes a global lock and
//!   gives memory back eagerly, which makes allocation-heavy code several times slower
//!   than on glibc. The released `libmimalloc-sys` with its `override` feature compiles
//!   mimalloc so that it defines `malloc`, `free` and the rest; that archive is linked with
//!   `+whole-archive` ahead of the C library, so every allocation — Rust's `System`
//!   allocator and C code alike — goes to it, with no change to the user's code. It is
//!   compiled by a small helper package (`templates/runtime/mimalloc.Cargo.*`, version and
//!   checksums pinned) with the C compiler the build uses for other C code, once per
//!   target, version and compiler, and kept in the user's cache directory.
//! - With mimalloc, **`memcpy` and `memmove`** on x86 and x86_64, and **`memcmp` and
//!   `bcmp`** on x86, x86_64 and aarch64, that are fast for short strings (musl's copies are
//!   `rep movs`, measured as 40% of the run time of an allocation-heavy program, and its
//!   `memcmp` a byte loop, half the time of one that sorts strings: see
//!   `templates/runtime/rt.rs` and docs/runtime.md).
//! - The **PID 1 signal hook** (`--no-pid1-signals` turns it off): SIGTERM, SIGINT and
//!   SIGHUP end the program with 128 + the signal when it runs as PID 1, where the kernel
//!   would otherwise ignore them.
//!
//! The last two are one object file compiled from `templates/runtime/rt.rs` by `rustc`
//! itself (`--emit=obj`, no C compiler needed), also cached. Both are handed to rustc for
//! the final link of each binary only, by the workspace wrapper (`super::wrapper`): in
//! RUSTFLAGS the archive would be bundled into every rlib (duplicate symbols), and as a
//! plain `-C link-arg` it would come after the C library (undefined symbols).
//!
//! Not for: where the link arguments go (see `super::wrapper`), or reading which allocator
//! a finished binary has (see `crate::verify::runtime_of`).

use std::collections::BTreeMap;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use cargo_metadata::Message;

use super::stdlib::Nightly;
use super::toolchain::{self, CCompiler, Toolchain};
use crate::error::{Error, Result};
use crate::plan::graph::Crate;
use crate::plan::{cargo, CargoOptions};
use crate::platform::Platform;
use crate::settings::{Allocator, Origin, Runtime};
use crate::shell::Shell;

/// The crate whose build compiles mimalloc, and its version (also in the lock file below).
pub const MIMALLOC_SYS: &str = "libmimalloc-sys";
pub const MIMALLOC_SYS_VERSION: &str = "0.1.49";
/// mimalloc's licence, for the SBOM.
const MIMALLOC_LICENSE: &str = "MIT";
const MANIFEST: &str = include_str!("../../templates/runtime/mimalloc.Cargo.toml");
const LOCK: &str = include_str!("../../templates/runtime/mimalloc.Cargo.lock");
const RT_SOURCE: &str = include_str!("../../templates/runtime/rt.rs");
/// How mimalloc is compiled, beyond the pinned sources, the target and the compiler: part
/// of its cache key, so that a change here never reuses an archive made the old way.
const MIMALLOC_RECIPE: &str = "release opt-level=3 debug=false SOURCE_DATE_EPOCH=0 file-prefix-map";
/// The file names of what is linked (distinct from anything a user's build would link).
const MIMALLOC_LIB: &str = "microimage_mimalloc";
const RT_OBJECT: &str = "microimage_rt.o";

/// Crates that bring an allocator of their own: with one of them among a binary's crates,
/// `auto` leaves the binary's allocator as it is. (Linking mimalloc's `malloc` next to
/// `libmimalloc-sys` would also define its symbols twice.)
pub const ALLOCATOR_CRATES: &[&str] = &[
    "mimalloc",
    "libmimalloc-sys",
    "tikv-jemallocator",
    "tikv-jemalloc-sys",
    "jemallocator",
    "jemalloc-sys",
    "snmalloc-rs",
    "snmalloc-sys",
    "rpmalloc",
    "rpmalloc-sys",
];

/// The allocator a binary ends up with.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Choice {
    /// mimalloc, linked by the tool.
    Mimalloc,
    /// musl's own malloc.
    System,
    /// The allocator a crate of the binary brings (its name).
    Own(String),
}

impl Choice {
    /// For status lines: `mimalloc`, `musl's malloc`, `its own allocator (tikv-jemallocator)`.
    pub fn describe(&self) -> String {
        match self {
            Choice::Mimalloc => "mimalloc".to_string(),
            Choice::System => "musl's malloc".to_string(),
            Choice::Own(c) => format!("its own allocator ({c})"),
        }
    }
}

/// The allocator crate among `crates` (the binary's package first, which is not counted):
/// one the package depends on directly if there is one (`tikv-jemallocator`, rather than
/// the `tikv-jemalloc-sys` under it).
pub fn own_allocator(crates: &[Crate]) -> Option<&str> {
    let is_allocator = |c: &&Crate| ALLOCATOR_CRATES.contains(&c.name.as_str());
    let direct = crates.first().into_iter().flat_map(|root| {
        root.dependencies
            .iter()
            .filter_map(|&i| crates.get(i))
            .filter(|&c| !std::ptr::eq(c, root))
    });
    direct
        .filter(is_allocator)
        .chain(crates.iter().skip(1).filter(is_allocator))
        .map(|c| c.name.as_str())
        .next()
}

/// What `allocator` means for a binary with `crates`.
pub fn choose(runtime: &Runtime, crates: &[Crate], bin: &str) -> Result<Choice> {
    let own = own_allocator(crates);
    match (runtime.allocator, own) {
        (Allocator::System, _) => Ok(Choice::System),
        (Allocator::Auto, Some(own)) => Ok(Choice::Own(own.to_string())),
        (Allocator::Auto, None) => Ok(Choice::Mimalloc),
        (Allocator::Mimalloc, Some(own)) => Err(explicit(
            &runtime.allocator_origin,
            format!(
                "`{bin}` brings an allocator of its own ({own}), so mimalloc cannot be linked into it"
            ),
            format!("keep {own} with `auto` (the default), or remove it from `{bin}`'s dependencies"),
        )),
        (Allocator::Mimalloc, None) => Ok(Choice::Mimalloc),
    }
}

/// An error about an explicit `mimalloc`, naming where it was asked for.
fn explicit(origin: &Origin, message: String, help: String) -> Error {
    let asked = match origin {
        Origin::CommandLine => "--allocator mimalloc".to_string(),
        other => format!("`allocator = \"mimalloc\"` ({other})"),
    };
    Error::build(format!("{asked}: {message}")).with_help(help)
}

/// What is linked into one binary.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Linked {
    pub allocator: Choice,
    pub pid1_signals: bool,
    /// The default stack of threads started without a size, in bytes: the binary's
    /// `PT_GNU_STACK` size, which musl takes as its default (see `super::wrapper`).
    pub thread_stack: u64,
    /// The arguments rustc gets for the binary's link, in order.
    pub args: Vec<String>,
    /// What the arguments link, by content (the files' sha256, not their paths), so the
    /// same everywhere: it names the build's workspace wrapper (see `super::wrapper`).
    pub key: String,
    /// The C compiler that compiled the mimalloc it links (`zig 0.13.0`), if it links it.
    pub c_compiler: Option<String>,
}

impl Linked {
    /// For the Building line: `with mimalloc, the PID 1 signal hook and 8 MiB thread
    /// stacks`.
    pub fn describe(&self) -> String {
        let mut parts = vec![self.allocator.describe()];
        if self.pid1_signals {
            parts.push("the PID 1 signal hook".to_string());
        }
        parts.push(format!(
            "{} thread stacks",
            crate::verify::stack_text(self.thread_stack)
        ));
        let last = parts.pop().unwrap_or_default();
        if parts.is_empty() {
            format!("with {last}")
        } else {
            format!("with {} and {last}", parts.join(", "))
        }
    }

    /// `crates` with mimalloc's crate added when it is linked (the binary's package depends
    /// on it): what the dependency data and the SBOM list.
    pub fn crates(&self, crates: &[Crate]) -> Vec<Crate> {
        let mut out = crates.to_vec();
        if self.allocator == Choice::Mimalloc && !out.is_empty() {
            let index = out.len();
            out.push(mimalloc_crate());
            out[0].dependencies.push(index);
        }
        out
    }
}

/// Fails when `binary` lacks a part of `linked` that the workspace wrapper was to add: a
/// wrapper of the user's, or anything else between cargo and rustc, that dropped the
/// arguments would otherwise give an image that silently runs on musl's malloc, ignores
/// SIGTERM as PID 1 or crashes C threads.
pub fn check_linked(binary: &crate::image::PlatformBinary, linked: &Linked) -> Result<()> {
    let found = crate::verify::linked_parts(&binary.file, binary.size);
    let mut missing = Vec::new();
    if linked.allocator == Choice::Mimalloc && !found.mimalloc {
        missing.push("mimalloc".to_string());
    }
    if linked.pid1_signals && !found.pid1_signals {
        missing.push("the PID 1 signal hook".to_string());
    }
    if found.stack_size != linked.thread_stack {
        missing.push(format!(
            "its {} thread stack size",
            crate::verify::stack_text(linked.thread_stack)
        ));
    }
    if missing.is_empty() {
        return Ok(());
    }
    Err(Error::build(format!(
        "`{}` was linked without {} that cargo-microimage adds at its final link: something between cargo \
         and rustc dropped the arguments",
        binary.path.display(),
        missing.join(", ")
    ))
    .with_help(
        "check RUSTC_WORKSPACE_WRAPPER, RUSTC_WRAPPER and `build.rustc-wrapper` in .cargo/config.toml: a wrapper \
         must pass on every argument rustc gets",
    ))
}

/// The musl that a Rust release bundles for its musl targets (rustc's self-contained
/// `libc.a`): 1.2.5 since Rust 1.93, 1.2.3 from 1.71, 1.1.24 before.
pub fn bundled_musl(rustc_version: &str) -> Option<&'static str> {
    // `rustc 1.92.0 (…)`, `rustc 1.95.0-nightly (…)`.
    let version = rustc_version.split_whitespace().nth(1)?;
    let mut parts = version.split(['.', '-']);
    let (major, minor) = (
        parts.next()?.parse::<u32>().ok()?,
        parts.next()?.parse::<u32>().ok()?,
    );
    Some(match (major, minor) {
        (1, m) if m >= 93 => "1.2.5",
        (1, m) if m >= 71 => "1.2.3",
        (1, _) => "1.1.24",
        _ => "1.2.5",
    })
}

/// The warning for a toolchain whose musl predates 1.2.5, whose resolver falls back to TCP
/// for answers larger than 512 bytes (before it, large DNS answers — many AAAA or SRV
/// records, long Kubernetes search lists — failed), said once per build.
pub fn old_musl_warning(rustc_version: &str) -> Option<String> {
    let musl = bundled_musl(rustc_version)?;
    (musl != "1.2.5").then(|| {
        format!(
            "{rustc_version} bundles musl {musl}, whose DNS resolver does not retry over TCP when an answer is \
             larger than 512 bytes (musl 1.2.4 added that): name lookups with many records can fail in the image. \
             `rustup update` (Rust 1.93 and later bundle musl 1.2.5); the Runtime parity chapter (docs/runtime.md) has the details"
        )
    })
}

/// mimalloc's crate as the dependency data and the SBOMs list it.
pub fn mimalloc_crate() -> Crate {
    Crate {
        name: MIMALLOC_SYS.to_string(),
        version: MIMALLOC_SYS_VERSION.to_string(),
        source: "crates.io".to_string(),
        source_id: Some("registry+https://github.com/rust-lang/crates.io-index".to_string()),
        license: Some(MIMALLOC_LICENSE.to_string()),
        checksum: lock_checksum(MIMALLOC_SYS),
        dependencies: Vec::new(),
    }
}

/// The checksum the pinned lock file has for `name`.
fn lock_checksum(name: &str) -> Option<String> {
    let lock: toml::Table = LOCK.parse().ok()?;
    lock.get("package")?
        .as_array()?
        .iter()
        .find(|p| p.get("name").and_then(|n| n.as_str()) == Some(name))?
        .get("checksum")?
        .as_str()
        .map(str::to_string)
}

/// One binary's request: its settings and crates.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub bin: &'a str,
    pub runtime: &'a Runtime,
    pub crates: &'a [Crate],
}

/// Where the compiled runtime parts are kept: the user's cache directory, else `fallback`.
fn cache_root(fallback: &Path) -> PathBuf {
    crate::blob::cache_home()
        .unwrap_or_else(|| fallback.to_path_buf())
        .join("runtime")
}

/// Decides and readies what each of `requests` links for `platform`: compiles mimalloc
/// and the runtime object where they are not cached yet.
#[allow(clippy::too_many_arguments)]
pub fn prepare(
    platform: &'static Platform,
    requests: &[Request],
    toolchain: &Toolchain,
    rustc_version: Option<&str>,
    options: &CargoOptions,
    fallback_dir: &Path,
    shell: &Shell,
) -> Result<Vec<Linked>> {
    let mut choices = requests
        .iter()
        .map(|r| choose(r.runtime, r.crates, r.bin))
        .collect::<Result<Vec<_>>>()?;
    let root = cache_root(fallback_dir);
    let mut mimalloc = None;
    let mut compiler = None;
    if choices.contains(&Choice::Mimalloc) {
        match toolchain::c_compiler(toolchain, shell)? {
            Some(cc) => {
                let nightly = toolchain.std_from_source();
                mimalloc = Some(mimalloc_archive(
                    platform, &cc, nightly, options, &root, shell,
                )?);
                compiler = Some(cc.name);
            }
            None => {
                let help = toolchain::how_to_get_zig(toolchain, false);
                for (r, choice) in requests.iter().zip(&mut choices) {
                    if *choice != Choice::Mimalloc {
                        continue;
                    }
                    if r.runtime.allocator == Allocator::Mimalloc {
                        return Err(explicit(
                            &r.runtime.allocator_origin,
                            format!(
                                "compiling mimalloc for {} needs a C compiler for {}, and there is none",
                                platform, platform.triple
                            ),
                            help,
                        ));
                    }
                    *choice = Choice::System;
                    shell.warn(format!(
                        "`{}` keeps musl's malloc on {platform}: mimalloc needs a C compiler for {}, and there is none. \
                         Allocation-heavy code runs several times slower with musl's malloc; to link mimalloc, {help} \
                         (`--allocator system` says musl's malloc is wanted and silences this)",
                        r.bin, platform.triple
                    ));
                }
            }
        }
    }
    let mut objects: BTreeMap<Vec<&str>, Part> = BTreeMap::new();
    requests
        .iter()
        .zip(choices)
        .map(|(r, allocator)| {
            let pid1 = r.runtime.pid1_signals;
            let parts_of_rt = rt_parts(
                platform,
                pid1,
                allocator == Choice::Mimalloc,
                toolchain.compiles_cxx(),
            );
            let mut parts = Vec::new();
            if !parts_of_rt.is_empty() {
                let part = match objects.get(&parts_of_rt) {
                    Some(p) => p.clone(),
                    None => {
                        let nightly = toolchain.std_from_source();
                        let p = rt_object(platform, &parts_of_rt, rustc_version, nightly, &root)?;
                        objects.insert(parts_of_rt.clone(), p.clone());
                        p
                    }
                };
                parts.push(part);
            }
            if allocator == Choice::Mimalloc {
                parts.extend(mimalloc.clone());
            }
            if !parts.is_empty() {
                let files: Vec<String> = parts
                    .iter()
                    .map(|p| crate::shell::path_text(&p.dir))
                    .collect();
                shell.verbose(
                    "Runtime",
                    format!(
                        "{} on {platform}: {} ({})",
                        r.bin,
                        parts_of_rt_text(&parts_of_rt, &allocator),
                        files.join(", ")
                    ),
                );
            }
            let args = parts.iter().flat_map(|p| p.args()).collect();
            let thread_stack = r.runtime.thread_stack;
            let key = parts
                .iter()
                .map(|p| format!("{}:{}", p.link, p.sha256))
                .collect::<Vec<_>>()
                .join(",");
            Ok(Linked {
                c_compiler: compiler.clone().filter(|_| allocator == Choice::Mimalloc),
                allocator,
                pid1_signals: pid1,
                thread_stack,
                args,
                key,
            })
        })
        .collect()
}

/// `mimalloc, purge thread, PID 1 hook, copy and compare routines`, for `-v`.
fn parts_of_rt_text(cfgs: &[&str], allocator: &Choice) -> String {
    let mut out = Vec::new();
    if *allocator == Choice::Mimalloc {
        out.push("mimalloc");
    }
    for (cfg, what) in [
        ("microimage_purge", "purge thread"),
        ("microimage_pid1", "PID 1 hook"),
        ("microimage_copy", "copy routines"),
        ("microimage_cmp", "compare routines"),
        ("microimage_cxa", "__cxa_thread_atexit_impl"),
    ] {
        if cfgs.contains(&cfg) {
            out.push(what);
        }
    }
    out.join(", ")
}

/// A compiled part: a file in its own cache directory, and how rustc links it.
#[derive(Debug, Clone)]
struct Part {
    dir: PathBuf,
    /// `static:+whole-archive=NAME` or `static:+verbatim=FILE`.
    link: String,
    sha256: String,
}

impl Part {
    fn args(&self) -> [String; 4] {
        [
            "-L".to_string(),
            format!("native={}", self.dir.display()),
            "-l".to_string(),
            self.link.clone(),
        ]
    }
}

fn hash_of(file: &Path) -> Result<String> {
    let data = std::fs::read(file).map_err(|e| Error::io("reading", file, e))?;
    Ok(crate::blob::hex(&crate::blob::sha256(&data)).to_string())
}

fn short_key(parts: &[&str]) -> String {
    let joined = parts.join("\u{1f}");
    crate::blob::hex(&crate::blob::sha256(joined.as_bytes()))[..16].to_string()
}

/// A temporary directory in `root` (on the same file system as the cache entries it
/// becomes), removed on drop or Ctrl-C.
fn work_dir(root: &Path) -> Result<(tempfile::TempDir, crate::guard::Temporary)> {
    std::fs::create_dir_all(root).map_err(|e| Error::io("creating", root, e))?;
    let temp = tempfile::Builder::new()
        .prefix(crate::guard::PREFIX)
        .tempdir_in(root)
        .map_err(|e| Error::io("creating a directory in", root, e))?;
    let registered = crate::guard::Temporary::register(temp.path());
    Ok((temp, registered))
}

/// Moves a finished `from` to the cache entry `to`; another run that finished first wins.
fn publish(from: &Path, to: &Path) -> Result<()> {
    match std::fs::rename(from, to) {
        Ok(()) => Ok(()),
        Err(_) if to.is_dir() => Ok(()),
        Err(e) => Err(Error::io("storing", to, e)),
    }
}

/// libmimalloc-sys's `libmimalloc.a` for `platform`, compiled by `cc` (cached).
fn mimalloc_archive(
    platform: &Platform,
    cc: &CCompiler,
    nightly: Option<&Nightly>,
    options: &CargoOptions,
    root: &Path,
    shell: &Shell,
) -> Result<Part> {
    let triple = platform.triple;
    let key = short_key(&[MANIFEST, LOCK, MIMALLOC_RECIPE, triple, &cc.identity]);
    let dir = root.join(format!("mimalloc-{MIMALLOC_SYS_VERSION}-{triple}-{key}"));
    let file = dir.join(format!("lib{MIMALLOC_LIB}.a"));
    let part = |dir: PathBuf, sha256| Part {
        dir,
        link: format!("static:+whole-archive={MIMALLOC_LIB}"),
        sha256,
    };
    if file.is_file() {
        return Ok(part(dir, hash_of(&file)?));
    }
    shell.status(
        "Compiling",
        format!(
            "mimalloc ({MIMALLOC_SYS} v{MIMALLOC_SYS_VERSION}) for {triple} with {}, once: it is kept in {}",
            cc.name,
            crate::shell::path_text(root)
        ),
    );
    let (work, _registered) = work_dir(root)?;
    let package = work.path().join("package");
    let write = |name: &str, text: &str| {
        let path = package.join(name);
        std::fs::write(&path, text).map_err(|e| Error::io("writing", &path, e))
    };
    std::fs::create_dir_all(&package).map_err(|e| Error::io("creating", &package, e))?;
    write("Cargo.toml", MANIFEST)?;
    write("Cargo.lock", LOCK)?;
    write("lib.rs", "#![no_std]\n")?;
    let mut cmd = helper_cargo(nightly);
    cmd.current_dir(&package)
        .args(["build", "--release", "--locked"])
        .args(["--target", triple])
        .arg("--message-format=json-render-diagnostics")
        .args(options.lock_args().into_iter().filter(|a| a != "--locked"))
        .env(
            "CARGO_TARGET_DIR",
            from_source_dir(nightly, root).unwrap_or_else(|| work.path().join("target")),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // The archive must depend on nothing but the pinned sources, the target and the
    // compiler (its cache key): none of the user's flags or profile settings.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let drop = name.starts_with("CARGO_PROFILE_")
            || name.contains("RUSTFLAGS")
            || name.contains("CFLAGS")
            || name.contains("CXXFLAGS")
            || name.ends_with("WORKSPACE_WRAPPER")
            || name == "CARGO_BUILD_TARGET";
        if drop {
            cmd.env_remove(name.as_ref());
        }
    }
    // mimalloc prints `__DATE__` and `__TIME__` in its statistics; gcc and clang (zig)
    // take them from SOURCE_DATE_EPOCH, without which two compiles differ.
    cmd.env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "3")
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("SOURCE_DATE_EPOCH", "0");
    if nightly.is_some() {
        // The runtime object's `core`, which this build shares (see `rt_object_on`).
        cmd.env("CARGO_PROFILE_RELEASE_PANIC", "abort");
    }
    let mut maps = vec![format!(
        "-ffile-prefix-map={}=/build",
        work.path().display()
    )];
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    if let Some(home) = cargo_config2::cargo_home_with_cwd(&cwd) {
        maps.push(format!("-ffile-prefix-map={}=/cargo", home.display()));
    }
    maps.retain(|m| !m.contains(char::is_whitespace));
    cmd.env(
        format!("CFLAGS_{}", triple.replace('-', "_")),
        maps.join(" "),
    );
    for (name, value) in &cc.env {
        cmd.env(name, value);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::build(format!("running `{:?}` failed: {e}", cmd.get_program())))?;
    let stderr = child.stderr.take().expect("stderr is piped");
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut text);
        text
    });
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut out_dir = None;
    for message in Message::parse_stream(BufReader::new(stdout)).flatten() {
        if let Message::BuildScriptExecuted(script) = message {
            if script.package_id.repr.contains(MIMALLOC_SYS) {
                out_dir = Some(script.out_dir.into_std_path_buf());
            }
        }
    }
    let status = child
        .wait()
        .map_err(|e| Error::build(format!("waiting for cargo failed: {e}")))?;
    let errors = errors.join().unwrap_or_default();
    let built = out_dir
        .map(|d| d.join("libmimalloc.a"))
        .filter(|f| status.success() && f.is_file());
    let Some(built) = built else {
        return Err(compile_failed(triple, cc, options, &errors));
    };
    let staged = work.path().join("out");
    std::fs::create_dir_all(&staged).map_err(|e| Error::io("creating", &staged, e))?;
    let target = staged.join(format!("lib{MIMALLOC_LIB}.a"));
    std::fs::copy(&built, &target).map_err(|e| Error::io("copying", &built, e))?;
    let sha256 = hash_of(&target)?;
    publish(&staged, &dir)?;
    Ok(part(dir, sha256))
}

/// The error for a failed compile of mimalloc: cargo's last lines, and what to do.
fn compile_failed(triple: &str, cc: &CCompiler, options: &CargoOptions, errors: &str) -> Error {
    let lines: Vec<&str> = errors.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = lines[lines.len().saturating_sub(12)..].join("\n");
    let offline = options.offline || options.frozen;
    let error = Error::build(format!(
        "compiling mimalloc ({MIMALLOC_SYS} v{MIMALLOC_SYS_VERSION}) for {triple} with {} failed:\n{tail}",
        cc.name
    ));
    if offline {
        error.with_help(format!(
            "with --offline/--frozen cargo cannot download {MIMALLOC_SYS} v{MIMALLOC_SYS_VERSION}, and mimalloc has \
             not been compiled for {triple} on this machine yet: run once without --offline (it is kept afterwards), \
             or build with `--allocator system`"
        ))
    } else {
        error.with_help(format!(
            "check the C compiler ({}); `--allocator system` builds without mimalloc",
            cc.name
        ))
    }
}

/// The parts of the runtime object (its `--cfg`s) a binary gets: the PID 1 hook when asked
/// for, and with mimalloc the thread that hands freed memory back while the program idles
/// and the string routines where musl's are slow — the copies on x86,
/// the comparisons on x86 and aarch64 (musl's aarch64 copies are ARM's optimised ones; the
/// other 32-bit and big-endian-capable platforms keep musl's, as unaligned word access
/// there is not always cheap).
fn rt_parts(platform: &Platform, pid1: bool, mimalloc: bool, cxx: bool) -> Vec<&'static str> {
    let mut cfgs = Vec::new();
    if pid1 {
        cfgs.push("microimage_pid1");
    }
    if cxx {
        cfgs.push("microimage_cxa");
    }
    if mimalloc {
        cfgs.push("microimage_purge");
    }
    if mimalloc && platform.is_x86() {
        cfgs.push("microimage_copy");
    }
    if mimalloc && (platform.is_x86() || platform.is_aarch64()) {
        cfgs.push("microimage_cmp");
    }
    cfgs
}

/// The runtime object (`templates/runtime/rt.rs`) for `platform` with `cfgs` (see
/// [`rt_parts`]), compiled by the build's `rustc` (cached per source, parts, target and
/// compiler).
fn rt_object(
    platform: &Platform,
    cfgs: &[&str],
    rustc_version: Option<&str>,
    nightly: Option<&Nightly>,
    root: &Path,
) -> Result<Part> {
    let triple = platform.triple;
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let version = match rustc_version {
        Some(v) => v.to_string(),
        None => Command::new(&rustc)
            .arg("-V")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default(),
    };
    let key = short_key(&[RT_SOURCE, &cfgs.join(","), &version, triple]);
    let dir = root.join(format!("rt-{triple}-{key}"));
    let file = dir.join(RT_OBJECT);
    let part = |dir: PathBuf, sha256| Part {
        dir,
        link: format!("static:+verbatim={RT_OBJECT}"),
        sha256,
    };
    if file.is_file() {
        return Ok(part(dir, hash_of(&file)?));
    }
    let (work, _registered) = work_dir(root)?;
    let source = work.path().join("rt.rs");
    std::fs::write(&source, RT_SOURCE).map_err(|e| Error::io("writing", &source, e))?;
    let staged = work.path().join("out");
    std::fs::create_dir_all(&staged).map_err(|e| Error::io("creating", &staged, e))?;
    let object = staged.join(RT_OBJECT);
    if let (Some(nightly), Some(shared)) = (nightly, from_source_dir(nightly, root)) {
        rt_object_on(nightly, triple, cfgs, work.path(), &shared, &object)?;
        check_object(&object, triple)?;
        let sha256 = hash_of(&object)?;
        publish(&staged, &dir)?;
        return Ok(part(dir, sha256));
    }
    let mut cmd = Command::new(&rustc);
    cmd.args(["--edition", "2021", "--crate-type", "lib", "--emit", "obj"])
        .args(["--crate-name", "microimage_rt", "--target", triple])
        .args([
            "-C",
            "panic=abort",
            "-C",
            "opt-level=3",
            "-C",
            "codegen-units=1",
        ])
        .args(["-C", "debuginfo=0"])
        .arg(format!(
            "--remap-path-prefix={}=/microimage-rt",
            work.path().display()
        ))
        .arg("-o")
        .arg(&object)
        .arg(&source)
        .stdin(Stdio::null());
    for cfg in cfgs {
        cmd.args(["--cfg", cfg]);
    }
    let out = cmd
        .output()
        .map_err(|e| Error::build(format!("running `{}` failed: {e}", rustc.to_string_lossy())))?;
    if !out.status.success() || !object.is_file() {
        return Err(Error::build(format!(
            "compiling cargo-microimage's runtime object for {triple} failed:\n{}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
        .with_help(
            "build with `--no-pid1-signals --allocator system` to leave it out, and report this",
        ));
    }
    check_object(&object, triple)?;
    let sha256 = hash_of(&object)?;
    publish(&staged, &dir)?;
    Ok(part(dir, sha256))
}

/// cargo for the helper packages (mimalloc, the runtime object): the active toolchain's,
/// or `nightly`'s for a target whose standard library is built from source, which then
/// builds `core` for the target first (`-Zbuild-std=core`: both are `no_std`).
fn helper_cargo(nightly: Option<&Nightly>) -> Command {
    match nightly {
        None => Command::new(cargo()),
        Some(nightly) => {
            let mut cmd = Command::new(nightly.cargo());
            // Nothing of the user's profile or flags: what is built here depends on the
            // target and the toolchain alone (and the `core` both helpers share is one).
            for (name, _) in std::env::vars_os() {
                let name = name.to_string_lossy();
                if name.starts_with("CARGO_PROFILE_") || name.contains("RUSTFLAGS") {
                    cmd.env_remove(name.as_ref());
                }
            }
            cmd.env("RUSTC", nightly.rustc())
                .env_remove("RUSTC_WRAPPER")
                .env("CARGO_UNSTABLE_BUILD_STD", "core");
            if nightly.name != "(active)" {
                cmd.env("RUSTUP_TOOLCHAIN", &nightly.name);
            }
            cmd
        }
    }
}

/// [`rt_object`] for a target with no prebuilt `core`: the same compile, as a helper
/// package that `nightly`'s cargo builds with `core` from source (`cargo rustc`, which adds
/// `--emit obj=…` to rustc's own outputs). It builds in `shared` (see [`from_source_dir`]),
/// where mimalloc's helper built `core` the same way; the package lies in this run's own
/// directory, so it is compiled afresh and its object lands where it is asked to.
fn rt_object_on(
    nightly: &Nightly,
    triple: &str,
    cfgs: &[&str],
    work: &Path,
    shared: &Path,
    object: &Path,
) -> Result<()> {
    let package = work.join("package");
    std::fs::create_dir_all(&package).map_err(|e| Error::io("creating", &package, e))?;
    let manifest = "[package]\nname = \"microimage_rt\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\
                    publish = false\n\n[lib]\npath = \"../rt.rs\"\n\n[workspace]\n";
    let path = package.join("Cargo.toml");
    std::fs::write(&path, manifest).map_err(|e| Error::io("writing", &path, e))?;
    let mut cmd = helper_cargo(Some(nightly));
    cmd.current_dir(&package)
        .args(["rustc", "--release", "--lib", "--target", triple])
        .env("CARGO_TARGET_DIR", shared)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        // mimalloc's helper's profile, so that `core` is built once for both; what this
        // object needs beyond it goes to its own compile below.
        .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "3")
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        // `core` with panic=abort too: under an unwinding one, the object named arm's
        // EHABI personality routines.
        .env("CARGO_PROFILE_RELEASE_PANIC", "abort")
        .stdin(Stdio::null())
        .arg("--")
        .arg(format!("--emit=obj={}", object.display()))
        .args(["-C", "panic=abort", "-C", "codegen-units=1"])
        // No unwind tables: on arm they name the EHABI personality routines, which the
        // object may not need (its code never unwinds).
        .args(["-C", "force-unwind-tables=no"])
        .arg(format!(
            "--remap-path-prefix={}=/microimage-rt",
            work.display()
        ));
    for cfg in cfgs {
        cmd.args(["--cfg", cfg]);
    }
    let out = cmd.output().map_err(|e| {
        Error::build(format!(
            "running `{}` failed: {e}",
            nightly.cargo().display()
        ))
    })?;
    if out.status.success() && object.is_file() {
        return Ok(());
    }
    Err(Error::build(format!(
        "compiling cargo-microimage's runtime object for {triple} with {} failed:\n{}",
        nightly.name,
        String::from_utf8_lossy(&out.stderr).trim()
    ))
    .with_help(
        "build with `--no-pid1-signals --allocator system` to leave it out, and report this",
    ))
}

/// Where the helper packages for targets whose standard library is built from source
/// build (`core` for the target, compiled once and kept, next to the parts themselves in
/// the tool's cache); `None` for other targets, whose helpers build in their own
/// temporary directory.
fn from_source_dir(nightly: Option<&Nightly>, root: &Path) -> Option<PathBuf> {
    nightly.map(|_| root.join("from-source-target"))
}

/// What the runtime object may need from the C library: anything else (a `core`
/// function a new compiler calls) would not link, so it is refused here, clearly.
const RT_IMPORTS: &[&str] = &[
    "getpid",
    "signal",
    "sigaction",
    "_exit",
    "_GLOBAL_OFFSET_TABLE_",
    // ppc64le's TOC base, which the linker defines, as the GOT's.
    ".TOC.",
    // Zeroing the buffer `sigaction` fills (musl's own).
    "memset",
    // `__cxa_thread_atexit_impl` (with C++ in the graph).
    "pthread_once",
    "pthread_key_create",
    "pthread_getspecific",
    "pthread_setspecific",
    "malloc",
    "free",
    // The purge thread (with mimalloc only, which defines the last two).
    "pthread_attr_init",
    "pthread_attr_setstacksize",
    "pthread_attr_setdetachstate",
    "pthread_attr_destroy",
    "pthread_create",
    "pthread_sigmask",
    "sigfillset",
    "prctl",
    "usleep",
    "mi_thread_init",
    "mi_collect",
    "mi_option_get",
];

fn check_object(path: &Path, triple: &str) -> Result<()> {
    use object::{Object, ObjectSymbol};
    let data = std::fs::read(path).map_err(|e| Error::io("reading", path, e))?;
    let file = object::File::parse(&*data).map_err(|e| {
        Error::build(format!(
            "the runtime object for {triple} is not readable: {e}"
        ))
    })?;
    let unexpected: Vec<String> = file
        .symbols()
        .filter(|s| s.is_undefined())
        .filter_map(|s| s.name().ok().map(str::to_string))
        .filter(|n| !n.is_empty() && !RT_IMPORTS.contains(&n.as_str()))
        .collect();
    if unexpected.is_empty() {
        Ok(())
    } else {
        Err(Error::build(format!(
            "cargo-microimage's runtime object for {triple} needs {}, which it may not",
            unexpected.join(", ")
        ))
        .with_help(
            "build with `--no-pid1-signals --allocator system` to leave it out, and report this",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn krate(name: &str) -> Crate {
        Crate {
            name: name.into(),
            version: "1.0.0".into(),
            source: "crates.io".into(),
            source_id: None,
            license: None,
            checksum: None,
            dependencies: Vec::new(),
        }
    }

    #[test]
    fn the_pinned_lock_file_has_the_pinned_version_and_a_checksum() {
        assert!(MANIFEST.contains(&format!("\"={MIMALLOC_SYS_VERSION}\"")));
        let lock: toml::Table = LOCK.parse().unwrap();
        let packages = lock["package"].as_array().unwrap();
        let sys = packages
            .iter()
            .find(|p| p["name"].as_str() == Some(MIMALLOC_SYS))
            .unwrap();
        assert_eq!(sys["version"].as_str(), Some(MIMALLOC_SYS_VERSION));
        assert_eq!(mimalloc_crate().checksum.unwrap().len(), 64);
    }

    #[test]
    fn an_allocator_crate_keeps_its_allocator_unless_system_is_asked() {
        let runtime = |allocator| Runtime {
            allocator,
            allocator_origin: Origin::CommandLine,
            pid1_signals: true,
            thread_stack: 8 << 20,
        };
        let plain = [krate("app"), krate("serde")];
        let jemalloc = [
            krate("app"),
            krate("tikv-jemallocator"),
            krate("tikv-jemalloc-sys"),
        ];
        assert_eq!(
            choose(&runtime(Allocator::Auto), &plain, "app").unwrap(),
            Choice::Mimalloc
        );
        assert_eq!(
            choose(&runtime(Allocator::Auto), &jemalloc, "app").unwrap(),
            Choice::Own("tikv-jemallocator".into())
        );
        assert_eq!(
            choose(&runtime(Allocator::System), &jemalloc, "app").unwrap(),
            Choice::System
        );
        let err = choose(&runtime(Allocator::Mimalloc), &jemalloc, "app").unwrap_err();
        assert!(
            err.message().contains("--allocator mimalloc"),
            "{}",
            err.message()
        );
        // The package itself is never counted (a crate named `mimalloc` building a binary).
        assert_eq!(
            choose(&runtime(Allocator::Auto), &[krate("mimalloc")], "x").unwrap(),
            Choice::Mimalloc
        );
    }

    #[test]
    fn the_musl_of_a_rust_release_and_the_warning_for_an_old_one() {
        assert_eq!(
            bundled_musl("rustc 1.95.0 (59807616e 2026-04-14)"),
            Some("1.2.5")
        );
        assert_eq!(
            bundled_musl("rustc 1.93.0-nightly (abc 2025-11-01)"),
            Some("1.2.5")
        );
        assert_eq!(
            bundled_musl("rustc 1.92.0 (ded5c06cf 2025-12-08)"),
            Some("1.2.3")
        );
        assert_eq!(
            bundled_musl("rustc 1.70.0 (90c541806 2023-05-31)"),
            Some("1.1.24")
        );
        assert_eq!(bundled_musl("this toolchain"), None);
        assert_eq!(
            old_musl_warning("rustc 1.95.0 (59807616e 2026-04-14)"),
            None
        );
        let warning = old_musl_warning("rustc 1.92.0 (ded5c06cf 2025-12-08)").unwrap();
        assert!(
            warning.contains("musl 1.2.3") && warning.contains("rustup update"),
            "{warning}"
        );
    }

    #[test]
    fn mimalloc_is_listed_as_a_dependency_of_the_binary_package() {
        let linked = Linked {
            allocator: Choice::Mimalloc,
            pid1_signals: true,
            thread_stack: 8 << 20,
            args: Vec::new(),
            key: String::new(),
            c_compiler: None,
        };
        let crates = linked.crates(&[krate("app"), krate("serde")]);
        assert_eq!(crates[2].name, MIMALLOC_SYS);
        assert_eq!(crates[0].dependencies, [2]);
        let system = Linked {
            allocator: Choice::System,
            ..linked
        };
        assert_eq!(system.crates(&[krate("app")]).len(), 1);
    }
}
