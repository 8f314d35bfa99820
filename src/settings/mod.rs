//! The settings stage: what the image will be, from the command line ([`ImageArgs`], as
//! given) and the Cargo.toml levels ([`Levels`], each remembering its file and table),
//! combined by one [`resolve`] that `build`, `pack` and `push` all call.
//!
//! Precedence (DESIGN §2): command line > bin > package > workspace > built-in default.
//! Maps (`env`, `labels`, `annotations`) merge key by key; lists and scalars replace.
//! Relative paths (`ca-certs`, `include`) resolve against the Cargo.toml that set them, or
//! the current directory for the command line; a path that does not exist is an error that
//! names the key and the file, before anything is built. Every resolved value remembers
//! where it came from ([`Origin`]).
//!
//! Not for: what the image is made of (see `crate::image`), or where it goes (see
//! `crate::sinks`).

mod args;
pub mod manifest;
pub mod sbom_format;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

pub use args::{
    parse_key_value, parse_port, parse_source_date_epoch, source_date_epoch, ImageArgs,
};
pub use manifest::{ImageConfig, Level, Levels, Source};

use crate::error::{Error, Result};
use crate::image::{set_key, ImageName, ImageSpec};
use crate::layers::base::CaCerts;
use crate::layers::include::Include;
use crate::platform::{self, Platform};

/// Where a resolved value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    CommandLine,
    /// A key of a `[*.metadata.microimage]` table.
    Manifest {
        file: PathBuf,
        table: String,
        key: String,
    },
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::CommandLine => f.write_str("the command line"),
            Origin::Default => f.write_str("the default"),
            Origin::Manifest { file, table, key } => {
                write!(f, "`{key}` in {table} of `{}`", file.display())
            }
        }
    }
}

/// What settings resolve against besides the command line and Cargo.toml.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    /// The image name when no `tag` is set: `<bin>:<version>`, or `<bin>:latest`.
    pub default_name: ImageName,
    /// The binary's file name in the image.
    pub bin: &'a str,
    /// `org.opencontainers.image.*` from Cargo.toml and git (explicit annotations win).
    pub annotations: BTreeMap<String, String>,
    /// The current directory: where relative paths given on the command line start.
    pub cwd: &'a Path,
}

/// The resolved image settings and where each came from (`env.RUST_LOG`, `user`, …).
#[derive(Debug, Clone)]
pub struct Resolved {
    pub spec: ImageSpec,
    /// The SBOMs to attach (default: SPDX).
    pub sbom: Vec<sbom_format::Format>,
    /// The provenance to attach (default: SLSA).
    pub provenance: Provenance,
    /// What `build` links into the binary besides its own code.
    pub runtime: Runtime,
    /// Where `build` takes the standard library from, and where that was said.
    pub build_std: (BuildStd, Origin),
    /// `--base`: the image the app goes on, to be read (see `crate::sources::base`).
    pub base: Option<BaseRequest>,
    pub origins: BTreeMap<String, Origin>,
}

/// A base image asked for, not read yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseRequest {
    /// As written (the `org.opencontainers.image.base.name` annotation).
    pub name: String,
    pub source: crate::sources::Source,
    pub origin: Origin,
}

/// `--base REF`: a path with a transport prefix (`oci:`, `oci-archive:`,
/// `docker-archive:`) or an existing path is local, relative to `dir`; anything else is a
/// registry reference (a Docker Hub short name such as `busybox:1.36` included).
pub fn parse_base(text: &str, dir: &Path) -> std::result::Result<crate::sources::Source, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("is empty".to_string());
    }
    let prefixes = ["oci:", "oci-archive:", "docker-archive:"];
    let local = |rest: &str| -> String {
        if Path::new(rest).is_absolute() {
            rest.to_string()
        } else {
            dir.join(rest).to_string_lossy().into_owned()
        }
    };
    if let Some((prefix, rest)) = prefixes
        .iter()
        .find_map(|p| text.strip_prefix(p).map(|rest| (*p, rest)))
    {
        let arg = format!("{prefix}{}", local(rest));
        return crate::sources::Source::parse(std::ffi::OsStr::new(&arg))
            .map_err(|e| e.message().to_string());
    }
    if Path::new(&local(text)).exists() {
        return crate::sources::Source::parse(std::ffi::OsStr::new(&local(text)))
            .map_err(|e| e.message().to_string());
    }
    let reference = text.strip_prefix("docker://").unwrap_or(text);
    reference
        .parse::<oci_client::Reference>()
        .map(|_| crate::sources::Source::Remote(reference.to_string()))
        .map_err(|e| {
            format!(
                "`{text}` is neither an image reference ({e}) nor an existing path; a local base is written oci:DIR[:TAG], oci-archive:FILE[:TAG] or docker-archive:FILE"
            )
        })
}

