//! A cache of compressed app layers, so that a warm build — nothing changed — does not
//! compress the binary again. Keyed by content, never by modification times: the sha256 of
//! the binary, and everything else the layer's bytes depend on (its name in the image, the
//! source date epoch, the compression and its level, the gzip format, this tool's version). An entry is used only when
//! its blob still has the digest recorded with it.
//!
//! One slot per binary, platform and compression (the name of its files), so the cache
//! holds at most one layer per image platform: a new binary replaces the old entry. It
//! lives under cargo's target directory (`target/microimage/.layer-cache`), so
//! `cargo clean` clears it. The base layer, the same for every image with the same
//! settings, is kept the same way in the user's cache directory ([`LayerCache::shared`]),
//! one slot per level.

use std::path::{Path, PathBuf};

use oci_spec::image::Digest;
use serde::{Deserialize, Serialize};

use crate::blob::{self, Blob, Data};
use crate::layers::{Codec, Compression, Layer};

/// The cache directory.
#[derive(Debug, Clone)]
pub struct LayerCache {
    dir: PathBuf,
}

/// What is recorded with a cached blob.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    key: String,
    digest: String,
    diff_id: String,
    uncompressed_size: u64,
    entries: usize,
}

impl LayerCache {
    /// The cache of a cargo target directory.
    pub fn in_target_dir(target_directory: &Path) -> LayerCache {
        LayerCache {
            dir: target_directory.join("microimage").join(".layer-cache"),
        }
    }

    /// The key of an app layer: all it depends on.
    pub fn key(binary: &Digest, bin_name: &str, mtime: u64, codec: Codec) -> String {
        let text = format!(
            "app-layer/{}/{}/{bin_name}/{mtime}/{}/{}/{}/{binary}",
            env!("CARGO_PKG_NAME"),
            env!("CARGO_PKG_VERSION"),
            codec.compression,
            codec.level,
            crate::layers::gzip::FORMAT,
        );
        blob::hex(&blob::sha256(text.as_bytes())).to_string()
    }

    /// The cache of layers many images share (the base layer), in the user's cache
    /// directory: they are the same across projects.
    pub fn shared() -> Option<LayerCache> {
        Some(LayerCache {
            dir: blob::cache_home()?.join("layer-cache"),
        })
    }

    /// The key of a shared layer: its tar's digest (`diff_id`) and how it is compressed.
    pub fn shared_key(diff_id: &Digest, codec: Codec) -> String {
        let text = format!(
            "shared-layer/{}/{}/{}/{}/{}/{diff_id}",
            env!("CARGO_PKG_NAME"),
            env!("CARGO_PKG_VERSION"),
            codec.compression,
            codec.level,
            crate::layers::gzip::FORMAT,
        );
        blob::hex(&blob::sha256(text.as_bytes())).to_string()
    }

    fn files(&self, slot: &str) -> (PathBuf, PathBuf) {
        (
            self.dir.join(format!("{slot}.json")),
            self.dir.join(format!("{slot}.blob")),
        )
    }

    /// The layer stored in `slot` under `key`, if it is there and whole.
    pub fn get(&self, slot: &str, key: &str, compression: Compression) -> Option<Layer> {
        let (meta, data) = self.files(slot);
        let record: Record = serde_json::from_slice(&std::fs::read(meta).ok()?).ok()?;
        if record.key != key {
            return None;
        }
        // Read through the handle opened here: a later run replacing the slot renames a new
        // file over the name, which leaves this one as it is.
        let file = std::fs::File::open(&data).ok()?;
        let size = file.metadata().ok()?.len();
        // A small layer is read once, into memory, and hashed there; a large one is hashed
        // from the file and stays there.
        let (digest, bytes) = if size <= blob::SPILL_AT as u64 {
            let bytes = Data::borrowed_file(file, size, &data).to_vec().ok()?;
            (blob::sha256(&bytes), Data::Memory(bytes.into()))
        } else {
            let digest = blob::sha256_open(&file, size).ok()?;
            (digest, Data::borrowed_file(file, size, &data))
        };
        if digest.to_string() != record.digest {
            return None;
        }
        Some(Layer {
            blob: Blob {
                media_type: compression.media_type(),
                digest,
                data: bytes,
            },
            diff_id: record.diff_id.parse().ok()?,
            uncompressed_size: record.uncompressed_size,
            entries: record.entries,
        })
    }

    /// Stores `layer` in `slot` under `key`; best effort (a cache that cannot be written
    /// only makes the next build slower). The blob is written before the record that
    /// names it, each under a temporary name then renamed.
    pub fn put(&self, slot: &str, key: &str, layer: &Layer) {
        let (meta, data) = self.files(slot);
        let record = Record {
            key: key.to_string(),
            digest: layer.blob.digest.to_string(),
            diff_id: layer.diff_id.to_string(),
            uncompressed_size: layer.uncompressed_size,
            entries: layer.entries,
        };
        let Ok(json) = serde_json::to_vec(&record) else {
            return;
        };
        let _ = std::fs::create_dir_all(&self.dir);
        let write = |path: &Path, bytes: &mut dyn std::io::Read| -> std::io::Result<()> {
            let mut tmp = tempfile::Builder::new()
                .prefix(".microimage-")
                .tempfile_in(&self.dir)?;
            std::io::copy(bytes, &mut tmp)?;
            tmp.persist(path).map_err(|e| e.error)?;
            Ok(())
        };
        // A file of this run is linked in (no copy); it is never changed after it is made.
        let link = self.dir.join(format!(".microimage-{slot}.link"));
        // The old record goes first, so a half-replaced slot is never taken for whole.
        let _ = std::fs::remove_file(&meta);
        if layer.blob.data.link_as(&link, &data).is_ok()
            || write(&data, &mut layer.blob.data.reader()).is_ok()
        {
            let _ = write(&meta, &mut json.as_slice());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::{write, Content, Entry};

    #[test]
    fn a_layer_comes_back_only_for_its_key_and_only_whole() {
        let t = tempfile::tempdir().unwrap();
        let cache = LayerCache::in_target_dir(t.path());
        let layer = write(
            vec![Entry::file(
                "a",
                0o644,
                Content::Bytes(b"hello".as_slice().into()),
            )],
            0,
            Codec::default(),
        )
        .unwrap();
        let digest = blob::sha256(b"binary");
        let key = LayerCache::key(&digest, "app", 0, Codec::default());
        assert!(cache.get("app-x", &key, Compression::Gzip).is_none());
        cache.put("app-x", &key, &layer);
        let back = cache.get("app-x", &key, Compression::Gzip).unwrap();
        assert_eq!(back.blob.digest, layer.blob.digest);
        assert_eq!(back.diff_id, layer.diff_id);
        assert_eq!(
            back.blob.data.to_vec().unwrap(),
            layer.blob.data.to_vec().unwrap()
        );
        // Another epoch, another level: another key.
        let other = LayerCache::key(&digest, "app", 1, Codec::default());
        assert!(cache.get("app-x", &other, Compression::Gzip).is_none());
        let level = Codec::new(Compression::Gzip, Some(9));
        let other = LayerCache::key(&digest, "app", 0, level);
        assert!(cache.get("app-x", &other, Compression::Gzip).is_none());
        // A damaged blob is not used.
        std::fs::write(t.path().join("microimage/.layer-cache/app-x.blob"), b"x").unwrap();
        assert!(cache.get("app-x", &key, Compression::Gzip).is_none());
    }
}
