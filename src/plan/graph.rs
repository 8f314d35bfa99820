//! The dependency graph of a target's binaries, as cargo resolves it for that target
//! (`cargo metadata --filter-platform`): which crates linked into the binaries compile C,
//! and whether `openssl-sys` is linked without a vendored OpenSSL.
//!
//! Not for: choosing the C toolchain (see `crate::build::toolchain`).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use cargo_metadata::{DependencyKind, PackageId};
use serde::{Deserialize, Serialize};

use super::{CargoOptions, Plan};
use crate::error::{Error, Result};
use crate::platform::Platform;

/// What the dependency graph of a target's binaries says about C code.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Graph {
    /// The crates linked into the binaries whose build scripts compile C (they have a
    /// `cc`, `cmake` or `cxx-build` build-dependency), as `name version`, sorted.
    pub c_crates: Vec<String>,
    /// Those of [`Graph::c_crates`] from a registry or git that compile C++ (see
    /// [`compiles_cxx`]); the same for a local crate is decided on every run, from
    /// [`Graph::local_c_dirs`], as its files may change.
    #[serde(default)]
    pub cxx_crates: Vec<String>,
    /// Programs the build scripts of linked crates run on the build machine, as
    /// `(program, crate)`: `cmake` (a `cmake` build-dependency), `protoc` (`prost-build`,
    /// `tonic-build`, unless a vendored protoc is in the graph), `perl` (`openssl-src`,
    /// vendored OpenSSL's configure script), `libclang` (`bindgen`).
    #[serde(default)]
    pub host_tools: Vec<(String, String)>,
    /// The local crates of [`Graph::c_crates`] (workspace members and path dependencies):
    /// `name version` and their directories.
    #[serde(default)]
    pub local_c_dirs: Vec<(String, std::path::PathBuf)>,
    /// When `openssl-sys` is linked without a vendored OpenSSL (`openssl-src`): how it is
    /// reached, from the binary's package to `openssl-sys`, and whether the package depends
    /// on `openssl` directly. See [`Graph::system_openssl`].
    pub unvendored_openssl: Option<OpenSsl>,
    /// For each binary's package (by package id): the crates linked into its binaries,
    /// that package first — what the binary records (cargo-auditable format) and what the
    /// SBOM lists.
    pub crates: BTreeMap<String, Vec<Crate>>,
}

impl Graph {
    /// The crates of [`Graph::c_crates`] that compile C++ (registry and git crates as
    /// found when the graph was read, local ones now), sorted.
    pub fn cxx_crates(&self) -> Vec<String> {
        let mut out = self.cxx_crates.clone();
        for (label, dir) in &self.local_c_dirs {
            let deps = self.build_deps_of(label);
            if compiles_cxx(dir, &deps) {
                out.push(label.clone());
            }
        }
        out.sort();
        out
    }

