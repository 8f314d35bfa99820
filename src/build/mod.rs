//! The build stage: runs `$CARGO build --target <musl triple>` for the planned binary and
//! takes the executable's path from cargo's `compiler-artifact` JSON messages (never by
//! guessing paths under `target/`). cargo's own diagnostics go to the user unchanged.
//!
//! What the tool adds to the build it appends, never replaces: `--remap-path-prefix`
//! flags go wherever the user's rustflags already come from (environment or config), the
//! matching `-ffile-prefix-map` flags wherever cc-rs will read C flags from, and symbols are stripped through cargo's `strip` profile setting (`--config`), unless the
//! user's environment sets it. A missing Rust target is installed with rustup.
//!
//! C code and cross-linking are set up by [`toolchain`].
//!
//! Not for: checking the result (see `crate::verify`).

pub mod auditable;
pub mod runtime;
pub mod stdlib;
pub mod toolchain;
pub mod wrapper;

use std::ffi::OsString;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use cargo_metadata::{Message, TargetKind};

use crate::error::{Error, Result};
use crate::plan::cache::Answers;
use crate::plan::graph::Graph;
use crate::plan::{cargo, CargoOptions, Plan};
use crate::platform::Platform;
use crate::settings::BuildStd;
use crate::shell::Shell;

/// What a target's build needs to know before cargo runs.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The target's dependency graph (which crates compile C).
    pub graph: Graph,
    /// The user's C toolchain settings for the target.
    pub toolchain: toolchain::Toolchain,
}

/// What prepare learned about the toolchain.
#[derive(Debug, Clone)]
pub struct Facts {
    pub sysroot: PathBuf,
    /// The first line of `rustc -vV`.
    pub toolchain: Option<String>,
    /// Its `commit-hash`, for provenance (empty when rustc does not know it).
    pub rustc_commit: Option<String>,
}

