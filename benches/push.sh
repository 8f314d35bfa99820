#!/usr/bin/env bash
# Benchmark: pushing example-app's multi-arch image to a local registry, side by side with
# `skopeo copy --all` of the very same OCI layout, in one run. Every measured push goes to a
# fresh registry (and a fresh blob-location cache), so neither side can skip uploads.
#
#   skopeo      = skopeo copy --all oci:LAYOUT docker://127.0.0.1:PORT/app:1
#   pack --push = cargo microimage pack <both binaries> --push …   (pack + push)
#   push        = cargo microimage push --platform all …           (cargo no-op + pack + push)
#
# Usage: benches/push.sh [RUNS]   (needs scripts/setup.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
W=$(mktemp -d /tmp/microimage-pushbench.XXXXXX)
REG_PID=
cleanup() { [ -n "$REG_PID" ] && kill "$REG_PID" 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT

cargo build --release --locked -q
TOOL=$PWD/target/release/cargo-microimage
export CARGO_TARGET_DIR=$PWD/target/tests
export ZIG_GLOBAL_CACHE_DIR=$CARGO_TARGET_DIR/zig-cache
export XDG_CACHE_HOME=$W/cache
"$TOOL" build -q --locked --platform all --manifest-path example-app/Cargo.toml -o "$W/layout" >/dev/null
BINS=("$CARGO_TARGET_DIR/x86_64-unknown-linux-musl/release/example-app" "$CARGO_TARGET_DIR/aarch64-unknown-linux-musl/release/example-app")

# Each measurement runs in a $( ) subshell, so it stops its own last registry: the EXIT
# trap of this shell never sees those PIDs.
stop_registry() {
  if [ -n "$REG_PID" ]; then kill "$REG_PID" 2>/dev/null; wait "$REG_PID" 2>/dev/null || true; fi
  REG_PID=
}
start_registry() {
  stop_registry
  rm -rf "$W/data" "$W/cache"
  PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  printf 'version: 0.1\nlog: {level: error}\nstorage: {filesystem: {rootdirectory: %s}}\nhttp: {addr: "127.0.0.1:%s", secret: bench}\n' "$W/data" "$PORT" > "$W/config.yml"
  docker-registry serve "$W/config.yml" >/dev/null 2>&1 &
  REG_PID=$!
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.05; done
}
now() { date +%s.%N; }
best() {
  local best=999999 t0 t1 d
  for _ in $(seq "$RUNS"); do
    start_registry
    t0=$(now); "$@" >/dev/null 2>&1; t1=$(now)
    d=$(echo "$t1 - $t0" | bc -l)
    if (( $(echo "$d < $best" | bc -l) )); then best=$d; fi
  done
  stop_registry
  printf '%.3f' "$best"
}
skopeo_copy() { skopeo copy -q --all --dest-tls-verify=false "oci:$W/layout:0.1.0" "docker://127.0.0.1:$PORT/app:1"; }
pack_push() { "$TOOL" pack -q "${BINS[@]}" --manifest-path example-app/Cargo.toml --push "127.0.0.1:$PORT/app:1"; }
full_push() { "$TOOL" push -q --locked --platform all --manifest-path example-app/Cargo.toml "127.0.0.1:$PORT/app:1"; }

T_SKOPEO=$(best skopeo_copy)
T_PACK=$(best pack_push)
T_PUSH=$(best full_push)
# The registry phase alone (what skopeo does), as the tool reports it on its `Pushed` line.
phase() {
  local best=999999 d
  for _ in $(seq "$RUNS"); do
    start_registry
    d=$("$TOOL" pack "${BINS[@]}" --manifest-path example-app/Cargo.toml --push "127.0.0.1:$PORT/app:1" 2>&1 >/dev/null \
        | sed -n 's/.*Pushed .* in \([0-9.]*\) s$/\1/p')
    if (( $(echo "$d < $best" | bc -l) )); then best=$d; fi
  done
  stop_registry
  printf '%.3f' "$best"
}
T_PHASE=$(phase)
SIZE=$(du -sb "$W/layout/blobs" | cut -f1)
ratio() { echo "scale=2; $1 / $2" | bc -l; }
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -sr)"
echo "image: example-app, linux/amd64 + linux/arm64, $SIZE bytes of blobs; best of $RUNS runs, fresh registry each"
printf '%-40s %8s s\n' "skopeo copy --all (upload only)" "$T_SKOPEO"
printf '%-40s %8s s  (%sx skopeo)\n' "cargo microimage, registry phase only" "$T_PHASE" "$(ratio "$T_PHASE" "$T_SKOPEO")"
printf '%-40s %8s s  (%sx skopeo)\n' "cargo microimage pack --push" "$T_PACK" "$(ratio "$T_PACK" "$T_SKOPEO")"
printf '%-40s %8s s  (%sx skopeo)\n' "cargo microimage push --platform all" "$T_PUSH" "$(ratio "$T_PUSH" "$T_SKOPEO")"
