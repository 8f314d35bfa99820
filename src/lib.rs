//! cargo-microimage: tiny, reproducible `FROM scratch` OCI images of Rust binaries,
//! without a Docker daemon.
//!
//! The pipeline, one module per stage (see ARCHITECTURE.md):
//! [`settings`] (command line + Cargo.toml → what the image is) → [`plan`] (cargo
//! metadata) → [`build`] (cargo build for a musl target) → [`verify`] (ELF static check) →
//! [`layers`] (deterministic tar, gzip or zstd) → [`image`] (config, manifests, index;
//! [`sbom`] and [`provenance`] attached to it) →
//! [`sinks`] (OCI layout, OCI archive, docker-archive, a registry, `--load`).
//! [`sources`] reads images made elsewhere (layouts, archives, registries) for
//! [`inspect`] and [`merge`]. [`ops`] holds the commands, one file each, which run the
//! stages in order; [`message`] is the schema of `--message-format json`.

pub mod blob;
pub mod build;
pub mod error;
pub mod guard;
pub mod image;
pub mod inspect;
pub mod layers;
pub mod merge;
pub mod message;
pub mod ops;
pub mod plan;
pub mod platform;
pub mod provenance;
pub mod registry;
pub mod sbom;
pub mod settings;
pub mod shell;
pub mod sign;
pub mod sinks;
pub mod sources;
pub mod verify;

pub use error::{Error, Result};

/// The stages and supporting modules import each other in one direction only: a test reads
/// `src/` and fails on any cycle among the top-level modules (`crate::x` paths in code).
#[cfg(test)]
mod module_cycles {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    fn uses(dir: &Path, top: &str, out: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                uses(&path, top, out);
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            // Tests may use anything.
            let code = text.split("#[cfg(test)]").next().unwrap_or("");
            for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
                for (at, _) in line.match_indices("crate::") {
                    let name: String = line[at + 7..]
                        .chars()
                        .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                        .collect();
                    if !name.is_empty() && name != top {
                        out.insert(name);
                    }
                }
            }
        }
    }

    #[test]
    fn no_import_cycles_among_top_level_modules() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for entry in std::fs::read_dir(&src).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            if name == "lib" || name == "bin" {
                continue;
            }
            let mut out = BTreeSet::new();
            if path.is_dir() {
                uses(&path, &name, &mut out);
            } else {
                let dir = tempfile::tempdir().unwrap();
                std::fs::copy(&path, dir.path().join("m.rs")).unwrap();
                uses(dir.path(), &name, &mut out);
            }
            graph.insert(name, out);
        }
        fn visit(node: &str, graph: &BTreeMap<String, BTreeSet<String>>, path: &mut Vec<String>) {
            if let Some(at) = path.iter().position(|p| p == node) {
                panic!("import cycle: {} -> {node}", path[at..].join(" -> "));
            }
            path.push(node.to_string());
            for next in graph.get(node).into_iter().flatten() {
                visit(next, graph, path);
            }
            path.pop();
        }
        assert!(graph.contains_key("settings") && graph.contains_key("ops"));
        for node in graph.keys() {
            visit(node, &graph, &mut Vec::new());
        }
    }

    /// The sibling modules a file of the module directory `top` names: `super::NAME`
    /// (also inside `use super::{…}` lists) and `crate::TOP::NAME`, for NAME in `siblings`.
    fn sibling_uses(code: &str, top: &str, siblings: &BTreeSet<String>) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut add = |name: &str| {
            if siblings.contains(name) {
                out.insert(name.to_string());
            }
        };
        let ident = |s: &str| -> String {
            s.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        };
        let prefix = format!("crate::{top}::");
        for (pattern, _) in [("super::", ()), (prefix.as_str(), ())] {
            for (at, _) in code.match_indices(pattern) {
                let rest = &code[at + pattern.len()..];
                if let Some(list) = rest.strip_prefix('{') {
                    let list = list.split('}').next().unwrap_or("");
                    for item in list.split(',') {
                        add(&ident(item.trim()));
                    }
                } else {
                    add(&ident(rest));
                }
            }
        }
        out
    }

    /// The files of each module directory (`registry/connection.rs`, `ops/build.rs`…)
    /// do not import each other in a circle either (the module's own `mod.rs` aside).
    #[test]
    fn no_import_cycles_among_the_files_of_a_module() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        for dir in std::fs::read_dir(&src).unwrap() {
            let dir = dir.unwrap().path();
            if !dir.is_dir() || dir.file_name().is_some_and(|n| n == "bin") {
                continue;
            }
            let top = dir.file_name().unwrap().to_string_lossy().into_owned();
            let files: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "rs"))
                .filter(|p| p.file_stem().is_some_and(|s| s != "mod"))
                .collect();
            let siblings: BTreeSet<String> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter_map(|p| {
                    if p.is_dir() {
                        p.file_name().map(|n| n.to_string_lossy().into_owned())
                    } else {
                        p.file_stem()
                            .filter(|s| *s != "mod")
                            .map(|s| s.to_string_lossy().into_owned())
                    }
                })
                .collect();
            let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            for file in &files {
                let name = file.file_stem().unwrap().to_string_lossy().into_owned();
                let text = std::fs::read_to_string(file).unwrap();
                let code: String = text
                    .split("#[cfg(test)]")
                    .next()
                    .unwrap_or("")
                    .lines()
                    .filter(|l| !l.trim_start().starts_with("//"))
                    .collect::<Vec<_>>()
                    .join("\n");
                let mut uses = sibling_uses(&code, &top, &siblings);
                uses.remove(&name);
                graph.insert(name, uses);
            }
            fn visit(
                node: &str,
                graph: &BTreeMap<String, BTreeSet<String>>,
                path: &mut Vec<String>,
                top: &str,
            ) {
                if let Some(at) = path.iter().position(|p| p == node) {
                    panic!(
                        "import cycle in {top}/: {} -> {node}",
                        path[at..].join(" -> ")
                    );
                }
                path.push(node.to_string());
                for next in graph.get(node).into_iter().flatten() {
                    visit(next, graph, path, top);
                }
                path.pop();
            }
            for node in graph.keys() {
                visit(node, &graph, &mut Vec::new(), &top);
            }
        }
    }
}
