//! C toolchains for the musl targets (DESIGN §5): which crates in the graph compile C, and
//! how the build gets a C compiler and a linker for the target.
//!
//! - Pure Rust: the toolchain's own `rust-lld` links, with rustc's self-contained musl
//!   (never the host's `cc`, which cannot link a Linux binary on every host).
//! - C code ([`choose`], once per target, checked by a tiny compile and said in one
//!   `Using` line): the user's `CC_<target>`; else `<arch>-linux-musl-gcc` (musl-tools)
//!   for the native target when no crate compiles C++ (musl-tools has no C++ compiler),
//!   and `rust-lld` links as above; otherwise zig as C and C++ compiler, archiver and
//!   linker (it brings libc++), set up through `cargo-zigbuild`'s library (its wrapper
//!   scripts exec this binary as `cargo-microimage zig cc …`, see `main.rs`). A musl-gcc
//!   that fails its check is passed over for zig, with a warning.
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
    /// The C toolchain [`choose`] picked for the graph's C code (none yet: no C code, or
    /// not chosen yet).
    chosen: Option<Chosen>,
    /// rustc's version (`1.95.0`), from the first line of `rustc -vV`.
    rustc_version: Option<String>,
    /// Where the target's standard library comes from (see `super::stdlib`).
    std: super::stdlib::Source,
}

impl Toolchain {
    /// Reads the user's settings for `platform`: cargo's configuration as seen from the
    /// current directory (where cargo runs), with the `--config` values of `options`.
    pub fn of(
        platform: &'static Platform,
        options: &CargoOptions,
        sysroot: &Path,
        rustc_version: Option<&str>,
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
            chosen: None,
            rustc_version: rustc_version
                .and_then(|v| v.split_whitespace().nth(1))
                .map(str::to_string),
            std: super::stdlib::Source::Prebuilt,
        })
    }

    /// The same target with its standard library built from source on `nightly`, whose
    /// rustc then compiles everything (a `RUSTC` of the user's is of another toolchain).
    pub fn with_std_from_source(mut self, nightly: super::stdlib::Nightly) -> Toolchain {
        self.rustc = nightly.rustc();
        self.rustc_version = nightly.rustc_version();
        self.std = super::stdlib::Source::FromSource(nightly);
        self
    }

    /// The nightly that builds the target's standard library, when it is built from source.
    pub fn std_from_source(&self) -> Option<&super::stdlib::Nightly> {
        match &self.std {
            super::stdlib::Source::FromSource(nightly) => Some(nightly),
            super::stdlib::Source::Prebuilt => None,
        }
    }

    /// The musl-tools compiler for this target's architecture
    /// (`x86_64-linux-musl-gcc`).
    fn musl_gcc(&self) -> String {
        format!(
            "{}-linux-musl-gcc",
            self.platform.triple.split('-').next().unwrap_or("")
        )
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

/// The variable that tells this tool's `zig cc` (run by cargo-zigbuild's wrapper scripts
/// for every C compile, link and archive) where the zig executable is: see [`direct_zig`]
/// and [`use_direct_zig`].
pub const ZIG_EXE_VAR: &str = "MICROIMAGE_ZIG";

/// The zig executable itself, when zig was found as Python's `ziglang` package (`python3
/// -m ziglang`): asked once per process (`zig env` names its own executable). cargo-zigbuild
/// writes the command it found into its wrapper scripts, so every C file then started a
/// Python interpreter (through a pyenv shim, a shell script, where there is one) before
/// zig: about 120 ms of CPU per compile here against zig's own 10 ms, which made a
/// vendored OpenSSL's 700 files minutes slower. `None` when zig is a plain executable
/// already, or cannot say where it is (the wrappers then go through Python as before).
fn direct_zig() -> Option<std::path::PathBuf> {
    static DIRECT: OnceLock<Option<std::path::PathBuf>> = OnceLock::new();
    DIRECT
        .get_or_init(|| {
            let (program, args) = cargo_zigbuild::Zig::find_zig().ok()?;
            if args.is_empty() {
                return None;
            }
            let env = stdout_of(Command::new(program).args(args).arg("env"))?;
            zig_exe_in_env(&env)
                .map(std::path::PathBuf::from)
                .filter(|p| p.is_absolute() && p.is_file())
        })
        .clone()
}

/// The executable `zig env` names: `.zig_exe = "…"` (ZON, zig 0.15 on) or `"zig_exe":
/// "…"` (JSON, before). A path with an escape in it is not unescaped but refused.
fn zig_exe_in_env(env: &str) -> Option<&str> {
    let after = &env[env.find("zig_exe")? + "zig_exe".len()..];
    // Past the `=` (ZON) or the key's closing quote and `:` (JSON).
    let after = &after[after.find(['=', ':'])? + 1..];
    let start = after.find('"')? + 1;
    let value = &after[start..];
    let value = &value[..value.find('"')?];
    (!value.is_empty() && !value.contains('\\')).then_some(value)
}

/// In this tool's `zig` subcommand (run by cargo-zigbuild's wrapper scripts), points
/// cargo-zigbuild at the zig executable the build found ([`direct_zig`], passed down in
/// [`ZIG_EXE_VAR`]) instead of the `python3 -m ziglang` the script exports. Call it first
/// thing in `main`, while the process has one thread: it sets environment variables.
pub fn use_direct_zig() {
    let Some(zig) = std::env::var_os(ZIG_EXE_VAR) else {
        return;
    };
    if std::path::Path::new(&zig).is_file() {
        std::env::set_var("CARGO_ZIGBUILD_ZIG_COMMAND", &zig);
        std::env::set_var("CARGO_ZIGBUILD_ZIG_COMMAND_ARGS", "");
    }
}

/// Whether the arguments of a `zig cc`/`zig c++` run are cc-rs asking whether the compiler
/// takes cl-style flags: `<cc> <flags> -?`, which cl and clang-cl answer with their help
/// and every other compiler refuses. zig refuses it too, but not at once on arm targets:
/// cargo-zigbuild adds a C file of its own (unaligned-access helpers) to every run that is
/// not a compile, so zig makes an executable of the probe, building its C library,
/// compiler-rt and UBSan runtime for the target in debug mode first (about 100 s of CPU,
/// at the first build for each arm target, for nothing), and only then fails. The tool's
/// `zig` subcommand answers such a probe itself, as zig does.
pub fn is_cl_style_probe(args: &[String]) -> bool {
    args.iter().any(|a| a == "-?")
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
    stdout_of(Command::new(program).args(words).arg("--version"))
        .and_then(|out| out.lines().next().map(str::to_string))
        .unwrap_or_default()
}

/// What `cmd` prints on stdout when it succeeds (no stdin, stderr dropped).
fn stdout_of(cmd: &mut Command) -> Option<String> {
    cmd.stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
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
        Ok((program, args)) => stdout_of(Command::new(program).args(args).arg("version"))
            .map(|out| out.trim().to_string())
            .unwrap_or_default(),
        Err(_) => String::new(),
    })
}

