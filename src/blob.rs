//! Content-addressed blobs: bytes plus their media type and sha256 digest, and the
//! hashing writer that computes a digest while bytes stream through.
//!
//! Digests are `oci_spec::image::Digest` values, always computed over exactly the bytes
//! that are stored and written.

use std::io::{self, Write};
use std::str::FromStr;
use std::sync::Arc;

use oci_spec::image::{Descriptor, Digest, MediaType};
use sha2::{Digest as _, Sha256};

/// A blob of an image: layer, config, manifest or index.
#[derive(Debug, Clone)]
pub struct Blob {
    pub media_type: MediaType,
    pub digest: Digest,
    pub data: Data,
}

impl Blob {
    /// Hashes `data` and wraps it.
    pub fn new(media_type: MediaType, data: Vec<u8>) -> Self {
        let digest = sha256(&data);
        Blob {
            media_type,
            digest,
            data: Data::Memory(data.into()),
        }
    }

    pub fn size(&self) -> u64 {
        self.data.len()
    }

    /// A descriptor for this blob (no platform, no annotations).
    pub fn descriptor(&self) -> Descriptor {
        Descriptor::new(self.media_type.clone(), self.size(), self.digest.clone())
    }
}

/// Where a blob's bytes are: in memory (manifests, configs, small layers), or in a file
/// (large layers), so that memory does not grow with the image. A file is never changed
/// while a `Data` refers to it; it is read through a handle opened when the `Data` was
/// made, so it stays readable whatever happens to its name.
#[derive(Debug, Clone)]
pub enum Data {
    /// In memory: `bytes::Bytes`, which takes a `Vec` without copying it (an `Arc<[u8]>`
    /// copied a layer's megabytes once more when it was finished).
    Memory(bytes::Bytes),
    File(Arc<FileData>),
    /// `n` bytes that are only in a registry (a layer of an image `merge` pushes to the
    /// registry it came from): mounted or already there, never read. Reading it is an
    /// error.
    Remote(u64),
}

/// A blob's bytes on disk.
#[derive(Debug)]
pub struct FileData {
    file: std::fs::File,
    size: u64,
    path: std::path::PathBuf,
    /// Ours to delete when no longer used (a spilled layer); else someone else's (a
    /// layer cache entry).
    owned: Option<crate::guard::Temporary>,
}

impl Drop for FileData {
    fn drop(&mut self) {
        if self.owned.is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Data {
    pub fn len(&self) -> u64 {
        match self {
            Data::Memory(bytes) => bytes.len() as u64,
            Data::File(f) => f.size,
            Data::Remote(n) => *n,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes, when they are in memory.
    pub fn bytes(&self) -> Option<&bytes::Bytes> {
        match self {
            Data::Memory(bytes) => Some(bytes),
            Data::File(_) | Data::Remote(_) => None,
        }
    }

    /// The file holding the bytes, when they are on disk.
    pub fn path(&self) -> Option<&std::path::Path> {
        match self {
            Data::Memory(_) | Data::Remote(_) => None,
            Data::File(f) => Some(&f.path),
        }
    }

    /// Whether the bytes are in a file this run made (and removes when done with it).
    pub fn is_ours(&self) -> bool {
        matches!(self, Data::File(f) if f.owned.is_some())
    }

    /// Gives `dest` these bytes without copying them, when they are a file of this run: a
    /// hard link at `tmp` (registered as a temporary), renamed over `dest`. Fails, leaving
    /// nothing at `tmp`, when they are not such a file or the link cannot be made (another
    /// file system); the caller then copies. Files of this run are never changed after
    /// they are made, so sharing them is safe.
    pub fn link_as(&self, tmp: &std::path::Path, dest: &std::path::Path) -> io::Result<()> {
        let source = self
            .path()
            .filter(|_| self.is_ours())
            .ok_or_else(|| io::Error::other("not a file of this run"))?;
        let _ = std::fs::remove_file(tmp);
        std::fs::hard_link(source, tmp)?;
        let _registered = crate::guard::Temporary::register(tmp);
        std::fs::rename(tmp, dest).inspect_err(|_| {
            let _ = std::fs::remove_file(tmp);
        })
    }

    /// Reads the bytes from the start, in pieces.
    pub fn reader(&self) -> DataReader {
        DataReader {
            data: self.clone(),
            at: 0,
        }
    }

    /// The whole bytes in memory (for blobs known to be small: manifests, configs).
    pub fn to_vec(&self) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(usize::try_from(self.len()).unwrap_or(0));
        io::copy(&mut self.reader(), &mut out)?;
        Ok(out)
    }

    /// The bytes as a shared buffer: no copy when they are in memory; read from the file
    /// otherwise (for small blobs).
    pub fn to_bytes(&self) -> io::Result<bytes::Bytes> {
        match self {
            Data::Memory(bytes) => Ok(bytes.clone()),
            Data::File(_) | Data::Remote(_) => self.to_vec().map(bytes::Bytes::from),
        }
    }

    /// A file already on disk, not ours to delete, whose first `size` bytes are the blob.
    pub fn borrowed_file(file: std::fs::File, size: u64, path: &std::path::Path) -> Data {
        Data::File(Arc::new(FileData {
            file,
            size,
            path: path.to_path_buf(),
            owned: None,
        }))
    }
}

/// Reads a [`Data`] from its start (positioned reads for a file, so readers do not
/// disturb each other).
pub struct DataReader {
    data: Data,
    at: u64,
}

impl DataReader {
    /// Moves the start of what is read next `n` bytes on.
    pub fn skip(&mut self, n: u64) -> io::Result<()> {
        self.at = self.at.saturating_add(n);
        Ok(())
    }
}

impl io::Read for DataReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &self.data {
            Data::Memory(bytes) => {
                let at = usize::try_from(self.at)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                let n = buf.len().min(bytes.len() - at);
                buf[..n].copy_from_slice(&bytes[at..at + n]);
                self.at += n as u64;
                Ok(n)
            }
            Data::File(f) => {
                use std::os::unix::fs::FileExt;
                let want = buf
                    .len()
                    .min(usize::try_from(f.size - self.at.min(f.size)).unwrap_or(usize::MAX));
                if want == 0 {
                    return Ok(0);
                }
                let n = f.file.read_at(&mut buf[..want], self.at)?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("`{}` became shorter while it was read", f.path.display()),
                    ));
                }
                self.at += n as u64;
                Ok(n)
            }
            Data::Remote(_) => Err(io::Error::other(
                "this blob is in a registry, not here (it can only be mounted there)",
            )),
        }
    }
}

