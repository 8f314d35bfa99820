//! The plan stage: reads the crate through `cargo metadata` (the `cargo_metadata` crate)
//! and decides what to build — which package, which binary target, where the workspace
//! and target directory are, and the annotations that describe the image.
//!
//! [`graph`] reads a target's dependency graph (C code, OpenSSL); [`cache`] keeps what
//! cargo answered, keyed by the content of everything that decides it, so a warm build
//! does not ask again.
//!
//! Not for: running the build (see `crate::build`).

pub mod cache;
pub mod graph;
pub mod nightly;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use cargo_metadata::{CargoOpt, Metadata, MetadataCommand, Package, TargetKind};

use crate::error::{Error, Result};
use crate::settings::{manifest, Levels};

/// The BUILD options, with cargo's names and meanings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CargoOptions {
    pub manifest_path: Option<PathBuf>,
    pub package: Option<String>,
    pub bin: Option<String>,
    pub features: Vec<String>,
    pub all_features: bool,
    pub no_default_features: bool,
    pub profile: String,
    pub locked: bool,
    pub frozen: bool,
    pub offline: bool,
    /// Strip symbols through cargo's `strip` profile setting.
    pub strip: bool,
    /// `-j/--jobs` (a number, or `default`).
    pub jobs: Option<String>,
    /// `--keep-going`.
    pub keep_going: bool,
    /// `--ignore-rust-version`.
    pub ignore_rust_version: bool,
    /// `--target-dir`: wins over `CARGO_TARGET_DIR` and cargo config, as in cargo.
    pub target_dir: Option<PathBuf>,
    /// `--config KEY=VALUE|PATH`, given to every cargo command the tool runs.
    pub config: Vec<String>,
    /// `-v` count, passed on to cargo (`-vv`: very verbose).
    pub verbose: u8,
}

impl Default for CargoOptions {
    fn default() -> Self {
        CargoOptions {
            manifest_path: None,
            package: None,
            bin: None,
            features: Vec::new(),
            all_features: false,
            no_default_features: false,
            profile: "release".to_string(),
            locked: false,
            frozen: false,
            offline: false,
            strip: true,
            jobs: None,
            keep_going: false,
            ignore_rust_version: false,
            target_dir: None,
            config: Vec::new(),
            verbose: 0,
        }
    }
}

impl CargoOptions {
    /// `--locked`, `--frozen`, `--offline` as cargo arguments.
    pub fn lock_args(&self) -> Vec<String> {
        [
            ("--locked", self.locked),
            ("--frozen", self.frozen),
            ("--offline", self.offline),
        ]
        .into_iter()
        .filter(|(_, on)| *on)
        .map(|(flag, _)| flag.to_string())
        .collect()
    }

    /// What every cargo command the tool runs gets: `--config` values, and `--target-dir`
    /// as `CARGO_TARGET_DIR` (the flag wins over the variable, so it replaces it; an
    /// absolute path, so that it means the same from any directory).
    pub fn common_args(&self) -> Result<(Vec<String>, Option<PathBuf>)> {
        let mut args = Vec::new();
        for c in &self.config {
            args.push("--config".to_string());
            args.push(c.clone());
        }
        let target_dir = match &self.target_dir {
            Some(dir) => Some(normalize(
                &std::path::absolute(dir)
                    .map_err(|e| Error::io("resolving --target-dir", dir, e))?,
            )),
            None => None,
        };
        Ok((args, target_dir))
    }

    /// A `cargo metadata` command with these options (manifest, features, lock flags,
    /// `--config`, `--target-dir`).
    pub fn metadata_command(&self) -> Result<MetadataCommand> {
        let mut cmd = MetadataCommand::new();
        cmd.cargo_path(cargo());
        if let Some(path) = &self.manifest_path {
            cmd.manifest_path(path);
        }
        if self.all_features {
            cmd.features(CargoOpt::AllFeatures);
        }
        if self.no_default_features {
            cmd.features(CargoOpt::NoDefaultFeatures);
        }
        if !self.features.is_empty() {
            cmd.features(CargoOpt::SomeFeatures(self.features.clone()));
        }
        let (mut extra, target_dir) = self.common_args()?;
        extra.extend(self.lock_args());
        cmd.other_options(extra);
        if let Some(dir) = target_dir {
            cmd.env("CARGO_TARGET_DIR", dir);
        }
        Ok(cmd)
    }

    /// The feature arguments as cargo takes them.
    pub fn feature_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if !self.features.is_empty() {
            args.push("--features".to_string());
            args.push(self.features.join(","));
        }
        if self.all_features {
            args.push("--all-features".to_string());
        }
        if self.no_default_features {
            args.push("--no-default-features".to_string());
        }
        args
    }
}

