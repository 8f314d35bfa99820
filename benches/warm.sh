#!/usr/bin/env bash
# Benchmark: what the tool costs on top of what a user would run anyway, in one run on one
# machine, with hyperfine (means of RUNS runs after 3 warm-ups):
#
#   warm build  `cargo microimage build` of example-app with nothing changed, next to
#               cargo's own no-op `cargo build --release --target x86_64-unknown-linux-musl`
#               (the same cargo, the same target dir): the tool's overhead, in ms.
#   pack        `cargo microimage pack` of a ~20 MB static binary run inside the cargo project
#               (so it also reads the project with `cargo metadata`), with its layer cache
#               emptied before every run, next to `umoci init/new/insert` building the same
#               FROM-scratch image, and next to `pack` run outside any project.
#
# Usage: benches/warm.sh [RUNS]   (needs scripts/setup.sh; installs hyperfine with apt if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-10}
command -v hyperfine >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq hyperfine >/dev/null
W=$(mktemp -d /tmp/microimage-warm.XXXXXX)
trap 'rm -rf "$W"' EXIT

cargo build --release --locked -q
# `cargo microimage` finds the tool on PATH, as it would an installed one.
export PATH="$PWD/target/release:$PATH"
export CARGO_TARGET_DIR="$PWD/target/bench-warm"
REPO=$PWD

# Warm build: build once so that both commands below have nothing to do.
(cd example-app && cargo microimage build -q --locked >/dev/null \
  && cargo build -q --release --locked --target x86_64-unknown-linux-musl)
(cd example-app && hyperfine -N -w 3 -r "$RUNS" --export-json "$W/warm.json" \
  -n cargo "cargo build --release --locked --target x86_64-unknown-linux-musl" \
  -n microimage "cargo microimage build -q --locked" >/dev/null)

# Pack: a ~20 MB binary (example-app with limited debug info), as benches/pack.sh uses.
CARGO_TARGET_DIR=$REPO/target/bench CARGO_PROFILE_RELEASE_DEBUG=limited CARGO_PROFILE_RELEASE_STRIP=none \
  cargo build -q --release --locked --target x86_64-unknown-linux-musl --manifest-path example-app/Cargo.toml
BIN=$W/example-app
cp "$REPO/target/bench/x86_64-unknown-linux-musl/release/example-app" "$BIN"
cat > "$W/umoci.sh" <<EOF
rm -rf "$W/umoci" "$W/rootfs"
mkdir -p "$W/rootfs/usr/local/bin"
cp "$BIN" "$W/rootfs/usr/local/bin/example-app"
umoci init --layout "$W/umoci"
umoci new --image "$W/umoci:t"
umoci insert --image "$W/umoci:t" "$W/rootfs" / >/dev/null
EOF
(cd example-app && hyperfine -w 3 -r "$RUNS" --export-json "$W/pack.json" \
  --prepare "true" -n umoci "bash $W/umoci.sh" \
  --prepare "rm -rf $CARGO_TARGET_DIR/microimage/.layer-cache" \
  -n pack-in-project "cargo-microimage pack -q $BIN -o $W/out" \
  --prepare "true" -n pack-outside "cd $W && cargo-microimage pack -q $BIN -o $W/out2" >/dev/null)

python3 - "$W/warm.json" "$W/pack.json" "$(stat -c %s "$BIN")" "$RUNS" <<'PY'
import json, os, platform, sys
def means(path):
    return {r["command"]: r["mean"] for r in json.load(open(path))["results"]}
warm, pack, size, runs = means(sys.argv[1]), means(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print(f"machine: {os.cpu_count()} cores, {cpu}, {platform.system()} {platform.release()}; means of {runs} runs")
c, m = warm["cargo"], warm["microimage"]
print(f"warm build, example-app   cargo no-op {c*1000:6.1f} ms   cargo microimage build {m*1000:6.1f} ms   overhead {(m-c)*1000:+5.1f} ms")
u, p, o = pack["umoci"], pack["pack-in-project"], pack["pack-outside"]
print(f"pack, {size} bytes  umoci {u*1000:6.1f} ms   pack in project {p*1000:6.1f} ms ({p/u:.2f}x umoci)   pack outside {o*1000:6.1f} ms ({o/u:.2f}x umoci)")
PY