impl io::Seek for DataReader {
    fn seek(&mut self, pos: io::SeekFrom) -> io::Result<u64> {
        let to = match pos {
            io::SeekFrom::Start(n) => Some(n),
            io::SeekFrom::Current(d) => self.at.checked_add_signed(d),
            io::SeekFrom::End(d) => self.data.len().checked_add_signed(d),
        };
        self.at = to.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of a blob",
            )
        })?;
        Ok(self.at)
    }
}

/// Above this many bytes a blob being written goes to a file instead of memory.
pub const SPILL_AT: usize = 8 << 20;

/// Where the bytes of a blob being written go: memory up to [`SPILL_AT`], then a file in
/// [`spill_dir`] (the bytes so far written out first). The file is ours: removed when the
/// last [`Data`] referring to it is dropped, or by the signal handler on Ctrl-C.
pub struct SpillWriter {
    memory: Vec<u8>,
    file: Option<(
        io::BufWriter<std::fs::File>,
        std::path::PathBuf,
        crate::guard::Temporary,
    )>,
}

impl SpillWriter {
    pub fn new() -> SpillWriter {
        SpillWriter::with_capacity(0)
    }

    /// A writer that expects about `bytes` (up to [`SPILL_AT`] of them are reserved, which
    /// only costs the pages written): no copying as the memory grows.
    pub fn with_capacity(bytes: u64) -> SpillWriter {
        let reserve = usize::try_from(bytes).unwrap_or(SPILL_AT).min(SPILL_AT);
        SpillWriter {
            memory: Vec::with_capacity(reserve),
            file: None,
        }
    }

    /// The bytes written, in memory or on disk.
    pub fn finish(mut self) -> io::Result<Data> {
        let Some((writer, path, registered)) = self.file.take() else {
            return Ok(Data::Memory(std::mem::take(&mut self.memory).into()));
        };
        let file = match writer.into_inner() {
            Ok(file) => file,
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                return Err(e.into_error());
            }
        };
        let size = file.metadata()?.len();
        Ok(Data::File(Arc::new(FileData {
            file,
            size,
            path,
            owned: Some(registered),
        })))
    }

    fn spill(&mut self) -> io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let dir = spill_dir()?;
        let tmp = tempfile::Builder::new()
            .prefix(crate::guard::PREFIX)
            .make_in(&dir, |path| {
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .mode(0o666)
                    .open(path)
            })?;
        let registered = crate::guard::Temporary::register(tmp.path());
        // Held while the file is in use: how other runs tell it from one that a killed run
        // left behind (see `spill_dir`).
        rustix::fs::flock(
            tmp.as_file(),
            rustix::fs::FlockOperation::NonBlockingLockExclusive,
        )?;
        // From here the file is removed by `FileData` (or the signal handler), not tempfile.
        let (file, path) = tmp.keep().map_err(|e| e.error)?;
        let mut writer = io::BufWriter::with_capacity(1 << 20, file);
        let removed = |e: io::Error, path: &std::path::Path| {
            let _ = std::fs::remove_file(path);
            e
        };
        writer
            .write_all(&std::mem::take(&mut self.memory))
            .map_err(|e| removed(e, &path))?;
        self.file = Some((writer, path, registered));
        Ok(())
    }
}

