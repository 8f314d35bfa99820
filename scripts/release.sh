#!/usr/bin/env bash
# Builds the release archives that `cargo binstall cargo-microimage` downloads, as
# [package.metadata.binstall] in Cargo.toml describes them:
#   cargo-microimage-<target>-v<version>.tar.gz
#     └── cargo-microimage-<target>-v<version>/cargo-microimage   (+ README.md)
# for x86_64-unknown-linux-musl and aarch64-unknown-linux-musl, plus SHA256SUMS.
#
# The tool builds itself with its own pipeline (`cargo microimage build`: musl targets, zig
# for the C code of ring and zstd-sys on aarch64, the static check) and checks every binary
# with its own `verify` before archiving it. Archives are reproducible: sorted entries,
# numeric owners, mtimes = SOURCE_DATE_EPOCH (default: the last commit's time), gzip -n.
#
# Usage: scripts/release.sh [OUT_DIR]        (default: target/dist)
# Env:   CARGO_MICROIMAGE=path/to/cargo-microimage   the tool to build with (default: this
#        checkout's, built with `cargo build --release --locked`)
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-target/dist}")
targets=(x86_64-unknown-linux-musl aarch64-unknown-linux-musl)

tool=${CARGO_MICROIMAGE:-}
if [ -z "$tool" ]; then
  cargo build --release --locked --bin cargo-microimage
  tool=$PWD/target/release/cargo-microimage
fi
name=cargo-microimage
version=$(cargo metadata --no-deps --format-version 1 --locked \
  | python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"]=="cargo-microimage"))')
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
  SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || echo 0)
fi
export SOURCE_DATE_EPOCH

rm -rf "$out"
mkdir -p "$out/work"
platforms=$(printf '%s,' "${targets[@]}")
# The image of the tool itself is a by-product; the binaries are what is archived.
"$tool" microimage build --locked --bin "$name" --target "${platforms%,}" \
  --message-format json -o "$out/work/image" > "$out/work/build.json"

for target in "${targets[@]}"; do
  triple_arch=${target%%-*}
  binary=$(python3 - "$out/work/build.json" "$triple_arch" <<'PY'
import json, sys
arch = {"x86_64": "amd64", "aarch64": "arm64"}[sys.argv[2]]
for line in open(sys.argv[1]):
    record = json.loads(line)
    if record.get("reason") == "image-written":
        for p in record["platforms"]:
            if p["platform"].split("/")[1] == arch:
                print(p["binary"])
PY
)
  [ -n "$binary" ] || { echo "release: no binary for $target in the build's output" >&2; exit 1; }
  "$tool" verify "$binary" >&2
  dir="$name-$target-v$version"
  mkdir -p "$out/work/$dir"
  install -m 0755 "$binary" "$out/work/$dir/$name"
  install -m 0644 README.md "$out/work/$dir/README.md"
  tar --sort=name --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 --numeric-owner \
      --format=gnu -C "$out/work" -cf - "$dir" | gzip -n -9 > "$out/$dir.tar.gz"
  echo "$out/$dir.tar.gz"
done
rm -rf "$out/work"
(cd "$out" && sha256sum -- *.tar.gz > SHA256SUMS)