    /// The build-dependencies that matter to [`compiles_cxx`] of a local C crate: not
    /// kept in the graph, so read from its manifest (small, and only for local crates).
    fn build_deps_of(&self, label: &str) -> Vec<String> {
        let Some((_, dir)) = self.local_c_dirs.iter().find(|(l, _)| l == label) else {
            return Vec::new();
        };
        let Ok(text) = std::fs::read_to_string(dir.join("Cargo.toml")) else {
            return Vec::new();
        };
        let Ok(table) = text.parse::<toml::Table>() else {
            return Vec::new();
        };
        table
            .get("build-dependencies")
            .and_then(|d| d.as_table())
            .map(|d| d.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Whether C code of a workspace crate or a path dependency is linked (a crate of
    /// [`Graph::c_crates`] whose source is local): the only C whose sources lie in the
    /// checkout.
    pub fn local_c_code(&self) -> bool {
        !self.local_c_dirs.is_empty()
    }
}

/// A crate linked into a binary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Crate {
    pub name: String,
    pub version: String,
    /// `crates.io`, `registry`, `git` or `local` (cargo-auditable's source kinds).
    pub source: String,
    /// cargo's source id (`registry+https://…`, `git+https://…#rev`); none for local ones.
    pub source_id: Option<String>,
    /// The `license` of its Cargo.toml (an SPDX expression, or the old `A/B` form).
    pub license: Option<String>,
    /// Cargo.lock's sha256 of the downloaded `.crate` file.
    pub checksum: Option<String>,
    /// What it depends on (linked), as indices into the same list.
    pub dependencies: Vec<usize>,
}

impl Graph {
    /// `openssl-sys` that would look for the build machine's OpenSSL: linked without a
    /// vendored one, and the user points it at no OpenSSL of their own.
    pub fn system_openssl(&self, triple: &str) -> Option<&OpenSsl> {
        self.unvendored_openssl
            .as_ref()
            .filter(|_| !user_openssl(triple))
    }
}

/// What the C code of a graph needs (see [`Graph`]'s fields of these names).
struct CCode {
    c_crates: Vec<String>,
    cxx_crates: Vec<String>,
    local_c_dirs: Vec<(String, std::path::PathBuf)>,
    host_tools: Vec<(String, String)>,
}

/// The crates of `linked` (the packages linked into the binaries) that compile C or C++,
/// and the programs their build scripts run on the host; `all` is every package of the
/// resolve (a vendored protoc may be a build-dependency of anything).
fn c_code(linked: &[&cargo_metadata::Package], all: &[cargo_metadata::Package]) -> CCode {
    let build_deps = |p: &cargo_metadata::Package| -> Vec<String> {
        p.dependencies
            .iter()
            .filter(|d| d.kind == DependencyKind::Build)
            .map(|d| d.name.to_string())
            .collect()
    };
    let c_packages: Vec<&cargo_metadata::Package> = linked
        .iter()
        .copied()
        .filter(|p| {
            build_deps(p)
                .iter()
                .any(|d| matches!(d.as_str(), "cc" | "cmake" | "cxx-build"))
        })
        .collect();
    let label = |p: &cargo_metadata::Package| format!("{} {}", p.name, p.version);
    let mut c_crates: Vec<String> = c_packages.iter().map(|p| label(p)).collect();
    c_crates.sort();
    let dir = |p: &cargo_metadata::Package| {
        p.manifest_path
            .parent()
            .map(|d| d.as_std_path().to_path_buf())
            .unwrap_or_default()
    };
    let mut cxx_crates: Vec<String> = c_packages
        .iter()
        .filter(|p| p.source.is_some() && compiles_cxx(&dir(p), &build_deps(p)))
        .map(|p| label(p))
        .collect();
    cxx_crates.sort();
    let vendored_protoc = all
        .iter()
        .any(|p| matches!(p.name.as_str(), "protoc-bin-vendored" | "protobuf-src"));
    let mut host_tools: Vec<(String, String)> = linked
        .iter()
        .flat_map(|p| {
            build_deps(p)
                .into_iter()
                .filter_map(|d| match d.as_str() {
                    "cmake" => Some("cmake"),
                    "prost-build" | "tonic-build" | "tonic-prost-build" if !vendored_protoc => {
                        Some("protoc")
                    }
                    "openssl-src" => Some("perl"),
                    "bindgen" => Some("libclang"),
                    _ => None,
                })
                .map(|tool| (tool.to_string(), label(p)))
                .collect::<Vec<_>>()
        })
        .collect();
    host_tools.sort();
    host_tools.dedup();
    let mut local_c_dirs: Vec<(String, std::path::PathBuf)> = c_packages
        .iter()
        .filter(|p| p.source.is_none())
        .map(|p| (label(p), dir(p)))
        .collect();
    local_c_dirs.sort();
    CCode {
        c_crates,
        cxx_crates,
        local_c_dirs,
        host_tools,
    }
}

/// Whether the package in `dir`, whose build-dependencies are `build_deps`, compiles C++
/// — decided before anything compiles, from what it ships, so that the target gets a C++
/// compiler (and a linker that brings the C++ standard library) when it needs one:
///
/// - a `cxx-build` build-dependency (a cxx bridge);
/// - C++ sources (`.cc`, `.cpp`, `.cxx`, `.c++`) anywhere in the package (cc-rs with
///   `cpp(true)`, or a bundled C++ library);
/// - a `cmake` build-dependency and a `CMakeLists.txt` whose `project()` names CXX or no
///   language at all (CMake's default is C and CXX, and configuring fails without a C++
///   compiler), or that calls `enable_language(CXX)`.
///
/// A heuristic, on the safe side: a wrong "yes" costs only that zig compiles the target's
/// C too. The walk skips `target`, hidden directories and those a build script does not
/// compile from (`examples`, `tests`, `test`, `contrib`, `doc`, `docs`, `benches`,
/// `fuzz`: lz4's `contrib/gen_manual` tool is C++, lz4 is C), and stops after 50,000
/// entries.
pub fn compiles_cxx(dir: &std::path::Path, build_deps: &[String]) -> bool {
    if build_deps.iter().any(|d| d == "cxx-build") {
        return true;
    }
    let cmake = build_deps.iter().any(|d| d == "cmake");
    let mut stack = vec![dir.to_path_buf()];
    let mut seen = 0usize;
    while let Some(at) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&at) else {
            continue;
        };
        for entry in entries.flatten() {
            seen += 1;
            if seen > 50_000 {
                return false;
            }
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                const SKIPPED: [&str; 9] = [
                    "target", "examples", "tests", "test", "contrib", "doc", "docs", "benches",
                    "fuzz",
                ];
                if !name.starts_with('.') && !SKIPPED.contains(&name.as_ref()) {
                    stack.push(entry.path());
                }
            } else if [".cc", ".cpp", ".cxx", ".c++"]
                .iter()
                .any(|ext| name.ends_with(ext))
            {
                return true;
            } else if cmake && name == "CMakeLists.txt" {
                let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
                if cmake_wants_cxx(&text) {
                    return true;
                }
            }
        }
    }
    false
}

