//! Deterministic, parallel gzip (RFC 1952) for layer blobs.
//!
//! Written by hand on top of flate2's raw `Compress` because no crate offers what we need
//! together: output that is a pure function of the input bytes (not of the thread count,
//! the write sizes or the machine) *and* compression spread over all cores, as `pigz` and
//! umoci's pgzip do. The scheme is pigz's: the input is cut at fixed 1 MiB boundaries; each
//! chunk is deflated on its own, primed with the previous 32 KiB of input as dictionary so
//! the ratio matches a single stream, and ended with a sync flush so the raw deflate pieces
//! concatenate into one valid stream; the last chunk carries the final block. The gzip
//! header has no name, no mtime and a fixed OS byte; the trailer carries the CRC-32 and
//! length of the whole input.
//!
//! A 64 KiB piece of a chunk that deflate cannot shrink (judged from samples of its own
//! bytes, see [`incompressible`]) is written as stored blocks instead: incompressible data
//! — embedded archives, media, model weights, random bytes — then costs a copy, as in
//! umoci's pgzip, rather than a full search that saves nothing.
//!
//! The backend (zlib-rs, through flate2 pinned in Cargo.toml) and [`LEVEL`] are part of
//! the image digests: changing either changes every layer digest, which the golden-digest
//! test in `tests/` catches.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};

use flate2::{Compress, Compression, FlushCompress, Status};

/// The compression level. 4, not gzip's default 6: on zlib-rs, level 6 spends about 40%
/// more time for layers 1-3% smaller (a 1.8 MB release binary: 918,774 bytes at 4,
/// 910,148 at 6; a 90 MB Go binary: 28.35 MB against 27.63 MB, 0.85 s against 1.20 s on
/// one core), which made `pack` slower than umoci's pgzip. At 4 it is as fast as umoci or
/// faster (benches/pack.sh) and its layers are still no larger than umoci's.
/// `examples/gzip_levels.rs` measures every level on a file.
pub const LEVEL: u32 = 4;
/// Input bytes per independently compressed chunk. Part of the output format.
pub const CHUNK: usize = 1 << 20;
/// Deflate's window: how much preceding input primes each chunk.
const DICTIONARY: usize = 32 * 1024;
/// Chunks handed to the workers and not yet written, per worker: enough to keep every core
/// busy while the writing thread reads, hashes and writes.
const IN_FLIGHT_PER_WORKER: usize = 2;

/// gzip header: magic, CM=deflate, no flags, MTIME=0, XFL=0, OS=255 (unknown).
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// One chunk to deflate.
struct Job {
    index: usize,
    chunk: Vec<u8>,
    dictionary: Vec<u8>,
    last: bool,
}

/// Worker threads that deflate chunks as they come, while the writing thread goes on
/// reading and hashing (a pipeline, as pigz's): results come back tagged with their index
/// and are written in order.
struct Pool {
    jobs: Option<Sender<Job>>,
    results: Receiver<(usize, io::Result<Vec<u8>>)>,
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
                    let out = deflate(&job.chunk, &job.dictionary, job.last, level);
                    if done.send((job.index, out)).is_err() {
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
    /// The last [`DICTIONARY`] bytes of the chunk before `pending`.
    tail: Vec<u8>,
    crc: crc32fast::Hasher,
    len: u64,
    /// `None` on one core: chunks are deflated right away, in order.
    pool: Option<Pool>,
    max_in_flight: usize,
    /// The index the next chunk gets, and the index of the next chunk to write.
    submitted: usize,
    written: usize,
    /// Deflated chunks waiting for the ones before them.
    done: BTreeMap<usize, Vec<u8>>,
}

impl<W: Write> ParallelGzip<W> {
    pub fn new(out: W) -> io::Result<Self> {
        Self::with_level(out, LEVEL)
    }

    /// Like [`ParallelGzip::new`] with another level: only for measuring (`benches/`);
    /// images always use [`LEVEL`].
    #[doc(hidden)]
    pub fn with_level(out: W, level: u32) -> io::Result<Self> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self::with_threads(out, level, threads)
    }

    /// With `threads` workers (one: none, chunks are deflated as they fill).
    fn with_threads(mut out: W, level: u32, threads: usize) -> io::Result<Self> {
        out.write_all(&HEADER)?;
        Ok(ParallelGzip {
            out,
            level,
            pending: Vec::with_capacity(CHUNK),
            tail: Vec::new(),
            crc: crc32fast::Hasher::new(),
            len: 0,
            pool: (threads > 1).then(|| Pool::new(threads, level)),
            max_in_flight: threads * IN_FLIGHT_PER_WORKER,
            submitted: 0,
            written: 0,
            done: BTreeMap::new(),
        })
    }

