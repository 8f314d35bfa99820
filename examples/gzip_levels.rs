//! Measures the layer compressor at each level on one file, on one core and on all: time
//! and size, next to zlib (flate2's zlib-rs, one stream) at levels 4, 6 and 9 and the
//! system's `gzip -6` and `gzip -9`. Used to choose `layers::gzip::LEVEL`; see docs/speed.md.
//! Usage: cargo run --release --example gzip_levels -- FILE...
use std::io::Write;
use std::time::Instant;

use microimage::layers::gzip::{ParallelGzip, LEVELS};

/// The best of three runs of `f`: (bytes out, seconds).
fn best(f: impl Fn() -> usize) -> (usize, f64) {
    let mut fastest = f64::MAX;
    let mut size = 0;
    for _ in 0..3 {
        let start = Instant::now();
        size = f();
        fastest = fastest.min(start.elapsed().as_secs_f64());
    }
    (size, fastest)
}

fn main() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    for path in std::env::args().skip(1) {
        let data = std::fs::read(&path).unwrap();
        println!("{path}: {} bytes; {cores} cores", data.len());
        let ours = |level: u32, threads: usize| {
            let mut gz = ParallelGzip::with_threads(Vec::new(), level, threads).unwrap();
            gz.write_all(&data).unwrap();
            gz.finish().unwrap().len()
        };
        for level in LEVELS {
            let (size, one) = best(|| ours(level, 1));
            let (_, all) = best(|| ours(level, cores));
            println!("libdeflate members level {level:>2}: {size:>10} bytes, {one:.3} s on one core, {all:.3} s on {cores}");
        }
        for level in [4, 6, 9] {
            let (size, one) = best(|| {
                let mut gz =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
                gz.write_all(&data).unwrap();
                gz.finish().unwrap().len()
            });
            println!(
                "zlib-rs one stream level {level}:    {size:>10} bytes, {one:.3} s on one core"
            );
        }
        for level in ["-6", "-9"] {
            let (size, one) = best(|| {
                let out = std::process::Command::new("gzip")
                    .args(["-c", "-n", level, &path])
                    .output()
                    .expect("gzip runs");
                out.stdout.len()
            });
            println!(
                "gzip {level}:                       {size:>10} bytes, {one:.3} s on one core"
            );
        }
    }
}