/// Gets every target ready before the first build: installs missing Rust targets (one
/// sysroot probe for all, unless `known` has it), then, for all targets at once, reads
/// each target's dependency graph (unless `known` has it) and locates zig where it will be
/// needed. Returns one [`Prepared`] per entry of `targets`, and the toolchain's facts.
///
/// The parallelism is only for speed: these are separate `cargo metadata` and
/// `python -m ziglang` runs, ~0.1-0.3 s each, that a no-op build would otherwise wait on
/// one after another.
pub fn prepare(
    targets: &[(&'static Platform, Vec<&Plan>)],
    options: &CargoOptions,
    build_std: BuildStd,
    known: &Answers,
    shell: &Shell,
) -> Result<(Vec<Prepared>, Facts)> {
    let (sysroot, (toolchain, rustc_commit)) =
        match (&known.sysroot, &known.toolchain, &known.rustc_commit) {
            (Some(s), Some(t), Some(c)) => (s.clone(), (Some(t.clone()), Some(c.clone()))),
            _ => std::thread::scope(|scope| -> Result<_> {
                let version = scope.spawn(toolchain_version);
                let sysroot = sysroot()?;
                Ok((sysroot, version.join().unwrap_or((None, None))))
            })?,
        };
    let sources = targets
        .iter()
        .map(|(platform, _)| {
            let triple = platform.triple;
            let known = known.nightlies.get(triple);
            stdlib::source_for(
                triple,
                build_std,
                &sysroot,
                toolchain.as_deref(),
                known,
                shell,
            )
        })
        .collect::<Result<Vec<_>>>()?;
    let sysroot_ref = sysroot.as_path();
    let version_ref = toolchain.as_deref();
    let prepared = std::thread::scope(|scope| {
        let jobs: Vec<_> = targets
            .iter()
            .zip(&sources)
            .map(|((platform, plans), source)| {
                scope.spawn(move || {
                    let graph = match known.graphs.get(platform.triple) {
                        Some(g) => g.clone(),
                        None => crate::plan::graph::graph(plans, options, platform)?,
                    };
                    if let Some(openssl) = graph.system_openssl(platform.triple) {
                        return Err(openssl.error(platform.triple));
                    }
                    toolchain::check_host_tools(&graph.host_tools, platform.triple)?;
                    let mut toolchain = match source {
                        stdlib::Source::Prebuilt => {
                            toolchain::Toolchain::of(platform, options, sysroot_ref, version_ref)?
                        }
                        stdlib::Source::FromSource(nightly) => toolchain::Toolchain::of(
                            platform,
                            options,
                            &nightly.sysroot,
                            Some(&nightly.version),
                        )?
                        .with_std_from_source(nightly.clone()),
                    };
                    // A target whose std is built from source is linked by zig.
                    if !graph.c_crates.is_empty() || toolchain.std_from_source().is_some() {
                        let chosen = toolchain::choose(
                            &toolchain,
                            &graph.c_crates,
                            &graph.cxx_crates(),
                            shell,
                        )?;
                        toolchain.set_chosen(chosen);
                    }
                    Ok(Prepared { graph, toolchain })
                })
            })
            .collect();
        jobs.into_iter()
            .map(|job| job.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect::<Result<Vec<_>>>()
    })?;
    Ok((
        prepared,
        Facts {
            sysroot,
            toolchain,
            rustc_commit,
        },
    ))
}

/// How one binary is linked: what the workspace wrapper adds (see [`wrapper`]), and the
/// runtime it gets, for the Building line.
#[derive(Debug, Clone, Default)]
pub struct Link {
    pub additions: wrapper::Additions,
    pub runtime: Option<runtime::Linked>,
}

impl Link {
    fn describe(&self) -> String {
        self.runtime
            .as_ref()
            .map(|r| format!(" {}", r.describe()))
            .unwrap_or_default()
    }
}

/// An executable cargo built, opened the moment cargo reported it.
///
/// cargo copies ("uplifts") each binary to `target/<triple>/<profile>/<name>`, one path for
/// every build of that binary whatever its settings, and releases the build directory's
/// lock when it exits. Another build of the same binary with other settings (another run
/// of this tool, an IDE) may then uplift its own file there before this run reads it; the
/// file opened while cargo still holds the lock is this build's, whatever the path holds
/// afterwards.
#[derive(Debug)]
pub struct Built {
    pub path: PathBuf,
    pub file: std::fs::File,
}

/// Builds the binaries of `plans` for `platform` and returns their executables, in the
/// order of `plans`, linking each with its [`Link`]. Binaries whose links add the same
/// kinds of things are built by one cargo invocation; others by one each (the workspace
/// wrapper's name, which cargo hashes into the build, says what is added).
pub fn build(
    plans: &[&Plan],
    links: &[Link],
    options: &CargoOptions,
    platform: &Platform,
    prepared: &Prepared,
    shell: &Shell,
) -> Result<Vec<Built>> {
    let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
    for (i, link) in links.iter().enumerate() {
        let key = link.additions.group_key();
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, members)) => members.push(i),
            None => groups.push((key, vec![i])),
        }
    }
    let mut built: Vec<Option<Built>> = (0..plans.len()).map(|_| None).collect();
    for (_, members) in groups {
        let group_plans: Vec<&Plan> = members.iter().map(|&i| plans[i]).collect();
        let group_links: Vec<&Link> = members.iter().map(|&i| &links[i]).collect();
        let paths = build_group(
            &group_plans,
            &group_links,
            options,
            platform,
            prepared,
            shell,
        )?;
        for (i, path) in members.into_iter().zip(paths) {
            built[i] = Some(path);
        }
    }
    Ok(built.into_iter().flatten().collect())
}