/// `--allocator`, key `allocator` (DESIGN §9): the `malloc` a binary that `build` compiles
/// gets (see `crate::build::runtime`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Allocator {
    /// mimalloc, unless the binary's crates bring an allocator of their own; musl's, with a
    /// warning, when no C compiler for the target is there to compile mimalloc.
    #[default]
    Auto,
    /// mimalloc, or an error.
    Mimalloc,
    /// musl's own malloc: the binary as cargo links it.
    System,
}

impl Allocator {
    pub fn name(self) -> &'static str {
        match self {
            Allocator::Auto => "auto",
            Allocator::Mimalloc => "mimalloc",
            Allocator::System => "system",
        }
    }
}

impl std::str::FromStr for Allocator {
    type Err = Error;

    fn from_str(s: &str) -> Result<Allocator> {
        match s {
            "auto" => Ok(Allocator::Auto),
            "mimalloc" => Ok(Allocator::Mimalloc),
            "system" => Ok(Allocator::System),
            _ => Err(Error::usage("expected `auto`, `mimalloc` or `system`")),
        }
    }
}

/// `--build-std`, key `build-std` (DESIGN §5): where a target's Rust standard library comes
/// from (see `crate::build::stdlib`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum BuildStd {
    /// rustup's prebuilt one when `rustup target add` gives it; built from source (on a
    /// nightly toolchain with `rust-src`) when it cannot.
    #[default]
    Auto,
    /// Built from source for every target.
    Always,
    /// rustup's prebuilt one, or an error.
    Never,
}

impl BuildStd {
    pub fn name(self) -> &'static str {
        match self {
            BuildStd::Auto => "auto",
            BuildStd::Always => "always",
            BuildStd::Never => "never",
        }
    }
}

impl std::str::FromStr for BuildStd {
    type Err = Error;

    fn from_str(s: &str) -> Result<BuildStd> {
        match s {
            "auto" => Ok(BuildStd::Auto),
            "always" => Ok(BuildStd::Always),
            "never" => Ok(BuildStd::Never),
            _ => Err(Error::usage("expected `auto`, `always` or `never`")),
        }
    }
}

/// `--provenance`, key `provenance` (DESIGN §8).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Provenance {
    /// A SLSA v1 provenance statement per platform image.
    #[default]
    Slsa,
    /// None.
    None,
}

impl std::str::FromStr for Provenance {
    type Err = Error;

    fn from_str(s: &str) -> Result<Provenance> {
        match s {
            "slsa" => Ok(Provenance::Slsa),
            "none" => Ok(Provenance::None),
            _ => Err(Error::usage("expected `slsa` or `none`")),
        }
    }
}

/// What `build` links into a binary besides its own code (DESIGN §9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runtime {
    pub allocator: Allocator,
    /// Where `allocator` came from (an explicit `mimalloc` fails where `auto` falls back).
    pub allocator_origin: Origin,
    /// The PID 1 signal hook (default on; `--no-pid1-signals`, `pid1-signals = false`).
    pub pid1_signals: bool,
    /// The default stack, in bytes, of threads started without a size (`pthread_create`
    /// with default attributes, as C libraries do); `thread-stack-size`.
    pub thread_stack: u64,
}

impl Default for Runtime {
    fn default() -> Runtime {
        Runtime {
            allocator: Allocator::Auto,
            allocator_origin: Origin::Default,
            pid1_signals: true,
            thread_stack: DEFAULT_THREAD_STACK,
        }
    }
}

/// glibc's default thread stack (its usual `ulimit -s`, on 64-bit and 32-bit alike), and
/// the most musl takes from a binary (`DEFAULT_STACK_MAX`).
pub const DEFAULT_THREAD_STACK: u64 = crate::verify::MUSL_THREAD_STACK_MAX;
/// musl's own default, which a binary can raise but not lower.
pub const MUSL_THREAD_STACK: u64 = crate::verify::MUSL_THREAD_STACK;