/// Whether a `CMakeLists.txt` enables C++: `enable_language(CXX)`, or a `project()` that
/// lists CXX or no language (see [`compiles_cxx`]).
fn cmake_wants_cxx(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    let calls = |name: &str| -> Vec<Vec<String>> {
        let mut out = Vec::new();
        let mut rest = lower.as_str();
        while let Some(at) = rest.find(name) {
            let before = rest[..at].chars().next_back();
            rest = &rest[at + name.len()..];
            let args = rest.trim_start();
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                || !args.starts_with('(')
            {
                continue;
            }
            let inner = args[1..].split(')').next().unwrap_or("");
            out.push(inner.split_whitespace().map(str::to_string).collect());
        }
        out
    };
    if calls("enable_language")
        .iter()
        .flatten()
        .any(|a| a == "cxx")
    {
        return true;
    }
    const KEYWORDS: [&str; 4] = ["version", "description", "homepage_url", "languages"];
    calls("project").iter().any(|args| {
        let after_name = args.get(1..).unwrap_or_default();
        if after_name.iter().any(|a| a == "cxx") {
            return true;
        }
        let languages: Vec<&String> = match after_name.iter().position(|a| a == "languages") {
            Some(i) => after_name[i + 1..]
                .iter()
                .take_while(|a| !KEYWORDS.contains(&a.as_str()))
                .collect(),
            None => after_name
                .iter()
                .take_while(|a| !KEYWORDS.contains(&a.as_str()))
                .collect(),
        };
        // `NONE` enables nothing; no language at all means C and CXX.
        languages.is_empty()
    })
}