/// One cargo invocation for `plans`, whose links add the same kinds of things.
fn build_group(
    plans: &[&Plan],
    links: &[&Link],
    options: &CargoOptions,
    platform: &Platform,
    prepared: &Prepared,
    shell: &Shell,
) -> Result<Vec<Built>> {
    let first = plans.first().expect("at least one binary to build");
    let c_crates = &prepared.graph.c_crates;
    if !c_crates.is_empty() {
        shell.verbose(
            "C code",
            format!("for {}: {}", platform.triple, c_crates.join(", ")),
        );
    }
    let nightly = prepared.toolchain.std_from_source();
    let mut cmd = Command::new(nightly.map_or_else(cargo, |n| n.cargo()));
    cmd.arg("build");
    if let Some(nightly) = nightly {
        cmd.arg(stdlib::BUILD_STD_ARG);
        if nightly.name != "(active)" {
            // For any rustup proxy a build script runs.
            cmd.env("RUSTUP_TOOLCHAIN", &nightly.name);
        }
    }
    cmd.arg("--message-format=json-render-diagnostics")
        .args(["--target", platform.triple])
        .args(["--profile", &options.profile])
        .arg("--manifest-path")
        .arg(&first.manifest_path);
    let mut packages: Vec<String> = plans
        .iter()
        .map(|p| format!("{}@{}", p.package_name, p.version))
        .collect();
    packages.dedup();
    for p in &packages {
        cmd.args(["--package", p]);
    }
    for plan in plans {
        cmd.args(["--bin", &plan.bin]);
    }
    cmd.args(options.feature_args()).args(options.lock_args());
    let (common, target_dir) = options.common_args()?;
    cmd.args(common);
    if let Some(dir) = &target_dir {
        // As the flag, not as `CARGO_TARGET_DIR`: rustc inherits the environment, and
        // sccache keys Rust compilations on every `CARGO_*` variable, so a per-checkout
        // path there makes every crate miss. The flag wins over a variable of the user's,
        // which would only do the same harm, so that goes.
        cmd.arg("--target-dir")
            .arg(dir)
            .env_remove("CARGO_TARGET_DIR");
    }
    if let Some(jobs) = &options.jobs {
        cmd.args(["--jobs", jobs]);
    }
    if options.keep_going {
        cmd.arg("--keep-going");
    }
    if options.ignore_rust_version {
        cmd.arg("--ignore-rust-version");
    }
    if options.verbose > 0 {
        cmd.arg(format!("-{}", "v".repeat(options.verbose.into())));
    }
    if shell.verbosity() == crate::shell::Verbosity::Quiet {
        // `-q` quiets cargo's own lines too (errors still show).
        cmd.arg("--quiet");
    }
    if options.strip {
        let env = format!("CARGO_PROFILE_{}_STRIP", env_key(&options.profile));
        if std::env::var_os(&env).is_none() {
            cmd.arg("--config")
                .arg(format!("profile.{}.strip=\"symbols\"", options.profile));
        }
    }
    let rustc = set_paths(&mut cmd, first, platform, prepared);
    let zig_libc = toolchain::configure(&mut cmd, &prepared.toolchain, c_crates, shell)?;
    // Held until cargo is done: the files the wrapper reads.
    let additions: Vec<&wrapper::Additions> = links.iter().map(|l| &l.additions).collect();
    let _held = wrapper::set_up(
        &mut cmd,
        plans,
        &additions,
        prepared.toolchain.workspace_wrapper.as_deref(),
        &rustc,
    )?;
    let described: Vec<String> = links.iter().map(|l| l.describe()).collect();
    let names = if described.iter().all(|d| *d == described[0]) {
        let names: Vec<&str> = plans.iter().map(|p| p.bin.as_str()).collect();
        format!(
            "{} for {platform} ({}){}",
            names.join(", "),
            platform.triple,
            described[0]
        )
    } else {
        let names: Vec<String> = plans
            .iter()
            .zip(&described)
            .map(|(p, d)| format!("{} ({})", p.bin, d.trim()))
            .collect();
        format!("{} for {platform} ({})", names.join(", "), platform.triple)
    };
    let names = match nightly {
        Some(n) => format!(
            "{names}, with the standard library built from source by {}",
            n.describe()
        ),
        None => names,
    };
    shell.status("Building", names);
    shell.verbose("Running", format!("{cmd:?}"));
    let built = run_cargo(cmd, plans, platform).map_err(|e| {
        match (e.kind(), options.ignore_rust_version) {
            (crate::error::Kind::Build, false) if e.help().is_none() => {
                match rust_version_help(first, options) {
                    Some(help) => e.with_help(help),
                    None => e,
                }
            }
            _ => e,
        }
    })?;
    if let Some(libc) = zig_libc {
        libc.mark_built();
    }
    Ok(built)
}

