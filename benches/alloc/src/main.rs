//! `alloc-bench THREADS [ROUNDS]`: ROUNDS rounds split over THREADS threads; each round
//! builds a JSON document of 200 items (strings, numbers, nested objects and arrays),
//! writes it out, parses it back and sorts its keys' strings — the many small allocations,
//! copies and frees of a typical service. Prints the wall time of the work (not of the
//! process start, so it can be run from a container image alike) and the peak RSS.
use serde_json::{json, Value};

fn round(seed: u64, r: usize) -> usize {
    let mut x = seed.wrapping_add(r as u64);
    let mut items = Vec::with_capacity(200);
    for i in 0..200 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let tags: Vec<Value> = (0..(x % 6))
            .map(|k| json!(format!("tag-{k}-{}", x % 97)))
            .collect();
        items.push(json!({
            "id": i,
            "name": format!("item {i} of round {r}"),
            "price": (x % 10_000) as f64 / 100.0,
            "tags": tags,
            "meta": {"seed": x, "ok": x % 2 == 0, "note": "x".repeat((x % 40) as usize)},
        }));
    }
    let doc = json!({"round": r, "items": items});
    let text = serde_json::to_string(&doc).unwrap();
    let back: Value = serde_json::from_str(&text).unwrap();
    let mut names: Vec<String> = back["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    text.len() + names.len()
}

/// Peak resident set size in KiB (VmHWM).
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let threads: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2000);
    let start = std::time::Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            std::thread::spawn(move || {
                (0..rounds / threads)
                    .map(|r| round(t as u64 * 7919, r))
                    .sum::<usize>()
            })
        })
        .collect();
    let total: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    let elapsed = start.elapsed();
    println!(
        "threads={threads} rounds={rounds} bytes={total} seconds={:.4} peak_rss_kib={}",
        elapsed.as_secs_f64(),
        peak_rss_kib()
    );
}