/// `openssl-sys` in the graph without `openssl-src`: it would look for the build
/// machine's OpenSSL, which is neither static nor built for musl.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenSsl {
    /// Package names from the binary's package to `openssl-sys`.
    pub path: Vec<String>,
    /// The binary's package depends on `openssl` itself (so `--features openssl/vendored`
    /// works).
    pub direct: bool,
}

/// Reads the graph of the binaries of `plans` (one workspace) for `platform`: one
/// `cargo metadata --filter-platform` call serves all of them.
pub fn graph(plans: &[&Plan], options: &CargoOptions, platform: &Platform) -> Result<Graph> {
    let Some(first) = plans.first() else {
        return Ok(Graph::default());
    };
    let mut cmd = CargoOptions {
        manifest_path: Some(first.manifest_path.clone()),
        ..options.clone()
    }
    .metadata_command()?;
    let (mut extra, _) = options.common_args()?;
    extra.extend(options.lock_args());
    extra.extend(["--filter-platform".to_string(), platform.triple.to_string()]);
    cmd.other_options(extra);
    let metadata = cmd.exec().map_err(|e| {
        Error::build(format!(
            "reading the dependency graph for {} failed: {e}",
            platform.triple
        ))
        .with_source(e)
    })?;
    let Some(resolve) = &metadata.resolve else {
        return Ok(Graph::default());
    };
    let packages: HashMap<&PackageId, &cargo_metadata::Package> =
        metadata.packages.iter().map(|p| (&p.id, p)).collect();
    let nodes: HashMap<&PackageId, &cargo_metadata::Node> =
        resolve.nodes.iter().map(|n| (&n.id, n)).collect();
    // Breadth first from the binaries' packages, remembering how each crate was reached.
    let roots: Vec<&PackageId> = metadata
        .packages
        .iter()
        .filter(|p| plans.iter().any(|plan| p.id.repr == plan.package_id))
        .map(|p| &p.id)
        .collect();
    let mut reached_from: HashMap<&PackageId, Option<&PackageId>> =
        roots.iter().map(|r| (*r, None)).collect();
    let mut queue: std::collections::VecDeque<&PackageId> = roots.iter().copied().collect();
    while let Some(id) = queue.pop_front() {
        let Some(node) = nodes.get(id) else { continue };
        for dep in &node.deps {
            // Build-dependencies run on the host; only what is linked into the binary counts.
            let linked = dep
                .dep_kinds
                .iter()
                .any(|k| k.kind == DependencyKind::Normal);
            if linked && !reached_from.contains_key(&dep.pkg) {
                reached_from.insert(&dep.pkg, Some(id));
                queue.push_back(&dep.pkg);
            }
        }
    }
    let name = |id: &PackageId| {
        packages
            .get(id)
            .map_or(String::new(), |p| p.name.to_string())
    };
    let linked: Vec<&cargo_metadata::Package> = reached_from
        .keys()
        .filter_map(|id| packages.get(id).copied())
        .collect();
    let CCode {
        c_crates,
        cxx_crates,
        local_c_dirs,
        host_tools,
    } = c_code(&linked, &metadata.packages);
    let unvendored_openssl = reached_from
        .keys()
        .find(|id| name(id) == "openssl-sys")
        .filter(|id| {
            // `openssl-src` is a build-dependency of openssl-sys when `vendored` is on.
            let vendored = nodes
                .get(*id)
                .is_some_and(|n| n.deps.iter().any(|d| name(&d.pkg) == "openssl-src"));
            !vendored
        })
        .map(|&id| {
            let mut path = vec![name(id)];
            let mut at = id;
            while let Some(Some(parent)) = reached_from.get(at) {
                path.push(name(parent));
                at = parent;
            }
            path.reverse();
            let direct = path.len() >= 2 && path[1] == "openssl";
            OpenSsl { path, direct }
        });
    let checksums = lock_checksums(
        &metadata
            .workspace_root
            .clone()
            .into_std_path_buf()
            .join("Cargo.lock"),
    );
    let crates = roots
        .iter()
        .map(|root| {
            (
                root.repr.clone(),
                linked_crates(root, &packages, &nodes, &checksums),
            )
        })
        .collect();
    Ok(Graph {
        c_crates,
        cxx_crates,
        local_c_dirs,
        host_tools,
        unvendored_openssl,
        crates,
    })
}

