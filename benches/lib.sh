# Shared by the runtime benchmarks (alloc.sh, memory.sh): sourced after `cd` to the
# repository. `bench_setup NAME` builds the tool (release) and puts it on PATH, gives the
# bench crate its own target dir (target/bench-NAME), makes a scratch directory $W
# (removed at exit, with the images podman imported from it) and podman's configuration;
# `bench_build CRATE` builds benches/CRATE three ways into $W (glibc, system, default);
# `run KIND ARGS...` runs one of them: glibc on the host, the others from their images.

bench_setup() {
  REPO=$PWD
  # Lowercase: podman imports `oci:DIR` as an image named after DIR.
  W=/tmp/microimage-$1-$$-$RANDOM
  mkdir "$W"
  trap bench_cleanup EXIT
  cargo build --release --locked -q
  export PATH="$REPO/target/release:$PATH"
  export CARGO_TARGET_DIR="$REPO/target/bench-$1"
  cat > "$W/containers.conf" <<'CONF'
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
netns = "none"
[engine]
runtime = "runc"
CONF
  export CONTAINERS_CONF="$W/containers.conf"
}

bench_cleanup() {
  for image in system default; do
    podman rmi -f "localhost$W/$image:0.1.0" >/dev/null 2>&1 || true
  done
  rm -rf "$W"
}

bench_build() { # CRATE BINARY
  (
    cd "benches/$1"
    cargo build -q --release --locked
    cp "$CARGO_TARGET_DIR/release/$2" "$W/glibc"
    cargo microimage build -q --locked --allocator system -o "$W/system" >/dev/null
    cp "$CARGO_TARGET_DIR/x86_64-unknown-linux-musl/release/$2" "$W/system.bin"
    cargo microimage build -q --locked -o "$W/default" >/dev/null
    cp "$CARGO_TARGET_DIR/x86_64-unknown-linux-musl/release/$2" "$W/default.bin"
  )
}

run() { # KIND ARGS... -> one result line
  local kind=$1; shift
  case $kind in
    glibc) "$W/glibc" "$@" ;;
    *) podman run --rm "oci:$W/$kind:0.1.0" "$@" 2>"$W/podman.log" \
         || { cat "$W/podman.log" >&2; echo "podman run of $kind failed" >&2; exit 1; } ;;
  esac
}