    /// Compresses what is left, writes the trailer and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        // Chunk boundaries stay at multiples of CHUNK, however the input was written: the
        // rest (possibly empty) is the last chunk, which ends the stream.
        let rest = std::mem::take(&mut self.pending);
        self.submit(rest, true)?;
        while self.written < self.submitted {
            self.collect_one()?;
        }
        let ParallelGzip {
            mut out, crc, len, ..
        } = self;
        out.write_all(&crc.finalize().to_le_bytes())?;
        // ISIZE is the input length modulo 2^32 (RFC 1952).
        out.write_all(&(len as u32).to_le_bytes())?;
        out.flush()?;
        Ok(out)
    }

    /// Hands `chunk` to a worker (or deflates it here on one core), primed with the end of
    /// the chunk before it.
    fn submit(&mut self, chunk: Vec<u8>, last: bool) -> io::Result<()> {
        let dictionary = std::mem::take(&mut self.tail);
        if !last {
            self.tail = chunk[chunk.len() - DICTIONARY..].to_vec();
        }
        let index = self.submitted;
        self.submitted += 1;
        let Some(pool) = &self.pool else {
            let out = deflate(&chunk, &dictionary, last, self.level)?;
            self.out.write_all(&out)?;
            self.written += 1;
            return Ok(());
        };
        let job = Job {
            index,
            chunk,
            dictionary,
            last,
        };
        let sent = pool.jobs.as_ref().map(|jobs| jobs.send(job));
        if !matches!(sent, Some(Ok(()))) {
            return Err(io::Error::other("a compression worker stopped"));
        }
        while self.submitted - self.written > self.max_in_flight {
            self.collect_one()?;
        }
        Ok(())
    }

    /// Waits for one deflated chunk, then writes every chunk that is next in order.
    fn collect_one(&mut self) -> io::Result<()> {
        let pool = self.pool.as_ref().expect("only with workers");
        let (index, out) = pool
            .results
            .recv()
            .map_err(|_| io::Error::other("the compression workers stopped"))?;
        self.done.insert(index, out?);
        while let Some(data) = self.done.remove(&self.written) {
            self.out.write_all(&data)?;
            self.written += 1;
        }
        Ok(())
    }
}

impl<W: Write> Write for ParallelGzip<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.crc.update(buf);
        self.len += buf.len() as u64;
        let mut rest = buf;
        while !rest.is_empty() {
            let take = (CHUNK - self.pending.len()).min(rest.len());
            self.pending.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.pending.len() == CHUNK {
                let chunk = std::mem::replace(&mut self.pending, Vec::with_capacity(CHUNK));
                self.submit(chunk, false)?;
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        // Flushing must not change chunk boundaries, so it only flushes what is written.
        self.out.flush()
    }
}

/// Bytes per piece of a chunk judged on its own: stored or deflated.
const PIECE: usize = 64 * 1024;
/// Samples taken from a piece to tell whether it compresses, and their size.
const SAMPLES: usize = 2;
const SAMPLE: usize = 4096;
/// A piece whose samples deflate to more than this share of their size (in percent) is
/// stored: deflating it would spend full effort to save almost nothing.
const STORE_ABOVE: usize = 97;
/// The longest stored block deflate allows.
const STORED_MAX: usize = 65535;

/// Whether deflate cannot shrink `piece` (already compressed data, random bytes, encrypted
/// assets): judged from [`SAMPLES`] parts of it, each deflated quickly (level 1) on its own.
/// A pure function of the piece's bytes — never of timing, threads or the machine — so the
/// output stays reproducible; it costs about an eighth of one level-1 pass over the piece.
fn incompressible(piece: &[u8]) -> io::Result<bool> {
    if piece.len() < 2 * SAMPLE * SAMPLES {
        return Ok(false);
    }
    thread_local! {
        // One compressor per thread, reset for each sample (making one costs more than
        // compressing a sample).
        static SAMPLER: std::cell::RefCell<(Compress, Vec<u8>)> = std::cell::RefCell::new((
            Compress::new(Compression::fast(), false),
            Vec::with_capacity(2 * SAMPLE),
        ));
    }
    let step = piece.len() / SAMPLES;
    SAMPLER.with_borrow_mut(|(c, out)| {
        let mut packed = 0;
        for i in 0..SAMPLES {
            let at = i * step + (step - SAMPLE) / 2;
            packed += sample_size(c, out, &piece[at..at + SAMPLE])?;
        }
        Ok(packed * 100 > SAMPLES * SAMPLE * STORE_ABOVE)
    })
}