/// Whether a package is a procedural macro: it runs in the compiler, it is not linked.
fn is_proc_macro(package: &cargo_metadata::Package) -> bool {
    package
        .targets
        .iter()
        .any(|t| t.kind.contains(&cargo_metadata::TargetKind::ProcMacro))
}

/// The crates linked into the binaries of `root`: its normal dependencies, transitively,
/// without procedural macros (and what only they use). `root` first, the rest sorted by
/// name, version and source, so the list — and everything made from it — is the same
/// on every run.
fn linked_crates(
    root: &PackageId,
    packages: &HashMap<&PackageId, &cargo_metadata::Package>,
    nodes: &HashMap<&PackageId, &cargo_metadata::Node>,
    checksums: &HashMap<(String, String, String), String>,
) -> Vec<Crate> {
    let mut seen: BTreeSet<&PackageId> = BTreeSet::from([root]);
    let mut stack = vec![root];
    let mut edges: HashMap<&PackageId, Vec<&PackageId>> = HashMap::new();
    while let Some(id) = stack.pop() {
        let Some(node) = nodes.get(id) else { continue };
        for dep in &node.deps {
            let linked = dep
                .dep_kinds
                .iter()
                .any(|k| k.kind == DependencyKind::Normal)
                && !packages.get(&dep.pkg).is_some_and(|p| is_proc_macro(p));
            if linked {
                edges.entry(id).or_default().push(&dep.pkg);
                if seen.insert(&dep.pkg) {
                    stack.push(&dep.pkg);
                }
            }
        }
    }
    let key = |id: &&PackageId| {
        let p = packages.get(id);
        (
            *id != root,
            p.map(|p| p.name.to_string()),
            p.map(|p| p.version.clone()),
            p.and_then(|p| p.source.as_ref().map(|s| s.repr.clone())),
        )
    };
    let mut order: Vec<&PackageId> = seen.into_iter().collect();
    order.sort_by_key(key);
    let index: HashMap<&PackageId, usize> =
        order.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    order
        .iter()
        .filter_map(|id| {
            let p = packages.get(id)?;
            let source_id = p.source.as_ref().map(|s| s.repr.clone());
            let source = match source_id.as_deref() {
                None => "local",
                Some(s)
                    if s.ends_with("github.com/rust-lang/crates.io-index")
                        || s == "sparse+https://index.crates.io/" =>
                {
                    "crates.io"
                }
                Some(s) if s.starts_with("git+") => "git",
                Some(_) => "registry",
            };
            let mut dependencies: Vec<usize> = edges
                .get(id)
                .into_iter()
                .flatten()
                .filter_map(|d| index.get(d).copied())
                .collect();
            dependencies.sort();
            dependencies.dedup();
            let lock_key = (
                p.name.to_string(),
                p.version.to_string(),
                source_id.clone().unwrap_or_default(),
            );
            Some(Crate {
                name: p.name.to_string(),
                version: p.version.to_string(),
                source: source.to_string(),
                checksum: checksums.get(&lock_key).cloned(),
                source_id,
                license: p.license.clone(),
                dependencies,
            })
        })
        .collect()
}

/// Cargo.lock's checksums by (name, version, source).
pub fn lock_checksums(lock: &std::path::Path) -> HashMap<(String, String, String), String> {
    let Ok(text) = std::fs::read_to_string(lock) else {
        return HashMap::new();
    };
    let Ok(table) = text.parse::<toml::Table>() else {
        return HashMap::new();
    };
    table
        .get("package")
        .and_then(|p| p.as_array())
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let field = |k: &str| p.get(k).and_then(|v| v.as_str()).map(String::from);
            Some((
                (
                    field("name")?,
                    field("version")?,
                    field("source").unwrap_or_default(),
                ),
                field("checksum")?,
            ))
        })
        .collect()
}