impl Default for SpillWriter {
    fn default() -> Self {
        SpillWriter::new()
    }
}

impl Drop for SpillWriter {
    fn drop(&mut self) {
        // Unfinished (an error on the way): the file holds nothing anyone will use.
        if let Some((_, path, _)) = &self.file {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Write for SpillWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.file.is_none() && self.memory.len() + buf.len() > SPILL_AT {
            self.spill()?;
        }
        match &mut self.file {
            Some((writer, _, _)) => writer.write(buf),
            None => {
                self.memory.extend_from_slice(buf);
                Ok(buf.len())
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.file {
            Some((writer, _, _)) => writer.flush(),
            None => Ok(()),
        }
    }
}

/// The directory large blobs are written to while a run makes them: `cargo-microimage/spill`
/// in the user's cache directory (beside the plan cache; usually on the same file system
/// as the outputs, so they are linked into a layout rather than copied), else the system's
/// temporary directory.
/// Once per run, files that runs killed with SIGKILL left there are removed: every file of
/// ours (`.microimage-*`) that no process holds a lock on (a run holds one on each file it
/// writes, for as long as it uses it).
pub fn spill_dir() -> io::Result<std::path::PathBuf> {
    static SWEPT: std::sync::Once = std::sync::Once::new();
    let preferred = cache_home().map(|d| d.join("spill"));
    let dir = match preferred {
        Some(dir) if std::fs::create_dir_all(&dir).is_ok() => dir,
        _ => return Ok(std::env::temp_dir()),
    };
    SWEPT.call_once(|| sweep(&dir));
    Ok(dir)
}

fn sweep(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry
            .file_name()
            .to_string_lossy()
            .starts_with(crate::guard::PREFIX)
        {
            continue;
        }
        let Ok(file) = std::fs::File::open(entry.path()) else {
            continue;
        };
        let free =
            rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_ok();
        if free {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// The sha256 digest of `data`.
pub fn sha256(data: &[u8]) -> Digest {
    digest_from(Sha256::digest(data).as_slice())
}

/// The sha256 digest of the first `size` bytes of an open file, read in pieces with
/// positioned reads; fails if the file is shorter.
pub fn sha256_open(file: &std::fs::File, size: u64) -> io::Result<Digest> {
    use std::os::unix::fs::FileExt;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    while at < size {
        let want = buf
            .len()
            .min(usize::try_from(size - at).unwrap_or(usize::MAX));
        let n = file.read_at(&mut buf[..want], at)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file became shorter while it was read",
            ));
        }
        hasher.update(&buf[..n]);
        at += n as u64;
    }
    Ok(digest_from(hasher.finalize().as_slice()))
}

/// The tool's directory in the user's cache: `$XDG_CACHE_HOME/cargo-microimage`, else
/// `~/.cache/cargo-microimage`.
pub fn cache_home() -> Option<std::path::PathBuf> {
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(std::path::PathBuf::from)
    };
    let base = var("XDG_CACHE_HOME").or_else(|| var("HOME").map(|h| h.join(".cache")))?;
    Some(base.join("cargo-microimage"))
}

/// Turns 32 raw bytes of sha256 output into a `sha256:<hex>` digest.
pub fn digest_from(bytes: &[u8]) -> Digest {
    Digest::from_str(&format!("sha256:{}", hex::encode(bytes)))
        .expect("a sha256 hex digest is a valid digest")
}

/// The hex part of a sha256 digest (the file name under `blobs/sha256/`).
pub fn hex(digest: &Digest) -> &str {
    digest.digest()
}

/// A writer that hashes and counts what passes through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    pub fn inner_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// Returns the inner writer, the digest and the number of bytes written.
    pub fn finish(self) -> (W, Digest, u64) {
        let digest = digest_from(self.hasher.finalize().as_slice());
        (self.inner, digest, self.count)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digest() {
        assert_eq!(
            sha256(b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"abc").unwrap();
        let (data, digest, n) = w.finish();
        assert_eq!((data.len(), n), (3, 3));
        assert_eq!(digest, sha256(b"abc"));
    }
}