/// How the build's paths are mapped out of what it makes (see [`remaps`]): the user's
/// rustflags with the stable remaps, C flags, and — returned, for the tool's `RUSTC` —
/// every remap; with `CARGO` set, which sccache needs to find rustc behind a workspace
/// wrapper (cargo sets it for `cargo microimage`, but not when the tool runs as
/// `cargo-microimage`, nor for the `rustc -vV` it runs itself).
fn set_paths(
    cmd: &mut Command,
    first: &Plan,
    platform: &Platform,
    prepared: &Prepared,
) -> wrapper::Rustc {
    let mut remaps = remaps(first);
    let nightly = prepared.toolchain.std_from_source();
    if let Some(nightly) = nightly {
        // The standard library's sources, as the prebuilt one names them (`/rustc/<commit>`).
        remaps.push(Remap {
            from: nightly.sysroot.join("lib/rustlib/src/rust"),
            to: format!("/rustc/{}", nightly.commit),
            stable: true,
        });
    }
    let mut ours = remap_flags(remaps.iter().filter(|r| r.stable));
    ours.extend(prepared.toolchain.outputs_apart_flag());
    if nightly.is_some() {
        ours.extend(stdlib::RUSTFLAGS.iter().map(|f| f.to_string()));
    }
    set_rustflags(cmd, &prepared.toolchain.rustflags, &ours);
    let local_c = prepared.graph.local_c_code();
    let c_remaps = c_remap_flags(remaps.iter().filter(|r| r.stable || local_c));
    add_cflags(cmd, platform.triple, &c_remaps);
    if let Some(nightly) = nightly {
        cmd.env("CARGO", nightly.cargo());
    } else if std::env::var_os("CARGO").is_none() {
        if let Ok(path) = which::which(cargo()) {
            cmd.env("CARGO", path);
        }
    }
    wrapper::Rustc {
        real: prepared.toolchain.rustc.clone(),
        remaps: remaps
            .iter()
            .map(|r| format!("{}={}", r.from.display(), r.to))
            .collect(),
    }
}

/// After a failed build: the help for cargo's refusal of packages whose `rust-version` is
/// newer than the toolchain ("rustc 1.95.0 is not supported by the following packages"),
/// which otherwise ends in the generic failure line. `None` when no package (of the
/// workspace's resolve, as `cargo metadata` lists it) asks for a newer rustc.
fn rust_version_help(first: &Plan, options: &CargoOptions) -> Option<String> {
    let dir = first.manifest_path.parent()?;
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = Command::new(rustc)
        .arg("--version")
        .current_dir(dir)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let have = text.split_whitespace().nth(1)?.to_string();
    let mut cmd = options.metadata_command().ok()?;
    cmd.manifest_path(&first.manifest_path);
    let metadata = cmd.exec().ok()?;
    let mut newer: Vec<String> = metadata
        .packages
        .iter()
        .filter_map(|p| {
            let wants = p.rust_version.as_ref()?;
            (version_tuple(&wants.to_string()) > version_tuple(&have))
                .then(|| format!("{} {} needs rustc {wants}", p.name, p.version))
        })
        .collect();
    newer.sort();
    newer.dedup();
    if newer.is_empty() {
        return None;
    }
    Some(format!(
        "{} (its `rust-version`), and this is rustc {have}: update the toolchain (`rustup update`), or build anyway with `--ignore-rust-version`",
        newer.join(", ")
    ))
}