/// Whether the user points openssl-sys at an OpenSSL of their own (`OPENSSL_DIR`, its
/// `<TARGET>_` form, or the lib/include pair), which it then uses as given.
fn user_openssl(triple: &str) -> bool {
    let prefix = under(triple).to_ascii_uppercase();
    ["OPENSSL_DIR", "OPENSSL_LIB_DIR"]
        .iter()
        .any(|v| env_set(v) || env_set(&format!("{prefix}_{v}")))
}

impl OpenSsl {
    /// The error that stops the build before cargo runs (openssl-sys's own build script
    /// would fail later with advice for a host build: install libssl-dev, set OPENSSL_DIR).
    pub fn error(&self, triple: &str) -> Error {
        let via = self.path.join(" → ");
        let puller = self
            .path
            .iter()
            .rev()
            .nth(1)
            .cloned()
            .unwrap_or_else(|| "openssl".into());
        let vendored = if self.direct {
            "enable the `vendored` feature of `openssl`, which builds OpenSSL from source and links it \
             statically: pass `--features openssl/vendored`, or set `features = [\"vendored\"]` on the \
             `openssl` dependency in Cargo.toml"
                .to_string()
        } else {
            format!(
                "enable OpenSSL's `vendored` feature, which builds it from source and links it statically: \
                 add `openssl = {{ version = \"0.10\", features = [\"vendored\"] }}` to the dependencies \
                 of `{}` (cargo unifies it with the `openssl` that `{puller}` uses)",
                self.path.first().map_or("your package", String::as_str)
            )
        };
        let rustls = if self.direct {
            "use rustls instead of `openssl`".to_string()
        } else {
            format!(
                "switch `{puller}` to rustls (most crates have a `rustls` feature, e.g. reqwest's \
                 `rustls-tls` with `default-features = false`)"
            )
        };
        Error::build(format!(
            "`openssl-sys` is in the dependency graph for {triple} ({via}) without a vendored OpenSSL: \
             it would link the build machine's OpenSSL, which is neither static nor built for musl"
        ))
        .with_help(format!(
            "either {vendored}; or {rustls}, which needs no C library. To use an OpenSSL of your own \
             built for {triple}, set {}_OPENSSL_DIR",
            under(triple).to_ascii_uppercase()
        ))
    }
}

/// `aarch64-unknown-linux-musl` → `aarch64_unknown_linux_musl`.
fn under(triple: &str) -> String {
    triple.replace('-', "_")
}

fn env_set(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::cmake_wants_cxx;

    #[test]
    fn cmake_projects_want_cxx_when_they_name_it_or_no_language() {
        assert!(cmake_wants_cxx("project(shapes C CXX)"));
        assert!(cmake_wants_cxx(
            "cmake_minimum_required(VERSION 3.13)\nproject(snmalloc)"
        ));
        assert!(cmake_wants_cxx("project(x VERSION 1.2 LANGUAGES C CXX)"));
        assert!(cmake_wants_cxx("project(x VERSION 1.2)"));
        assert!(cmake_wants_cxx("PROJECT ( x )\n"));
        assert!(cmake_wants_cxx("project(x C)\nenable_language(CXX)"));
        assert!(!cmake_wants_cxx("project(zlib C)"));
        assert!(!cmake_wants_cxx("project(x VERSION 2.0 LANGUAGES C ASM)"));
        assert!(!cmake_wants_cxx(
            "project(x LANGUAGES C DESCRIPTION \"a c lib\")"
        ));
        assert!(!cmake_wants_cxx(
            "# no project here\nadd_library(x STATIC x.c)"
        ));
        assert!(!cmake_wants_cxx("my_project(x)"));
    }
}