/// What to build, resolved from `cargo metadata`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Plan {
    pub workspace_root: PathBuf,
    pub target_directory: PathBuf,
    pub manifest_path: PathBuf,
    pub package_name: String,
    pub package_id: String,
    pub version: String,
    /// The binary target to build.
    pub bin: String,
    /// Annotations from Cargo.toml (`org.opencontainers.image.*`; git's are added by
    /// [`git_annotations`]).
    pub annotations: BTreeMap<String, String>,
    /// The image settings from Cargo.toml that apply to this binary.
    pub levels: Levels,
    /// Path dependencies that live outside the workspace root (directory, package name):
    /// their paths are remapped out of the binary too.
    pub path_dependencies: Vec<(PathBuf, String)>,
    /// The Cargo.toml of every local package (workspace members and path dependencies):
    /// what `cargo metadata`'s answer depends on besides Cargo.lock (see [`cache`]).
    pub local_manifests: Vec<PathBuf>,
}

impl Plan {
    /// The directory of the package's Cargo.toml.
    pub fn package_root(&self) -> &Path {
        self.manifest_path.parent().unwrap_or(Path::new("."))
    }
}

/// `a/b/../c/./d` → `a/c/d`, lexically (as cargo normalises paths it is given).
pub fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push(component);
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// The `cargo` to run: the one that invoked us (`$CARGO`), else `cargo` on PATH.
pub fn cargo() -> PathBuf {
    std::env::var_os("CARGO").map_or_else(|| PathBuf::from("cargo"), PathBuf::from)
}

/// Reads the crate and picks the package and binary.
pub fn plan(options: &CargoOptions) -> Result<Plan> {
    let metadata = metadata(options)?;
    let package = select_package(&metadata, options)?;
    let bin = select_bin(
        package,
        &enabled_features(&metadata, package),
        options.bin.as_deref(),
    )?;
    plan_from(&metadata, package, bin)
}

