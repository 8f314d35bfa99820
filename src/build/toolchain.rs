//! C toolchains for the musl targets (DESIGN §5): which crates in the graph compile C, and
//! how the build gets a C compiler and a linker for the target.
//!
//! - Pure Rust: the toolchain's own `rust-lld` links, with rustc's self-contained musl
//!   (never the host's `cc`, which cannot link a Linux binary on every host).
//! - C code: `x86_64-linux-musl-gcc` (musl-tools) compiles it for the native x86_64 target
//!   when it is installed, and `rust-lld` links as above; otherwise zig as C compiler,
//!   archiver and linker, set up through
//!   `cargo-zigbuild`'s library (its wrapper scripts exec this binary as
//!   `cargo-microimage zig cc …`, see `main.rs`).
//!
//! Everything is set only where the user has not: `CC_<target>`, `CXX_<target>`,
//! `AR_<target>`, `CARGO_TARGET_<TRIPLE>_LINKER` in the environment and
//! `target.<triple>.linker` in cargo config win.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use cargo_zigbuild::zig::ZigWrapper;

use crate::error::{Error, Result};
use crate::plan::CargoOptions;
use crate::platform::Platform;
use crate::shell::Shell;

/// `aarch64-unknown-linux-musl` → `aarch64_unknown_linux_musl`.
fn under(triple: &str) -> String {
    triple.replace('-', "_")
}

fn env_set(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.is_empty())
}

fn on_path(program: &str) -> bool {
    which::which(program).is_ok()
}

/// What decides a target's build, read once per target from the user's own settings —
/// cargo's configuration through cargo-config2, as cargo would read it — and whether the
/// target is the host's.
#[derive(Debug, Clone)]
pub struct Toolchain {
    platform: &'static Platform,
    /// `CARGO_TARGET_<TRIPLE>_LINKER`.
    linker_env: String,
    /// The user set a linker (environment or cargo config).
    user_linker: bool,
    /// The user set `CC_<target>`.
    user_cc: bool,
    native: bool,
    /// The rustflags cargo would use for the target (see `super::set_rustflags`).
    pub rustflags: Vec<String>,
    /// A `RUSTC_WORKSPACE_WRAPPER` of the user's (environment or cargo config), which the
    /// tool's own wrapper runs in its place (see `super::auditable`).
    pub workspace_wrapper: Option<std::path::PathBuf>,
    /// The rustc cargo would run (the tool's own `RUSTC` runs it, see
    /// `super::wrapper::Rustc`): `RUSTC`, else `build.rustc` of a `--config` value or of
    /// cargo's configuration, else the toolchain's own (`<sysroot>/bin/rustc`).
    pub rustc: std::path::PathBuf,
}

impl Toolchain {
    /// Reads the user's settings for `platform`: cargo's configuration as seen from the
    /// current directory (where cargo runs), with the `--config` values of `options`.
    pub fn of(
        platform: &'static Platform,
        options: &CargoOptions,
        sysroot: &Path,
    ) -> Result<Toolchain> {
        let triple = platform.triple;
        let linker_env = format!("CARGO_TARGET_{}_LINKER", under(triple).to_ascii_uppercase());
        let config = cargo_config2::Config::load().map_err(|e| {
            Error::build(format!("reading cargo's configuration failed: {e:#}"))
                .with_help("fix the cargo config file it names (see `cargo help config`)")
        })?;
        let cli = cli_config(&options.config)?;
        let rustflags = user_rustflags(&config, &cli, triple)?;
        let config_linker = config.linker(triple).map_err(|e| {
            Error::build(format!(
                "reading the linker for {triple} from cargo's configuration failed: {e:#}"
            ))
        })?;
        let cli_linker = cli.iter().any(|t| {
            t.get("target")
                .and_then(|x| x.get(triple))
                .and_then(|x| x.get("linker"))
                .is_some()
        });
        Ok(Toolchain {
            platform,
            user_linker: config_linker.is_some() || cli_linker,
            linker_env,
            user_cc: env_set(&format!("CC_{}", under(triple))) || env_set(&format!("CC_{triple}")),
            native: Platform::host().is_ok_and(|h| h == platform),
            rustflags,
            workspace_wrapper: config.build.rustc_workspace_wrapper.clone(),
            rustc: real_rustc(&config, &cli, sysroot),
        })
    }