/// `--thread-stack-size`, key `thread-stack-size`: `8MiB`, `8M`, `512KiB`, `512k` or a
/// number of bytes, from musl's own 128 KiB to its cap of 8 MiB.
pub fn parse_thread_stack(text: &str) -> std::result::Result<u64, String> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        _ => {
            return Err(format!(
                "`{text}` is not a size: write it like 8MiB, 512KiB or 131072"
            ))
        }
    };
    let bytes = number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| format!("`{text}` is not a size: write it like 8MiB, 512KiB or 131072"))?;
    if !(MUSL_THREAD_STACK..=DEFAULT_THREAD_STACK).contains(&bytes) {
        return Err(format!(
            "{text} is outside what musl takes from a binary: from its own default, 128KiB, to its cap, 8MiB"
        ));
    }
    Ok(bytes)
}

/// The value of `key`: the command line's if given, else the highest level that sets it.
fn pick<T>(
    key: &str,
    cli: Option<T>,
    levels: &Levels,
    get: impl Fn(&ImageConfig) -> Option<T>,
) -> Option<(T, Origin)> {
    if let Some(v) = cli {
        return Some((v, Origin::CommandLine));
    }
    levels
        .by_precedence()
        .find_map(|level| get(&level.config).map(|v| (v, manifest_origin(level, key))))
}

fn manifest_origin(level: &Level, key: &str) -> Origin {
    Origin::Manifest {
        file: level.source.manifest.clone(),
        table: level.source.table.clone(),
        key: key.to_string(),
    }
}

/// A map merged key by key: workspace, then package, then bin, then the command line
/// (replacing a key in place, appending a new one). Keys from Cargo.toml come sorted.
fn merged(
    key: &str,
    cli: &[(String, String)],
    levels: &Levels,
    get: impl Fn(&ImageConfig) -> Option<&BTreeMap<String, String>>,
    origins: &mut BTreeMap<String, Origin>,
) -> Vec<(String, String)> {
    let mut from_manifest: BTreeMap<String, (String, Origin)> = BTreeMap::new();
    for level in [&levels.workspace, &levels.package, &levels.bin]
        .into_iter()
        .flatten()
    {
        for (k, v) in get(&level.config).into_iter().flatten() {
            let origin = manifest_origin(level, &format!("{key}.{k}"));
            from_manifest.insert(k.clone(), (v.clone(), origin));
        }
    }
    let mut out = Vec::new();
    for (k, (v, origin)) in from_manifest {
        origins.insert(format!("{key}.{k}"), origin);
        out.push((k, v));
    }
    for (k, v) in cli {
        set_key(&mut out, k, v);
        origins.insert(format!("{key}.{k}"), Origin::CommandLine);
    }
    out
}

/// The directory relative paths of `origin` start from, and a description of the origin for
/// errors about a path.
fn base_of<'a>(origin: &'a Origin, cwd: &'a Path) -> &'a Path {
    match origin {
        Origin::Manifest { file, .. } => file.parent().unwrap_or(Path::new(".")),
        _ => cwd,
    }
}

/// An error about a value: a config error naming key and file when it came from
/// Cargo.toml, a usage error for the command line.
fn bad_value(origin: &Origin, flag: &str, message: String) -> Error {
    match origin {
        Origin::Manifest { file, table, key } => Error::config(
            file,
            key,
            format!(
                "invalid image settings in `{}`, {table} key `{key}`: {message}",
                file.display()
            ),
        ),
        _ => Error::usage(format!("{flag}: {message}")),
    }
}

/// Where each setting of one binary came from, by key (`-v` says it).
type Origins = BTreeMap<String, Origin>;

/// Records where `key`'s value came from (nowhere: the default).
fn note(origins: &mut Origins, key: &str, origin: Option<Origin>) {
    origins.insert(key.to_string(), origin.unwrap_or(Origin::Default));
}

