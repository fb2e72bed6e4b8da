#!/usr/bin/env bash
# Static release binaries of wanda-ipfs without Docker, on Debian 12 (bookworm), as root for --install.
#
#   bash scripts/build-static.sh [--install] [aarch64|x86_64 ...]     (default: aarch64)
#
# aarch64: Debian's own Rust (rustc-web, from bookworm-security) with its arm64 standard library,
# linked by gcc-aarch64-linux-gnu against a static glibc: the same binary for every Pi running a
# 64-bit OS. x86_64: the rustup toolchain with +crt-static. --install first installs the Debian
# packages the build needs (and qemu-user-static, to run the result here).
#
# Prints, per target, the binary's path, what `file` says of it, and its size; exits non-zero if
# the binary is not a static ELF of that machine, or if the aarch64 one is over its 15 MiB budget.
set -euo pipefail

BUDGET=$((15 * 1024 * 1024))
install=0
targets=()
for a in "$@"; do
    case "$a" in
        --install) install=1 ;;
        aarch64 | x86_64) targets+=("$a") ;;
        -h | --help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "build-static.sh: unknown argument '$a' (try --help)" >&2; exit 2 ;;
    esac
done
[ ${#targets[@]} -gt 0 ] || targets=(aarch64)

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"

debian_packages() {
    local need=(file)
    for t in "${targets[@]}"; do
        case "$t" in
            aarch64) need+=(rustc-web libstd-rust-web-dev:arm64 gcc-aarch64-linux-gnu
                            libc6-dev-arm64-cross qemu-user-static) ;;
            x86_64) need+=(libc6-dev) ;;
        esac
    done
    local missing=()
    for p in "${need[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    # rustc-web in bookworm itself is 1.85, older than the crate's rust-version: the one from
    # bookworm-security is new enough, so an old install is upgraded too.
    if [ ${#missing[@]} -eq 0 ] && ! rustc_ok /usr/bin/rustc 2>/dev/null; then
        missing+=(rustc-web libstd-rust-web-dev:arm64)
    fi
    [ ${#missing[@]} -gt 0 ] || return 0
    echo "installing: ${missing[*]}"
    if [[ " ${missing[*]} " == *":arm64 "* ]] && ! dpkg --print-foreign-architectures | grep -qx arm64; then
        dpkg --add-architecture arm64
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# The crate's rust-version, and whether a compiler meets it.
rust_version() { sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml; }
rustc_ok() {
    local have want
    have=$("$1" --version | awk '{print $2}')
    want=$(rust_version)
    [ "$(printf '%s\n%s\n' "$want" "$have" | sort -V | head -n1)" = "$want" ]
}

[ "$install" = 0 ] || debian_packages

for t in "${targets[@]}"; do
    case "$t" in
        aarch64)
            triple=aarch64-unknown-linux-gnu
            machine="ARM aarch64"
            rustc="${RUSTC_AARCH64:-/usr/bin/rustc}"
            [ -x "$rustc" ] || { echo "no $rustc: run with --install (Debian's rustc-web)" >&2; exit 1; }
            rustc_ok "$rustc" || {
                echo "$rustc is $("$rustc" --version); the crate needs >= $(rust_version):" \
                     "apt-get install rustc-web from bookworm-security (--install does)" >&2
                exit 1
            }
            # Linker and +crt-static come from .cargo/config.toml; C code (aws-lc) needs the
            # cross compiler named too.
            env RUSTC="$rustc" \
                CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc \
                AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar \
                cargo build --release --locked --target "$triple"
            ;;
        x86_64)
            triple=x86_64-unknown-linux-gnu
            machine="x86-64"
            # Given as the target's flags with an explicit --target, so build scripts and proc
            # macros (host code) stay dynamic.
            env CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static" \
                cargo build --release --locked --target "$triple"
            ;;
    esac
    bin="$CARGO_TARGET_DIR/$triple/release/wanda-ipfs"
    what=$(file -b "$bin")
    size=$(stat -c %s "$bin")
    printf '%s\n  file: %s\n  size: %s bytes (%.2f MiB; the aarch64 budget: 15 MiB)\n' \
        "$bin" "$what" "$size" "$(awk -v s="$size" 'BEGIN { print s / 1048576 }')"
    case "$what" in
        *"$machine"*) ;;
        *) echo "not an $machine binary" >&2; exit 1 ;;
    esac
    case "$what" in
        *"statically linked"* | *"static-pie linked"*) ;;
        *) echo "not statically linked" >&2; exit 1 ;;
    esac
    # The budget is the Pi's binary's; the x86-64 one (static-pie, x86 code) is reported only.
    if [ "$t" = aarch64 ] && [ "$size" -gt "$BUDGET" ]; then
        echo "over the 15 MiB budget" >&2
        exit 1
    fi
done