    /// Whether [`configure`] will use zig, given the crates that compile C.
    fn needs_zig(&self, c_crates: &[String]) -> bool {
        let triple = self.platform.triple;
        let musl_gcc = format!("{}-linux-musl-gcc", triple.split('-').next().unwrap_or(""));
        !c_crates.is_empty()
            && !(self.user_cc && (self.user_linker || self.native)
                || self.native && on_path(&musl_gcc))
    }
}

/// The rustc cargo would run (see [`Toolchain::rustc`]). cargo takes `RUSTC` over any
/// configuration, and `--config` values over the files.
fn real_rustc(
    config: &cargo_config2::Config,
    cli: &[toml::Table],
    sysroot: &Path,
) -> std::path::PathBuf {
    if let Some(env) = std::env::var_os("RUSTC").filter(|v| !v.is_empty()) {
        return env.into();
    }
    let from_cli = cli.iter().rev().find_map(|t| {
        t.get("build")
            .and_then(|b| b.get("rustc"))
            .and_then(|r| r.as_str())
            .map(std::path::PathBuf::from)
    });
    if let Some(rustc) = from_cli.or_else(|| config.build.rustc.clone()) {
        return rustc;
    }
    let own = sysroot.join("bin/rustc");
    if own.is_file() {
        own
    } else {
        "rustc".into()
    }
}

/// The `--config` values given to the tool, as TOML tables: `KEY=VALUE` is parsed as TOML,
/// anything else is a file (as cargo takes them).
fn cli_config(values: &[String]) -> Result<Vec<toml::Table>> {
    values
        .iter()
        .map(|v| {
            let path = Path::new(v);
            let text = if path.is_file() {
                std::fs::read_to_string(path).map_err(|e| {
                    Error::usage(format!("--config `{v}`: reading the file failed: {e}"))
                })?
            } else {
                v.clone()
            };
            text.parse::<toml::Table>().map_err(|e| {
                Error::usage(format!(
                    "--config `{v}` is neither KEY=VALUE (TOML) nor a config file: {e}"
                ))
                .with_help("e.g. --config 'profile.release.lto=true'")
            })
        })
        .collect()
}

