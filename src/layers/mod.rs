//! Layers: deterministic tar archives, gzip-compressed, with both digests (the blob's and
//! the uncompressed `diff_id`) computed in the one streaming pass that writes them.
//!
//! Determinism (DESIGN §6): entries are sorted by path components whatever order they were
//! given in, every mtime is the source date epoch, owners are numeric with no user or
//! group names, modes are fixed by the caller, and the gzip stream is a pure function of
//! the tar bytes ([`gzip`]).
//!
//! Not for: deciding *what* goes into a layer — see [`base`] for the base layer and
//! `crate::image` for the app layer.

pub mod base;
pub mod gzip;
pub mod include;

use std::borrow::Cow;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

use oci_spec::image::{Digest, MediaType};

use crate::blob::{Blob, HashingWriter};
use crate::error::{Error, IoContext, Result};

/// Where a file's bytes come from.
#[derive(Debug, Clone)]
pub enum Content {
    Bytes(Cow<'static, [u8]>),
    /// Bytes shared with an image set (a blob written into an archive).
    Shared(Arc<[u8]>),
    /// A gzip blob, written decompressed; `size` is the decompressed length.
    Gunzip {
        gz: Arc<[u8]>,
        size: u64,
    },
    /// Streamed from disk while the layer is written (never loaded whole).
    File(PathBuf),
}

/// What an entry is.
#[derive(Debug, Clone)]
pub enum Kind {
    Dir,
    File(Content),
    Symlink(String),
}

/// One entry of a layer.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Relative path inside the image (`etc/passwd`), no leading or trailing `/`.
    pub path: String,
    pub kind: Kind,
    /// Permission bits (with setuid/setgid/sticky), e.g. `0o755`, `0o1777`.
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
}

impl Entry {
    /// A directory owned by root.
    pub fn dir(path: &str, mode: u32) -> Entry {
        Entry::new(path, Kind::Dir, mode)
    }

    /// A file owned by root.
    pub fn file(path: &str, mode: u32, content: Content) -> Entry {
        Entry::new(path, Kind::File(content), mode)
    }

    /// A symbolic link owned by root.
    pub fn symlink(path: &str, target: &str) -> Entry {
        Entry::new(path, Kind::Symlink(target.to_string()), 0o777)
    }

    fn new(path: &str, kind: Kind, mode: u32) -> Entry {
        Entry {
            path: path.trim_matches('/').to_string(),
            kind,
            mode,
            uid: 0,
            gid: 0,
        }
    }

    /// Sets the numeric owner.
    pub fn owned_by(mut self, uid: u64, gid: u64) -> Entry {
        self.uid = uid;
        self.gid = gid;
        self
    }
}

/// A finished, compressed layer.
#[derive(Debug, Clone)]
pub struct Layer {
    /// The gzip blob as stored and pushed.
    pub blob: Blob,
    /// The sha256 of the uncompressed tar (`rootfs.diff_ids`).
    pub diff_id: Digest,
    pub uncompressed_size: u64,
    /// Number of tar entries.
    pub entries: usize,
}

/// The directories leading to `path`, outermost first (`usr`, `usr/local` for `usr/local/x`).
pub fn parents(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/').map(move |(i, _)| &path[..i])
}

/// Writes `entries` (in any order) as a gzip-compressed tar with every mtime = `mtime`.
pub fn write(mut entries: Vec<Entry>, mtime: u64) -> Result<Layer> {
    sort_and_check(&mut entries)?;
    let sink = HashingWriter::new(Vec::new());
    let gz = gzip::ParallelGzip::new(sink).map_err(write_err)?;
    let uncompressed = write_tar(&entries, mtime, HashingWriter::new(gz))?;
    let (gz, diff_id, uncompressed_size) = uncompressed.finish();
    let sink = gz.finish().map_err(write_err)?;
    let (data, digest, _) = sink.finish();
    Ok(Layer {
        blob: Blob {
            media_type: MediaType::ImageLayerGzip,
            digest,
            data: data.into(),
        },
        diff_id,
        uncompressed_size,
        entries: entries.len(),
    })
}

/// Writes already sorted, validated `entries` as a tar stream into `out` and returns it.
pub fn write_tar<W: Write>(entries: &[Entry], mtime: u64, out: W) -> Result<W> {
    let mut tar = tar::Builder::new(out);
    for e in entries {
        append(&mut tar, e, mtime)?;
    }
    tar.into_inner().map_err(write_err)
}

fn write_err(e: io::Error) -> Error {
    Error::new(format!("writing a layer failed: {e}"))
}

