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
//! The backend (zlib-rs, through flate2 pinned in Cargo.toml) and [`LEVEL`] are part of
//! the image digests: changing either changes every layer digest, which the golden-digest
//! test in `tests/` catches.

use std::io::{self, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use flate2::{Compress, Compression, FlushCompress, Status};

/// The compression level: the same as `gzip -6` (the default of gzip and zlib).
pub const LEVEL: u32 = 6;
/// Input bytes per independently compressed chunk. Part of the output format.
pub const CHUNK: usize = 1 << 20;
/// Deflate's window: how much preceding input primes each chunk.
const DICTIONARY: usize = 32 * 1024;
/// Chunks gathered before they are compressed together.
const BATCH: usize = 8;

/// gzip header: magic, CM=deflate, no flags, MTIME=0, XFL=0, OS=255 (unknown).
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// A `Write` that gzips into `W`, compressing batches of chunks on all cores.
pub struct ParallelGzip<W: Write> {
    out: W,
    level: u32,
    /// Buffered input: whole chunks not yet compressed, plus a partial one.
    pending: Vec<u8>,
    /// The last [`DICTIONARY`] bytes of input already compressed.
    tail: Vec<u8>,
    crc: crc32fast::Hasher,
    len: u64,
    threads: usize,
}

impl<W: Write> ParallelGzip<W> {
    pub fn new(out: W) -> io::Result<Self> {
        Self::with_level(out, LEVEL)
    }

    /// Like [`ParallelGzip::new`] with another level: only for measuring (`benches/`);
    /// images always use [`LEVEL`].
    #[doc(hidden)]
    pub fn with_level(mut out: W, level: u32) -> io::Result<Self> {
        out.write_all(&HEADER)?;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(ParallelGzip {
            out,
            level,
            pending: Vec::with_capacity(CHUNK * BATCH),
            tail: Vec::new(),
            crc: crc32fast::Hasher::new(),
            len: 0,
            threads,
        })
    }

    /// Compresses what is left, writes the trailer and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        // Chunk boundaries stay at multiples of CHUNK, however the input was written.
        self.compress_whole_chunks()?;
        let rest = std::mem::take(&mut self.pending);
        let last = deflate(&rest, &self.tail, true, self.level)?;
        self.out.write_all(&last)?;
        self.out
            .write_all(&self.crc.clone().finalize().to_le_bytes())?;
        // ISIZE is the input length modulo 2^32 (RFC 1952).
        self.out.write_all(&(self.len as u32).to_le_bytes())?;
        self.out.flush()?;
        Ok(self.out)
    }

    /// Compresses every whole chunk in `pending`, in parallel, and writes them in order.
    fn compress_whole_chunks(&mut self) -> io::Result<()> {
        let whole = self.pending.len() / CHUNK;
        if whole == 0 {
            return Ok(());
        }
        let data = &self.pending[..whole * CHUNK];
        let tail = &self.tail;
        let level = self.level;
        let dictionary = |i: usize| -> &[u8] {
            if i == 0 {
                tail
            } else {
                &data[i * CHUNK - DICTIONARY..i * CHUNK]
            }
        };
        let results: Vec<Mutex<Option<io::Result<Vec<u8>>>>> =
            (0..whole).map(|_| Mutex::new(None)).collect();
        let next = AtomicUsize::new(0);
        let work = || loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= whole {
                break;
            }
            let chunk = &data[i * CHUNK..(i + 1) * CHUNK];
            let out = deflate(chunk, dictionary(i), false, level);
            *results[i]
                .lock()
                .expect("no worker panics while holding it") = Some(out);
        };
        let workers = self.threads.min(whole);
        if workers <= 1 {
            work();
        } else {
            std::thread::scope(|s| {
                for _ in 0..workers {
                    s.spawn(work);
                }
            });
        }
        for slot in results {
            let compressed = slot
                .into_inner()
                .expect("workers finished")
                .expect("every chunk ran")?;
            self.out.write_all(&compressed)?;
        }
        self.tail = data[data.len() - DICTIONARY..].to_vec();
        self.pending.drain(..whole * CHUNK);
        Ok(())
    }
}

impl<W: Write> Write for ParallelGzip<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.crc.update(buf);
        self.len += buf.len() as u64;
        self.pending.extend_from_slice(buf);
        if self.pending.len() >= CHUNK * BATCH {
            self.compress_whole_chunks()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        // Flushing must not change chunk boundaries, so it only flushes what is written.
        self.out.flush()
    }
}

/// Raw-deflates one chunk, primed with `dictionary`; `last` ends the stream.
fn deflate(input: &[u8], dictionary: &[u8], last: bool, level: u32) -> io::Result<Vec<u8>> {
    let mut c = Compress::new(Compression::new(level), false);
    if !dictionary.is_empty() {
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
        for len in [
            0,
            1,
            1000,
            CHUNK - 1,
            CHUNK,
            CHUNK + 1,
            3 * CHUNK * BATCH / 2 + 17,
        ] {
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
        let data = sample(CHUNK * BATCH + 3 * CHUNK + 99);
        let a = gzip(&data, 1 << 13);
        let b = gzip(&data, 1 << 22);
        assert_eq!(a, b);
        let mut single = ParallelGzip::new(Vec::new()).unwrap();
        single.threads = 1;
        single.write_all(&data).unwrap();
        assert_eq!(single.finish().unwrap(), a);
    }

    #[test]
    fn header_has_no_name_and_no_time() {
        let gz = gzip(b"x", 1);
        assert_eq!(&gz[..10], &HEADER);
    }
}
