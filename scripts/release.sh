#!/usr/bin/env bash
# Release archives: dist/wanda-ipfs-<version>-<arch>-linux.tar.gz for aarch64 and x86_64, each with
# the static binary, the README, the example configuration and the systemd unit, and
# dist/SHA256SUMS over them.
#
#   bash scripts/release.sh [--install] [--no-build] [aarch64|x86_64 ...]   (default: both)
#
# Builds with scripts/build-static.sh (--install is passed on to it) unless --no-build, which
# packages the binaries already built. The archives are reproducible: sorted names, one mtime
# (the commit's time), root ownership.
set -euo pipefail

build=1
pass=()
arches=()
for a in "$@"; do
    case "$a" in
        --no-build) build=0 ;;
        --install) pass+=("$a") ;;
        aarch64 | x86_64) arches+=("$a") ;;
        -h | --help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "release.sh: unknown argument '$a' (try --help)" >&2; exit 2 ;;
    esac
done
[ ${#arches[@]} -gt 0 ] || arches=(aarch64 x86_64)

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
epoch=$(git log -1 --format=%ct 2>/dev/null || echo 0)
dist="$ROOT/dist"

[ "$build" = 0 ] || bash scripts/build-static.sh "${pass[@]}" "${arches[@]}"

mkdir -p "$dist"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
archives=()
for arch in "${arches[@]}"; do
    bin="$CARGO_TARGET_DIR/$arch-unknown-linux-gnu/release/wanda-ipfs"
    [ -x "$bin" ] || { echo "no $bin: build it first (drop --no-build)" >&2; exit 1; }
    name="wanda-ipfs-$version-$arch-linux"
    mkdir -p "$stage/$name"
    install -m 0755 "$bin" "$stage/$name/wanda-ipfs"
    install -m 0644 README.md config/wanda-ipfs.toml config/wanda-ipfs.service "$stage/$name/"
    tar -C "$stage" --sort=name --mtime="@$epoch" --owner=0 --group=0 --numeric-owner \
        -cf - "$name" | gzip -n -9 > "$dist/$name.tar.gz"
    archives+=("$name.tar.gz")
done
(cd "$dist" && sha256sum "${archives[@]}" > SHA256SUMS && cat SHA256SUMS)
for a in "${archives[@]}"; do
    printf '%s: %s bytes\n' "dist/$a" "$(stat -c %s "$dist/$a")"
done
