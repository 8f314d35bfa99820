//! The files of a local source: a directory (an OCI layout, or an unpacked
//! docker-archive) or a tar archive whose entries are spilled to disk past a few MiB as
//! they are read — never a whole archive or layer in memory. Names are resolved inside
//! the source only: no `..`, no absolute names, nothing reached through a symlink that
//! leads out of the directory, and only regular files (a FIFO or a device is refused
//! without being opened for reading in a way that blocks).

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use oci_spec::image::{Descriptor, Digest};

use crate::blob::{self, Blob, Data};
use crate::error::{Error, IoContext, Result};

/// Blobs up to this size are read into memory (manifests, configs, small layers).
const IN_MEMORY: u64 = 1 << 20;
/// The most a JSON file of a source (`index.json`, `manifest.json`) may hold.
const JSON_LIMIT: u64 = 16 << 20;

pub(crate) enum Files {
    Dir(PathBuf),
    Archive(HashMap<String, (Data, Digest)>),
}

/// `a/./b` → `a/b`; `None` for names that leave their directory or are absolute.
fn clean(name: &str) -> Option<String> {
    let mut parts = Vec::new();
    for c in Path::new(name).components() {
        match c {
            Component::Normal(p) => parts.push(p.to_str()?.to_string()),
            Component::CurDir => {}
            _ => return None,
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

impl Files {
    /// Opens a directory, or reads an archive's entries (spilling them).
    pub(crate) fn open(path: &Path, label: &str) -> Result<Files> {
        if path.is_dir() {
            let root = path.canonicalize().path_context("resolving", path)?;
            return Ok(Files::Dir(root));
        }
        let bad = |e: std::io::Error| {
            Error::input(format!("`{label}` is not a readable tar archive: {e}")).with_help(
                "pass an OCI layout directory, an OCI archive, a docker-archive or a registry reference",
            )
        };
        let file = open_regular(path, label)?;
        let mut files = HashMap::new();
        let mut archive = tar::Archive::new(file);
        for entry in archive.entries().map_err(bad)? {
            let mut entry = entry.map_err(bad)?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let Some(name) = clean(&entry.path().map_err(bad)?.to_string_lossy()) else {
                continue;
            };
            let mut out = blob::HashingWriter::new(blob::SpillWriter::new());
            std::io::copy(&mut entry, &mut out).map_err(bad)?;
            out.flush().map_err(bad)?;
            let (spill, digest, _) = out.finish();
            let data = spill.finish().path_context("reading", path)?;
            files.insert(name, (data, digest));
        }
        Ok(Files::Archive(files))
    }

    /// The path of `name` inside the directory, if it is a regular file there.
    fn path_in(root: &Path, name: &str) -> Option<PathBuf> {
        let path = root.join(clean(name)?);
        let resolved = path.canonicalize().ok()?;
        (resolved.starts_with(root) && resolved.is_file()).then_some(resolved)
    }

    pub(crate) fn has(&self, name: &str) -> bool {
        match self {
            Files::Dir(root) => Files::path_in(root, name).is_some(),
            Files::Archive(files) => clean(name).is_some_and(|n| files.contains_key(&n)),
        }
    }

    /// A small file (JSON) by name, whole; `None` when it is not there.
    pub(crate) fn small(&self, label: &str, name: &str) -> Result<Option<Vec<u8>>> {
        let too_big = |size: u64| {
            Error::input(format!(
                "`{label}`: its {name} has {size} bytes, more than the {} MiB such a file may hold",
                JSON_LIMIT >> 20
            ))
        };
        match self {
            Files::Dir(root) => {
                let Some(path) = Files::path_in(root, name) else {
                    return Ok(None);
                };
                let file = open_regular(&path, label)?;
                let size = file.metadata().path_context("reading", &path)?.len();
                if size > JSON_LIMIT {
                    return Err(too_big(size));
                }
                let mut bytes = Vec::new();
                file.take(JSON_LIMIT)
                    .read_to_end(&mut bytes)
                    .path_context("reading", &path)?;
                Ok(Some(bytes))
            }
            Files::Archive(files) => match clean(name).and_then(|n| files.get(&n)) {
                None => Ok(None),
                Some((data, _)) if data.len() > JSON_LIMIT => Err(too_big(data.len())),
                Some((data, _)) => data
                    .to_vec()
                    .map(Some)
                    .map_err(|e| Error::input(format!("`{label}`: reading {name} failed: {e}"))),
            },
        }
    }

    /// A file by name with its digest (docker-archives name their files).
    pub(crate) fn named(&self, label: &str, name: &str) -> Result<(Data, Digest)> {
        let missing = || {
            Error::input(format!(
                "`{label}` is incomplete: `{name}`, which its manifest.json names, is not in it"
            ))
        };
        match self {
            Files::Archive(files) => clean(name)
                .and_then(|n| files.get(&n).cloned())
                .ok_or_else(missing),
            Files::Dir(root) => {
                let path = Files::path_in(root, name).ok_or_else(missing)?;
                let file = open_regular(&path, label)?;
                let size = file.metadata().path_context("reading", &path)?.len();
                read_file(file, size, &path)
            }
        }
    }

    /// A document blob `d` names (a manifest, an index, a config: `what`) and its bytes,
    /// refused past `limit` before anything is read — the size in the descriptor is the
    /// author's, and a sparse file can claim gigabytes — as a registry's would be (see
    /// `crate::registry::limits`).
    pub(crate) fn document(
        &self,
        label: &str,
        what: &str,
        d: &Descriptor,
        limit: usize,
    ) -> Result<(Blob, Vec<u8>)> {
        super::within(label, what, d.size(), limit)?;
        let blob = self.blob(label, d)?;
        let bytes = super::bytes(label, &blob)?;
        Ok((blob, bytes))
    }

    /// The blob `d` names (`blobs/<algorithm>/<hex>`), checked against its size and digest.
    pub(crate) fn blob(&self, label: &str, d: &Descriptor) -> Result<Blob> {
        let digest = d.digest().clone();
        let name = format!("blobs/{}/{}", digest.algorithm(), blob::hex(&digest));
        let missing = || {
            Error::input(format!("`{label}` is incomplete: blob {digest} is missing"))
                .with_help("write the image again, or copy it whole (skopeo copy --all)")
        };
        let damaged =
            |what: String| Error::input(format!("`{label}` is damaged: blob {digest} {what}"));
        let (data, actual) = match self {
            Files::Archive(files) => files.get(&name).cloned().ok_or_else(missing)?,
            Files::Dir(root) => {
                let path = Files::path_in(root, &name).ok_or_else(missing)?;
                let file = open_regular(&path, label)?;
                let size = file.metadata().path_context("reading", &path)?.len();
                if size != d.size() {
                    return Err(damaged(format!("has {size} bytes, not {}", d.size())));
                }
                read_file(file, size, &path)?
            }
        };
        if data.len() != d.size() {
            return Err(damaged(format!(
                "has {} bytes, not {}",
                data.len(),
                d.size()
            )));
        }
        if actual != digest {
            return Err(damaged(format!("holds content with digest {actual}")));
        }
        Ok(Blob {
            media_type: d.media_type().clone(),
            digest,
            data,
        })
    }
}

/// Opens `path` for reading if it is a regular file, without blocking on a FIFO.
fn open_regular(path: &Path, label: &str) -> Result<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
        .path_context("opening", path)?;
    let meta = file.metadata().path_context("reading", path)?;
    if !meta.is_file() {
        return Err(Error::input(format!(
            "`{label}`: `{}` is not a regular file",
            path.display()
        )));
    }
    Ok(file)
}

/// A file's bytes (in memory when small, else borrowed from the file) and their digest.
fn read_file(file: File, size: u64, path: &Path) -> Result<(Data, Digest)> {
    if size <= IN_MEMORY {
        let mut bytes = Vec::new();
        (&file)
            .take(IN_MEMORY + 1)
            .read_to_end(&mut bytes)
            .path_context("reading", path)?;
        let digest = blob::sha256(&bytes);
        Ok((Data::Memory(bytes.into()), digest))
    } else {
        let digest = blob::sha256_open(&file, size).path_context("reading", path)?;
        Ok((Data::borrowed_file(file, size, path), digest))
    }
}

#[cfg(test)]
mod tests {
    use super::clean;

    #[test]
    fn names_stay_inside() {
        assert_eq!(
            clean("./blobs/sha256/ab").as_deref(),
            Some("blobs/sha256/ab")
        );
        assert_eq!(clean("a/./b").as_deref(), Some("a/b"));
        assert_eq!(clean("../../etc/shadow"), None);
        assert_eq!(clean("a/../../b"), None);
        assert_eq!(clean("/etc/passwd"), None);
        assert_eq!(clean(""), None);
    }
}
