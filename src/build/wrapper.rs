//! What this program does inside the cargo builds it runs: as the rustc workspace wrapper,
//! it adds to the final link of the binaries it builds — their dependency data
//! (`super::auditable`) and the runtime (`super::runtime`) — and nothing else; as cargo's
//! `RUSTC` ([`Rustc`]), it adds path remapping to every compilation, where a compiler
//! cache does not see it.
//!
//! Before cargo runs, [`set_up`] writes what each binary gets into a directory of the run
//! (`MICROIMAGE_LINK_DIR`, removed afterwards): per binary (package manifest and crate
//! name), its crate list and the rustc arguments of its runtime. cargo runs this program
//! as `RUSTC_WORKSPACE_WRAPPER` ([`wrap`]) for workspace members; when rustc links one of
//! those binaries, the wrapper adds them. A `RUSTC_WRAPPER` of the user's (sccache) still
//! runs around us and caches the dependencies, which the wrapper never touches; a
//! workspace wrapper of theirs runs inside us.
//!
//! The wrapper's *name* matters: cargo hashes the workspace wrapper's path into the
//! `-C metadata` of every workspace member, which changes the binary's bytes. So cargo is
//! given a bare name, `microimage-rustc-<hash>`, found through a directory put first on
//! `PATH` that holds a link of that name to this program: the bytes do not depend on where
//! the tool is installed, and the hash — of what the wrapper adds, by content — makes cargo
//! relink when that changes (another allocator, `--no-pid1-signals`) and keep both builds
//! apart, as it keeps `cargo clippy`'s apart from `cargo build`'s. Binaries whose additions
//! differ are therefore built by separate cargo runs (see `super::build`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::auditable;
use crate::error::{Error, Result};
use crate::plan::graph::Crate;
use crate::plan::Plan;
use crate::platform::Platform;

/// Where the wrapper finds what to add (set only for the cargo build it serves).
pub const DATA_DIR: &str = "MICROIMAGE_LINK_DIR";
/// A workspace wrapper of the user's, which [`wrap`] runs in its place.
pub const USER_WRAPPER: &str = "MICROIMAGE_USER_WORKSPACE_WRAPPER";
/// The rustc cargo would have run, for [`rustc`] (the tool's `RUSTC`).
pub const REAL_RUSTC: &str = "MICROIMAGE_RUSTC";
/// The `--remap-path-prefix` values [`rustc`] adds, separated by `\x1f`.
pub const REMAPS: &str = "MICROIMAGE_REMAP_PATH_PREFIX";
/// The prefix of the wrapper's name.
const NAME: &str = "microimage-rustc-";

/// What the wrapper adds to one binary's link.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Additions {
    /// The crates to record as dependency data (its package first), if any.
    pub crates: Option<Vec<Crate>>,
    /// rustc arguments for the runtime's parts.
    pub link_args: Vec<String>,
    /// What `link_args` link, by content (see `super::runtime::Linked::key`).
    pub link_key: String,
    /// The binary's default thread stack, in bytes (its `PT_GNU_STACK` size).
    pub thread_stack: Option<u64>,
}

/// What [`set_up`] leaves for one binary's link, read back by [`wrap`].
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct LinkFile {
    args: Vec<String>,
    thread_stack: Option<u64>,
}

impl Additions {
    pub fn is_empty(&self) -> bool {
        self.crates.is_none() && self.link_args.is_empty() && self.thread_stack.is_none()
    }

    /// What names the wrapper: the same for two binaries when they get the same kinds of
    /// additions (the crate lists themselves follow Cargo.lock, which cargo watches).
    pub fn group_key(&self) -> String {
        format!(
            "{}|{}|{:?}",
            self.crates.is_some(),
            self.link_key,
            self.thread_stack
        )
    }
}

/// The files of the binary `bin` of the package whose Cargo.toml is `manifest`, in `dir`:
/// by a hash of both (rustc's `--crate-name` is the target name with `-` as `_`).
fn files(dir: &Path, manifest: &Path, crate_name: &str) -> (PathBuf, PathBuf) {
    let mut key = manifest.as_os_str().as_encoded_bytes().to_vec();
    key.push(0);
    key.extend_from_slice(crate_name.as_bytes());
    let digest = crate::blob::sha256(&key);
    let key = &crate::blob::hex(&digest)[..24];
    (
        dir.join(format!("{key}.zlib")),
        dir.join(format!("{key}.link")),
    )
}

