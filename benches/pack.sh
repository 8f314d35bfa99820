#!/usr/bin/env bash
# Benchmark: `cargo microimage pack` against umoci building the same FROM-scratch image
# (umoci init + new + insert + config), binary by binary, in one run on one machine: wall
# time (median of RUNS alternating runs) and peak resident memory (the largest of the runs,
# from /usr/bin/time), and the size of each tool's layers.
#
# The binaries, made by this script (the large ones from fixed seeds):
#   8M      example-app for x86_64 musl (release, ~2 MB) followed by the first bytes of the
#           ~20 MB one up to 8,000,000 bytes: a typical service's size, of real code and
#           debug info
#   app     example-app for x86_64 musl with limited debug info (~20 MB)
#   go      a real 90 MB static Go binary: $BENCH_GO_BINARY, else /usr/local/bin/terraform
#           (skipped when neither is there)
#   +100M   example-app (release) with 100 MB of incompressible bytes appended
#   +300M   likewise, 300 MB
#   +1G     example-app with 1 GiB appended, 1 MiB of incompressible bytes and 1 MiB of
#           the ~20 MB binary's bytes in turn (mixed, as embedded assets and code are)
#
# Both tools run outside any cargo project (inside one, `pack` also reads the project).
# Usage: benches/pack.sh [RUNS]   (needs scripts/setup.sh; builds what it needs)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
W=$(mktemp -d /tmp/microimage-bench.XXXXXX)
trap 'rm -rf "$W"' EXIT

cargo build --release --locked -q
TOOL=$PWD/target/release/cargo-microimage
export XDG_CACHE_HOME=$W/cache

BENCH_TARGET=$PWD/target/bench
CARGO_TARGET_DIR=$BENCH_TARGET CARGO_PROFILE_RELEASE_DEBUG=limited CARGO_PROFILE_RELEASE_STRIP=none \
  cargo build -q --release --locked --target x86_64-unknown-linux-musl \
  --manifest-path example-app/Cargo.toml
CARGO_TARGET_DIR=$BENCH_TARGET/small \
  cargo build -q --release --locked --target x86_64-unknown-linux-musl \
  --manifest-path example-app/Cargo.toml
APP=$BENCH_TARGET/x86_64-unknown-linux-musl/release/example-app
SMALL=$BENCH_TARGET/small/x86_64-unknown-linux-musl/release/example-app
mkdir -p "$W/bin"
python3 - "$W/bin" "$APP" "$SMALL" <<'PY'
import random, sys, os
out, app, small = sys.argv[1], open(sys.argv[2], "rb").read(), open(sys.argv[3], "rb").read()
MiB = 1 << 20
def write(name, chunks):
    path = os.path.join(out, name)
    with open(path, "wb") as f:
        f.write(small)
        for c in chunks:
            f.write(c)
    os.chmod(path, 0o755)
write("8M", [app[:8_000_000 - len(small)]])
r = random.Random(20261124)
write("plus100M", (r.randbytes(MiB) for _ in range(100)))
r = random.Random(20261124)
write("plus300M", (r.randbytes(MiB) for _ in range(300)))
r = random.Random(20261124)
def mixed():
    for i in range(1024):
        if i % 2 == 0:
            yield r.randbytes(MiB)
        else:
            at = (i * MiB) % (len(app) - MiB)
            yield app[at:at + MiB]
write("plus1G", mixed())
PY
cp "$APP" "$W/bin/app"
GO=${BENCH_GO_BINARY:-/usr/local/bin/terraform}
ROWS=(8M app)
if [ -f "$GO" ] && file "$GO" | grep -q 'statically linked'; then cp "$GO" "$W/bin/go"; ROWS+=(go); fi
ROWS+=(plus100M plus300M plus1G)

# One timed run: prints "SECONDS PEAK_KIB" (wall time to the millisecond, from the clock:
# /usr/bin/time's own is in hundredths, too coarse for the small binaries).
timed() {
  local t0 t1
  t0=$(date +%s.%N)
  /usr/bin/time -f '%M' -o "$W/time" "$@" >/dev/null 2>&1
  t1=$(date +%s.%N)
  echo "$(echo "$t1 - $t0" | bc -l) $(tail -1 "$W/time")"
}
ours() { rm -rf "$W/ours"; (cd "$W" && timed "$TOOL" pack -q "$W/bin/$1" -o "$W/ours"); }
umoci_pack() {
  rm -rf "$W/umoci" "$W/rootfs"
  mkdir -p "$W/rootfs/usr/local/bin"
  cp "$W/bin/$1" "$W/rootfs/usr/local/bin/$1"
  timed bash -c 'umoci init --layout "$0/umoci" && umoci new --image "$0/umoci:t" &&
    umoci insert --image "$0/umoci:t" "$0/rootfs" / &&
    umoci config --image "$0/umoci:t" --config.entrypoint "/usr/local/bin/$1"' "$W" "$1"
}
median() { sort -n | awk '{a[NR]=$1} END {m=(NR+1)/2; if (NR%2) print a[m]; else print (a[NR/2]+a[NR/2+1])/2}'; }
layers() { du -sb "$1/blobs" | cut -f1; }
mib() { echo "scale=0; $1 / 1024" | bc; }

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -sr); median of $RUNS runs"
printf '| %-9s | %9s | %-22s | %-22s | %5s | %-27s |\n' binary size "cargo microimage pack" "umoci" ratio "blobs: ours / umoci"
for row in "${ROWS[@]}"; do
  o_t=(); u_t=(); o_m=0; u_m=0
  for _ in $(seq "$RUNS"); do
    read -r t m <<<"$(ours "$row")"; o_t+=("$t"); (( m > o_m )) && o_m=$m
    read -r t m <<<"$(umoci_pack "$row")"; u_t+=("$t"); (( m > u_m )) && u_m=$m
  done
  ot=$(printf '%s\n' "${o_t[@]}" | median); ut=$(printf '%s\n' "${u_t[@]}" | median)
  printf '| %-9s | %6s MB | %6.3f s, %4s MiB peak | %6.3f s, %4s MiB peak | %5s | %12s / %12s |\n' \
    "$row" "$(( $(stat -c %s "$W/bin/$row") / 1000000 ))" "$ot" "$(mib "$o_m")" "$ut" "$(mib "$u_m")" \
    "$(echo "scale=2; $ot / $ut" | bc -l)" "$(layers "$W/ours")" "$(layers "$W/umoci")"
done
# zstd, for the record (umoci has no zstd to compare with).
for row in app plus1G; do
  rm -rf "$W/ours"
  read -r t m <<<"$(cd "$W" && timed "$TOOL" pack -q --compression zstd "$W/bin/$row" -o "$W/ours")"
  printf '| %-9s | zstd: %6.3f s, %4s MiB peak, %s bytes of blobs |\n' "$row" "$t" "$(mib "$m")" "$(layers "$W/ours")"
done