/// `--workspace`: every binary target of every member not in `exclude` (binaries whose
/// `required-features` are not enabled are skipped, as `cargo build --bins` does).
pub fn plan_workspace(options: &CargoOptions, exclude: &[String]) -> Result<Vec<Plan>> {
    let metadata = metadata(options)?;
    let members = metadata.workspace_packages();
    if let Some(unknown) = exclude
        .iter()
        .find(|e| !members.iter().any(|p| p.name.as_str() == e.as_str()))
    {
        return Err(Error::usage(format!(
            "--exclude `{unknown}` is not a member of the workspace"
        ))
        .with_help(format!(
            "workspace members: {}",
            members
                .iter()
                .map(|p| p.name.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let mut plans = Vec::new();
    for package in members
        .iter()
        .filter(|p| !exclude.iter().any(|e| e.as_str() == p.name.as_str()))
    {
        for bin in buildable_bins(package, &enabled_features(&metadata, package)) {
            plans.push(plan_from(&metadata, package, bin.to_string())?);
        }
    }
    if plans.is_empty() {
        return Err(
            Error::usage("no binary targets in the selected workspace members")
                .with_help("add a binary target, or check --exclude"),
        );
    }
    let mut names: Vec<&str> = plans.iter().map(|p| p.bin.as_str()).collect();
    names.sort();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(Error::usage(format!(
            "two workspace members have a binary named `{}`: their images would have the same name",
            w[0]
        ))
        .with_help(
            "build them one at a time with -p and --bin, giving each its own --tag and -o",
        ));
    }
    Ok(plans)
}

/// For `pack`: the workspace member with a binary target named `bin`, if the current
/// directory (or `manifest_path`) is in a cargo project that has one. Then `pack` uses the
/// same defaults as `build` (tag, annotations, output directory).
///
/// Outside a cargo project this is `Ok(None)`; with an explicit `manifest_path`, failing
/// to read it is an error.
pub fn plan_for_binary(manifest_path: Option<&Path>, bin: &str) -> Result<Option<Plan>> {
    // Outside any cargo project (no Cargo.toml here or above, which is where cargo would
    // look), do not spend a `cargo metadata` run on finding that out.
    let in_project = std::env::current_dir()
        .is_ok_and(|d| d.ancestors().any(|a| a.join("Cargo.toml").is_file()));
    if manifest_path.is_none() && !in_project {
        return Ok(None);
    }
    let options = CargoOptions {
        manifest_path: manifest_path.map(Path::to_path_buf),
        ..CargoOptions::default()
    };
    // Only the workspace's own packages matter here: skip resolving dependencies.
    let metadata = match metadata_with(&options, true) {
        Ok(m) => m,
        Err(e) if manifest_path.is_some() => return Err(e),
        Err(_) => return Ok(None),
    };
    let owners: Vec<&Package> = metadata
        .workspace_packages()
        .into_iter()
        .filter(|p| {
            p.targets
                .iter()
                .any(|t| t.kind.contains(&TargetKind::Bin) && t.name == bin)
        })
        .collect();
    match owners.as_slice() {
        [one] => plan_from(&metadata, one, bin.to_string()).map(Some),
        _ => Ok(None),
    }
}

fn plan_from(metadata: &Metadata, package: &Package, bin: String) -> Result<Plan> {
    let manifest_path = PathBuf::from(package.manifest_path.as_std_path());
    let workspace_root = metadata.workspace_root.clone().into_std_path_buf();
    let bins: Vec<&str> = package
        .targets
        .iter()
        .filter(|t| t.kind.contains(&TargetKind::Bin))
        .map(|t| t.name.as_str())
        .collect();
    let levels = manifest::levels(
        &metadata.workspace_metadata,
        &workspace_root,
        &package.metadata,
        &manifest_path,
        &bin,
        &bins,
    )?;
    let path_dependencies = metadata
        .packages
        .iter()
        .filter(|p| p.source.is_none())
        .filter_map(|p| {
            let dir = p.manifest_path.parent()?.as_std_path().to_path_buf();
            (!dir.starts_with(&workspace_root)).then(|| (dir, p.name.to_string()))
        })
        .collect();
    let local_manifests = metadata
        .packages
        .iter()
        .filter(|p| p.source.is_none())
        .map(|p| p.manifest_path.clone().into_std_path_buf())
        .collect();
    Ok(Plan {
        levels,
        path_dependencies,
        local_manifests,
        workspace_root,
        target_directory: metadata.target_directory.clone().into_std_path_buf(),
        annotations: annotations(package, &bin),
        manifest_path: manifest_path.clone(),
        package_name: package.name.to_string(),
        package_id: package.id.repr.clone(),
        version: package.version.to_string(),
        bin,
    })
}

fn metadata(options: &CargoOptions) -> Result<Metadata> {
    metadata_with(options, false)
}

fn metadata_with(options: &CargoOptions, no_deps: bool) -> Result<Metadata> {
    if let Some(path) = &options.manifest_path {
        if !path.is_file() {
            return Err(
                Error::usage(format!("manifest path `{}` does not exist", path.display()))
                    .with_help("pass the path of a Cargo.toml with --manifest-path"),
            );
        }
    }
    let mut cmd = options.metadata_command()?;
    if no_deps {
        cmd.no_deps();
    }
    cmd.exec().map_err(|e| match e {
        cargo_metadata::Error::CargoMetadata { stderr } => {
            let msg = stderr
                .trim()
                .trim_start_matches("error: ")
                .trim()
                .to_string();
            Error::build(format!(
                "reading the crate with `cargo metadata` failed: {msg}"
            ))
            .with_help(
                "run cargo-microimage inside a cargo project, or point at one with --manifest-path",
            )
        }
        other => Error::build(format!("running `cargo metadata` failed: {other}"))
            .with_help("check that cargo is installed and on PATH (or set $CARGO)")
            .with_source(other),
    })
}

fn select_package<'m>(metadata: &'m Metadata, options: &CargoOptions) -> Result<&'m Package> {
    let members = metadata.workspace_packages();
    let names = || {
        members
            .iter()
            .map(|p| p.name.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(spec) = &options.package {
        let (name, version) = spec.split_once('@').unwrap_or((spec, ""));
        return members
            .iter()
            .find(|p| {
                p.name.as_str() == name && (version.is_empty() || p.version.to_string() == version)
            })
            .copied()
            .ok_or_else(|| {
                Error::usage(format!("package `{spec}` is not a member of the workspace"))
                    .with_help(format!("workspace members: {}", names()))
            });
    }
    if let Some(root) = metadata.root_package() {
        return Ok(root);
    }
    match members.as_slice() {
        [only] => Ok(only),
        _ => Err(Error::usage(format!(
            "`{}` is a virtual workspace manifest: which package should be packed?",
            metadata.workspace_root.join("Cargo.toml")
        ))
        .with_help(format!("pass -p with one of: {}", names()))),
    }
}

/// The features enabled for `package` in this resolve (from the feature flags given).
fn enabled_features(metadata: &Metadata, package: &Package) -> Vec<String> {
    metadata
        .resolve
        .as_ref()
        .and_then(|r| r.nodes.iter().find(|n| n.id == package.id))
        .map(|n| n.features.iter().map(|f| f.to_string()).collect())
        .unwrap_or_default()
}

/// The binary targets cargo would build with these features: those whose
/// `required-features` are all enabled (as `cargo build` and `cargo run` choose).
fn buildable_bins<'p>(package: &'p Package, features: &[String]) -> Vec<&'p str> {
    package
        .targets
        .iter()
        .filter(|t| t.kind.contains(&TargetKind::Bin))
        .filter(|t| t.required_features.iter().all(|f| features.contains(f)))
        .map(|t| t.name.as_str())
        .collect()
}

/// Picks the binary: `--bin`, else the only buildable one, else `default-run`.
fn select_bin(package: &Package, features: &[String], wanted: Option<&str>) -> Result<String> {
    let bins = buildable_bins(package, features);
    let gated: Vec<(&str, &Vec<String>)> = package
        .targets
        .iter()
        .filter(|t| t.kind.contains(&TargetKind::Bin) && !bins.contains(&t.name.as_str()))
        .map(|t| (t.name.as_str(), &t.required_features))
        .collect();
    if let Some((name, required)) = wanted.and_then(|w| gated.iter().find(|(n, _)| *n == w)) {
        return Err(Error::usage(format!(
            "binary target `{name}` of package `{}` requires the features {}",
            package.name,
            required
                .iter()
                .map(|f| format!("`{f}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .with_help(format!("pass `--features {}`", required.join(","))));
    }
    let list = bins
        .iter()
        .map(|b| format!("`{b}`"))
        .collect::<Vec<_>>()
        .join(", ");
    match wanted {
        Some(name) if bins.contains(&name) => Ok(name.to_string()),
        Some(name) => Err(Error::usage(format!(
            "no binary target named `{name}` in package `{}`",
            package.name
        ))
        .with_help(if bins.is_empty() {
            "the package has no binary targets".to_string()
        } else {
            format!("available binaries: {list}")
        })),
        None => match bins.as_slice() {
            [] if !gated.is_empty() => Err(Error::usage(format!(
                "package `{}` has no binary target that builds with the enabled features",
                package.name
            ))
            .with_help(format!(
                "enable the features a binary requires: {}",
                gated
                    .iter()
                    .map(|(n, f)| format!("`{n}` needs --features {}", f.join(",")))
                    .collect::<Vec<_>>()
                    .join("; ")
            ))),
            [] => Err(Error::usage(format!(
                "package `{}` has no binary target to put in an image",
                package.name
            ))
            .with_help("add a src/main.rs or a [[bin]] target, or pick another package with -p")),
            [one] => Ok(one.to_string()),
            _ => match &package.default_run {
                Some(default) => Ok(default.clone()),
                None => Err(Error::usage(format!(
                    "package `{}` has several binaries; which one should be packed?",
                    package.name
                ))
                .with_help(format!("pass --bin with one of: {list}"))),
            },
        },
    }
}

/// `org.opencontainers.image.*` from Cargo.toml (the git part is [`git_annotations`]).
fn annotations(package: &Package, bin: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut put = |key: &str, value: Option<String>| {
        if let Some(v) = value.filter(|v| !v.trim().is_empty()) {
            out.insert(format!("org.opencontainers.image.{key}"), v);
        }
    };
    put("title", Some(bin.to_string()));
    put("version", Some(package.version.to_string()));
    put("description", package.description.clone());
    put("licenses", package.license.clone());
    put("authors", Some(package.authors.join(", ")));
    put("source", package.repository.clone());
    put("url", package.homepage.clone());
    out
}

/// In a git checkout holding `dir`: `org.opencontainers.image.revision` (the HEAD commit)
/// and, when tracked files have uncommitted changes, `rs.microimage.source.dirty=true` —
/// from one `git status` run. Read every time, never cached.
pub fn git_annotations(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Ok(status) = Command::new("git")
        .args([
            "status",
            "--porcelain=v2",
            "--branch",
            "--untracked-files=no",
        ])
        .current_dir(dir)
        .stderr(std::process::Stdio::null())
        .output()
    else {
        return out;
    };
    if !status.status.success() {
        return out;
    }
    let text = String::from_utf8_lossy(&status.stdout);
    let head = text
        .lines()
        .find_map(|l| l.strip_prefix("# branch.oid "))
        .filter(|h| h.len() == 40 && h.bytes().all(|b| b.is_ascii_hexdigit()));
    if let Some(head) = head {
        out.insert("org.opencontainers.image.revision".into(), head.to_string());
        if text.lines().any(|l| !l.starts_with('#')) {
            // The revision alone does not describe the source: say so, separately.
            out.insert("rs.microimage.source.dirty".into(), "true".into());
        }
    }
    out
}
