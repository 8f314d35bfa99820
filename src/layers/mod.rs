//! Layers: deterministic tar archives, gzip- or zstd-compressed, with both digests (the
//! blob's and the uncompressed `diff_id`) computed in the one streaming pass that writes
//! them.
//!
//! Determinism (DESIGN §6): entries are sorted by path components whatever order they were
//! given in, every mtime is the source date epoch, owners are numeric with no user or
//! group names, modes are fixed by the caller, and the compressed stream is a pure function
//! of the tar bytes and the [`Codec`] (compression and level): [`gzip`] for gzip; for zstd,
//! libzstd (version pinned) in its multithreaded mode, whose output does not depend on the
//! number of threads.
//!
//! Not for: deciding *what* goes into a layer — see [`base`] for the base layer and
//! `crate::image` for the app layer.

pub mod base;
pub mod cache;
pub mod gzip;
pub mod include;

use std::borrow::Cow;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

use oci_spec::image::{Digest, MediaType};

use crate::blob::{Blob, Data, HashingWriter, SpillWriter};
use crate::error::{Error, IoContext, Result};

/// Where a file's bytes come from.
#[derive(Debug, Clone)]
pub enum Content {
    Bytes(Cow<'static, [u8]>),
    /// A blob of an image set (written into an archive), streamed from memory or disk.
    Blob(Data),
    /// A compressed layer blob, written decompressed; `size` is the decompressed length.
    Decompressed {
        blob: Data,
        compression: Compression,
        size: u64,
    },
    /// Streamed from disk while the layer is written (never loaded whole).
    File(PathBuf),
    /// Streamed from a file already open (the binary that was verified), from its start;
    /// exactly `size` bytes, else the layer fails.
    Open {
        file: Arc<File>,
        size: u64,
        path: PathBuf,
    },
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
    /// The bytes of its contents where they are known without asking the file system (0
    /// for a directory, a link or a file read by path).
    fn known_size(&self) -> u64 {
        match &self.kind {
            Kind::File(Content::Bytes(b)) => b.len() as u64,
            Kind::File(Content::Blob(data)) => data.len(),
            Kind::File(Content::Decompressed { size, .. } | Content::Open { size, .. }) => *size,
            _ => 0,
        }
    }

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

/// How layers are compressed (`--compression`, config key `compression`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// gzip, by libdeflate at level 6 (what every runtime reads).
    #[default]
    Gzip,
    /// zstd, at level 9: smaller layers that unpack faster; needs containerd 1.5+,
    /// podman/CRI-O with containers/image 5.x, docker 23+.
    Zstd,
}

/// The default zstd level, part of every zstd digest. Level 9 is already smaller than gzip -6 (by
/// 2% on example-app, 14-16% on 15-20 MB binaries) at about twice gzip's packing time;
/// level 19 would save about 10% more at ~15 times the time (7.6 s for 15 MB on the
/// project's machine).
pub const ZSTD_LEVEL: i32 = 9;

/// Input bytes per zstd job (a piece compressed by one worker), part of every zstd digest.
/// libzstd's default at level 9 is 16 MiB, with which `pack` peaked at 127 MiB for a 90 MB
/// binary on two cores (160 MiB for 100 MB of incompressible data); at 2 MiB it peaks at
/// 50-56 MiB (libzstd keeps a few jobs per worker in memory), at about the same speed and
/// with layers up to 1% larger. Memory grows with the number of workers (cores).
const ZSTD_JOB: u32 = 2 << 20;

impl Compression {
    /// The level layers get unless the user picks one (`--compression-level`).
    pub fn default_level(self) -> u32 {
        match self {
            Compression::Gzip => gzip::LEVEL,
            Compression::Zstd => ZSTD_LEVEL as u32,
        }
    }

    /// The levels a user may pick: libdeflate's 1-12 for gzip, libzstd's 1-22 for zstd.
    pub fn levels(self) -> std::ops::RangeInclusive<u32> {
        match self {
            Compression::Gzip => gzip::LEVELS,
            Compression::Zstd => 1..=22,
        }
    }