/// Which C toolchain compiles a target's C and C++ code, and what links the binary.
#[derive(Debug, Clone)]
enum Kind {
    /// The user's `CC_<target>` (and their `CXX_<target>`, linker); zig links on a
    /// foreign target when they set no linker.
    User,
    /// musl-tools' `<arch>-linux-musl-gcc` for C on the native target; rust-lld links.
    MuslGcc,
    /// zig for everything (C, C++, archiver, linker).
    Zig(ZigWrapper),
}

/// The C toolchain [`choose`] picked for a target: checked, with what it is called.
#[derive(Debug, Clone)]
pub struct Chosen {
    kind: Kind,
    /// The compiler as the runtime's own C compile (mimalloc) uses it.
    pub compiler: CCompiler,
    /// The crates that compile C++, when any.
    cxx_crates: Vec<String>,
}

/// The language of a [`check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lang {
    C,
    Cxx,
}

/// Compiles a tiny source with `command` (a compiler, possibly with arguments) for
/// `platform`: its standard headers must be there (`<stdio.h>`, or `<vector>` for C++)
/// and the object must be for the target's architecture (the host's `gcc` given as a
/// cross compiler is caught here, not in the middle of a dependency's build). A passed
/// check is remembered in the tool's cache by the compiler's identity (`identity`: its
/// path, version and file), so that a warm build does not compile again; a failed one
/// is not.
fn check(
    command: &str,
    lang: Lang,
    identity: &str,
    platform: &Platform,
) -> std::result::Result<(), String> {
    let digest =
        crate::blob::sha256(format!("{identity}\0{lang:?}\0{}", platform.triple).as_bytes());
    let key = crate::blob::hex(&digest);
    let marker = crate::blob::cache_home().map(|h| h.join("cc-checks").join(&key[..24]));
    if marker.as_ref().is_some_and(|m| m.is_file()) {
        return Ok(());
    }
    let dir = tempfile::Builder::new()
        .prefix("microimage-cc-check-")
        .tempdir()
        .map_err(|e| format!("making a temporary directory failed: {e}"))?;
    let _registered = crate::guard::Temporary::register(dir.path());
    let (name, source) = match lang {
        Lang::C => (
            "check.c",
            "#include <stdio.h>\nint microimage_check(void) { return puts(\"ok\"); }\n",
        ),
        Lang::Cxx => (
            "check.cc",
            "#include <vector>\nint microimage_check() { std::vector<int> v{1, 2}; return v[1]; }\n",
        ),
    };
    let src = dir.path().join(name);
    let obj = dir.path().join("check.o");
    std::fs::write(&src, source).map_err(|e| format!("writing {} failed: {e}", src.display()))?;
    let mut words = command.split_whitespace();
    let program = words.next().ok_or("the command is empty")?;
    let mut compile = Command::new(program);
    // Only for zig's wrapper: asking zig where it is may start Python.
    if identity.starts_with("zig ") {
        if let Some(zig) = direct_zig() {
            compile.env(ZIG_EXE_VAR, zig);
        }
    }
    let out = compile
        .args(words)
        .arg("-c")
        .arg(&src)
        .arg("-o")
        .arg(&obj)
        .current_dir(dir.path())
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("running `{program}` failed: {e}"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let said: Vec<&str> = stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .take(3)
            .collect();
        return Err(format!(
            "it failed to compile {} ({}){}",
            if lang == Lang::C {
                "a line of C"
            } else {
                "a line of C++"
            },
            out.status,
            if said.is_empty() {
                String::new()
            } else {
                format!(": {}", said.join(" / "))
            }
        ));
    }
    let machine = elf_machine(&std::fs::read(&obj).unwrap_or_default());
    if machine != Some(platform.elf_machine.0) {
        return Err(format!(
            "it compiled an object that is not for {} (ELF machine {}, wanted {})",
            platform.triple,
            machine.map_or("none: not ELF".to_string(), |m| m.to_string()),
            platform.elf_machine.0
        ));
    }
    if let Some(marker) = marker {
        if let Some(parent) = marker.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        let _ = std::fs::write(&marker, identity);
    }
    Ok(())
}

