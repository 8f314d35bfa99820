//! Measures the layer compressor at each level on one file: time and size, next to what
//! `gzip -6` gives. Used to choose `layers::gzip::LEVEL`; see benches/pack.sh.
//! Usage: cargo run --release --example gzip_levels -- FILE
use std::io::Write;
use std::time::Instant;

fn main() {
    let path = std::env::args().nth(1).expect("usage: gzip_levels FILE");
    let data = std::fs::read(&path).unwrap();
    for level in 1..=9 {
        let start = Instant::now();
        let mut gz = microimage::layers::gzip::ParallelGzip::with_level(Vec::new(), level).unwrap();
        gz.write_all(&data).unwrap();
        let out = gz.finish().unwrap();
        println!(
            "level {level}: {:>10} bytes in {:.3} s",
            out.len(),
            start.elapsed().as_secs_f64()
        );
    }
}
