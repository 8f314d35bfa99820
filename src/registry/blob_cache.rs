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

    /// Whether this machine has pushed `digest` to any repository of `registry`.
    pub fn seen(&self, registry: &str, digest: &str) -> bool {
        self.map
            .get(registry)
            .is_some_and(|d| d.contains_key(digest))
    }

    pub fn record(&mut self, registry: &str, digest: &str, repository: &str) {
        self.map
            .entry(registry.to_string())
            .or_default()
            .entry(digest.to_string())
            .or_default()
            .insert(repository.to_string());
    }

    /// Adds what this run learned to the file, under an exclusive lock of the cache
    /// directory so that concurrent pushes do not lose each other's entries: the file is
    /// read again under the lock, merged, and replaced through a temporary of its own.
    pub fn save(&self) {
        use std::io::Write;
        let Some(path) = &self.path else { return };
        let Some(dir) = path.parent() else { return };
        let _ = std::fs::create_dir_all(dir);
        let Ok(lock) = std::fs::File::open(dir) else {
            return;
        };
        if rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).is_err() {
            return;
        }
        let mut merged = Self::load().map;
        for (registry, digests) in &self.map {
            for (digest, repos) in digests {
                merged
                    .entry(registry.clone())
                    .or_default()
                    .entry(digest.clone())
                    .or_default()
                    .extend(repos.iter().cloned());
            }
        }
        let Ok(data) = serde_json::to_vec(&merged) else {
            return;
        };
        let _ = tempfile::Builder::new()
            .prefix(".microimage-")
            .tempfile_in(dir)
            .and_then(|mut tmp| {
                tmp.write_all(&data)?;
                tmp.persist(path).map_err(|e| e.error)?;
                Ok(())
            });
    }
}
