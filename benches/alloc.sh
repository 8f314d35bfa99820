#!/usr/bin/env bash
# Benchmark: how fast the program in the image runs, next to what a user would run instead
# (a Dockerfile with a glibc base image). One allocation-heavy multi-threaded program,
# benches/alloc (JSON documents built, written, parsed and sorted on N threads), built
# three ways and run at 1, 2 and 8 threads:
#
#   glibc      plain `cargo build --release` for x86_64-unknown-linux-gnu (glibc's malloc),
#              run on this machine;
#   system     `cargo microimage build --allocator system`: musl's own malloc, what images
#              had before; run from its image with podman;
#   default    `cargo microimage build` (mimalloc, the copy routines, the PID 1 hook); run
#              from its image with podman.
#
# The program times its own work and reads its own peak RSS (VmHWM), so container start-up
# is not counted and the figures compare alike. Prints the median of RUNS runs per cell
# (default 5), the peak RSS at 2 threads, the binary sizes, and each build's ratio to glibc.
#
# Usage: benches/alloc.sh [RUNS]   (needs scripts/setup.sh: podman, runc, the musl target)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-5}
. benches/lib.sh
bench_setup alloc
bench_build alloc alloc-bench
# Imports each image once before timing.
run system 1 >/dev/null
run default 1 >/dev/null
for i in $(seq "$RUNS"); do
  for threads in 1 2 8; do
    for kind in glibc system default; do
      line=$(run "$kind" "$threads")
      echo "$kind $line"
    done
  done
done > "$W/results"

python3 - "$W" "$RUNS" <<'PY'
import os, platform, statistics, sys
w, runs = sys.argv[1], sys.argv[2]
cells = {}
for line in open(os.path.join(w, "results")):
    kind, *fields = line.split()
    f = dict(x.split("=") for x in fields)
    cells.setdefault((kind, int(f["threads"])), []).append((float(f["seconds"]), int(f["peak_rss_kib"])))
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print(f"machine: {os.cpu_count()} cores, {cpu}, {platform.system()} {platform.release()}; medians of {runs} runs")
names = {"glibc": "glibc (cargo build, x86_64-unknown-linux-gnu)",
         "system": "musl, `--allocator system` (musl's malloc)",
         "default": "musl, `cargo microimage build` (default)"}
sizes = {"glibc": "glibc", "system": "system.bin", "default": "default.bin"}
print("| build | 1 thread | 2 threads | 8 threads | peak RSS, 2 threads | binary |")
print("|---|---|---|---|---|---|")
base = {t: statistics.median(s for s, _ in cells[("glibc", t)]) for t in (1, 2, 8)}
for kind in ("glibc", "system", "default"):
    row = []
    for t in (1, 2, 8):
        m = statistics.median(s for s, _ in cells[(kind, t)])
        row.append(f"{m:.2f} s" + ("" if kind == "glibc" else f" ({m / base[t]:.2f}x)"))
    rss = statistics.median(r for _, r in cells[(kind, 2)]) / 1024
    size = os.path.getsize(os.path.join(w, sizes[kind])) / 1024 / 1024
    print(f"| {names[kind]} | {' | '.join(row)} | {rss:.1f} MiB | {size:.2f} MiB |")
PY
