#!/usr/bin/env bash
# Benchmark: the memory of the program in the image, next to what a user would run instead
# (a Dockerfile with a glibc base image). benches/memory is a service-like program: four
# workers fill maps of small strings and vectors (a cache filling up), keep a tenth, drop
# the rest, six rounds; then every worker is gone, what they kept is dropped, and the
# program idles 3 s without calling the allocator. Built three ways:
#
#   glibc      plain `cargo build --release` for x86_64-unknown-linux-gnu, run on this machine;
#   system     `cargo microimage build --allocator system` (musl's malloc), from its image;
#   default    `cargo microimage build` (mimalloc with its purge thread), from its image.
#
# The program reports the time of the work, its peak RSS (VmHWM) and its RSS after the
# 3 s idle wait; `memory-bench idle` reports what a small program holds at rest. Prints
# the median of RUNS runs (default 5) per cell as a Markdown table.
#
# Usage: benches/memory.sh [RUNS]   (needs scripts/setup.sh: podman, runc, the musl target)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-5}
. benches/lib.sh
bench_setup memory
bench_build memory memory-bench
run system idle >/dev/null
run default idle >/dev/null
for i in $(seq "$RUNS"); do
  for kind in glibc system default; do
    echo "$kind $(run "$kind" burst) $(run "$kind" idle)"
  done
done > "$W/results"

python3 - "$W" "$RUNS" <<'PY'
import os, platform, statistics, sys
w, runs = sys.argv[1], sys.argv[2]
cells = {}
for line in open(os.path.join(w, "results")):
    kind, *fields = line.split()
    f = dict(x.split("=") for x in fields)
    cells.setdefault(kind, []).append(f)
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print(f"machine: {os.cpu_count()} cores, {cpu}, {platform.system()} {platform.release()}; medians of {runs} runs")
names = {"glibc": "glibc (cargo build, x86_64-unknown-linux-gnu)",
         "system": "musl, `--allocator system` (musl's malloc)",
         "default": "musl, `cargo microimage build` (default)"}
med = lambda kind, key: statistics.median(float(f[key]) for f in cells[kind])
print("| build | time | peak RSS | RSS after 3 s idle, nothing live | small program at rest |")
print("|---|---|---|---|---|")
for kind in ("glibc", "system", "default"):
    t, peak, idle, rest = (med(kind, k) for k in ("seconds", "peak_rss_kib", "idle_rss_kib", "rss_kib"))
    ratio = "" if kind == "glibc" else f" ({t / med('glibc', 'seconds'):.2f}x)"
    print(f"| {names[kind]} | {t:.2f} s{ratio} | {peak / 1024:.0f} MiB | {idle / 1024:.1f} MiB | {rest / 1024:.1f} MiB |")
PY
