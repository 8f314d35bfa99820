//! `memory-bench burst [THREADS] [ROUNDS]`: a service's cache in bursts. THREADS workers
//! (default 4) each fill a map of small strings and vectors, keep a tenth of it, drop the
//! rest, ROUNDS times (default 6); then every worker is gone, what they kept is dropped, and
//! nothing is live. The program then idles — no allocator call — and reads its own resident
//! set size (VmRSS) after 3 s. Prints the wall time of the work, the peak RSS (VmHWM) and the
//! RSS after the idle wait, so a run from a container image compares alike.
//!
//! `memory-bench idle`: what a small program holds at rest: prints its RSS 200 ms after
//! start, having allocated a few strings.
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A field of /proc/self/status in KiB.
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// One worker: ROUNDS times a map of `entries` keys, each with a vector of 0–23 numbers;
/// a tenth is kept (scattered over the memory the round used), the rest dropped.
fn worker(id: usize, rounds: usize, entries: usize) -> Vec<(String, Vec<u32>)> {
    let mut kept = Vec::new();
    let mut x = (id as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for round in 0..rounds {
        let mut cache: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for i in 0..entries {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let key = format!("user:{id}:{round}:{i}:{}", x >> 48);
            let value: Vec<u32> = (0..(x >> 59) as u32 % 24).map(|k| k ^ i as u32).collect();
            cache.insert(key, value);
        }
        let keep: Vec<String> = cache.keys().step_by(10).cloned().collect();
        for k in keep {
            let v = cache.remove(&k).unwrap();
            kept.push((k, v));
        }
        drop(cache);
    }
    kept
}

fn burst(threads: usize, rounds: usize) {
    let start = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|id| std::thread::spawn(move || worker(id, rounds, 400_000).len()))
        .collect();
    let count: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    let seconds = start.elapsed().as_secs_f64();
    let peak = status_kib("VmHWM:");
    let freed = status_kib("VmRSS:");
    std::thread::sleep(Duration::from_secs(3));
    let idle = status_kib("VmRSS:");
    println!(
        "seconds={seconds:.3} peak_rss_kib={peak} freed_rss_kib={freed} idle_rss_kib={idle} kept={count}"
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize, default: usize| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    match args.first().map(String::as_str) {
        Some("burst") => burst(num(1, 4), num(2, 6)),
        Some("idle") => {
            let words: Vec<String> = (0..100).map(|i| format!("word {i}")).collect();
            std::thread::sleep(Duration::from_millis(200));
            println!("rss_kib={} words={}", status_kib("VmRSS:"), words.len());
        }
        _ => {
            eprintln!("usage: memory-bench burst [THREADS] [ROUNDS] | idle");
            std::process::exit(2);
        }
    }
}