/// The ELF `e_machine` of an object file (`None`: not ELF).
fn elf_machine(head: &[u8]) -> Option<u16> {
    match (head.get(0..4), head.get(5), head.get(18..20)) {
        (Some(b"\x7fELF"), Some(&data), Some(m)) => Some(if data == 2 {
            u16::from_be_bytes([m[0], m[1]])
        } else {
            u16::from_le_bytes([m[0], m[1]])
        }),
        _ => None,
    }
}

/// What names a compiler for [`check`]'s memory: the command, its version line and its
/// file (size and modification time).
fn identity_of(command: &str, version: &str) -> String {
    let program = command.split_whitespace().next().unwrap_or("");
    let file = which::which(program)
        .ok()
        .and_then(|p| std::fs::metadata(&p).ok().map(|m| (p, m)))
        .map(|(p, m)| {
            let mtime = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            format!("{} {} {mtime}", p.display(), m.len())
        })
        .unwrap_or_default();
    format!("{command}: {version}: {file}")
}

/// The user's `CC_<target>`/`CXX_<target>` (either spelling of the target).
fn user_var(prefix: &str, triple: &str) -> Option<String> {
    [
        format!("{prefix}_{}", under(triple)),
        format!("{prefix}_{triple}"),
    ]
    .iter()
    .find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
}

/// Picks and checks the C (and, for `cxx_crates`, C++) toolchain of a target whose
/// graph has C code in `c_crates` (see the module's rules). A warning when musl-gcc fails
/// its check and zig takes over; an error when the user's compiler fails it, or when
/// there is no C toolchain for the target at all.
pub fn choose(
    toolchain: &Toolchain,
    c_crates: &[String],
    cxx_crates: &[String],
    shell: &Shell,
) -> Result<Chosen> {
    let cxx = !cxx_crates.is_empty();
    let (kind, compiler) = if toolchain.user_cc {
        (Kind::User, user_compiler(toolchain, cxx)?)
    } else if toolchain.std_from_source().is_some() {
        // zig links it (its musl has the start files rustc lacks), so zig compiles the C
        // that goes with it too.
        zig_compiler(toolchain, c_crates, cxx)?
    } else {
        match musl_gcc_compiler(toolchain, cxx_crates, shell) {
            Some(compiler) => (Kind::MuslGcc, compiler),
            None => zig_compiler(toolchain, c_crates, cxx)?,
        }
    };
    Ok(Chosen {
        kind,
        compiler,
        cxx_crates: cxx_crates.to_vec(),
    })
}