/// `1.96`, `1.96.0` or `1.96.0-nightly` as numbers to compare.
fn version_tuple(v: &str) -> (u64, u64, u64) {
    let mut parts = v.split(['.', '-']).map(|p| p.parse::<u64>().unwrap_or(0));
    (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    )
}

fn run_cargo(mut cmd: Command, plans: &[&Plan], platform: &Platform) -> Result<Vec<Built>> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| Error::build(format!("running `{}` failed: {e}", cargo().display())))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut executables: Vec<Option<Built>> = (0..plans.len()).map(|_| None).collect();
    for message in Message::parse_stream(BufReader::new(stdout)) {
        let message =
            message.map_err(|e| Error::build(format!("reading cargo's output failed: {e}")))?;
        match message {
            Message::CompilerArtifact(a) if a.target.kind.contains(&TargetKind::Bin) => {
                let found = plans
                    .iter()
                    .position(|p| a.package_id.repr == p.package_id && a.target.name == p.bin);
                if let (Some(i), Some(path)) = (found, a.executable) {
                    // Now, while cargo still holds the build directory (see [`Built`]).
                    let path = path.into_std_path_buf();
                    use std::os::unix::fs::OpenOptionsExt;
                    let file = std::fs::OpenOptions::new()
                        .read(true)
                        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
                        .open(&path)
                        .map_err(|e| Error::io("opening", &path, e))?;
                    executables[i] = Some(Built { path, file });
                }
            }
            Message::TextLine(line) => eprintln!("{line}"),
            _ => {}
        }
    }
    let status = child
        .wait()
        .map_err(|e| Error::build(format!("waiting for cargo failed: {e}")))?;
    let names: Vec<&str> = plans.iter().map(|p| p.bin.as_str()).collect();
    if !status.success() {
        return Err(Error::build(format!(
            "`cargo build` of {} for {} failed (cargo's messages are above)",
            names.join(", "),
            platform.triple
        )));
    }
    plans
        .iter()
        .zip(executables)
        .map(|(plan, exe)| {
            exe.ok_or_else(|| {
                Error::build(format!(
                    "cargo built `{}` for {} but reported no executable for it",
                    plan.bin, platform.triple
                ))
            })
        })
        .collect()
}

/// `release` → `RELEASE`, `my-prof` → `MY_PROF` (cargo's environment key spelling).
fn env_key(s: &str) -> String {
    s.to_ascii_uppercase().replace(['-', '.'], "_")
}

/// The sysroot of the `rustc` cargo will use.
fn sysroot() -> Result<PathBuf> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| OsString::from("rustc"));
    Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .ok_or_else(|| {
            Error::build("running `rustc --print sysroot` failed")
                .with_help("check that a Rust toolchain is installed and on PATH (or set $RUSTC)")
        })
}

/// The first line of `rustc -vV` of the `rustc` cargo will use (for SBOMs), and its
/// `commit-hash` (for provenance).
fn toolchain_version() -> (Option<String>, Option<String>) {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| OsString::from("rustc"));
    let Some(text) = Command::new(&rustc)
        .arg("-vV")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
    else {
        return (None, None);
    };
    let commit = commit_of(&text);
    // Empty when rustc does not know its commit (built from a tarball): still an answer,
    // so that it is cached.
    (text.lines().next().map(str::to_string), Some(commit))
}

