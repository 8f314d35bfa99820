//! `copy-bench`: times `memcpy` and `memmove` (what `ptr::copy_nonoverlapping` and
//! `ptr::copy` call when the length is not known at compile time) at several sizes, in the
//! cases that tell copy routines apart: both ends 64-byte aligned, the destination 1 byte
//! off (and the source aligned), and overlapping moves whose source and destination are 1
//! byte apart, to a lower address (front to back) and to a higher one (back to front).
//! Prints one line per case: `case=NAME bytes=N ns=NANOSECONDS_PER_COPY`, the best of five
//! timed repetitions, each moving about 256 MiB (at most 2,000,000 copies).
use std::hint::black_box;
use std::ptr;
use std::time::Instant;

/// A 64-byte-aligned buffer of `len` bytes (with room to shift by a few bytes).
struct Buffer {
    bytes: Vec<u8>,
    start: usize,
}

impl Buffer {
    fn new(len: usize) -> Buffer {
        let bytes: Vec<u8> = (0..len + 256).map(|i| i as u8).collect();
        let start = bytes.as_ptr().align_offset(64);
        Buffer { bytes, start }
    }
    fn at(&mut self, offset: usize) -> *mut u8 {
        unsafe { self.bytes.as_mut_ptr().add(self.start + offset) }
    }
}

fn time(bytes: usize, mut copy: impl FnMut()) -> f64 {
    let copies = ((256usize << 20) / bytes).clamp(256, 2_000_000);
    for _ in 0..copies / 10 {
        copy();
    }
    let mut best = f64::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        for _ in 0..copies {
            copy();
        }
        best = best.min(start.elapsed().as_nanos() as f64 / copies as f64);
    }
    best
}

fn main() {
    let sizes = [16usize, 64, 256, 1024, 4096, 65536, 1 << 20];
    for &n in &sizes {
        let mut src = Buffer::new(n);
        let mut dst = Buffer::new(n);
        let len = black_box(n);
        let cases: [(&str, usize, usize); 3] = [
            ("memcpy-aligned", 0, 0),
            ("memcpy-dst+1", 0, 1),
            ("memcpy-src+1-dst+33", 1, 33),
        ];
        for (name, s, d) in cases {
            let (from, to) = (src.at(s), dst.at(d));
            let ns = time(n, || unsafe {
                ptr::copy_nonoverlapping(black_box(from as *const u8), black_box(to), len)
            });
            println!("case={name} bytes={n} ns={ns:.1}");
        }
        // Overlapping moves 1 byte apart, within one buffer.
        let mut both = Buffer::new(n + 64);
        let (low, high) = (both.at(0), both.at(1));
        let ns = time(n, || unsafe {
            ptr::copy(black_box(high as *const u8), black_box(low), len)
        });
        println!("case=memmove-down-1 bytes={n} ns={ns:.1}");
        let ns = time(n, || unsafe {
            ptr::copy(black_box(low as *const u8), black_box(high), len)
        });
        println!("case=memmove-up-1 bytes={n} ns={ns:.1}");
    }
}
