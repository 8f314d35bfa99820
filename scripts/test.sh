#!/usr/bin/env bash
# The whole test suite: formatting, lints, the packaged crate, unit and integration tests
# (the integration tests run skopeo, umoci and podman against real images). Run
# scripts/setup.sh first.
set -euo pipefail
cd "$(dirname "$0")/.."
unset RUST_BACKTRACE
# One target dir for the tool and every image the tests build (example-app builds once).
export MICROIMAGE_TEST_TARGET_DIR="${MICROIMAGE_TEST_TARGET_DIR:-$PWD/target/tests}"
# zig builds its libc once per target: keep that cache with the shared target dir.
export ZIG_GLOBAL_CACHE_DIR="${ZIG_GLOBAL_CACHE_DIR:-$MICROIMAGE_TEST_TARGET_DIR/zig-cache}"
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
# The crate as crates.io would ship it (what `cargo install cargo-microimage` builds, with no
# workspace [patch]): `cargo package` builds the packaged copy. Its own target dir, so that
# build does not share fingerprints with this checkout's; unoptimised, as it only has to compile.
CARGO_TARGET_DIR="$PWD/target/package-check" cargo package --locked --allow-dirty --quiet \
  --config 'profile.dev.package."*".opt-level=0' --config 'profile.dev.debug=0'
cargo test --locked
