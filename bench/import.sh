#!/usr/bin/env bash
# Import benchmark: wanda-ipfs vs Kubo side by side in one run, as ratios.
# Usage: bash bench/import.sh [SIZE_MIB]   (default 256)
# Needs the test peers installed (bash scripts/test.sh installs them, or
# scripts/install-test-deps.sh alone). Everything stays on this machine: no network.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/wanda-ipfs-target}"
cargo build --release --locked --quiet
PY="${WANDA_KUBO_PYTHON:-/tmp/wanda-kubo-venv/bin/python}"
exec "$PY" bench/import_bench.py --wanda "$CARGO_TARGET_DIR/release/wanda-ipfs" --size-mib "${1:-256}"