    /// `Ok` if `level` is one of [`Compression::levels`]; else what is wrong, for a message.
    pub fn check_level(self, level: u32) -> std::result::Result<(), String> {
        let range = self.levels();
        if range.contains(&level) {
            return Ok(());
        }
        Err(format!(
            "{self} levels are {} to {}, not {level}",
            range.start(),
            range.end()
        ))
    }

    pub fn media_type(self) -> MediaType {
        match self {
            Compression::Gzip => MediaType::ImageLayerGzip,
            Compression::Zstd => MediaType::ImageLayerZstd,
        }
    }

    /// The compression a layer media type names, if it is one this tool reads.
    pub fn of(media_type: &MediaType) -> Option<Compression> {
        match media_type {
            MediaType::ImageLayerGzip => Some(Compression::Gzip),
            MediaType::ImageLayerZstd => Some(Compression::Zstd),
            MediaType::Other(s) if s == "application/vnd.docker.image.rootfs.diff.tar.gzip" => {
                Some(Compression::Gzip)
            }
            _ => None,
        }
    }

    /// Reads `data`, compressed this way, as the tar it holds.
    pub fn decoder<'a>(self, data: &'a [u8]) -> io::Result<Box<dyn Read + 'a>> {
        Ok(match self {
            // Every member: a gzip file may be several (ours are, eStargz layers are).
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(data)),
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(data)?),
        })
    }

    /// Reads a blob's bytes, compressed this way, as the tar they hold (streamed).
    pub fn stream_decoder(self, data: &Data) -> io::Result<Box<dyn Read + Send>> {
        let reader = io::BufReader::with_capacity(256 << 10, data.reader());
        Ok(match self {
            Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(reader)),
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(reader)?),
        })
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        })
    }
}

impl std::str::FromStr for Compression {
    type Err = Error;

    fn from_str(s: &str) -> Result<Compression> {
        match s {
            "gzip" => Ok(Compression::Gzip),
            "zstd" => Ok(Compression::Zstd),
            _ => Err(Error::usage("expected `gzip` or `zstd`")),
        }
    }
}

/// How a layer is compressed: the compression and its level. A layer's bytes are a function
/// of its tar and this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Codec {
    pub compression: Compression,
    pub level: u32,
}

impl Codec {
    /// `compression` at `level`, or at its default level.
    pub fn new(compression: Compression, level: Option<u32>) -> Codec {
        Codec {
            compression,
            level: level.unwrap_or(compression.default_level()),
        }
    }
}

impl Default for Codec {
    fn default() -> Codec {
        Codec::new(Compression::default(), None)
    }
}

impl std::fmt::Display for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} level {}", self.compression, self.level)
    }
}