/// [`choose`]: the user's `CC_<target>` (and `CXX_<target>` when C++ is needed), checked.
fn user_compiler(toolchain: &Toolchain, cxx: bool) -> Result<CCompiler> {
    let platform = toolchain.platform;
    let triple = platform.triple;
    let cc = user_var("CC", triple).unwrap_or_default();
    let version = version_line(&cc);
    let identity = identity_of(&cc, &version);
    let refuse = |var: &str, command: &str, why: String| {
        Error::build(format!(
            "{var}_{} = `{command}` cannot compile for {triple}: {why}",
            under(triple)
        ))
        .with_help(format!(
            "point {var}_{} at a compiler for {triple}, or unset it to let cargo-microimage pick one",
            under(triple)
        ))
    };
    check(&cc, Lang::C, &identity, platform).map_err(|why| refuse("CC", &cc, why))?;
    if cxx {
        if let Some(cxx_cmd) = user_var("CXX", triple) {
            let identity = identity_of(&cxx_cmd, &version_line(&cxx_cmd));
            check(&cxx_cmd, Lang::Cxx, &identity, platform)
                .map_err(|why| refuse("CXX", &cxx_cmd, why))?;
        }
    }
    Ok(CCompiler {
        env: Vec::new(),
        identity,
        name: cc,
    })
}

/// [`choose`]: musl-tools' compiler for the native target, when it is there, no crate
/// compiles C++ and it passes its check (a warning when it does not).
fn musl_gcc_compiler(
    toolchain: &Toolchain,
    cxx_crates: &[String],
    shell: &Shell,
) -> Option<CCompiler> {
    let platform = toolchain.platform;
    let triple = platform.triple;
    let musl_gcc = toolchain.musl_gcc();
    if !toolchain.native || !on_path(&musl_gcc) {
        return None;
    }
    if !cxx_crates.is_empty() {
        shell.verbose(
            "Passing over",
            format!(
                "{musl_gcc} for {triple}: musl-tools has no C++ compiler, and {} compile C++",
                cxx_crates.join(", ")
            ),
        );
        return None;
    }
    let version = version_line(&musl_gcc);
    let identity = identity_of(&musl_gcc, &version);
    if let Err(why) = check(&musl_gcc, Lang::C, &identity, platform) {
        shell.warn(format!(
            "`{musl_gcc}` on PATH cannot compile for {triple}: {why}; using zig instead \
             (fix or remove that {musl_gcc}, or set CC_{} to choose a compiler)",
            under(triple)
        ));
        return None;
    }
    Some(CCompiler {
        env: vec![
            (format!("CC_{}", under(triple)), musl_gcc.clone().into()),
            (format!("AR_{}", under(triple)), "ar".into()),
        ],
        identity: format!("{musl_gcc}: {version}"),
        name: musl_gcc,
    })
}

/// [`choose`]: zig for C and C++, checked; an error naming the crates when there is no zig.
fn zig_compiler(
    toolchain: &Toolchain,
    c_crates: &[String],
    cxx: bool,
) -> Result<(Kind, CCompiler)> {
    let platform = toolchain.platform;
    let triple = platform.triple;
    let crates = c_crates.join(", ");
    let wrapper = zig_for(triple).map_err(|problem| match problem {
        ZigProblem::Missing if toolchain.std_from_source().is_some() => Error::build(format!(
            "linking for {triple} needs zig: its standard library is built from source, and rustc has \
             no C library or start files for it{}",
            if c_crates.is_empty() { String::new() } else { format!(" (and these crates compile C: {crates})") }
        ))
        .with_help(
            "install zig, which links such targets with its own musl: `python3 -m pip install ziglang` \
             (or put `zig` on PATH)",
        ),
        ZigProblem::Missing => Error::build(if c_crates.is_empty() {
            format!("compiling C for {triple} needs a C compiler for that target, and there is none")
        } else {
            format!(
                "building for {triple} needs a C{} compiler for that target: these crates compile C{}: {crates}",
                if cxx { "/C++" } else { "" },
                if cxx { " or C++" } else { "" },
            )
        })
        .with_help(how_to_get_zig(toolchain, cxx)),
        ZigProblem::Prepare { zig, error } => {
            Error::build(format!("preparing zig ({zig}) for {triple} failed: {error}"))
        }
    })?;
    let version = zig_version(&wrapper);
    let reinstall = "reinstall zig (`python3 -m pip install --force-reinstall ziglang`), or set CC_<target> (and CXX_<target>) to a compiler for the target";
    for (lang, command, what) in [
        (Lang::C, &wrapper.cc, "C"),
        (Lang::Cxx, &wrapper.cxx, "C++"),
    ] {
        if lang == Lang::Cxx && !cxx {
            continue;
        }
        let command = command.display().to_string();
        let identity = format!("zig {version}: {command}");
        check(&command, lang, &identity, platform).map_err(|why| {
            Error::build(format!(
                "zig {version} cannot compile {what} for {triple}: {why}"
            ))
            .with_help(reinstall)
        })?;
    }
    let compiler = CCompiler {
        env: vec![
            (format!("CC_{}", under(triple)), wrapper.cc.clone()),
            (format!("CXX_{}", under(triple)), wrapper.cxx.clone()),
            (format!("AR_{}", under(triple)), wrapper.ar.clone()),
            (format!("RANLIB_{}", under(triple)), wrapper.ranlib.clone()),
        ]
        .into_iter()
        .chain(direct_zig().map(|zig| (ZIG_EXE_VAR.to_string(), zig)))
        .collect(),
        identity: format!("zig {version}"),
        name: format!("zig {version}"),
    };
    Ok((Kind::Zig(wrapper), compiler))
}

