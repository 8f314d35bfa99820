#!/usr/bin/env bash
# Benchmark: pushing example-app's multi-arch image to a local registry, side by side with
# `skopeo copy --all` of the very same OCI layout, in one run. Every measured push goes to a
# fresh registry (and a fresh blob-location cache), so neither side can skip uploads.
#
#   skopeo      = skopeo copy --all oci:LAYOUT docker://127.0.0.1:PORT/app:1
#   pack --push = cargo microimage pack <both binaries> --push …   (pack + push)
#   push        = cargo microimage push --platform all …           (cargo no-op + pack + push)
#
# Then, through tests/support/delay_proxy.py (a fixed delay per request, as a registry
# across a network adds), the amd64 image alone at 0 and 20 ms per request: skopeo's copy
# against our registry phase, bare (no SBOM, no provenance, as skopeo copies it) and with
# the default SBOM and provenance, with the requests each made; and end to end, a prebuilt
# ~20 MB binary: `pack --push` from inside its cargo project against umoci building the same
# FROM-scratch image plus skopeo pushing it. Medians of RUNS alternating runs, a fresh
# registry each.
#
# Usage: benches/push.sh [RUNS]   (needs scripts/setup.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
W=$(mktemp -d /tmp/microimage-pushbench.XXXXXX)
REG_PID=
PROXY_PID=
cleanup() {
  [ -n "$REG_PID" ] && kill "$REG_PID" 2>/dev/null
  [ -n "$PROXY_PID" ] && kill "$PROXY_PID" 2>/dev/null
  rm -rf "$W"
}
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
  # A fresh blob-location cache (no mounts to guess), the runtime parts kept built.
  rm -rf "$W/data" "$W/cache/cargo-microimage/blob-locations.json"
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

# --- Latency: one platform, through a proxy that delays every request. ---------------------
AMD=${BINS[0]}
(cd "$W" && "$TOOL" pack -q --sbom none --provenance none "$AMD" -o "$W/single" >/dev/null)
stop_proxy() {
  if [ -n "$PROXY_PID" ]; then kill "$PROXY_PID" 2>/dev/null; wait "$PROXY_PID" 2>/dev/null || true; fi
  PROXY_PID=
}
start_proxy() {  # $1 = delay in ms; after start_registry
  stop_proxy
  : > "$W/requests.log"
  PPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  python3 tests/support/delay_proxy.py "$PPORT" "$PORT" "$1" "$W/requests.log" &
  PROXY_PID=$!
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PPORT") 2>/dev/null && break; sleep 0.05; done
}
median() { sort -n | awk '{a[NR]=$1} END {m=(NR+1)/2; if (NR%2) print a[m]; else print (a[NR/2]+a[NR/2+1])/2}'; }
ours_phase() {  # $1 = port, then pack's options: the registry phase's seconds (its `Pushed` line)
  local port=$1
  shift
  (cd "$W" && "$TOOL" pack "$@" "$AMD" --push "127.0.0.1:$port/app:1" 2>&1 >/dev/null) \
    | sed -n 's/.*Pushed .* in \([0-9.]*\) s$/\1/p'
}
latency() {  # $1 = delay: prints "skopeo_s skopeo_requests ours_s ours_requests
             # ours_with_attachments_s ours_with_attachments_requests"
  local s_times=() o_times=() a_times=() s_req o_req a_req t0 t1
  for _ in $(seq "$RUNS"); do
    start_registry; start_proxy "$1"
    t0=$(now); skopeo copy -q --dest-tls-verify=false "oci:$W/single:latest" "docker://127.0.0.1:$PPORT/app:1" >/dev/null 2>&1; t1=$(now)
    s_times+=("$(echo "$t1 - $t0" | bc -l)"); s_req=$(wc -l < "$W/requests.log")
    start_registry; start_proxy "$1"
    o_times+=("$(ours_phase "$PPORT" --sbom none --provenance none)")
    o_req=$(wc -l < "$W/requests.log")
    start_registry; start_proxy "$1"
    a_times+=("$(ours_phase "$PPORT")")
    a_req=$(wc -l < "$W/requests.log")
  done
  stop_proxy; stop_registry
  echo "$(printf '%s\n' "${s_times[@]}" | median) $s_req $(printf '%s\n' "${o_times[@]}" | median) $o_req $(printf '%s\n' "${a_times[@]}" | median) $a_req"
}
for delay in 0 20; do
  read -r S SR O OR A AR <<<"$(latency "$delay")"
  printf '%-52s %8.3f s  %2d requests\n' "skopeo copy, $delay ms per request" "$S" "$SR"
  printf '%-52s %8.3f s  %2d requests  (%sx skopeo)\n' "ours, bare image, $delay ms per request" "$O" "$OR" "$(ratio "$O" "$S")"
  printf '%-52s %8.3f s  %2d requests  (%sx skopeo)\n' "ours, with SBOM and provenance, $delay ms per request" "$A" "$AR" "$(ratio "$A" "$S")"
done

# --- End to end: a prebuilt ~20 MB binary, from inside its cargo project. ------------------
BENCH_TARGET=$PWD/target/bench
CARGO_TARGET_DIR=$BENCH_TARGET CARGO_PROFILE_RELEASE_DEBUG=limited CARGO_PROFILE_RELEASE_STRIP=none \
  cargo build -q --release --locked --target x86_64-unknown-linux-musl --manifest-path example-app/Cargo.toml
BIG=$W/example-app
cp "$BENCH_TARGET/x86_64-unknown-linux-musl/release/example-app" "$BIG"
umoci_skopeo() {
  rm -rf "$W/umoci" "$W/rootfs"
  mkdir -p "$W/rootfs/usr/local/bin"
  cp "$BIG" "$W/rootfs/usr/local/bin/example-app"
  umoci init --layout "$W/umoci" &&
  umoci new --image "$W/umoci:t" &&
  umoci insert --image "$W/umoci:t" "$W/rootfs" / &&
  umoci config --image "$W/umoci:t" --config.entrypoint /usr/local/bin/example-app --config.user 65532:65532 &&
  skopeo copy -q --dest-tls-verify=false "oci:$W/umoci:t" "docker://127.0.0.1:$PORT/app:1"
}
ours_e2e() { (cd example-app && "$TOOL" pack -q "$BIG" --push "127.0.0.1:$PORT/app:1"); }
U_TIMES=(); P_TIMES=()
for _ in $(seq "$RUNS"); do
  start_registry; t0=$(now); umoci_skopeo >/dev/null 2>&1; t1=$(now); U_TIMES+=("$(echo "$t1 - $t0" | bc -l)")
  start_registry; t0=$(now); ours_e2e >/dev/null 2>&1; t1=$(now); P_TIMES+=("$(echo "$t1 - $t0" | bc -l)")
done
stop_registry
E_U=$(printf '%s\n' "${U_TIMES[@]}" | median)
E_P=$(printf '%s\n' "${P_TIMES[@]}" | median)
printf '%-40s %8.3f s  (%s bytes binary)\n' "umoci init/new/insert/config + skopeo" "$E_U" "$(stat -c %s "$BIG")"
printf '%-40s %8.3f s  (%sx umoci + skopeo)\n' "cargo microimage pack --push, in project" "$E_P" "$(ratio "$E_P" "$E_U")"