/// Resolves the image settings of one binary: each key from the command line, else the
/// most specific Cargo.toml level that sets it, else its default, checked as it is taken.
pub fn resolve(args: &ImageArgs, levels: &Levels, cx: &Context) -> Result<Resolved> {
    let mut origins = Origins::new();
    let from = &mut origins;
    let mut spec = ImageSpec::new(image_name(args, levels, cx, from)?, cx.bin);
    user_and_workdir(&mut spec, args, levels, from)?;
    let mut maps = Origins::new();
    spec.env = merged("env", &args.env, levels, |c| c.env.as_ref(), &mut maps);
    spec.labels = merged(
        "labels",
        &args.labels,
        levels,
        |c| c.labels.as_ref(),
        &mut maps,
    )
    .into_iter()
    .collect();
    let explicit = merged(
        "annotations",
        &args.annotations,
        levels,
        |c| c.annotations.as_ref(),
        &mut maps,
    );
    expose_and_args(&mut spec, args, levels, from)?;
    base_layer(&mut spec, args, levels, cx, from)?;
    compression(&mut spec, args, levels, from)?;
    let sbom = sbom_formats(args, levels, from)?;
    let provenance = pick("provenance", args.provenance, levels, |c| c.provenance);
    note(
        from,
        "provenance",
        provenance.as_ref().map(|(_, o)| o.clone()),
    );
    let provenance = provenance.map(|(p, _)| p).unwrap_or_default();
    let auditable = pick("auditable", args.auditable, levels, |c| c.auditable);
    spec.auditable = auditable.as_ref().is_none_or(|(a, _)| *a);
    note(from, "auditable", auditable.map(|(_, o)| o));
    let runtime = runtime(args, levels, from)?;
    let build_std = pick("build-std", args.build_std, levels, |c| c.build_std);
    note(
        from,
        "build-std",
        build_std.as_ref().map(|(_, o)| o.clone()),
    );
    let build_std = build_std.unwrap_or((BuildStd::Auto, Origin::Default));
    let base = base_image(args, levels, cx, from)?;
    spec.source_date_epoch = args.source_date_epoch.unwrap_or(0);
    note(
        from,
        "source-date-epoch",
        args.source_date_epoch.map(|_| Origin::CommandLine),
    );
    annotate(&mut spec, cx, explicit, from)?;
    origins.extend(maps);
    Ok(Resolved {
        spec,
        sbom,
        provenance,
        runtime,
        build_std,
        base,
        origins,
    })
}

/// The image's name: `tag`, else `<bin>:<version>`.
fn image_name(
    args: &ImageArgs,
    levels: &Levels,
    cx: &Context,
    origins: &mut Origins,
) -> Result<ImageName> {
    let tag = pick("tag", args.tags.first().cloned(), levels, |c| c.tag.clone());
    let name = match &tag {
        Some((t, origin)) => {
            ImageName::parse(t).map_err(|e| bad_value(origin, "--tag", e.message().into()))?
        }
        None => cx.default_name.clone(),
    };
    note(origins, "tag", tag.map(|(_, o)| o));
    Ok(name)
}

/// `user` (a uid or a name the image has, never empty) and `workdir` (absolute).
fn user_and_workdir(
    spec: &mut ImageSpec,
    args: &ImageArgs,
    levels: &Levels,
    origins: &mut Origins,
) -> Result<()> {
    let user = pick("user", args.user.clone(), levels, |c| c.user.clone());
    if let Some((user, origin)) = &user {
        crate::layers::base::check_user(user)
            .map_err(|why| bad_value(origin, "--user", format!("`{user}` {why}")))?;
        spec.user = user.clone();
    }
    note(origins, "user", user.map(|(_, o)| o));
    let workdir = pick("workdir", args.workdir.clone(), levels, |c| {
        c.workdir.clone()
    });
    if let Some((workdir, origin)) = &workdir {
        if !workdir.starts_with('/') {
            return Err(bad_value(
                origin,
                "--workdir",
                format!("`{workdir}` must be an absolute path"),
            ));
        }
        spec.workdir = workdir.clone();
    }
    note(origins, "workdir", workdir.map(|(_, o)| o));
    Ok(())
}

/// A list flag's values, `None` when it was not given.
fn list(v: &[String]) -> Option<Vec<String>> {
    (!v.is_empty()).then(|| v.to_vec())
}