/// The C compiler for the target, for C code the tool compiles itself (mimalloc, see
/// `super::runtime`): the one the build uses for the app's C code ([`choose`], which runs
/// now for a target without C code of its own). `None` when there is none (zig is
/// missing).
pub fn c_compiler(toolchain: &Toolchain, shell: &Shell) -> Result<Option<CCompiler>> {
    if let Some(chosen) = &toolchain.chosen {
        return Ok(Some(chosen.compiler.clone()));
    }
    match choose(toolchain, &[], &[], shell) {
        Ok(chosen) => Ok(Some(chosen.compiler)),
        Err(_) if !toolchain.user_cc && zig_for(toolchain.platform.triple).is_err() => Ok(None),
        Err(e) => Err(e),
    }
}

/// How to get a C (and C++) compiler for the toolchain's target (for the error or warning
/// when there is none).
pub fn how_to_get_zig(toolchain: &Toolchain, cxx: bool) -> String {
    let triple = toolchain.platform.triple;
    format!(
        "install zig, which cargo-microimage uses as C{} compiler and linker for musl targets: \
         `python3 -m pip install ziglang` (or put `zig` on PATH){}; or point CC_{}{} at a compiler for {triple}",
        if cxx { "/C++" } else { "" },
        if toolchain.native && !cxx {
            ", or install musl-tools for x86_64-linux-musl-gcc"
        } else {
            ""
        },
        under(triple),
        if cxx { format!(" and CXX_{}", under(triple)) } else { String::new() },
    )
}