/// What the build must keep until cargo is done.
pub struct Held {
    _data: tempfile::TempDir,
    _registered: crate::guard::Temporary,
}

/// Sets up this program's two parts in the cargo build `cmd`: as its `RUSTC` (always, see
/// [`Rustc`]), and as its workspace wrapper for binaries `plans` getting `additions` (one
/// group: all with the same [`Additions::group_key`]) when anything is added.
pub fn set_up(
    cmd: &mut std::process::Command,
    plans: &[&Plan],
    additions: &[&Additions],
    user_wrapper: Option<&Path>,
    rustc: &Rustc,
) -> Result<Held> {
    let temp = tempfile::Builder::new()
        .prefix("microimage-link-")
        .tempdir()
        .map_err(|e| Error::io("creating", &std::env::temp_dir(), e))?;
    let registered = crate::guard::Temporary::register(temp.path());
    let dir = temp.path().to_path_buf();
    let dir = dir.as_path();
    let rustc_dir = link_to_self("rustc", "rustc", dir)?;
    cmd.env("RUSTC", rustc_dir.join("rustc"))
        .env(REAL_RUSTC, &rustc.real)
        .env(REMAPS, rustc.remaps.join("\x1f"));
    let held = Held {
        _data: temp,
        _registered: registered,
    };
    if additions.iter().all(|a| a.is_empty()) {
        return Ok(held);
    }
    for (plan, add) in plans.iter().zip(additions) {
        let (data, link) = files(dir, &plan.manifest_path, &plan.bin.replace('-', "_"));
        if let Some(crates) = &add.crates {
            let bytes = auditable::compressed(crates)?;
            std::fs::write(&data, bytes).map_err(|e| Error::io("writing", &data, e))?;
        }
        if !add.link_args.is_empty() || add.thread_stack.is_some() {
            let file = LinkFile {
                args: add.link_args.clone(),
                thread_stack: add.thread_stack,
            };
            let json = serde_json::to_vec(&file).expect("strings and numbers serialise");
            std::fs::write(&link, json).map_err(|e| Error::io("writing", &link, e))?;
        }
    }
    let group = additions.first().map(|a| a.group_key()).unwrap_or_default();
    let digest = crate::blob::sha256(group.as_bytes());
    let name = format!("{NAME}{}", &crate::blob::hex(&digest)[..16]);
    let bin_dir = link_to_self(&name, "", dir)?;
    let mut path = std::ffi::OsString::from(bin_dir.as_os_str());
    if let Some(old) = std::env::var_os("PATH").filter(|p| !p.is_empty()) {
        path.push(":");
        path.push(old);
    }
    cmd.env(DATA_DIR, dir)
        .env("RUSTC_WORKSPACE_WRAPPER", &name)
        .env("PATH", path);
    if let Some(user) = user_wrapper {
        cmd.env(USER_WRAPPER, user);
    }
    Ok(held)
}

/// What this program does as cargo's `RUSTC` ([`rustc`]): it runs `real` (the rustc cargo
/// would have run) with the path remapping `remaps` (`FROM=TO`, in order, the most
/// specific last) appended to every compilation.
///
/// Why there and not in the rustflags: a `RUSTC_WRAPPER` such as sccache runs *around*
/// `RUSTC` and keys its cache on the arguments it is given, so flags naming the checkout
/// or the target dir in `CARGO_ENCODED_RUSTFLAGS` put that path into the key of every
/// crate, registry dependencies included, and a second checkout hit 9 of example-app's 68.
/// Added here, inside the cache, they are not part of its key; they only map this
/// machine's paths to fixed ones, so what one checkout compiled and cached is what another
/// would compile. The program is linked as `rustc` (sccache knows rustc by that name) in
/// the tool's cache directory, at a path that does not depend on the checkout either.
#[derive(Debug, Clone)]
pub struct Rustc {
    pub real: PathBuf,
    pub remaps: Vec<String>,
}