/// A finished, compressed layer.
#[derive(Debug, Clone)]
pub struct Layer {
    /// The compressed blob as stored and pushed.
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

/// Writes `entries` (in any order) as a compressed tar with every mtime = `mtime`.
pub fn write(entries: Vec<Entry>, mtime: u64, codec: Codec) -> Result<Layer> {
    write_counted(entries, mtime, codec, &|_| {})
}

/// [`write`], telling `progress` how many bytes of tar have gone into the compressor as
/// they do (for a progress bar on large layers).
pub fn write_counted(
    mut entries: Vec<Entry>,
    mtime: u64,
    codec: Codec,
    progress: &dyn Fn(u64),
) -> Result<Layer> {
    sort_and_check(&mut entries)?;
    // The compressed bytes go to memory, or to a file once they are many (blob::SPILL_AT),
    // with room reserved for as many as the contents have: compressed, they are fewer.
    let sink = HashingWriter::new(SpillWriter::with_capacity(
        entries.iter().map(Entry::known_size).sum(),
    ));
    let (sink, diff_id, uncompressed_size) = match codec.compression {
        Compression::Gzip => {
            let gz = gzip::ParallelGzip::new(sink, codec.level).map_err(write_err)?;
            let tar = HashingWriter::new(Counted(gz, progress));
            let (Counted(gz, _), diff_id, size) = write_tar(&entries, mtime, tar)?.finish();
            (gz.finish().map_err(write_err)?, diff_id, size)
        }
        Compression::Zstd => {
            let level = i32::try_from(codec.level).unwrap_or(ZSTD_LEVEL);
            let zst = zstd_encoder(sink, level).map_err(write_err)?;
            let tar = HashingWriter::new(Counted(zst, progress));
            let (Counted(zst, _), diff_id, size) = write_tar(&entries, mtime, tar)?.finish();
            (zst.finish().map_err(write_err)?, diff_id, size)
        }
    };
    finished(sink, codec, diff_id, uncompressed_size, entries.len())
}

/// The layer whose compressed bytes `sink` took (and hashed) whole.
fn finished(
    sink: HashingWriter<SpillWriter>,
    codec: Codec,
    diff_id: Digest,
    uncompressed_size: u64,
    entries: usize,
) -> Result<Layer> {
    let (data, digest, _) = sink.finish();
    Ok(Layer {
        blob: Blob {
            media_type: codec.compression.media_type(),
            digest,
            data: data.finish().map_err(write_err)?,
        },
        diff_id,
        uncompressed_size,
        entries,
    })
}

/// [`write`] for a small layer that many images share (the base layer): its tar is made in
/// memory first (a few hundred KB), and `cache` gives back the compressed layer of that
/// very tar at that codec when it holds one — a gzip layer is a function of its tar bytes,
/// the level and [`gzip::FORMAT`] alone — so a pack or build whose base is unchanged
/// compresses only its app layer (the base layer's compression was 3-5 ms of a pack's
/// serial tail). Otherwise the tar is compressed (the same bytes in as [`write`] streams,
/// so the same layer) and kept in `slot`. zstd layers are always made by [`write`].
pub fn write_shared(
    mut entries: Vec<Entry>,
    mtime: u64,
    codec: Codec,
    cache: Option<&cache::LayerCache>,
    slot: &str,
) -> Result<Layer> {
    let (Compression::Gzip, Some(cache)) = (codec.compression, cache) else {
        return write(entries, mtime, codec);
    };
    sort_and_check(&mut entries)?;
    let (tar, diff_id, uncompressed_size) =
        write_tar(&entries, mtime, HashingWriter::new(Vec::new()))?.finish();
    let key = cache::LayerCache::shared_key(&diff_id, codec);
    if let Some(layer) = cache.get(slot, &key, codec.compression) {
        if layer.diff_id == diff_id && layer.entries == entries.len() {
            return Ok(layer);
        }
    }
    let sink = HashingWriter::new(SpillWriter::new());
    let mut gz = gzip::ParallelGzip::new(sink, codec.level).map_err(write_err)?;
    gz.write_all(&tar).map_err(write_err)?;
    let sink = gz.finish().map_err(write_err)?;
    let layer = finished(sink, codec, diff_id, uncompressed_size, entries.len())?;
    cache.put(slot, &key, &layer);
    Ok(layer)
}

/// A writer that reports every write's length to a callback.
struct Counted<'p, W>(W, &'p dyn Fn(u64));

impl<W: Write> Write for Counted<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.0.write(buf)?;
        (self.1)(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// A zstd stream at `level` with a content checksum, in multithreaded mode. libzstd
/// documents that output of that mode depends on the parameters, not on the number of
/// worker threads (`tests::zstd_output_ignores_the_thread_count` checks it), so it may
/// use every core and still be reproducible. (A job is several MiB of input, so small
/// binaries are compressed by one thread.)
fn zstd_encoder<W: Write>(
    out: W,
    level: i32,
) -> io::Result<zstd::stream::write::Encoder<'static, W>> {
    let mut encoder = zstd::stream::write::Encoder::new(out, level)?;
    encoder.include_checksum(true)?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    encoder.multithread(u32::try_from(threads).unwrap_or(1).max(1))?;
    encoder.set_parameter(zstd::zstd_safe::CParameter::JobSize(ZSTD_JOB))?;
    Ok(encoder)
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
    Error::output(format!("writing a layer failed: {e}"))
}