/// The `commit-hash` of a `rustc -vV` output (empty when rustc does not know it).
fn commit_of(vv: &str) -> String {
    vv.lines()
        .find_map(|l| l.strip_prefix("commit-hash: "))
        .map(str::trim)
        .filter(|h| h.len() == 40 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .unwrap_or_default()
        .to_string()
}

/// Installs the Rust standard library for `triple` with rustup if `sysroot` lacks it.
fn ensure_target(sysroot: &Path, triple: &str, shell: &Shell) -> Result<()> {
    if sysroot
        .join("lib/rustlib")
        .join(triple)
        .join("lib")
        .is_dir()
    {
        return Ok(());
    }
    let has_rustup = Command::new("rustup")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let command = format!("rustup target add {triple}");
    if !has_rustup {
        return Err(Error::build(format!(
            "the Rust standard library for {triple} is not installed in {}",
            sysroot.display()
        ))
        .with_help(format!("install it, e.g. with `{command}`")));
    }
    shell.status("Installing", format!("Rust target {triple} (`{command}`)"));
    let out = Command::new("rustup")
        .args(["target", "add", triple])
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(rustup_refused(
            triple,
            &String::from_utf8_lossy(&out.stderr),
        )),
        Err(e) => Err(Error::build(format!("`{command}` could not be run: {e}"))
            .with_help(format!("run `{command}` yourself and look at its error"))),
    }
}

/// The error for a `rustup target add` that failed: rustup's own reason (its `error:`
/// line and the causes under it, without the backtrace), and what to do. A download that
/// is not there (HTTP 404) means this Rust release does not ship the target's standard
/// library (its channel marks it unavailable), which no retry changes.
fn rustup_refused(triple: &str, stderr: &str) -> Error {
    let reason: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .skip_while(|l| !l.starts_with("error"))
        .take_while(|l| !l.starts_with("Stack backtrace"))
        .filter(|l| !l.is_empty() && *l != "Caused by:")
        .take(4)
        .map(|l| {
            // `error: …`, `0: could not download file from 'URL' to 'TEMPORARY'`.
            let l = l.strip_prefix("error:").unwrap_or(l).trim();
            let l = l
                .split_once(": ")
                .filter(|(n, _)| n.parse::<u32>().is_ok())
                .map_or(l, |(_, rest)| rest);
            l.split(" to '").next().unwrap_or(l)
        })
        .collect();
    let reason = if reason.is_empty() {
        stderr
            .trim()
            .lines()
            .last()
            .unwrap_or("no reason given")
            .to_string()
    } else {
        reason.join("; ")
    };
    let toolchain = Command::new("rustc")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "this toolchain".to_string());
    let unshipped = reason.contains("404") || reason.contains("not available");
    let error = Error::build(format!(
        "rustup cannot install the Rust standard library for {triple} ({toolchain}): {reason}"
    ));
    if unshipped {
        error.with_help(format!(
            "this Rust release does not ship {triple}; use a release that does (a rust-toolchain.toml naming it), \
             or build the binary elsewhere and `cargo microimage pack` it"
        ))
    } else {
        error.with_help(format!(
            "run `rustup target add {triple}` yourself and look at its error"
        ))
    }
}

/// A path prefix taken out of what the build embeds, and what it becomes.
#[derive(Debug, Clone)]
struct Remap {
    from: PathBuf,
    to: String,
    /// The same for every checkout on this machine (`CARGO_HOME`, rustup's home): safe in
    /// flags every crate gets, which a compiler cache keys on.
    stable: bool,
}

/// The path prefixes taken out of what the build embeds, and what they become (DESIGN §6):
/// the workspace, every path dependency outside it (`/path-deps/<name>`, as monorepos
/// have them), the target dir, `CARGO_HOME` and rustup's home (found as cargo finds them,
/// through cargo-config2). rustc applies the last matching prefix, so the more specific
/// ones come later.
///
/// Where they go (see `wrapper::Rustc`): all of them to every compilation, through the
/// tool's `RUSTC`, where a compiler cache does not see them; the stable ones also to the
/// rustflags (so that cargo's fingerprints tell this build from a plain `cargo build`).
/// C code, which cc-rs compiles with flags from the environment for every crate alike,
/// gets the stable ones, and all of them only when a crate of the workspace or a path
/// dependency compiles C (the only C whose sources lie in the checkout): then a cache
/// misses the registry crates' C code in another checkout, rather than the image showing
/// where it was built.
fn remaps(plan: &Plan) -> Vec<Remap> {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let remap = |from: PathBuf, to: &str, stable: bool| Remap {
        from,
        to: to.to_string(),
        stable,
    };
    let mut out = vec![remap(plan.workspace_root.clone(), "/build", false)];
    for (dir, name) in &plan.path_dependencies {
        out.push(remap(dir.clone(), &format!("/path-deps/{name}"), false));
    }
    out.push(remap(plan.target_directory.clone(), "/build/target", false));
    let stable = |from: PathBuf, to: &str| remap(from, to, true);
    out.extend(cargo_config2::cargo_home_with_cwd(&cwd).map(|p| stable(p, "/cargo")));
    out.extend(cargo_config2::rustup_home_with_cwd(&cwd).map(|p| stable(p, "/rustup")));
    out
}

