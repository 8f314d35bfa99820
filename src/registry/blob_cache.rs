//! The blob-location cache: where this machine has pushed each blob before (per registry),
//! so a push to another repository of the same registry can mount a blob instead of
//! uploading it (the registry cannot be asked "who has this blob"; containers/image keeps
//! the same kind of cache).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Where this machine has pushed blobs before: registry → digest → repositories. Used to
/// pick cross-repository mount sources; best effort (a missing or broken file is empty).
pub struct BlobCache {
    path: Option<PathBuf>,
    map: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
}

impl BlobCache {
    fn file() -> Option<PathBuf> {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))?;
        Some(base.join("cargo-microimage").join("blob-locations.json"))
    }

    pub fn load() -> BlobCache {
        let path = Self::file();
        let map = path
            .as_ref()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        BlobCache { path, map }
    }

    pub fn sources(&self, registry: &str, digest: &str, except: &str) -> Vec<String> {
        self.map
            .get(registry)
            .and_then(|d| d.get(digest))
            .map(|repos| {
                repos
                    .iter()
                    .filter(|r| r.as_str() != except)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn record(&mut self, registry: &str, digest: &str, repository: &str) {
        self.map
            .entry(registry.to_string())
            .or_default()
            .entry(digest.to_string())
            .or_default()
            .insert(repository.to_string());
    }

    pub fn save(&self) {
        if let Some(path) = &self.path {
            if let Some(dir) = path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            if let Ok(data) = serde_json::to_vec(&self.map) {
                let tmp = path.with_extension("json.tmp");
                if std::fs::write(&tmp, data).is_ok() {
                    let _ = std::fs::rename(&tmp, path);
                }
            }
        }
    }
}