/// Puts entries in canonical order (by path components) and refuses bad or duplicate paths.
pub fn sort_and_check(entries: &mut [Entry]) -> Result<()> {
    for e in entries.iter() {
        validate_path(&e.path)?;
    }
    entries.sort_by(|a, b| a.path.split('/').cmp(b.path.split('/')));
    if let Some(w) = entries.windows(2).find(|w| w[0].path == w[1].path) {
        return Err(Error::output(format!(
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
        return Err(Error::output(format!(
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
        Kind::File(Content::Blob(data)) => {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(data.len());
            let mut reader = ExactReader {
                inner: data.reader(),
                remaining: data.len(),
            };
            tar.append_data(&mut h, &e.path, &mut reader)
        }
        Kind::File(Content::Decompressed {
            blob,
            compression,
            size,
        }) => {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(*size);
            compression.stream_decoder(blob).and_then(|tar_data| {
                let mut reader = ExactReader {
                    inner: tar_data.take(*size),
                    remaining: *size,
                };
                tar.append_data(&mut h, &e.path, &mut reader)
            })
        }
        Kind::File(Content::Open { file, size, path }) => {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(*size);
            let mut reader = ExactReader {
                inner: OpenReader {
                    file,
                    offset: 0,
                    end: *size,
                },
                remaining: *size,
            };
            return tar
                .append_data(&mut h, &e.path, &mut reader)
                .map_err(|err| Error::io("packing", path, err));
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

/// Reads an open file from its start with positioned reads (the handle is shared, so its
/// own position is not used), up to `end`.
struct OpenReader<'f> {
    file: &'f File,
    offset: u64,
    end: u64,
}

impl Read for OpenReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let want = buf
            .len()
            .min(usize::try_from(self.end - self.offset).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.offset)?;
        self.offset += n as u64;
        Ok(n)
    }
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
        let bad = write(vec![Entry::dir("a/../b", 0o755)], 0, Codec::default()).unwrap_err();
        assert!(bad.message().contains("a/../b"));
        let dup = write(
            vec![Entry::dir("a", 0o755), Entry::dir("a/", 0o755)],
            0,
            Codec::default(),
        )
        .unwrap_err();
        assert!(dup.message().contains("/a"), "{dup}");
    }

    #[test]
    fn tar_is_readable_with_fixed_metadata() {
        for compression in [Compression::Gzip, Compression::Zstd] {
            let layer = write(
                vec![
                    Entry::file("etc/x", 0o644, Content::Bytes(b"hello".as_slice().into())),
                    Entry::dir("etc", 0o755),
                    Entry::dir("tmp", 0o1777),
                    Entry::symlink("etc/y", "x"),
                ],
                1_700_000_000,
                Codec::new(compression, None),
            )
            .unwrap();
            assert_eq!(layer.blob.media_type, compression.media_type());
            let tar = compression.stream_decoder(&layer.blob.data).unwrap();
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
            assert_eq!(
                layer.blob.digest,
                crate::blob::sha256(&layer.blob.data.to_vec().unwrap())
            );
        }
    }

    #[test]
    fn a_shared_layer_is_the_layer_write_makes_cold_warm_and_with_a_damaged_cache() {
        let entries = || {
            vec![
                Entry::dir("etc", 0o755),
                Entry::file("etc/a", 0o644, Content::Bytes(vec![b'a'; 300_000].into())),
                Entry::file("etc/b", 0o644, Content::Bytes(b"b".to_vec().into())),
            ]
        };
        let dir = tempfile::tempdir().unwrap();
        let cache = cache::LayerCache::in_target_dir(dir.path());
        let codec = Codec::new(Compression::Gzip, None);
        let plain = write(entries(), 7, codec).unwrap();
        let same = |l: &Layer| {
            assert_eq!(l.blob.digest, plain.blob.digest);
            assert_eq!(l.diff_id, plain.diff_id);
            assert_eq!(l.uncompressed_size, plain.uncompressed_size);
            assert_eq!(l.entries, plain.entries);
            assert_eq!(
                l.blob.data.to_vec().unwrap(),
                plain.blob.data.to_vec().unwrap()
            );
        };
        // Cold: compressed here and stored; warm: read back.
        same(&write_shared(entries(), 7, codec, Some(&cache), "base").unwrap());
        let stored = dir.path().join("microimage/.layer-cache/base.blob");
        assert!(stored.is_file());
        same(&write_shared(entries(), 7, codec, Some(&cache), "base").unwrap());
        // Another tar (mtime), level or compression is not taken for it.
        let other = write_shared(entries(), 8, codec, Some(&cache), "base").unwrap();
        assert_ne!(other.blob.digest, plain.blob.digest);
        let level = Codec::new(Compression::Gzip, Some(9));
        assert_eq!(
            write_shared(entries(), 7, level, Some(&cache), "base")
                .unwrap()
                .blob
                .digest,
            write(entries(), 7, level).unwrap().blob.digest
        );
        let zstd = Codec::new(Compression::Zstd, None);
        assert_eq!(
            write_shared(entries(), 7, zstd, Some(&cache), "base")
                .unwrap()
                .blob
                .digest,
            write(entries(), 7, zstd).unwrap().blob.digest
        );
        // A damaged blob in the cache is not used.
        write_shared(entries(), 7, codec, Some(&cache), "base").unwrap();
        std::fs::write(&stored, b"not a layer").unwrap();
        same(&write_shared(entries(), 7, codec, Some(&cache), "base").unwrap());
    }

    #[test]
    fn a_gzip_blob_of_several_members_is_read_to_its_end() {
        // As ours are, and eStargz layers (a base image may have them): a reader that
        // stopped after the first member would see a tar cut short.
        let tar = write_tar(
            &[
                Entry::file("a", 0o644, Content::Bytes(vec![b'a'; 3000].into())),
                Entry::file("b", 0o644, Content::Bytes(vec![b'b'; 3000].into())),
            ],
            0,
            Vec::new(),
        )
        .unwrap();
        let mut blob = Vec::new();
        for part in tar.chunks(2048) {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
            gz.write_all(part).unwrap();
            blob.extend(gz.finish().unwrap());
        }
        let mut whole = Vec::new();
        Compression::Gzip
            .decoder(&blob)
            .unwrap()
            .read_to_end(&mut whole)
            .unwrap();
        assert_eq!(whole, tar);
        let mut streamed = Vec::new();
        Compression::Gzip
            .stream_decoder(&Data::Memory(blob.into()))
            .unwrap()
            .read_to_end(&mut streamed)
            .unwrap();
        assert_eq!(streamed, tar);
    }

    #[test]
    fn each_level_is_the_users_and_changes_the_bytes() {
        let entries = || {
            let text: Vec<u8> = (0..200_000u32)
                .flat_map(|i| (i % 251).to_le_bytes())
                .collect();
            vec![Entry::file("x", 0o644, Content::Bytes(text.into()))]
        };
        for compression in [Compression::Gzip, Compression::Zstd] {
            let levels = compression.levels();
            let low = write(entries(), 0, Codec::new(compression, Some(*levels.start()))).unwrap();
            let high = write(entries(), 0, Codec::new(compression, Some(*levels.end()))).unwrap();
            let default = write(entries(), 0, Codec::new(compression, None)).unwrap();
            assert_ne!(low.blob.digest, high.blob.digest, "{compression}");
            assert_eq!(low.diff_id, high.diff_id);
            assert!(levels.contains(&compression.default_level()));
            assert_ne!(default.blob.digest, low.blob.digest, "{compression}");
        }
    }

    #[test]
    fn zstd_output_ignores_the_thread_count() {
        // The property is libzstd's, for any level; level 3 splits 24 MB into several jobs
        // quickly. The worker count is what varies.
        let mut data = Vec::with_capacity(24 << 20);
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        while data.len() < 24 << 20 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if x % 3 == 0 {
                data.extend_from_slice(b"static binary ");
            } else {
                data.extend_from_slice(&x.to_le_bytes()[..3]);
            }
        }
        let compress = |threads: u32| {
            let mut encoder = zstd_encoder(Vec::new(), 3).unwrap();
            encoder.multithread(threads).unwrap();
            encoder.write_all(&data).unwrap();
            crate::blob::sha256(&encoder.finish().unwrap())
        };
        assert_eq!(compress(1), compress(4));
    }
}