/// The rustflags cargo would use for `triple` (cargo-config2: environment, target and
/// `cfg()` tables, `build.rustflags`, every config file), then those set for the target or
/// the build by `--config` values, which cargo appends after the files' (a `--config` that
/// sets `build.rustflags` while a file sets the target's is the one case where cargo
/// would take the target's alone).
fn user_rustflags(
    config: &cargo_config2::Config,
    cli: &[toml::Table],
    triple: &str,
) -> Result<Vec<String>> {
    let mut flags = config
        .rustflags(triple)
        .map_err(|e| Error::build(format!("reading rustflags for {triple} failed: {e:#}")))?
        .map(|f| f.flags)
        .unwrap_or_default();
    let from_env = ["CARGO_ENCODED_RUSTFLAGS", "RUSTFLAGS"]
        .iter()
        .any(|v| std::env::var_os(v).is_some());
    if !from_env {
        for table in cli {
            let keys = [
                table.get("target").and_then(|t| t.get(triple)),
                table.get("build"),
            ];
            for value in keys
                .into_iter()
                .flatten()
                .filter_map(|t| t.get("rustflags"))
            {
                match value {
                    toml::Value::String(s) => flags.extend(s.split_whitespace().map(String::from)),
                    toml::Value::Array(items) => {
                        flags.extend(items.iter().filter_map(|i| i.as_str()).map(String::from))
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(flags)
}

/// Why zig could not be set up for a target.
#[derive(Debug, Clone)]
enum ZigProblem {
    /// Neither `python3 -m ziglang` nor `zig` on PATH.
    Missing,
    /// zig is there (this command), but its wrappers could not be prepared.
    Prepare { zig: String, error: String },
}

/// zig located and its wrappers for `triple` written — a `python -m ziglang` probe or two
/// and `rustc -vV` — once per process, by whoever asks first: a background warm-up or
/// [`configure`]. The lock is held while it runs, so a later caller waits for the result
/// instead of probing again.
fn zig_for(triple: &'static str) -> std::result::Result<ZigWrapper, ZigProblem> {
    static DONE: OnceLock<
        Mutex<HashMap<&'static str, std::result::Result<ZigWrapper, ZigProblem>>>,
    > = OnceLock::new();
    let mut done = DONE
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    done.entry(triple)
        .or_insert_with(|| {
            let zig = cargo_zigbuild::Zig::find_zig().map_err(|_| ZigProblem::Missing)?;
            let prepare = |error: String| ZigProblem::Prepare {
                zig: zig.0.display().to_string(),
                error,
            };
            let config = cargo_config2::Config::load()
                .map_err(|e| prepare(format!("reading cargo's configuration failed: {e}")))?;
            cargo_zigbuild::zig::prepare_zig_linker(triple, &config)
                .map_err(|e| prepare(format!("{e:#}")))
        })
        .clone()
}

/// A C compiler for the target, for C code the tool compiles itself (mimalloc, see
/// `super::runtime`): the one the build would use for the app's C code.
#[derive(Debug, Clone)]
pub struct CCompiler {
    /// What cc-rs is told (`CC_<t>`, `AR_<t>`, …); empty when the user's settings apply.
    pub env: Vec<(String, std::path::PathBuf)>,
    /// The compiler and its version: part of the cache key of what it compiles.
    pub identity: String,
    /// For messages: `zig 0.17.1`, `x86_64-linux-musl-gcc 12.2.0`.
    pub name: String,
}

/// The first line `PROGRAM --version` prints (`CC` values may carry arguments).
fn version_line(command: &str) -> String {
    let mut words = command.split_whitespace();
    let Some(program) = words.next() else {
        return String::new();
    };
    Command::new(program)
        .args(words)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_default()
}

/// The zig version cargo-zigbuild wrote into its wrapper script (it exports it there so
/// that zig is not asked again), else `zig version` itself.
fn zig_version(wrapper: &ZigWrapper) -> String {
    let script = std::fs::read_to_string(&wrapper.cc).unwrap_or_default();
    let written = script.lines().find_map(|l| {
        l.strip_prefix("export CARGO_ZIGBUILD_ZIG_VERSION=")
            .map(|v| v.trim().to_string())
    });
    written.unwrap_or_else(|| match cargo_zigbuild::Zig::find_zig() {
        Ok((program, args)) => Command::new(program)
            .args(args)
            .arg("version")
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default(),
        Err(_) => String::new(),
    })
}

/// The C compiler for the target that a build with C code would use: the user's
/// `CC_<target>`, else `x86_64-linux-musl-gcc` for the native x86_64 target when it is
/// installed, else zig. `None` when there is none (zig is missing).
pub fn c_compiler(toolchain: &Toolchain) -> Result<Option<CCompiler>> {
    let triple = toolchain.platform.triple;
    if toolchain.user_cc {
        let cc = std::env::var(format!("CC_{}", under(triple)))
            .or_else(|_| std::env::var(format!("CC_{triple}")))
            .unwrap_or_default();
        return Ok(Some(CCompiler {
            env: Vec::new(),
            identity: format!("{cc}: {}", version_line(&cc)),
            name: cc,
        }));
    }
    let musl_gcc = format!("{}-linux-musl-gcc", triple.split('-').next().unwrap_or(""));
    if toolchain.native && on_path(&musl_gcc) {
        let version = version_line(&musl_gcc);
        return Ok(Some(CCompiler {
            env: vec![
                (format!("CC_{}", under(triple)), musl_gcc.clone().into()),
                (format!("AR_{}", under(triple)), "ar".into()),
            ],
            identity: format!("{musl_gcc}: {version}"),
            name: musl_gcc,
        }));
    }
    match zig_for(triple) {
        Ok(wrapper) => {
            let version = zig_version(&wrapper);
            Ok(Some(CCompiler {
                env: vec![
                    (format!("CC_{}", under(triple)), wrapper.cc.clone()),
                    (format!("CXX_{}", under(triple)), wrapper.cxx.clone()),
                    (format!("AR_{}", under(triple)), wrapper.ar.clone()),
                    (format!("RANLIB_{}", under(triple)), wrapper.ranlib.clone()),
                ],
                identity: format!("zig {version}"),
                name: format!("zig {version}"),
            }))
        }
        Err(ZigProblem::Missing) => Ok(None),
        Err(ZigProblem::Prepare { zig, error }) => Err(Error::build(format!(
            "preparing zig ({zig}) for {triple} failed: {error}"
        ))),
    }
}

/// How to get a C compiler for `triple` (for the error or warning when there is none).
pub fn how_to_get_zig(toolchain: &Toolchain) -> String {
    let triple = toolchain.platform.triple;
    format!(
        "install zig, which cargo-microimage uses as C compiler for musl targets: \
         `python3 -m pip install ziglang` (or put `zig` on PATH){}; or point CC_{} at a C compiler for {triple}",
        if toolchain.native {
            ", or install musl-tools for x86_64-linux-musl-gcc"
        } else {
            ""
        },
        under(triple)
    )
}

impl Toolchain {
    /// The platform this toolchain builds for.
    pub fn platform(&self) -> &'static Platform {
        self.platform
    }
}

/// Sets zig up ahead of [`configure`] when it will be needed, so that this can run
/// alongside other targets' work. Errors are left for `configure` to report.
pub fn warm_up(toolchain: &Toolchain, c_crates: &[String]) {
    if toolchain.needs_zig(c_crates) {
        let _ = zig_for(toolchain.platform.triple);
    }
}

/// Starts setting zig up in the background when `platforms` has a foreign target, before
/// it is known whether C code needs it: on a no-op build the probes take longer than
/// reading the workspace, which they overlap. Whoever needs zig later waits for this
/// result through [`zig_for`].
pub fn warm_up_early(platforms: &[&'static Platform]) {
    if let Some(&foreign) = platforms
        .iter()
        .find(|p| Platform::host().is_ok_and(|h| h != **p))
    {
        std::thread::spawn(move || {
            let _ = zig_for(foreign.triple);
        });
    }
}

/// Sets up the C compiler and linker for the target on the cargo command `cmd`. Returns
/// whether zig is used (the caller marks its C library as built once cargo succeeds, see
/// [`ZigLibc`]).
pub fn configure(
    cmd: &mut Command,
    toolchain: &Toolchain,
    c_crates: &[String],
    shell: &Shell,
) -> Result<Option<ZigLibc>> {
    let triple = toolchain.platform.triple;
    let linker_env = &toolchain.linker_env;
    if !toolchain.needs_zig(c_crates) {
        // No C code, or C code compiled by the host's musl toolchain for its own target
        // (musl-tools' `x86_64-linux-musl-gcc`, or the user's `CC_<target>`): rustc's
        // `rust-lld` links with rustc's self-contained musl, on any host. The host's `cc`
        // would only do so on a Linux host of the same architecture (Apple's cannot link
        // an ELF at all), and musl-gcc as the linker adds its own start files to rustc's.
        if !toolchain.user_linker {
            cmd.env(linker_env, "rust-lld");
            let why = if c_crates.is_empty() {
                "no C code in the graph".to_string()
            } else {
                format!("C code in {} compiled for the target", c_crates.join(", "))
            };
            shell.verbose("Linking", format!("{triple} with rust-lld ({why})"));
        }
        return Ok(None);
    }
    let crates = c_crates.join(", ");
    let wrapper = zig_for(triple).map_err(|problem| match problem {
        ZigProblem::Missing => Error::build(format!(
            "building for {triple} needs a C compiler for that target: these crates compile C: {crates}"
        ))
        .with_help(format!(
            "install zig, which cargo-microimage uses as C compiler and linker for musl targets: \
             `python3 -m pip install ziglang` (or put `zig` on PATH){}; or point CC_{} and {linker_env} \
             at a C toolchain for {triple}",
            if toolchain.native { ", or install musl-tools for x86_64-linux-musl-gcc" } else { "" },
            under(triple)
        )),
        ZigProblem::Prepare { zig, error } => {
            Error::build(format!("preparing zig ({zig}) for {triple} failed: {error}"))
        }
    })?;
    shell.status(
        "Using",
        format!("zig as C compiler and linker for {triple} (C code in {crates})"),
    );
    let libc = ZigLibc::for_target(triple);
    if !libc.is_built() {
        shell.status(
            "Preparing",
            format!(
                "zig's C library for {triple}: the first build with zig for a target compiles it \
                 (a minute or two, once per zig cache)"
            ),
        );
    }
    let mut set = |name: String, value: &Path| {
        if !env_set(&name) {
            cmd.env(name, value);
        }
    };
    set(format!("CC_{}", under(triple)), &wrapper.cc);
    set(format!("CXX_{}", under(triple)), &wrapper.cxx);
    set(format!("AR_{}", under(triple)), &wrapper.ar);
    set(format!("RANLIB_{}", under(triple)), &wrapper.ranlib);
    if !toolchain.user_linker {
        cmd.env(linker_env, &wrapper.cc);
    }
    Ok(Some(libc))
}

/// Whether zig's C library (musl, compiled by zig on first use for a target and kept in
/// zig's global cache) is already built for a target: zig does not say, so the tool keeps
/// a marker per target and zig cache directory in its own cache, written after a build
/// with zig succeeded. Only used to say, before a long first build, what is going on.
#[derive(Debug, Clone)]
pub struct ZigLibc {
    /// The marker, and zig's cache directory it speaks for.
    marker: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl ZigLibc {
    fn for_target(triple: &str) -> ZigLibc {
        let var = |name: &str| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(std::path::PathBuf::from)
        };
        let user_cache = var("XDG_CACHE_HOME").or_else(|| var("HOME").map(|h| h.join(".cache")));
        let zig_cache =
            var("ZIG_GLOBAL_CACHE_DIR").or_else(|| user_cache.as_ref().map(|c| c.join("zig")));
        let marker = match (user_cache, zig_cache) {
            (Some(ours), Some(zig)) => {
                let key = crate::blob::sha256(zig.as_os_str().as_encoded_bytes());
                let key = &crate::blob::hex(&key)[..16];
                let file = ours
                    .join("cargo-microimage/zig-libc")
                    .join(format!("{triple}-{key}"));
                Some((file, zig))
            }
            _ => None,
        };
        ZigLibc { marker }
    }

    /// A marker for a zig cache that is gone says nothing.
    fn is_built(&self) -> bool {
        self.marker
            .as_ref()
            .is_some_and(|(file, zig)| file.is_file() && zig.is_dir())
    }

    /// Records that a build with zig for this target succeeded (best effort).
    pub fn mark_built(&self) {
        if let Some((marker, _)) = &self.marker {
            if let Some(dir) = marker.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            let _ = std::fs::write(marker, b"");
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn underscores() {
        assert_eq!(
            super::under("aarch64-unknown-linux-musl"),
            "aarch64_unknown_linux_musl"
        );
    }
}