/// Whether this program was started as the `RUSTC` that [`set_up`] gives cargo.
pub fn is_rustc(args: &[OsString]) -> bool {
    args.first()
        .and_then(|a| Path::new(a).file_name())
        .is_some_and(|n| n == "rustc")
        && std::env::var_os(REAL_RUSTC).is_some()
}

/// cargo's `RUSTC` (see [`Rustc`]): `args` is `[this program, rustc's arguments…]`.
/// Runs the real rustc with the remapping added to compilations (cargo passes
/// `--crate-name` to every one, and to its target-information probe, which the flags do
/// not change); `-vV` and the like go through unchanged.
pub fn rustc(args: &[OsString]) -> i32 {
    let Some(real) = std::env::var_os(REAL_RUSTC) else {
        eprintln!("error: cargo-microimage: started as rustc outside a build it set up");
        return 1;
    };
    let rest = args.get(1..).unwrap_or_default();
    let mut cmd = std::process::Command::new(&real);
    // The variables stay: what rustc starts may run `$RUSTC` again (cargo-zigbuild's
    // linker wrapper asks it for its version).
    cmd.args(rest);
    let compiles = rest
        .iter()
        .any(|a| a == "--crate-name" || a.as_encoded_bytes().starts_with(b"--crate-name="));
    if compiles {
        if let Some(remaps) = std::env::var_os(REMAPS) {
            for remap in remaps
                .to_string_lossy()
                .split('\x1f')
                .filter(|r| !r.is_empty())
            {
                cmd.arg(format!("--remap-path-prefix={remap}"));
            }
        }
    }
    match cmd.status() {
        Ok(status) => status.code().unwrap_or(1),
        Err(e) => {
            eprintln!("error: cargo-microimage: running {real:?} failed: {e}");
            1
        }
    }
}