/// `expose` (ports, sorted, each once) and `args` (the image's `Cmd`).
fn expose_and_args(
    spec: &mut ImageSpec,
    args: &ImageArgs,
    levels: &Levels,
    origins: &mut Origins,
) -> Result<()> {
    let expose = pick("expose", list(&args.expose), levels, |c| {
        c.expose
            .as_ref()
            .map(|ports| ports.iter().map(|p| p.text()).collect())
    });
    if let Some((ports, origin)) = &expose {
        spec.expose = ports
            .iter()
            .map(|p| parse_port(p).map_err(|e| bad_value(origin, "--expose", e.message().into())))
            .collect::<Result<Vec<_>>>()?;
        spec.expose.sort();
        spec.expose.dedup();
    }
    note(origins, "expose", expose.map(|(_, o)| o));
    let cmd_args = pick("args", list(&args.args), levels, |c| c.args.clone());
    if let Some((a, _)) = &cmd_args {
        spec.args = a.clone();
    }
    note(origins, "args", cmd_args.map(|(_, o)| o));
    Ok(())
}

/// What goes into the base layer and the include layer: `ca-certs` (a PEM file must
/// exist), `tzdata`, and `include` (sources that exist, replacing nothing of the base
/// layer or the binary).
fn base_layer(
    spec: &mut ImageSpec,
    args: &ImageArgs,
    levels: &Levels,
    cx: &Context,
    origins: &mut Origins,
) -> Result<()> {
    let ca = pick("ca-certs", args.ca_certs.clone(), levels, |c| {
        c.ca_certs.clone()
    });
    if let Some((text, origin)) = &ca {
        spec.base.ca_certs = match CaCerts::parse(text) {
            CaCerts::Path(p) => {
                let path = base_of(origin, cx.cwd).join(p);
                if !path.is_file() {
                    return Err(bad_value(
                        origin,
                        "--ca-certs",
                        format!("the PEM file `{text}` (`{}`) does not exist", path.display()),
                    )
                    .with_help("pass bundled, host, none or the path of a PEM file; a path in Cargo.toml is relative to that Cargo.toml"));
                }
                CaCerts::Path(path)
            }
            other => other,
        };
    }
    note(origins, "ca-certs", ca.map(|(_, o)| o));
    let tzdata = pick("tzdata", args.tzdata.then_some(true), levels, |c| c.tzdata);
    spec.base.tzdata = tzdata.as_ref().is_some_and(|(t, _)| *t);
    note(origins, "tzdata", tzdata.map(|(_, o)| o));
    let include = pick("include", list(&args.include), levels, |c| {
        c.include.clone()
    });
    if let Some((specs, origin)) = &include {
        spec.include = includes(specs, origin, cx)?;
        // Nothing of the base layer or the binary may be replaced by an include.
        let lower = crate::image::lower_paths(&spec.base, cx.bin)?;
        for inc in &spec.include {
            crate::layers::include::check_against(inc, &lower)
                .map_err(|e| bad_value(origin, "--include", e.message().into()))?;
        }
    }
    note(origins, "include", include.map(|(_, o)| o));
    Ok(())
}

/// The `include` specs given at `origin`, parsed against its directory, each source there.
fn includes(specs: &[String], origin: &Origin, cx: &Context) -> Result<Vec<Include>> {
    let root = base_of(origin, cx.cwd);
    specs
        .iter()
        .map(|s| {
            let inc = Include::parse(s, root).map_err(|e| {
                let help = e.help().unwrap_or_default().to_string();
                bad_value(origin, "--include", e.message().into()).with_help(help)
            })?;
            if std::fs::symlink_metadata(&inc.src).is_err() {
                return Err(bad_value(
                    origin,
                    "--include",
                    format!("`{s}`: `{}` does not exist", inc.src.display()),
                )
                .with_help("an include source is relative to the Cargo.toml that names it (on the command line: to the current directory)"));
            }
            Ok(inc)
        })
        .collect()
}

/// `compression` and `compression-level` (within the compressor's range).
fn compression(
    spec: &mut ImageSpec,
    args: &ImageArgs,
    levels: &Levels,
    origins: &mut Origins,
) -> Result<()> {
    let compression = pick("compression", args.compression, levels, |c| c.compression);
    spec.compression = compression.as_ref().map(|(c, _)| *c).unwrap_or_default();
    note(origins, "compression", compression.map(|(_, o)| o));
    let level = pick("compression-level", args.compression_level, levels, |c| {
        c.compression_level
    });
    if let Some((n, origin)) = &level {
        spec.compression
            .check_level(*n)
            .map_err(|why| bad_value(origin, "--compression-level", why))?;
    }
    spec.compression_level = level.as_ref().map(|(n, _)| *n);
    note(origins, "compression-level", level.map(|(_, o)| o));
    Ok(())
}