/// The size of `sample` deflated at level 1 by `c`, reset first: a function of the sample
/// alone, whatever `c` compressed before (the tests check it against a new compressor).
fn sample_size(c: &mut Compress, out: &mut Vec<u8>, sample: &[u8]) -> io::Result<usize> {
    c.reset();
    out.clear();
    out.reserve(2 * sample.len() + 64);
    // Room for deflate's worst case (stored blocks), so one call always finishes.
    let status = c
        .compress_vec(sample, out, FlushCompress::Finish)
        .map_err(io::Error::other)?;
    Ok(if status == Status::StreamEnd {
        out.len()
    } else {
        // Not finished (cannot happen with that room): counted as not shrinking, and the
        // next sample starts from a new compressor.
        *c = Compress::new(Compression::fast(), false);
        2 * sample.len()
    })
}

/// Appends `data` as stored deflate blocks (RFC 1951 3.2.4: a header byte with BFINAL and
/// BTYPE=00, LEN, its complement, the bytes). Written by hand because a deflater cannot be
/// told to store one stretch and compress the next while keeping its output a function of
/// the input alone; the stream is byte-aligned here (after a sync flush, or at a chunk's
/// start), which stored blocks need.
fn put_stored(out: &mut Vec<u8>, data: &[u8], last: bool) {
    let mut blocks = data.chunks(STORED_MAX).peekable();
    while let Some(block) = blocks.next() {
        out.push(u8::from(last && blocks.peek().is_none()));
        let len = block.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(block);
    }
}

/// Raw-deflates one chunk, primed with `dictionary` (the 32 KiB before it); `last` ends the
/// stream. Each [`PIECE`] of the chunk that does not compress ([`incompressible`]) is
/// stored, at the cost of a copy; runs of pieces that do are deflated together, primed with
/// the 32 KiB before them. A chunk with nothing to store is one deflate run, as it always
/// was.
fn deflate(input: &[u8], dictionary: &[u8], last: bool, level: u32) -> io::Result<Vec<u8>> {
    let stored = input
        .chunks(PIECE)
        .map(incompressible)
        .collect::<io::Result<Vec<bool>>>()?;
    if !stored.contains(&true) {
        return deflate_run(input, dictionary, last, level);
    }
    let mut out = Vec::with_capacity(input.len() / 2 + 4096);
    let mut start = 0;
    while start < input.len() {
        let kind = stored[start / PIECE];
        let mut end = start;
        while end < input.len() && stored[end / PIECE] == kind {
            end = (end + PIECE).min(input.len());
        }
        let ends_stream = last && end == input.len();
        if kind {
            put_stored(&mut out, &input[start..end], ends_stream);
        } else {
            // The 32 KiB of the stream before `start`: the end of the chunk's dictionary,
            // then what of this chunk precedes it.
            let from_chunk = &input[start.saturating_sub(DICTIONARY)..start];
            let mut primer = dictionary[dictionary
                .len()
                .saturating_sub(DICTIONARY - from_chunk.len())..]
                .to_vec();
            primer.extend_from_slice(from_chunk);
            out.extend_from_slice(&deflate_run(
                &input[start..end],
                &primer,
                ends_stream,
                level,
            )?);
        }
        start = end;
    }
    Ok(out)
}

