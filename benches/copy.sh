#!/usr/bin/env bash
# Benchmark: the copy routines of the program in the image, next to what a user would run
# instead (a Dockerfile with a glibc base image). benches/copy times `memcpy` and `memmove`
# from 16 bytes to 1 MiB: both ends 64-byte aligned, the destination 1 byte off, source and
# destination off by different amounts, and overlapping moves 1 byte apart either way (the
# cases where `rep movsb` is slow on some CPUs). Built three ways:
#
#   glibc      plain `cargo build --release` for x86_64-unknown-linux-gnu (glibc's
#              memcpy, chosen for the CPU at run time), run on this machine;
#   system     `cargo microimage build --allocator system`: musl's own copies (`rep movs`);
#   default    `cargo microimage build`: the tool's copy routines; both from their images.
#
# Prints nanoseconds per copy (each run's best of five) as a Markdown table, the median of
# RUNS runs (default 3) per cell, and each musl build's ratio to glibc.
#
# Usage: benches/copy.sh [RUNS]   (needs scripts/setup.sh: podman, runc, the musl target)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
. benches/lib.sh
bench_setup copy
bench_build copy copy-bench
for i in $(seq "$RUNS"); do
  for kind in glibc system default; do
    run "$kind" | sed "s/^/kind=$kind /"
  done
done > "$W/results"

python3 - "$W" "$RUNS" <<'PY'
import os, platform, statistics, sys
w, runs = sys.argv[1], sys.argv[2]
cells, order = {}, []
for line in open(os.path.join(w, "results")):
    f = dict(x.split("=") for x in line.split())
    key = (f["case"], int(f["bytes"]))
    if key not in order:
        order.append(key)
    cells.setdefault((f["kind"],) + key, []).append(float(f["ns"]))
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print(f"machine: {os.cpu_count()} cores, {cpu}, {platform.system()} {platform.release()}; medians of {runs} runs, ns per copy")
print("| case | bytes | glibc | musl's (`--allocator system`) | cargo-microimage's (default) |")
print("|---|---|---|---|---|")
for case, n in order:
    g = statistics.median(cells[("glibc", case, n)])
    row = [f"{g:.1f}"]
    for kind in ("system", "default"):
        m = statistics.median(cells[(kind, case, n)])
        row.append(f"{m:.1f} ({m / g:.2f}×)")
    print(f"| {case} | {n:,} | {' | '.join(row)} |")
PY