impl Toolchain {
    /// The platform this toolchain builds for.
    pub fn platform(&self) -> &'static Platform {
        self.platform
    }

    /// Whether a crate of the graph compiles C++ (as [`choose`] found).
    pub fn compiles_cxx(&self) -> bool {
        self.chosen
            .as_ref()
            .is_some_and(|c| !c.cxx_crates.is_empty())
    }

    /// The rustflag that keeps one C toolchain's build outputs apart from another's in the
    /// same target dir: `--cfg=microimage_c_toolchain="musl-gcc"` (or `"zig-<version>"`,
    /// or `"cc-<hash of the user's CC>"`), given when the graph compiles C or the standard
    /// library is built from source (zig links it then: one std for both kinds of graph).
    ///
    /// Why: cc-rs reruns a build script when its `CC_<target>` changes, but what the script
    /// left in its `OUT_DIR` stays, and CMake's cache there names the old compiler
    /// (switching from musl-gcc to zig failed with `Could NOT find Threads`). cargo puts
    /// the rustflags into the hash of every unit's output directory (not into
    /// `-C metadata`, so the binary is byte for byte the same), so each toolchain gets its
    /// own `OUT_DIR`s and switching back is a no-op build. Removing the other toolchain's
    /// outputs instead (what an earlier version did) raced with a concurrent cargo in the
    /// same target dir and made two projects sharing one rebuild each other's C each time.
    /// The flag names the toolchain, never a path, so compiler caches still hit across
    /// machines.
    pub fn outputs_apart_flag(&self) -> Option<String> {
        let chosen = self.chosen.as_ref()?;
        let which = match chosen.kind {
            Kind::User => {
                let digest = crate::blob::sha256(chosen.compiler.name.as_bytes());
                format!("cc-{}", &crate::blob::hex(&digest)[..12])
            }
            Kind::MuslGcc => "musl-gcc".to_string(),
            Kind::Zig(_) => chosen.compiler.identity.replace([' ', '"', '\\'], "-"),
        };
        Some(format!("--cfg=microimage_c_toolchain=\"{which}\""))
    }

    /// Records the C toolchain [`choose`] picked for the graph's C code.
    pub fn set_chosen(&mut self, chosen: Chosen) {
        self.chosen = Some(chosen);
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

/// Sets up the C compiler and linker for the target on the cargo command `cmd`, as
/// [`choose`] picked them, and says so. Returns zig's C library marker when zig links (the
/// caller marks it built once cargo succeeds, see [`ZigLibc`]).
pub fn configure(
    cmd: &mut Command,
    toolchain: &Toolchain,
    c_crates: &[String],
    shell: &Shell,
) -> Result<Option<ZigLibc>> {
    let triple = toolchain.platform.triple;
    let linker_env = &toolchain.linker_env;
    let crates = c_crates.join(", ");
    let chosen = match &toolchain.chosen {
        Some(chosen) => Some(chosen.clone()),
        None if !c_crates.is_empty() => Some(choose(toolchain, c_crates, &[], shell)?),
        None => None,
    };
    if let (true, Some(nightly), Some(chosen)) =
        (c_crates.is_empty(), toolchain.std_from_source(), &chosen)
    {
        return Ok(link_std_from_source(cmd, toolchain, chosen, nightly, shell));
    }
    let Some(chosen) = chosen.filter(|_| !c_crates.is_empty()) else {
        // No C code: rustc's `rust-lld` links with rustc's self-contained musl, on any
        // host. The host's `cc` would only do so on a Linux host of the same architecture
        // (Apple's cannot link an ELF at all).
        if !toolchain.user_linker {
            cmd.env(linker_env, "rust-lld");
            shell.verbose(
                "Linking",
                format!("{triple} with rust-lld (no C code in the graph)"),
            );
        }
        return Ok(None);
    };
    let what = if chosen.cxx_crates.is_empty() {
        format!("C code in {crates}")
    } else {
        format!("C++ in {}", chosen.cxx_crates.join(", "))
    };
    match &chosen.kind {
        Kind::User => configure_user(cmd, toolchain, &chosen, &what, shell),
        Kind::MuslGcc => {
            for (name, value) in &chosen.compiler.env {
                set_default(cmd, name, value);
            }
            let linker = if toolchain.user_linker {
                "your linker"
            } else {
                cmd.env(linker_env, "rust-lld");
                "rust-lld"
            };
            let version = chosen
                .compiler
                .identity
                .split_once(": ")
                .map(|(_, v)| v.to_string())
                .filter(|v| !v.is_empty())
                .map(|v| format!(" ({v})"))
                .unwrap_or_default();
            shell.status(
                "Using",
                format!(
                    "{}{version} as C compiler and {linker} as linker for {triple} ({what})",
                    chosen.compiler.name
                ),
            );
            Ok(None)
        }
        Kind::Zig(wrapper) => {
            shell.status(
                "Using",
                format!(
                    "{} as C/C++ compiler and linker for {triple} ({what})",
                    chosen.compiler.name
                ),
            );
            Ok(Some(use_zig(cmd, toolchain, wrapper, true, shell)))
        }
    }
}

/// [`configure`] for the user's `CC_<target>`: their compiler, and rust-lld (native),
/// their linker, or zig (a foreign target without a linker of theirs) links.
fn configure_user(
    cmd: &mut Command,
    toolchain: &Toolchain,
    chosen: &Chosen,
    what: &str,
    shell: &Shell,
) -> Result<Option<ZigLibc>> {
    let triple = toolchain.platform.triple;
    let linker_env = &toolchain.linker_env;
    let (linker, libc) = if toolchain.user_linker {
        ("your linker", None)
    } else if toolchain.native && toolchain.std_from_source().is_none() {
        cmd.env(linker_env, "rust-lld");
        ("rust-lld", None)
    } else {
        let wrapper = zig_for(triple).map_err(|_| {
            Error::build(format!(
                "linking C code for {triple} needs a linker for that target: CC_{} is set, but no linker",
                under(triple)
            ))
            .with_help(format!(
                "set {linker_env} (or target.{triple}.linker in cargo config), or install zig (`python3 -m pip install ziglang`)"
            ))
        })?;
        ("zig", Some(use_zig(cmd, toolchain, &wrapper, false, shell)))
    };
    shell.status(
        "Using",
        format!(
            "{} (CC_{}) as C/C++ compiler and {linker} as linker for {triple} ({what})",
            chosen.compiler.name,
            under(triple)
        ),
    );
    Ok(libc)
}

/// [`configure`] for a target without C code whose standard library is built from source:
/// zig links it, with zig's musl (rustc has no start files or C library for the target).
fn link_std_from_source(
    cmd: &mut Command,
    toolchain: &Toolchain,
    chosen: &Chosen,
    nightly: &super::stdlib::Nightly,
    shell: &Shell,
) -> Option<ZigLibc> {
    let triple = toolchain.platform.triple;
    let why = format!(
        "the standard library is built from source with {}",
        nightly.name
    );
    match &chosen.kind {
        Kind::Zig(wrapper) => {
            shell.status(
                "Using",
                format!("{} as linker for {triple} ({why})", chosen.compiler.name),
            );
            Some(use_zig(cmd, toolchain, wrapper, false, shell))
        }
        Kind::User | Kind::MuslGcc => {
            if !toolchain.user_linker {
                if let Ok(wrapper) = zig_for(triple) {
                    shell.status("Using", format!("zig as linker for {triple} ({why})"));
                    return Some(use_zig(cmd, toolchain, &wrapper, false, shell));
                }
            }
            shell.status("Using", format!("your linker for {triple} ({why})"));
            None
        }
    }
}

/// Sets `name` on `cmd` unless the user set it.
fn set_default(cmd: &mut Command, name: &str, value: &Path) {
    if !env_set(name) {
        cmd.env(name, value);
    }
}

/// zig's wrappers as the target's C++ compiler, archiver and linker (and C compiler with
/// `cc`), where the user set none; says when zig's C library is built first.
fn use_zig(
    cmd: &mut Command,
    toolchain: &Toolchain,
    wrapper: &ZigWrapper,
    cc: bool,
    shell: &Shell,
) -> ZigLibc {
    let triple = toolchain.platform.triple;
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
    let t = under(triple);
    if cc {
        set_default(cmd, &format!("CC_{t}"), &wrapper.cc);
    }
    set_default(cmd, &format!("CXX_{t}"), &wrapper.cxx);
    set_default(cmd, &format!("AR_{t}"), &wrapper.ar);
    set_default(cmd, &format!("RANLIB_{t}"), &wrapper.ranlib);
    if !toolchain.user_linker {
        cmd.env(&toolchain.linker_env, &wrapper.cc);
    }
    tell_zig_the_rustc_version(cmd, toolchain);
    if let Some(zig) = direct_zig() {
        cmd.env(ZIG_EXE_VAR, zig);
    }
    libc
}

/// cargo-zigbuild's compiler wrapper asks rustc for its version on every C compile
/// (`$RUSTC_WRAPPER $RUSTC -vV`) unless `CARGO_ZIGBUILD_RUSTC_VERSION` says it, as
/// `cargo zigbuild` does. Under sccache that nested `sccache` call, made from inside
/// sccache's server, failed (`SCCACHE_START_SERVER=1 can't be used with other commands`),
/// so no C compiled with zig under sccache; it also saves a rustc run per C file.
fn tell_zig_the_rustc_version(cmd: &mut Command, toolchain: &Toolchain) {
    if let Some(version) = &toolchain.rustc_version {
        if !env_set("CARGO_ZIGBUILD_RUSTC_VERSION") {
            cmd.env("CARGO_ZIGBUILD_RUSTC_VERSION", version);
        }
    }
}

/// Checks, before anything compiles, that the programs the graph's build scripts run on
/// this machine are there (`tools`: `(program, crate)`, see
/// `crate::plan::graph::Graph::host_tools`), honouring the variables those scripts read
/// (`CMAKE`, `PROTOC`, `PERL`, `LIBCLANG_PATH`). Without this, a missing `cmake` showed up
/// as a panic deep in a dependency's build script, minutes in. One error names every
/// missing program, the crates that need it and how to install it on Debian/Ubuntu,
/// Fedora and macOS.
pub fn check_host_tools(tools: &[(String, String)], triple: &str) -> Result<()> {
    let mut missing: Vec<(&str, Vec<&str>)> = Vec::new();
    for (tool, krate) in tools {
        if host_tool_found(tool) {
            continue;
        }
        match missing.iter_mut().find(|(t, _)| t == tool) {
            Some((_, crates)) => crates.push(krate),
            None => missing.push((tool, vec![krate])),
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let what: Vec<String> = missing
        .iter()
        .map(|(tool, crates)| {
            let why = match *tool {
                "cmake" => "builds C/C++ code with CMake",
                "protoc" => "compiles .proto files with protoc",
                "perl" => "runs OpenSSL's Perl configure script",
                _ => "generates bindings with bindgen, which loads libclang",
            };
            format!("`{tool}` ({} {why})", crates.join(", "))
        })
        .collect();
    let how: Vec<String> = missing
        .iter()
        .map(|(tool, _)| {
            let (apt, dnf, brew, var) = match *tool {
                "cmake" => ("cmake", "cmake", "cmake", "CMAKE"),
                "protoc" => ("protobuf-compiler", "protobuf-compiler", "protobuf", "PROTOC"),
                "perl" => ("perl", "perl-core", "perl", "PERL"),
                _ => ("libclang-dev", "clang-devel", "llvm", "LIBCLANG_PATH"),
            };
            format!(
                "{tool}: `sudo apt-get install {apt}` (Debian/Ubuntu), `sudo dnf install {dnf}` (Fedora), \
                 `brew install {brew}` (macOS){}",
                if var == "LIBCLANG_PATH" {
                    ", or set LIBCLANG_PATH to the directory holding libclang".to_string()
                } else {
                    format!(", or set {var} to one")
                }
            )
        })
        .collect();
    Err(Error::build(format!(
        "building for {triple} needs {} on this machine, and {} not found",
        what.join(" and "),
        if missing.len() == 1 {
            "it was"
        } else {
            "they were"
        }
    ))
    .with_help(format!("install {}", how.join("; "))))
}

/// Whether the program `tool` of [`check_host_tools`] is there.
fn host_tool_found(tool: &str) -> bool {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    let program = |env: &str, name: &str| match var(env) {
        Some(path) => which::which(&path).is_ok(),
        None => on_path(name),
    };
    match tool {
        "cmake" => program("CMAKE", "cmake"),
        "protoc" => program("PROTOC", "protoc"),
        "perl" => program("PERL", "perl"),
        _ => {
            let has_libclang = |dir: &Path| {
                std::fs::read_dir(dir)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .any(|e| {
                        let name = e.file_name();
                        let name = name.to_string_lossy();
                        name.starts_with("libclang")
                            && (name.contains(".so") || name.ends_with(".dylib"))
                    })
            };
            if let Some(dir) = var("LIBCLANG_PATH") {
                return has_libclang(Path::new(&dir));
            }
            if on_path("llvm-config") {
                return true;
            }
            let mut dirs: Vec<std::path::PathBuf> = [
                "/usr/lib",
                "/usr/lib64",
                "/usr/local/lib",
                "/opt/homebrew/opt/llvm/lib",
                "/usr/local/opt/llvm/lib",
            ]
            .iter()
            .map(std::path::PathBuf::from)
            .collect();
            for parent in ["/usr/lib", "/usr/lib64"] {
                for e in std::fs::read_dir(parent).into_iter().flatten().flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if name.starts_with("llvm") {
                        dirs.push(e.path().join("lib"));
                    } else if name.ends_with("-linux-gnu") {
                        dirs.push(e.path());
                    }
                }
            }
            dirs.iter().any(|d| has_libclang(d))
        }
    }
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
    fn zig_env_names_its_executable_in_zon_and_in_json() {
        let zon =
            ".{\n    .zig_exe = \"/opt/py/site-packages/ziglang/zig\",\n    .lib_dir = \"/x\",\n}";
        assert_eq!(
            super::zig_exe_in_env(zon),
            Some("/opt/py/site-packages/ziglang/zig")
        );
        let json = "{\n \"zig_exe\": \"/usr/lib/zig/zig\",\n \"lib_dir\": \"/usr/lib/zig/lib\"\n}";
        assert_eq!(super::zig_exe_in_env(json), Some("/usr/lib/zig/zig"));
        // Escaped or missing: not guessed at.
        assert_eq!(
            super::zig_exe_in_env(".{ .zig_exe = \"C:\\\\zig.exe\" }"),
            None
        );
        assert_eq!(super::zig_exe_in_env(".{ .lib_dir = \"/x\" }"), None);
        assert_eq!(super::zig_exe_in_env(".{ .zig_exe = \"\" }"), None);
    }

    #[test]
    fn underscores() {
        assert_eq!(
            super::under("aarch64-unknown-linux-musl"),
            "aarch64_unknown_linux_musl"
        );
    }
}