/// Puts entries in canonical order (by path components) and refuses bad or duplicate paths.
pub fn sort_and_check(entries: &mut [Entry]) -> Result<()> {
    for e in entries.iter() {
        validate_path(&e.path)?;
    }
    entries.sort_by(|a, b| a.path.split('/').cmp(b.path.split('/')));
    if let Some(w) = entries.windows(2).find(|w| w[0].path == w[1].path) {
        return Err(Error::new(format!(
            "two files would be written to `/{}` in the same layer",
            w[0].path
        ))
        .with_help("give each included file its own destination"));
    }
    Ok(())
}

fn validate_path(path: &str) -> Result<()> {
    if path.is_empty()
        || path
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(Error::new(format!(
            "`{path}` is not a valid path inside an image (it must be relative, without `.` or `..`)"
        )));
    }
    Ok(())
}

fn append<W: Write>(tar: &mut tar::Builder<W>, e: &Entry, mtime: u64) -> Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_mtime(mtime);
    h.set_uid(e.uid);
    h.set_gid(e.gid);
    h.set_mode(e.mode);
    let result = match &e.kind {
        Kind::Dir => {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_size(0);
            tar.append_data(&mut h, format!("{}/", e.path), io::empty())
        }
        Kind::Symlink(target) => {
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            tar.append_link(&mut h, &e.path, target)
        }
        Kind::File(Content::Bytes(bytes)) => {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(bytes.len() as u64);
            tar.append_data(&mut h, &e.path, &bytes[..])
        }
        Kind::File(Content::Shared(bytes)) => {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(bytes.len() as u64);
            tar.append_data(&mut h, &e.path, &bytes[..])
        }
        Kind::File(Content::Gunzip { gz, size }) => {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(*size);
            tar.append_data(&mut h, &e.path, flate2::read::GzDecoder::new(&gz[..]))
        }
        Kind::File(Content::File(src)) => {
            h.set_entry_type(tar::EntryType::Regular);
            let file = File::open(src).path_context("opening", src)?;
            let len = file.metadata().path_context("reading", src)?.len();
            h.set_size(len);
            // `take` guards against a file that grows while it is copied.
            let mut reader = ExactReader {
                inner: file.take(len),
                remaining: len,
            };
            return tar
                .append_data(&mut h, &e.path, &mut reader)
                .map_err(|err| Error::io("packing", src, err));
        }
    };
    result.map_err(write_err)
}

/// Fails if the file shrank while it was being copied (tar would pad with garbage).
struct ExactReader<R> {
    inner: R,
    remaining: u64,
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && self.remaining > 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file changed size while it was being read",
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_of_a_path() {
        assert_eq!(
            parents("usr/local/bin/x").collect::<Vec<_>>(),
            ["usr", "usr/local", "usr/local/bin"]
        );
        assert_eq!(parents("x").count(), 0);
    }

    #[test]
    fn rejects_escapes_and_duplicates() {
        let bad = write(vec![Entry::dir("a/../b", 0o755)], 0).unwrap_err();
        assert!(bad.message().contains("a/../b"));
        let dup = write(vec![Entry::dir("a", 0o755), Entry::dir("a/", 0o755)], 0).unwrap_err();
        assert!(dup.message().contains("/a"), "{dup}");
    }

    #[test]
    fn tar_is_readable_with_fixed_metadata() {
        let layer = write(
            vec![
                Entry::file("etc/x", 0o644, Content::Bytes(b"hello".as_slice().into())),
                Entry::dir("etc", 0o755),
                Entry::dir("tmp", 0o1777),
                Entry::symlink("etc/y", "x"),
            ],
            1_700_000_000,
        )
        .unwrap();
        let tar = flate2::read::GzDecoder::new(&layer.blob.data[..]);
        let mut archive = tar::Archive::new(tar);
        let mut seen = Vec::new();
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            let h = entry.header();
            assert_eq!(h.mtime().unwrap(), 1_700_000_000);
            assert_eq!(h.username().unwrap(), Some(""));
            let path = String::from_utf8(entry.path_bytes().to_vec()).unwrap();
            seen.push((path, h.mode().unwrap()));
        }
        assert_eq!(
            seen,
            [
                ("etc/".to_string(), 0o755),
                ("etc/x".to_string(), 0o644),
                ("etc/y".to_string(), 0o777),
                ("tmp/".to_string(), 0o1777)
            ]
        );
        assert_eq!(layer.entries, 4);
        assert_eq!(layer.blob.digest, crate::blob::sha256(&layer.blob.data));
    }
}
