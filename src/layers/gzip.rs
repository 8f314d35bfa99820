//! Deterministic, parallel gzip (RFC 1952) for layer blobs, compressed by libdeflate.
//!
//! libdeflate (through the `libdeflater` crate, pinned in Cargo.toml) gives the smallest
//! deflate output of the well-kept libraries at a fraction of zlib's time: on a 10.9 MB
//! release binary its level 6 is smaller than zlib's level 9 in half the time of zlib's
//! level 4 (docs/speed.md). It compresses whole buffers only: no streaming, no preset
//! dictionary, no flush. So the stream is cut at fixed [`CHUNK`] boundaries and each chunk
//! becomes a gzip *member* of its own (header, deflate data, CRC-32 and length), compressed
//! on any core; the members are written in order. A gzip file may hold any number of
//! members, and a reader gives their data one after the other (RFC 1952 §2.2). Every
//! runtime and registry tool reads such layers (Go's `compress/gzip` and klauspost's
//! `pgzip`, which docker, containerd, podman, skopeo, umoci and trivy use, read all members,
//! as do `gzip -d`, Python's and Java's readers); eStargz layers, which all of them pull,
//! are built the same way. A chunk starts without the previous chunk's 32 KiB as context,
//! which costs a little size: measured in [`CHUNK`]'s comment.
//!
//! Written by hand on top of the whole-buffer compressor because no crate offers what
//! layers need together: output that is a pure function of the input bytes (not of the
//! thread count, the write sizes or the machine), compression spread over all cores as
//! `pigz` and umoci's pgzip do, and memory that stays flat however large the input.
//!
//! A 64 KiB piece of a chunk that deflate cannot shrink (judged from samples of its own
//! bytes, see [`incompressible`]) is written as stored blocks instead: incompressible data
//! — embedded archives, media, model weights, random bytes — then costs a copy, as in
//! umoci's pgzip, rather than a full search that saves nothing. A run of such pieces is a
//! member of its own.
//!
//! The compressor and the level are part of the image digests: changing either changes
//! every layer digest, which the golden-digest test in `tests/` catches.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};

use libdeflater::{CompressionLvl, Compressor};

/// The default level (`--compression-level`, key `compression-level`, 1-12). Chosen by
/// measurement (`examples/gzip_levels.rs`, docs/speed.md): the smallest level whose app layer
/// is no larger than `gzip -9` of the binary, and at which `pack` stays well under umoci's
/// time.
pub const LEVEL: u32 = 6;
/// The levels a user may choose: libdeflate's 1 (fastest) to 12 (smallest). Level 0 (only
/// stored blocks) is not offered: `--compression none` would be the honest name for it.
pub const LEVELS: std::ops::RangeInclusive<u32> = 1..=12;
/// Input bytes per gzip member. Part of the output format.
pub const CHUNK: usize = 1 << 20;
/// Names the output format (the compressor, its version and the chunking) wherever
/// compressed bytes are cached: a change of any of them must not reuse old bytes.
pub const FORMAT: &str = "libdeflate-1.26.1/members-1MiB";
/// Chunks handed to the workers and not yet written, per worker: enough to keep every core
/// busy while the writing thread reads, hashes and writes.
const IN_FLIGHT_PER_WORKER: usize = 2;

/// gzip member header: magic, CM=deflate, no flags, MTIME=0, XFL=0, OS=255 (unknown).
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// One chunk to compress, and a buffer for its members (one written before, recycled).
struct Job {
    index: usize,
    chunk: Vec<u8>,
    out: Vec<u8>,
}

/// A compressed chunk: its index, its members, and its input buffer back for reuse.
type Done = (usize, io::Result<Vec<u8>>, Vec<u8>);

