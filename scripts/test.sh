#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and integration tests (the integration
# tests run skopeo, umoci and podman against real images). Run scripts/setup.sh first.
set -euo pipefail
cd "$(dirname "$0")/.."
unset RUST_BACKTRACE
# One target dir for the tool and every image the tests build (example-app builds once).
export MICROIMAGE_TEST_TARGET_DIR="${MICROIMAGE_TEST_TARGET_DIR:-$PWD/target/tests}"
# zig builds its libc once per target: keep that cache with the shared target dir.
export ZIG_GLOBAL_CACHE_DIR="${ZIG_GLOBAL_CACHE_DIR:-$MICROIMAGE_TEST_TARGET_DIR/zig-cache}"
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked
