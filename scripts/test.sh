#!/usr/bin/env bash
# The whole test suite: formatting, lints, the packaged crate, unit and integration tests
# (the integration tests run skopeo, umoci and podman against real images). Run
# scripts/setup.sh first.
#
#   scripts/test.sh            everything (what CI runs)
#   scripts/test.sh AREA...    only those integration test modules (tests/integration/AREA.rs,
#                              e.g. `registry` or `runtime pack_verify`), no lints
#   scripts/test.sh unit       only the library's and the CLI's unit tests
#
# Prints how long each phase took and the ten slowest tests; every test's time is kept in
# target/test-times.txt (slowest first). With MICROIMAGE_TEST_CPU_LOG=FILE, each command
# a test runs is timed by GNU time into FILE (tests/integration/common.rs, `cpu_logged`)
# and the report adds the tests that took the most CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
unset RUST_BACKTRACE
# One target dir for the tool and every image the tests build (example-app builds once).
export MICROIMAGE_TEST_TARGET_DIR="${MICROIMAGE_TEST_TARGET_DIR:-$PWD/target/tests}"
# zig builds its libc once per target: keep that cache with the shared target dir.
export ZIG_GLOBAL_CACHE_DIR="${ZIG_GLOBAL_CACHE_DIR:-$MICROIMAGE_TEST_TARGET_DIR/zig-cache}"
# Integration tests spend much of their time waiting (podman, qemu, registries, the lock
# of the shared target dir): two lanes per core keep the cores busy.
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-$(($(nproc) * 2))}"
# Test binaries run through scripts/test-runner, which asks libtest for each test's time.
export CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER="$PWD/scripts/test-runner"
mkdir -p target
log=target/test-output.log
: > "$log"
phases=()

cpu_now() { # sets CPU to the CPU time (user + system) of this shell's finished children, in s
  # `times` here, in this shell: in a pipeline or $(…) it would run in a subshell, which
  # has no children.
  times > target/.times
  CPU=$(sed -n 2p target/.times | awk '{ t = 0; for (i = 1; i <= 2; i++) { split($i, a, "m"); t += a[1] * 60 + a[2] } printf "%d", t }')
}

phase() { # NAME COMMAND... : runs it, output also into $log, and records its time
  local name=$1 start=$SECONDS status=0 cpu
  cpu_now
  cpu=$CPU
  shift
  echo "test.sh: $name" >&2
  "$@" 2>&1 | tee -a "$log" || status=$?
  cpu_now
  # CPU time beside wall time: how busy the cores were (2 on CI) says whether tests wait.
  phases+=("$(printf '%-12s %5d s  (CPU %5d s)' "$name" $((SECONDS - start)) $((CPU - cpu)))")
  if [ "$status" -ne 0 ]; then
    report
    echo "test.sh: $name failed" >&2
    exit "$status"
  fi
}

report() {
  # "test NAME ... ok <1.234s>" lines, slowest first.
  sed -n 's/^test \(.*\) \.\.\. ok <\([0-9.]*\)s>$/\2 \1/p' "$log" | sort -rn > target/test-times.txt || true
  {
    echo "test.sh: time per phase"
    printf '  %s\n' "${phases[@]}"
    if [ -s target/test-times.txt ]; then
      echo "test.sh: the ten slowest tests ($(wc -l < target/test-times.txt) timed, all in target/test-times.txt)"
      head -10 target/test-times.txt | awk '{ printf "  %7.1f s  %s\n", $1, $2 }'
    fi
    if [ -s "${MICROIMAGE_TEST_CPU_LOG:-}" ]; then
      echo "test.sh: the fifteen tests whose commands took the most CPU (user + system; all in $MICROIMAGE_TEST_CPU_LOG)"
      awk -F'\t' '{ cpu[$1] += $3 + $4 } END { for (t in cpu) printf "  %7.1f s  %s\n", cpu[t], t }' \
        "$MICROIMAGE_TEST_CPU_LOG" | sort -rn | head -15
    fi
  } >&2
}

# The integration tests in two lanes at once. libtest starts tests in name order, so the
# slowest ones (the eight platforms, five of them with the standard library built from
# source: a quarter hour of CPU) would start half-way and the suite would end waiting for
# them alone. They get a lane of their own that starts first; the rest run beside it. Both
# lanes' output goes to stdout (the slow lane's when it is done), and either failing fails.
SLOW=(platforms::)
integration_lanes() {
  cargo test --locked --test integration --no-run
  local skips=() status=0 pid
  for s in "${SLOW[@]}"; do skips+=(--skip "$s"); done
  RUST_TEST_THREADS=2 cargo test --locked --test integration -- "${SLOW[@]}" > target/slow-lane.log 2>&1 &
  pid=$!
  cargo test --locked --test integration -- "${skips[@]}" || status=$?
  wait "$pid" || status=$?
  echo "test.sh: the slow lane (${SLOW[*]}):"
  cat target/slow-lane.log
  return "$status"
}

case "${1:-}" in
  "")
    phase fmt cargo fmt --all -- --check
    phase clippy cargo clippy --all-targets --locked -- -D warnings
    # The crate as crates.io would ship it (what `cargo install cargo-microimage` builds,
    # with no workspace [patch]): `cargo package` builds the packaged copy. In this target
    # dir and profile, so the dependencies it compiles are the ones the tests use; the
    # packaged crate's own units have the same names as this checkout's (same sources),
    # and cargo rebuilds them when a source changes.
    phase package cargo package --locked --allow-dirty --quiet
    phase unit cargo test --locked --lib --bins
    phase integration integration_lanes
    ;;
  unit)
    phase unit cargo test --locked --lib --bins
    ;;
  *)
    filters=()
    for area in "$@"; do
      if [ ! -f "tests/integration/$area.rs" ]; then
        echo "test.sh: no area $area; the areas are: $(cd tests/integration && ls *.rs | sed 's/\.rs$//' | grep -vx 'main\|common' | tr '\n' ' ')" >&2
        exit 2
      fi
      filters+=("$area::")
    done
    phase "${*}" cargo test --locked --test integration -- "${filters[@]}"
    ;;
esac
report
