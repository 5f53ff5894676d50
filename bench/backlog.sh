#!/usr/bin/env bash
# Backlog benchmark (issue: memory bound and drain rate).
#
#  1. chatrelay runs with one webhook sink whose destination is gone (it
#     answers 410: the sink is marked down and holds its deliveries, one
#     probe every retry.max), so a backlog builds up.
#  2. Ingest latency with an empty queue (a short loadgen run).
#  3. A backlog of N events (default 100,000) over 1,000 conversations.
#  4. RSS and open file descriptors of the chatrelay process.
#  5. Ingest latency again, with the backlog in the store.
#  6. The destination comes back: the drain rate at the destination.
#
# Every listener is on a free port the kernel picks.
#
#   bench/backlog.sh [events=100000]
#   CHATRELAY_BIN=/path/chatrelay bench/backlog.sh ...   # measure another build
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-100000}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
if [ -n "${CHATRELAY_BIN:-}" ]; then cp "$CHATRELAY_BIN" "$work/chatrelay"; else go build -o "$work/chatrelay" ./cmd/chatrelay; fi
go build -o "$work/loadgen" ./bench/loadgen
go build -o "$work/sinkd" ./bench/sinkd
SECRET=bench-signing-secret
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(freeport)
admin=$(freeport)
dport=$(freeport)
wait_ready() { for _ in $(seq 100); do curl -fs "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "not ready: $1" >&2; exit 1; }
metric() { curl -s http://127.0.0.1:$admin/metrics | awk -v m="$1" '$1 == m {print $2}'; }

"$work/sinkd" -listen 127.0.0.1:$dport 2>/dev/null &
wait_ready http://127.0.0.1:$dport/stats
curl -fs -X POST "http://127.0.0.1:$dport/down?status=410"
cat > "$work/cfg.yaml" <<YAML
listen: 127.0.0.1:$port
admin: {listen: 127.0.0.1:$admin}
signing_secrets: [$SECRET]
log: {level: error, format: json}
store: {path: $work/data}
retry: {initial: 1s, max: 2s, max_age: 24h}
sinks:
  - {name: hook, type: webhook, url: "http://127.0.0.1:$dport/in"}
YAML
"$work/chatrelay" serve --config "$work/cfg.yaml" 2>"$work/relay.log" &
relay=$!
wait_ready http://127.0.0.1:$port/readyz

lat() { "$work/loadgen" -url http://127.0.0.1:$port/webhook -secret $SECRET -c 8 -d "$1" -convs 1000 -json; }
echo "ingest latency, empty queue (8 connections, 5s):"
empty=$(lat 5s); echo "  $empty"

echo "building a backlog of $N events over 1,000 conversations..."
start=$(date +%s.%N)
"$work/loadgen" -url http://127.0.0.1:$port/webhook -secret $SECRET -c 32 -n "$N" -convs 1000 -json > "$work/fill.json"
echo "  $(cat "$work/fill.json")"
depth=$(metric 'chatrelay_queue_depth{sink="hook"}')
rss_kb=$(awk '/^VmRSS/ {print $2}' /proc/$relay/status)
hwm_kb=$(awk '/^VmHWM/ {print $2}' /proc/$relay/status)
fds=$(ls /proc/$relay/fd | wc -l)
dbsize=$(du -k "$work/data/chatrelay.db" | cut -f1)
dirsize=$(du -sk "$work/data" | cut -f1)
echo "backlog: queue depth $depth; RSS $((rss_kb/1024)) MiB (peak $((hwm_kb/1024)) MiB); $fds open fds; store file $((dbsize/1024)) MiB, store directory (with the intake log) $((dirsize/1024)) MiB"

echo "ingest latency with the backlog (8 connections, 5s):"
full=$(lat 5s); echo "  $full"

echo "destination back up: draining..."
curl -fs -X POST http://127.0.0.1:$dport/up
t0=$(date +%s.%N)
target=$(metric 'chatrelay_queue_depth{sink="hook"}')
while :; do
  d=$(metric 'chatrelay_queue_depth{sink="hook"}')
  [ "${d%.*}" -eq 0 ] && break
  sleep 0.2
done
t1=$(date +%s.%N)
stats=$(curl -s http://127.0.0.1:$dport/stats)
echo "  destination: $stats"
python3 - "$empty" "$full" "$target" "$t0" "$t1" "$stats" "$((rss_kb))" "$((hwm_kb))" <<'PY'
import json, sys
empty, full = json.loads(sys.argv[1]), json.loads(sys.argv[2])
n, t0, t1 = float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
stats = json.loads(sys.argv[6])
print(f"drained {n:.0f} deliveries in {t1-t0:.1f}s: {n/(t1-t0):.0f} deliveries/s "
      f"(destination saw {stats['delivered']} requests, {stats['duplicates']} duplicates)")
print(f"ingest p50 {empty['p50_ms']:.2f} -> {full['p50_ms']:.2f} ms ({full['p50_ms']/empty['p50_ms']:.2f}x), "
      f"p99 {empty['p99_ms']:.2f} -> {full['p99_ms']:.2f} ms ({full['p99_ms']/empty['p99_ms']:.2f}x) with the backlog; "
      f"RSS {int(sys.argv[7])/1024:.0f} MiB, peak {int(sys.argv[8])/1024:.0f} MiB")
PY