/// Raw-deflates `input` at `level`, primed with `dictionary`; `last` ends the stream,
/// otherwise a sync flush leaves it byte-aligned.
fn deflate_run(input: &[u8], dictionary: &[u8], last: bool, level: u32) -> io::Result<Vec<u8>> {
    let mut c = Compress::new(Compression::new(level), false);
    if level > 0 && !dictionary.is_empty() {
        c.set_dictionary(dictionary).map_err(io::Error::other)?;
    }
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut out = Vec::with_capacity(input.len() / 2 + 4096);
    loop {
        if out.capacity() - out.len() < 4096 {
            out.reserve(out.capacity().max(4096));
        }
        let consumed = c.total_in() as usize;
        let status = c
            .compress_vec(&input[consumed..], &mut out, flush)
            .map_err(io::Error::other)?;
        let all_in = c.total_in() as usize == input.len();
        match status {
            Status::StreamEnd => break,
            // A sync flush is complete once all input is in and output space was left over.
            Status::Ok | Status::BufError if !last && all_in && out.len() < out.capacity() => break,
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn gzip(data: &[u8], write_size: usize) -> Vec<u8> {
        let mut g = ParallelGzip::new(Vec::new()).unwrap();
        for piece in data.chunks(write_size.max(1)) {
            g.write_all(piece).unwrap();
        }
        g.finish().unwrap()
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
    fn round_trips_through_a_standard_decoder() {
        for len in [0, 1, 1000, CHUNK - 1, CHUNK, CHUNK + 1, 12 * CHUNK + 17] {
            let data = sample(len);
            let gz = gzip(&data, 65536);
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&gz[..])
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, data, "length {len}");
        }
    }

    #[test]
    fn output_does_not_depend_on_write_sizes_or_threads() {
        let data = sample(11 * CHUNK + 99);
        let a = gzip(&data, 1 << 13);
        let b = gzip(&data, 1 << 22);
        assert_eq!(a, b);
        for threads in [1, 2, 7] {
            let mut g = ParallelGzip::with_threads(Vec::new(), LEVEL, threads).unwrap();
            g.write_all(&data).unwrap();
            assert_eq!(g.finish().unwrap(), a, "{threads} threads");
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
    fn incompressible_pieces_are_stored_and_the_rest_deflated() {
        // Compressible, noise, compressible, with the noise starting and ending inside a
        // chunk (as data appended to a binary does): the noise is stored (its deflate output
        // is the input plus 5 bytes per stored block), the rest shrinks.
        let head = 2 * CHUNK + 300 * 1024 + 17;
        let mut data = sample(head);
        data.extend(noise(3 * CHUNK, 7));
        data.extend(sample(2 * CHUNK + 5));
        assert!(!incompressible(&data[..PIECE]).unwrap());
        assert!(incompressible(&data[head..head + PIECE]).unwrap());
        let noise_chunk = deflate(
            &data[3 * CHUNK..4 * CHUNK],
            &data[..DICTIONARY],
            false,
            LEVEL,
        )
        .unwrap();
        let blocks = CHUNK.div_ceil(STORED_MAX);
        assert!(
            noise_chunk.len() <= CHUNK + 5 * blocks + 5,
            "{}",
            noise_chunk.len()
        );
        let gz = gzip(&data, 1 << 16);
        let compressible = gzip(&sample(4 * CHUNK + 300 * 1024), 1 << 16).len();
        assert!(gz.len() < 3 * CHUNK + compressible + 8192, "{}", gz.len());
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
        // Ending in noise: the last stored block ends the stream.
        let tail = [sample(CHUNK + 1000), noise(CHUNK / 2, 9)].concat();
        let gz_tail = gzip(&tail, 4096);
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&gz_tail[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, tail);
        // Still independent of the threads and write sizes.
        for threads in [1, 3] {
            let mut g = ParallelGzip::with_threads(Vec::new(), LEVEL, threads).unwrap();
            g.write_all(&data).unwrap();
            assert_eq!(g.finish().unwrap(), gz, "{threads} threads");
        }
        assert_eq!(gzip(&data, 777), gz);
    }

    #[test]
    fn a_reused_sampler_measures_like_a_new_one() {
        // Pieces are judged on whichever worker thread takes them, by that thread's reused
        // compressor: what it compressed before must not change a size.
        let text = sample(3 * SAMPLE);
        let rand = noise(3 * SAMPLE, 3);
        let samples = [
            &text[..SAMPLE],
            &rand[..SAMPLE],
            &text[SAMPLE..2 * SAMPLE],
            &rand[100..100 + SAMPLE],
            &text[..SAMPLE],
        ];
        let fresh = |s: &[u8]| {
            let mut c = Compress::new(Compression::fast(), false);
            sample_size(&mut c, &mut Vec::new(), s).unwrap()
        };
        let mut reused = Compress::new(Compression::fast(), false);
        let mut out = Vec::new();
        for order in [[0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [1, 1, 0, 3, 2]] {
            for i in order {
                assert_eq!(
                    sample_size(&mut reused, &mut out, samples[i]).unwrap(),
                    fresh(samples[i]),
                    "sample {i} in order {order:?}"
                );
            }
        }
    }

    #[test]
    fn header_has_no_name_and_no_time() {
        let gz = gzip(b"x", 1);
        assert_eq!(&gz[..10], &HEADER);
    }
}