/// The SBOM formats to attach (default: SPDX).
fn sbom_formats(
    args: &ImageArgs,
    levels: &Levels,
    origins: &mut Origins,
) -> Result<Vec<sbom_format::Format>> {
    Ok(
        match pick("sbom", args.sbom.clone(), levels, |c| c.sbom.clone()) {
            Some((text, origin)) => {
                let formats = sbom_format::parse_formats(&text)
                    .map_err(|why| bad_value(&origin, "--sbom", why))?;
                note(origins, "sbom", Some(origin));
                formats
            }
            None => {
                note(origins, "sbom", None);
                vec![sbom_format::Format::Spdx]
            }
        },
    )
}

/// What `build` links into the binary: `allocator`, `pid1-signals`, `thread-stack-size`.
fn runtime(args: &ImageArgs, levels: &Levels, origins: &mut Origins) -> Result<Runtime> {
    let allocator = pick("allocator", args.allocator, levels, |c| c.allocator);
    let pid1 = pick("pid1-signals", args.pid1_signals, levels, |c| {
        c.pid1_signals
    });
    let stack = pick(
        "thread-stack-size",
        args.thread_stack_size.clone(),
        levels,
        |c| c.thread_stack_size.as_ref().map(|s| s.0.clone()),
    );
    let thread_stack = match &stack {
        Some((text, origin)) => {
            parse_thread_stack(text).map_err(|why| bad_value(origin, "--thread-stack-size", why))?
        }
        None => DEFAULT_THREAD_STACK,
    };
    let runtime = Runtime {
        allocator: allocator.as_ref().map(|(a, _)| *a).unwrap_or_default(),
        allocator_origin: allocator
            .as_ref()
            .map_or(Origin::Default, |(_, o)| o.clone()),
        pid1_signals: pid1.as_ref().is_none_or(|(p, _)| *p),
        thread_stack,
    };
    note(origins, "allocator", allocator.map(|(_, o)| o));
    note(origins, "pid1-signals", pid1.map(|(_, o)| o));
    note(origins, "thread-stack-size", stack.map(|(_, o)| o));
    Ok(runtime)
}

/// `base`: the image the app goes on, parsed (local paths against where it was set), not
/// read yet.
fn base_image(
    args: &ImageArgs,
    levels: &Levels,
    cx: &Context,
    origins: &mut Origins,
) -> Result<Option<BaseRequest>> {
    match pick("base", args.base.clone(), levels, |c| c.base.clone()) {
        Some((text, origin)) => {
            let source = parse_base(&text, base_of(&origin, cx.cwd))
                .map_err(|why| bad_value(&origin, "--base", why))?;
            note(origins, "base", Some(origin.clone()));
            Ok(Some(BaseRequest {
                name: text.trim().to_string(),
                source,
                origin,
            }))
        }
        None => {
            note(origins, "base", None);
            Ok(None)
        }
    }
}

/// The annotations (Cargo.toml's and git's, `created`, then the explicit ones, which
/// win), and which of the settings a base image's would yield to were given.
fn annotate(
    spec: &mut ImageSpec,
    cx: &Context,
    explicit: Vec<(String, String)>,
    origins: &Origins,
) -> Result<()> {
    let mut annotations = cx.annotations.clone();
    annotations.insert(
        "org.opencontainers.image.created".to_string(),
        spec.created()?,
    );
    annotations.extend(explicit);
    spec.annotations = annotations;
    let given = |key: &str| origins.get(key).is_some_and(|o| *o != Origin::Default);
    spec.explicit = crate::image::Explicit {
        user: given("user"),
        workdir: given("workdir"),
        ca_certs: given("ca-certs"),
    };
    Ok(())
}

/// The platforms to build: `--platform`/`--target` if given, else `platforms` from the
/// highest level that sets it, else this machine's.
pub fn platforms(cli: &[&'static Platform], levels: &Levels) -> Result<Vec<&'static Platform>> {
    if !cli.is_empty() {
        return Ok(cli.to_vec());
    }
    match pick("platforms", None, levels, |c| c.platforms.clone()) {
        Some((names, origin)) => platform::resolve(&names, &[])
            .map_err(|e| bad_value(&origin, "--platform", e.message().into())),
        None => platform::resolve(&[], &[]),
    }
}

#[cfg(test)]
mod tests;