/// `--remap-path-prefix` flags for rustc.
fn remap_flags<'a>(remaps: impl Iterator<Item = &'a Remap>) -> Vec<String> {
    remaps
        .map(|r| format!("--remap-path-prefix={}={}", r.from.display(), r.to))
        .collect()
}

/// The same for C and C++ compiled by build scripts through cc-rs: `-ffile-prefix-map`
/// (gcc 8+, clang 10+, zig cc), so `__FILE__` (assertions) and debug info do not carry this
/// machine's paths. cc-rs splits these variables at whitespace, so a path containing
/// whitespace is left out rather than broken in two.
fn c_remap_flags<'a>(remaps: impl Iterator<Item = &'a Remap>) -> Vec<String> {
    remaps
        .map(|r| format!("-ffile-prefix-map={}={}", r.from.display(), r.to))
        .filter(|flag| !flag.contains(char::is_whitespace))
        .collect()
}

/// Appends `flags` to the C and C++ flags cc-rs reads for `triple`. cc-rs takes the first
/// that is set of `CFLAGS_<triple>`, `CFLAGS_<triple_with_underscores>`, `TARGET_CFLAGS`
/// and `CFLAGS` (likewise for `CXXFLAGS`), so they go to that one — else to
/// `CFLAGS_<triple_with_underscores>`, which only the target's C code reads.
fn add_cflags(cmd: &mut Command, triple: &str, flags: &[String]) {
    for var in ["CFLAGS", "CXXFLAGS"] {
        let names = [
            format!("{var}_{triple}"),
            format!("{var}_{}", triple.replace('-', "_")),
            format!("TARGET_{var}"),
            var.to_string(),
        ];
        let user = names
            .iter()
            .find_map(|n| std::env::var(n).ok().map(|v| (n, v)));
        match user {
            Some((name, value)) => cmd.env(name, format!("{value} {}", flags.join(" "))),
            None => cmd.env(&names[1], flags.join(" ")),
        };
    }
}

/// Gives cargo the user's rustflags for `triple` with `ours` appended, as
/// `CARGO_ENCODED_RUSTFLAGS` (which cargo reads before every other source, and which keeps
/// flags with spaces whole). The user's flags are what cargo itself would take: through
/// cargo-config2, with cargo's precedence — `CARGO_ENCODED_RUSTFLAGS`, `RUSTFLAGS`, the
/// target's and matching `cfg()` tables (joined), else `build.rustflags` — from every
/// config file cargo reads, `$CARGO_HOME`'s found the way cargo finds it; plus those of
/// `--config` values, which cargo joins after the files' (see [`toolchain::Toolchain`]).
fn set_rustflags(cmd: &mut Command, user: &[String], ours: &[String]) {
    let all: Vec<&str> = user.iter().chain(ours).map(String::as_str).collect();
    cmd.env_remove("RUSTFLAGS")
        .env("CARGO_ENCODED_RUSTFLAGS", all.join("\x1f"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_keys() {
        assert_eq!(env_key("release"), "RELEASE");
        assert_eq!(
            env_key("x86_64-unknown-linux-musl"),
            "X86_64_UNKNOWN_LINUX_MUSL"
        );
        assert_eq!(env_key("my-prof"), "MY_PROF");
    }
}