/// Worker threads that compress chunks as they come, while the writing thread goes on
/// reading and hashing (a pipeline, as pigz's): results come back tagged with their index
/// and are written in order.
struct Pool {
    jobs: Option<Sender<Job>>,
    results: Receiver<Done>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

impl Pool {
    fn new(threads: usize, level: u32) -> Pool {
        let (jobs, queue) = channel::<Job>();
        let (done, results) = channel();
        let queue = Arc::new(Mutex::new(queue));
        let workers = (0..threads)
            .map(|_| {
                let (queue, done) = (queue.clone(), done.clone());
                std::thread::spawn(move || loop {
                    let job = match queue.lock() {
                        Ok(q) => q.recv(),
                        Err(_) => return,
                    };
                    let Ok(job) = job else { return };
                    let out = members(&job.chunk, level, job.out);
                    if done.send((job.index, out, job.chunk)).is_err() {
                        return;
                    }
                })
            })
            .collect();
        Pool {
            jobs: Some(jobs),
            results,
            workers,
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Closing the queue ends the workers.
        self.jobs.take();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// A `Write` that gzips into `W`, compressing chunks on all cores while input keeps coming.
pub struct ParallelGzip<W: Write> {
    out: W,
    level: u32,
    /// Input not yet a whole chunk.
    pending: Vec<u8>,
    /// `None` on one core: chunks are compressed right away, in order.
    pool: Option<Pool>,
    max_in_flight: usize,
    /// The index the next chunk gets, and the index of the next chunk to write.
    submitted: usize,
    written: usize,
    /// Compressed chunks waiting for the ones before them.
    done: BTreeMap<usize, Vec<u8>>,
    /// Buffers of chunks and of members already written, kept for the next ones: fresh
    /// memory costs a page fault per 4 KiB, which was a tenth of `pack`'s time for an 8 MB
    /// binary. At most as many as are in flight.
    spare_chunks: Vec<Vec<u8>>,
    spare_outs: Vec<Vec<u8>>,
}

impl<W: Write> ParallelGzip<W> {
    /// At `level` (one of [`LEVELS`]), on all cores.
    pub fn new(out: W, level: u32) -> io::Result<Self> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self::with_threads(out, level, threads)
    }

    /// With `threads` workers (one: none, chunks are compressed as they fill). The output
    /// is the same for any number: only for measuring (`examples/gzip_levels.rs`) and tests.
    #[doc(hidden)]
    pub fn with_threads(out: W, level: u32, threads: usize) -> io::Result<Self> {
        super::Compression::Gzip
            .check_level(level)
            .map_err(|why| io::Error::new(io::ErrorKind::InvalidInput, why))?;
        Ok(ParallelGzip {
            out,
            level,
            pending: Vec::with_capacity(CHUNK),
            pool: (threads > 1).then(|| Pool::new(threads, level)),
            max_in_flight: threads * IN_FLIGHT_PER_WORKER,
            submitted: 0,
            written: 0,
            done: BTreeMap::new(),
            spare_chunks: Vec::new(),
            spare_outs: Vec::new(),
        })
    }

    /// Compresses what is left and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        // Chunk boundaries stay at multiples of CHUNK, however the input was written. The
        // rest is the last member; an empty input still gets one (empty) member, as a gzip
        // file has at least one.
        let rest = std::mem::take(&mut self.pending);
        if !rest.is_empty() || self.submitted == 0 {
            self.submit(rest)?;
        }
        while self.written < self.submitted {
            self.collect_one()?;
        }
        self.out.flush()?;
        Ok(self.out)
    }

    /// Hands `chunk` to a worker (or compresses it here on one core).
    fn submit(&mut self, chunk: Vec<u8>) -> io::Result<()> {
        let index = self.submitted;
        self.submitted += 1;
        let out = self.spare_outs.pop().unwrap_or_default();
        let Some(pool) = &self.pool else {
            let out = members(&chunk, self.level, out)?;
            self.out.write_all(&out)?;
            self.written += 1;
            self.spare_outs.push(out);
            self.spare_chunks.push(chunk);
            return Ok(());
        };
        let sent = pool
            .jobs
            .as_ref()
            .map(|jobs| jobs.send(Job { index, chunk, out }));
        if !matches!(sent, Some(Ok(()))) {
            return Err(io::Error::other("a compression worker stopped"));
        }
        while self.submitted - self.written > self.max_in_flight {
            self.collect_one()?;
        }
        Ok(())
    }

    /// Waits for one compressed chunk, then writes every chunk that is next in order.
    fn collect_one(&mut self) -> io::Result<()> {
        let pool = self.pool.as_ref().expect("only with workers");
        let (index, out, chunk) = pool
            .results
            .recv()
            .map_err(|_| io::Error::other("the compression workers stopped"))?;
        self.spare_chunks.push(chunk);
        self.done.insert(index, out?);
        while let Some(data) = self.done.remove(&self.written) {
            self.out.write_all(&data)?;
            self.written += 1;
            self.spare_outs.push(data);
        }
        Ok(())
    }
}

impl<W: Write> Write for ParallelGzip<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        while !rest.is_empty() {
            let take = (CHUNK - self.pending.len()).min(rest.len());
            self.pending.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.pending.len() == CHUNK {
                let next = match self.spare_chunks.pop() {
                    Some(mut spare) => {
                        spare.clear();
                        spare
                    }
                    None => Vec::with_capacity(CHUNK),
                };
                let chunk = std::mem::replace(&mut self.pending, next);
                self.submit(chunk)?;
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        // Flushing must not change chunk boundaries, so it only flushes what is written.
        self.out.flush()
    }
}

/// Bytes per piece of a chunk judged on its own: stored or compressed.
const PIECE: usize = 64 * 1024;
/// Samples taken from a piece to tell whether it compresses, and their size.
const SAMPLES: usize = 2;
const SAMPLE: usize = 4096;
/// A piece whose samples deflate to more than this share of their size (in percent) is
/// stored: compressing it would spend full effort to save almost nothing.
const STORE_ABOVE: usize = 97;
/// The longest stored block deflate allows.
const STORED_MAX: usize = 65535;

thread_local! {
    /// This thread's compressors, by level (making one costs more than compressing a
    /// sample). libdeflate keeps nothing from one call to the next, so what a compressor
    /// did before never changes its output.
    static COMPRESSORS: RefCell<BTreeMap<u32, Compressor>> = const { RefCell::new(BTreeMap::new()) };
}

/// Raw-deflates `data` at `level` (one of [`LEVELS`]) into the end of `out`.
fn deflate_into(out: &mut Vec<u8>, data: &[u8], level: u32) -> io::Result<()> {
    COMPRESSORS.with_borrow_mut(|compressors| {
        let c = match compressors.entry(level) {
            std::collections::btree_map::Entry::Occupied(c) => c.into_mut(),
            std::collections::btree_map::Entry::Vacant(v) => {
                let lvl = CompressionLvl::new(level as i32).map_err(|_| {
                    io::Error::new(io::ErrorKind::InvalidInput, format!("no level {level}"))
                })?;
                v.insert(Compressor::new(lvl))
            }
        };
        let at = out.len();
        out.resize(at + c.deflate_compress_bound(data.len()), 0);
        // The bound is libdeflate's worst case, so this cannot run out of room.
        let n = c
            .deflate_compress(data, &mut out[at..])
            .map_err(io::Error::other)?;
        out.truncate(at + n);
        Ok(())
    })
}

/// Whether deflate cannot shrink `piece` (already compressed data, random bytes, encrypted
/// assets): judged from [`SAMPLES`] parts of it, each deflated quickly (level 1) on its own.
/// A pure function of the piece's bytes — never of timing, threads or the machine — so the
/// output stays reproducible; it costs about an eighth of one level-1 pass over the piece.
fn incompressible(piece: &[u8]) -> io::Result<bool> {
    if piece.len() < 2 * SAMPLE * SAMPLES {
        return Ok(false);
    }
    let step = piece.len() / SAMPLES;
    let mut out = Vec::with_capacity(2 * SAMPLE);
    let mut packed = 0;
    for i in 0..SAMPLES {
        let at = i * step + (step - SAMPLE) / 2;
        out.clear();
        deflate_into(&mut out, &piece[at..at + SAMPLE], 1)?;
        packed += out.len();
    }
    Ok(packed * 100 > SAMPLES * SAMPLE * STORE_ABOVE)
}

/// Appends `data` as stored deflate blocks (RFC 1951 3.2.4: a header byte with BTYPE=00 and
/// BFINAL on the last, LEN, its complement, the bytes). Written by hand because a
/// compressor cannot be told to store a stretch without searching it first.
fn put_stored(out: &mut Vec<u8>, data: &[u8]) {
    let mut blocks = data.chunks(STORED_MAX).peekable();
    if blocks.peek().is_none() {
        // An empty final stored block.
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(block) = blocks.next() {
        out.push(u8::from(blocks.peek().is_none()));
        let len = block.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(block);
    }
}

/// Appends one gzip member holding `data`: stored, or deflated at `level`.
fn put_member(out: &mut Vec<u8>, data: &[u8], stored: bool, level: u32) -> io::Result<()> {
    out.extend_from_slice(&HEADER);
    if stored {
        put_stored(out, data);
    } else {
        deflate_into(out, data, level)?;
    }
    out.extend_from_slice(&libdeflater::crc32(data).to_le_bytes());
    // ISIZE is the length modulo 2^32 (RFC 1952); a member holds at most one chunk.
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    Ok(())
}

/// One chunk as gzip members: each run of [`PIECE`]s that do not compress
/// ([`incompressible`]) is a stored member, each run of pieces that do is compressed at
/// `level`. A chunk with nothing to store is one member. Written into `out` (emptied
/// first: a buffer of earlier members, reused).
fn members(chunk: &[u8], level: u32, mut out: Vec<u8>) -> io::Result<Vec<u8>> {
    let stored = chunk
        .chunks(PIECE)
        .map(incompressible)
        .collect::<io::Result<Vec<bool>>>()?;
    out.clear();
    out.reserve(chunk.len() / 2 + 4096);
    if chunk.is_empty() {
        put_member(&mut out, chunk, false, level)?;
        return Ok(out);
    }
    let mut start = 0;
    while start < chunk.len() {
        let kind = stored[start / PIECE];
        let mut end = start;
        while end < chunk.len() && stored[end / PIECE] == kind {
            end = (end + PIECE).min(chunk.len());
        }
        put_member(&mut out, &chunk[start..end], kind, level)?;
        start = end;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn gzip(data: &[u8], write_size: usize) -> Vec<u8> {
        let mut g = ParallelGzip::new(Vec::new(), LEVEL).unwrap();
        for piece in data.chunks(write_size.max(1)) {
            g.write_all(piece).unwrap();
        }
        g.finish().unwrap()
    }

    /// What a reader that reads every member gives (as gzip -d, Go's and Python's do).
    fn gunzip(gz: &[u8]) -> Vec<u8> {
        let mut back = Vec::new();
        flate2::read::MultiGzDecoder::new(gz)
            .read_to_end(&mut back)
            .unwrap();
        back
    }

    /// The members of `gz`, each checked and read on its own: (offset, data).
    fn split_members(gz: &[u8]) -> Vec<(usize, Vec<u8>)> {
        let mut members = Vec::new();
        let mut rest = gz;
        while !rest.is_empty() {
            let at = gz.len() - rest.len();
            assert_eq!(&rest[..10], &HEADER, "member at {at}");
            let mut reader = flate2::bufread::GzDecoder::new(rest);
            let mut data = Vec::new();
            reader.read_to_end(&mut data).unwrap();
            rest = reader.into_inner();
            members.push((at, data));
        }
        members
    }

    fn sample(len: usize) -> Vec<u8> {
        // Compressible but not trivial: a text-like pattern with a slowly changing seed.
        let mut x: u32 = 12345;
        (0..len)
            .map(|i| {
                x = x.wrapping_mul(1103515245).wrapping_add(12345);
                if i % 7 == 0 {
                    b'a' + ((x >> 16) % 26) as u8
                } else {
                    b"the quick brown fox "[i % 20]
                }
            })
            .collect()
    }

    #[test]
    fn round_trips_one_member_per_chunk() {
        for len in [0, 1, 1000, CHUNK - 1, CHUNK, CHUNK + 1, 12 * CHUNK + 17] {
            let data = sample(len);
            let gz = gzip(&data, 65536);
            assert_eq!(gunzip(&gz), data, "length {len}");
            let members = split_members(&gz);
            assert_eq!(members.len(), len.div_ceil(CHUNK).max(1), "length {len}");
            for (i, (_, part)) in members.iter().enumerate() {
                let from = i * CHUNK;
                assert_eq!(part[..], data[from..(from + CHUNK).min(len)], "member {i}");
            }
        }
    }

    #[test]
    fn output_does_not_depend_on_write_sizes_or_threads() {
        let data = sample(11 * CHUNK + 99);
        let a = gzip(&data, 1 << 13);
        let b = gzip(&data, 1 << 22);
        assert_eq!(a, b);
        for threads in [1, 2, 4, 7] {
            let mut g = ParallelGzip::with_threads(Vec::new(), LEVEL, threads).unwrap();
            g.write_all(&data).unwrap();
            assert_eq!(g.finish().unwrap(), a, "{threads} threads");
        }
    }

    #[test]
    fn the_level_is_the_users_and_only_1_to_12_are_levels() {
        let data = sample(3 * CHUNK);
        let size = |level| {
            let mut g = ParallelGzip::with_threads(Vec::new(), level, 2).unwrap();
            g.write_all(&data).unwrap();
            let gz = g.finish().unwrap();
            assert_eq!(gunzip(&gz), data, "level {level}");
            gz.len()
        };
        assert!(size(1) > size(12), "{} {}", size(1), size(12));
        for level in [0, 13, 100] {
            let refused = ParallelGzip::new(Vec::new(), level).err().unwrap();
            assert_eq!(refused.kind(), io::ErrorKind::InvalidInput, "{level}");
        }
    }

    /// Bytes no compressor can shrink, from a fixed seed.
    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn incompressible_pieces_are_stored_and_the_rest_compressed() {
        // Compressible, noise, compressible, with the noise starting and ending inside a
        // chunk (as data appended to a binary does): the noise is stored (its member is the
        // input plus 5 bytes per stored block and 18 of gzip framing), the rest shrinks.
        let head = 2 * CHUNK + 300 * 1024 + 17;
        let mut data = sample(head);
        data.extend(noise(3 * CHUNK, 7));
        data.extend(sample(2 * CHUNK + 5));
        assert!(!incompressible(&data[..PIECE]).unwrap());
        assert!(incompressible(&data[head..head + PIECE]).unwrap());
        let noise_chunk = members(&data[3 * CHUNK..4 * CHUNK], LEVEL, Vec::new()).unwrap();
        let blocks = CHUNK.div_ceil(STORED_MAX);
        assert_eq!(noise_chunk.len(), CHUNK + 5 * blocks + 18);
        let gz = gzip(&data, 1 << 16);
        let compressible = gzip(&sample(4 * CHUNK + 300 * 1024), 1 << 16).len();
        assert!(gz.len() < 3 * CHUNK + compressible + 8192, "{}", gz.len());
        assert_eq!(gunzip(&gz), data);
        // The chunk where the noise starts is two members: compressed up to the first
        // piece that is all noise, then stored.
        let lens: Vec<usize> = split_members(&gz).iter().map(|m| m.1.len()).collect();
        assert_eq!(lens[2..4], [5 * PIECE, CHUNK - 5 * PIECE], "{lens:?}");
        // Ending in noise: the last member is stored.
        let tail = [sample(CHUNK + 1000), noise(CHUNK / 2, 9)].concat();
        assert_eq!(gunzip(&gzip(&tail, 4096)), tail);
        // Still independent of the threads and write sizes.
        for threads in [1, 3] {
            let mut g = ParallelGzip::with_threads(Vec::new(), LEVEL, threads).unwrap();
            g.write_all(&data).unwrap();
            assert_eq!(g.finish().unwrap(), gz, "{threads} threads");
        }
        assert_eq!(gzip(&data, 777), gz);
    }

    #[test]
    fn a_stored_member_of_nothing_is_still_a_member() {
        let mut out = Vec::new();
        put_member(&mut out, b"", true, LEVEL).unwrap();
        assert_eq!(gunzip(&out), b"");
        let mut out = Vec::new();
        put_member(&mut out, &noise(3 * STORED_MAX + 1, 5), true, LEVEL).unwrap();
        assert_eq!(gunzip(&out), noise(3 * STORED_MAX + 1, 5));
    }

    #[test]
    fn header_has_no_name_and_no_time() {
        let gz = gzip(b"x", 1);
        assert_eq!(&gz[..10], &HEADER);
    }
}