/// A directory holding `name` as a link to this program: in the user's cache directory
/// (one per install location of the tool, so the directory — and `PATH`, which a build
/// script may watch — stays the same from run to run), else in `fallback`. `sub` names a
/// directory of its own below that (one that is not put on `PATH`).
fn link_to_self(name: &str, sub: &str, fallback: &Path) -> Result<PathBuf> {
    let exe = std::env::current_exe()
        .map_err(|e| Error::build(format!("finding this program's path failed: {e}")))?;
    let dir = match crate::blob::cache_home() {
        Some(home) => {
            let key = crate::blob::sha256(exe.as_os_str().as_encoded_bytes());
            home.join("wrapper").join(&crate::blob::hex(&key)[..16])
        }
        None => fallback.join("bin"),
    };
    let dir = if sub.is_empty() { dir } else { dir.join(sub) };
    let link = dir.join(name);
    if std::fs::read_link(&link).is_ok_and(|to| to == exe) {
        return Ok(dir);
    }
    std::fs::create_dir_all(&dir).map_err(|e| Error::io("creating", &dir, e))?;
    // Made beside it and renamed over it: concurrent runs each see a complete link.
    let temp = dir.join(format!(
        "{}{}-{}",
        crate::guard::PREFIX,
        std::process::id(),
        fastrand::u32(..)
    ));
    std::os::unix::fs::symlink(&exe, &temp).map_err(|e| Error::io("linking", &temp, e))?;
    std::fs::rename(&temp, &link).map_err(|e| {
        let _ = std::fs::remove_file(&temp);
        Error::io("linking", &link, e)
    })?;
    Ok(dir)
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

/// The rustc workspace wrapper: `args` is `[this program, rustc, rustc's arguments…]`.
/// Adds what [`set_up`] left for binaries that have it, then runs rustc (through the
/// user's own workspace wrapper, if there is one) and returns its exit status.
pub fn wrap(args: &[OsString]) -> i32 {
    let (Some(rustc), rest) = (args.get(1), args.get(2..).unwrap_or_default()) else {
        eprintln!("error: cargo-microimage: called as a rustc wrapper without a rustc");
        return 1;
    };
    let extra = match additions(rest) {
        Ok(extra) => extra,
        Err(e) => {
            eprintln!("error: cargo-microimage: {}", e.message());
            return 1;
        }
    };
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

/// The arguments to add to this rustc run: none unless it links a binary (for the target,
/// not a build script) of a package the tool builds and left additions for.
fn additions(args: &[OsString]) -> Result<Vec<OsString>> {
    let Some(dir) = std::env::var_os(DATA_DIR) else {
        return Ok(Vec::new());
    };
    let bin = args
        .iter()
        .enumerate()
        .any(|(i, a)| a == "--crate-type" && args.get(i + 1).is_some_and(|t| t == "bin"))
        || args.iter().any(|a| a == "--crate-type=bin");
    if !bin || std::env::var_os("CARGO_PRIMARY_PACKAGE").is_none() {
        return Ok(Vec::new());
    }
    let manifest = match std::env::var_os("CARGO_MANIFEST_PATH") {
        Some(m) => PathBuf::from(m),
        None => match std::env::var_os("CARGO_MANIFEST_DIR") {
            Some(d) => Path::new(&d).join("Cargo.toml"),
            None => return Ok(Vec::new()),
        },
    };
    let (Some(target), Some(out_dir), Some(name)) = (
        flag(args, "--target"),
        flag(args, "--out-dir"),
        flag(args, "--crate-name"),
    ) else {
        return Ok(Vec::new());
    };
    let (data, link) = files(Path::new(&dir), &manifest, name);
    let mut extra: Vec<OsString> = Vec::new();
    let bare = bare_linker(args);
    if let Ok(json) = std::fs::read(&link) {
        let file: LinkFile = serde_json::from_slice(&json)
            .map_err(|e| Error::build(format!("reading `{}` failed: {e}", link.display())))?;
        extra.extend(file.args.into_iter().map(OsString::from));
        // musl takes the default stack of new threads from the size of `PT_GNU_STACK`
        // (since 1.1.21), which `-z stack-size` sets; lld and GNU ld both know it.
        if let Some(bytes) = file.thread_stack {
            if bare {
                extra.push("-Clink-arg=-z".into());
                extra.push(format!("-Clink-arg=stack-size={bytes}").into());
            } else {
                extra.push(format!("-Clink-arg=-Wl,-z,stack-size={bytes}").into());
            }
        }
    }
    if let Ok(data) = std::fs::read(&data) {
        let platform = Platform::from_triple(target)?;
        let path = Path::new(out_dir).join(format!("{name}-microimage-deps.o"));
        std::fs::write(&path, auditable::object(&data, platform)?)
            .map_err(|e| Error::io("writing", &path, e))?;
        let mut arg = OsString::from("-Clink-arg=");
        arg.push(&path);
        extra.push(arg);
        // POSIX `-u` (zig's linker refuses GNU `--undefined=`); through `-Wl,` unless
        // rustc calls a linker directly (rust-lld for pure-Rust cross builds).
        let symbol = auditable::SYMBOL;
        if bare {
            extra.push("-Clink-arg=-u".into());
            extra.push(format!("-Clink-arg={symbol}").into());
        } else {
            extra.push(format!("-Clink-arg=-Wl,-u,{symbol}").into());
        }
    }
    Ok(extra)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn rustc_flags_are_found_in_both_spellings() {
        let args: Vec<OsString> = ["--crate-name", "app", "--target=x86_64-unknown-linux-musl"]
            .iter()
            .map(Into::into)
            .collect();
        assert_eq!(flag(&args, "--crate-name"), Some("app"));
        assert_eq!(flag(&args, "--target"), Some("x86_64-unknown-linux-musl"));
        assert_eq!(flag(&args, "--out-dir"), None);
    }

    #[test]
    fn the_wrapper_name_depends_on_what_is_added_not_on_paths() {
        let a = Additions {
            crates: Some(Vec::new()),
            link_args: vec!["-L".into(), "native=/home/a/.cache".into()],
            link_key: "static:+whole-archive=x:abc".into(),
            thread_stack: Some(8 << 20),
        };
        let b = Additions {
            link_args: vec!["-L".into(), "native=/home/b/.cache".into()],
            ..a.clone()
        };
        assert_eq!(a.group_key(), b.group_key());
        let c = Additions {
            link_key: "static:+whole-archive=x:def".into(),
            ..a.clone()
        };
        assert_ne!(a.group_key(), c.group_key());
    }
}
