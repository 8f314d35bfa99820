//! What cargo answered, kept for the next run: the plans (`cargo metadata`), each target's
//! dependency graph (`cargo metadata --filter-platform`) and the toolchain's sysroot. A
//! warm build — nothing changed — then asks cargo only to build, which it finds has
//! nothing to do.
//!
//! An entry is used only when everything its answers depend on is the same, by content:
//! the request (current directory, the cargo options that reach `cargo metadata`, every
//! `CARGO*`/`RUST*` environment variable, this tool's version) names the entry; the files
//! cargo read are recorded with their sha256 and checked on every use — every local
//! package's Cargo.toml (workspace members and path dependencies), Cargo.lock, every cargo
//! config file cargo would read (found as cargo-config2 walks them, so a new one is seen),
//! and rustup's toolchain files and settings. Modification times are never used. Git
//! annotations are not cached (see [`super::git_annotations`]).
//!
//! Entries live in the user's cache directory (`~/.cache/cargo-microimage/plans`), one per
//! request. The cache is best effort: a file that cannot be read or written is a miss.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::graph::Graph;
use super::{CargoOptions, Plan};
use crate::blob;

/// Bumped when what is stored changes shape.
const FORMAT: u32 = 5;

/// The cache entry of one request.
#[derive(Debug, Clone)]
pub struct PlanCache {
    file: Option<PathBuf>,
    cwd: PathBuf,
}

/// What a warm run takes from the cache.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Answers {
    pub plans: Vec<Plan>,
    /// The dependency graph of the plans' binaries, by target triple.
    pub graphs: BTreeMap<String, Graph>,
    /// `rustc --print sysroot`.
    pub sysroot: Option<PathBuf>,
    /// The first line of `rustc -vV` (`rustc 1.95.0 (59807616e 2026-04-14)`), for SBOMs.
    pub toolchain: Option<String>,
    /// Its `commit-hash`, for provenance.
    #[serde(default)]
    pub rustc_commit: Option<String>,
    /// The nightly toolchain that builds the standard library of each target (by triple)
    /// that rustup has none for (see `crate::build::stdlib`): `rustup target add` is not
    /// asked again while this holds.
    #[serde(default)]
    pub nightlies: BTreeMap<String, super::nightly::Nightly>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    format: u32,
    answers: Answers,
    /// Every file the answers depend on, with its sha256 (`None`: absent).
    inputs: Vec<(PathBuf, Option<String>)>,
}

fn sha256_of(path: &Path) -> Option<String> {
    let data = std::fs::read(path).ok()?;
    Some(blob::hex(&blob::sha256(&data)).to_string())
}

impl PlanCache {
    /// The entry for a request: what `cargo metadata` is asked, from where, with which
    /// environment.
    /// `what` says what is asked of the plan besides `options` (`build --workspace`,
    /// `pack <bin>`, …).
    pub fn for_request(options: &CargoOptions, what: &str, cwd: &Path) -> PlanCache {
        let mut env: Vec<(String, String)> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.to_string_lossy().into_owned())))
            .filter(|(k, _)| k.starts_with("CARGO") || k.starts_with("RUST"))
            .collect();
        env.sort();
        // Every field named, so that a new option must be decided on: does it change what
        // `cargo metadata` answers?
        let CargoOptions {
            manifest_path,
            package,
            bin,
            features,
            all_features,
            no_default_features,
            locked,
            frozen,
            offline,
            target_dir,
            config,
            profile: _,
            strip: _,
            jobs: _,
            keep_going: _,
            ignore_rust_version: _,
            verbose: _,
        } = options;
        let request = format!(
            "{FORMAT}/{}/{}\n{cwd:?}\n{manifest_path:?}\n{package:?}\n{bin:?}\n\
             {features:?}/{all_features}/{no_default_features}\n{locked}{frozen}{offline}\n\
             {target_dir:?}\n{config:?}\n{what}\n{env:?}",
            env!("CARGO_PKG_NAME"),
            env!("CARGO_PKG_VERSION"),
        );
        let key = blob::hex(&blob::sha256(request.as_bytes())).to_string();
        let file = cache_dir().map(|d| d.join(format!("{key}.json")));
        PlanCache {
            file,
            cwd: cwd.to_path_buf(),
        }
    }

    /// The files besides the packages' own that decide cargo's answers: the cargo config
    /// files cargo would read from here, rustup's toolchain files up the tree, and
    /// rustup's settings.
    fn environment_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = cargo_config2::Walk::new(&self.cwd).collect();
        for dir in self.cwd.ancestors() {
            files.push(dir.join("rust-toolchain.toml"));
            files.push(dir.join("rust-toolchain"));
        }
        if let Some(rustup) = cargo_config2::rustup_home_with_cwd(&self.cwd) {
            files.push(rustup.join("settings.toml"));
        }
        files
    }

    /// The answers of the last run of this request, if nothing they depend on changed.
    pub fn load(&self) -> Option<Answers> {
        let file = self.file.as_ref()?;
        let entry: Entry = serde_json::from_slice(&std::fs::read(file).ok()?).ok()?;
        if entry.format != FORMAT {
            return None;
        }
        // Cargo config files are recorded as the walk found them: a new one changes the
        // list, so it is compared as a whole.
        let walked: Vec<PathBuf> = self.environment_files();
        let recorded_env: Vec<&PathBuf> = entry
            .inputs
            .iter()
            .map(|(p, _)| p)
            .filter(|p| walked.contains(p))
            .collect();
        if recorded_env.len() != walked.len() {
            return None;
        }
        let unchanged = entry
            .inputs
            .iter()
            .all(|(path, hash)| &sha256_of(path) == hash);
        unchanged.then_some(entry.answers)
    }

    /// Records `answers` with the current content of every file they depend on.
    pub fn store(&self, answers: &Answers) {
        let Some(file) = &self.file else { return };
        let mut paths: Vec<PathBuf> = Vec::new();
        for plan in &answers.plans {
            paths.extend(plan.local_manifests.iter().cloned());
            paths.push(plan.workspace_root.join("Cargo.toml"));
            paths.push(plan.workspace_root.join("Cargo.lock"));
        }
        paths.extend(self.environment_files());
        paths.sort();
        paths.dedup();
        let inputs = paths
            .into_iter()
            .map(|p| {
                let hash = sha256_of(&p);
                (p, hash)
            })
            .collect();
        let entry = Entry {
            format: FORMAT,
            answers: answers.clone(),
            inputs,
        };
        let Ok(json) = serde_json::to_vec(&entry) else {
            return;
        };
        let Some(dir) = file.parent() else { return };
        let _ = std::fs::create_dir_all(dir);
        let written = tempfile::Builder::new()
            .prefix(".microimage-")
            .tempfile_in(dir)
            .and_then(|mut tmp| {
                tmp.write_all(&json)?;
                tmp.persist(file).map_err(|e| e.error)?;
                Ok(())
            });
        let _ = written;
    }
}

/// `$XDG_CACHE_HOME/cargo-microimage/plans`, else `~/.cache/…`.
fn cache_dir() -> Option<PathBuf> {
    Some(blob::cache_home()?.join("plans"))
}
