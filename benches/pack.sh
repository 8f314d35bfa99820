#!/usr/bin/env bash
# Benchmark: packing a large static binary, side by side with the floor and with umoci, in
# one run on one machine.
#
#   floor  = sha256sum + gzip -6 of the binary (what any packer must at least do)
#   umoci  = umoci init/new/insert of the same FROM-scratch content (compresses in parallel)
#   pack   = cargo microimage pack (release build) of the same binary
#
# It also compares our app layer's size with `gzip -6` of the very same tar.
# Usage: benches/pack.sh [RUNS]   (needs scripts/setup.sh; builds what it needs)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-5}
W=$(mktemp -d /tmp/microimage-bench.XXXXXX)
trap 'rm -rf "$W"' EXIT

cargo build --release --locked -q
TOOL=$PWD/target/release/cargo-microimage

# A ~20 MB static binary: example-app for x86_64 musl, with debug info and no stripping.
BENCH_TARGET=$PWD/target/bench
CARGO_TARGET_DIR=$BENCH_TARGET CARGO_PROFILE_RELEASE_DEBUG=limited CARGO_PROFILE_RELEASE_STRIP=none \
  cargo build -q --release --locked --target x86_64-unknown-linux-musl \
  --manifest-path example-app/Cargo.toml
BIN=$W/app
cp "$BENCH_TARGET/x86_64-unknown-linux-musl/release/example-app" "$BIN"
SIZE=$(stat -c %s "$BIN")

now() { date +%s.%N; }
# best-of-N wall time of a command, in seconds
best() {
  local best=999999 t0 t1 d
  for _ in $(seq "$RUNS"); do
    t0=$(now); "$@" >/dev/null 2>&1; t1=$(now)
    d=$(echo "$t1 - $t0" | bc -l)
    if (( $(echo "$d < $best" | bc -l) )); then best=$d; fi
  done
  printf '%.3f' "$best"
}
peak_kib() { /usr/bin/time -f %M "$@" 2>&1 >/dev/null | tail -1; }

floor() { sha256sum "$BIN" >/dev/null; gzip -6 -c "$BIN" >/dev/null; }
# Packed from $W, outside any cargo project, as umoci is run: inside one, `pack` also reads
# the project's metadata for defaults (one `cargo metadata --no-deps`, ~25 ms).
pack() { rm -rf "$W/out"; (cd "$W" && "$TOOL" pack -q "$BIN" --bin app -o "$W/out"); }
pack_zstd() { rm -rf "$W/out-zstd"; (cd "$W" && "$TOOL" pack -q "$BIN" --bin app --compression zstd -o "$W/out-zstd"); }
umoci_pack() {
  rm -rf "$W/umoci" "$W/rootfs"
  mkdir -p "$W/rootfs/usr/local/bin"
  cp "$BIN" "$W/rootfs/usr/local/bin/app"
  umoci init --layout "$W/umoci"
  umoci new --image "$W/umoci:t"
  umoci insert --image "$W/umoci:t" "$W/rootfs" /
}

T_FLOOR=$(best floor)
T_PACK=$(best pack)
T_UMOCI=$(best umoci_pack)
T_ZSTD=$(best pack_zstd)

# Sizes: our app layer vs gzip -6 of exactly the same tar.
pack >/dev/null
pack_zstd >/dev/null
app_layer() {
python3 - "$1" <<'PY'
import json, sys, os
d = sys.argv[1]
idx = json.load(open(os.path.join(d, "index.json")))["manifests"][0]["digest"].split(":")[1]
index = json.load(open(os.path.join(d, "blobs/sha256", idx)))
m = index["manifests"][0]["digest"].split(":")[1]
man = json.load(open(os.path.join(d, "blobs/sha256", m)))
print(man["layers"][-1]["digest"].split(":")[1])
PY
}
APP_LAYER=$(app_layer "$W/out")
ZSTD_SIZE=$(stat -c %s "$W/out-zstd/blobs/sha256/$(app_layer "$W/out-zstd")")
OURS=$(stat -c %s "$W/out/blobs/sha256/$APP_LAYER")
GZIP6=$(gzip -dc "$W/out/blobs/sha256/$APP_LAYER" | gzip -6 -c | wc -c)
MEM_PACK=$(cd "$W" && peak_kib "$TOOL" pack -q "$BIN" --bin app -o "$W/out-mem")

ratio() { echo "scale=2; $1 / $2" | bc -l; }
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -sr)"
echo "binary: example-app x86_64 musl with limited debug info, $SIZE bytes; best of $RUNS runs"
printf '%-34s %8s s\n' "floor (sha256sum + gzip -6)" "$T_FLOOR"
printf '%-34s %8s s  (%sx floor)\n' "umoci init+new+insert" "$T_UMOCI" "$(ratio "$T_UMOCI" "$T_FLOOR")"
printf '%-34s %8s s  (%sx floor, %sx umoci)\n' "cargo microimage pack" "$T_PACK" "$(ratio "$T_PACK" "$T_FLOOR")" "$(ratio "$T_PACK" "$T_UMOCI")"
printf '%-34s %8s bytes\n' "app layer, cargo microimage" "$OURS"
printf '%-34s %8s bytes  (ours/gzip: %s)\n' "same tar through gzip -6" "$GZIP6" "$(ratio "$OURS" "$GZIP6")"
printf '%-34s %8s KiB\n' "pack peak RSS" "$MEM_PACK"
printf '%-34s %8s s  (%sx gzip pack)\n' "cargo microimage pack, zstd" "$T_ZSTD" "$(ratio "$T_ZSTD" "$T_PACK")"
printf '%-34s %8s bytes  (zstd/gzip -6: %s)\n' "app layer, zstd level 9" "$ZSTD_SIZE" "$(ratio "$ZSTD_SIZE" "$GZIP6")"
