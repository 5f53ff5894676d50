#!/usr/bin/env bash
# Ingest benchmark: the bare receiver (verify + parse + 200, no durability)
# as the baseline, then the real chatrelay binary (A) with its only sink
# down, (B) delivering to a fast local webhook receiver, and (C) like A on
# the NATS JetStream store (a nats-server built from the module cache, on
# loopback, default settings), all in one run with the same load generator.
# Prints each result and the ratios.
#
#   bench/ingest.sh [connections=32] [duration=10s]
set -euo pipefail
cd "$(dirname "$0")/.."
C=${1:-32}
D=${2:-10s}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
go build -o "$work/chatrelay" ./cmd/chatrelay
go build -o "$work/loadgen" ./bench/loadgen
go build -o "$work/bare" ./bench/bare
go build -o "$work/sinkd" ./bench/sinkd
go build -o "$work/nats-server" github.com/nats-io/nats-server/v2
SECRET=bench-signing-secret

wait_ready() { for _ in $(seq 100); do curl -fs "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "not ready: $1" >&2; exit 1; }

"$work/bare" -listen 127.0.0.1:18090 -secret $SECRET 2>/dev/null &
bare=$!
wait_ready http://127.0.0.1:18090/healthz
echo "baseline: bare receiver"
base=$("$work/loadgen" -url http://127.0.0.1:18090/webhook -secret $SECRET -c "$C" -d "$D" -json)
echo "  $base"
kill $bare; wait $bare 2>/dev/null || true

run_relay() { # $1 = label, $2 = sink url, $3 = store block (default: bolt)
  rm -rf "$work/data"
  store=${3:-"store: {path: $work/data}"}
  cat > "$work/cfg.yaml" <<YAML
listen: 127.0.0.1:18080
admin: {listen: 127.0.0.1:19090}
signing_secrets: [$SECRET]
log: {level: warn, format: json}
$store
sinks:
  - {name: hook, type: webhook, url: "$2"}
YAML
  "$work/chatrelay" serve --config "$work/cfg.yaml" 2>"$work/relay.log" &
  relay=$!
  wait_ready http://127.0.0.1:18080/readyz
  echo "$1"
  res=$("$work/loadgen" -url http://127.0.0.1:18080/webhook -secret $SECRET -c "$C" -d "$D" -json)
  echo "  $res"
  kill $relay; wait $relay 2>/dev/null || true
}

"$work/sinkd" -listen 127.0.0.1:18091 -status 410 2>/dev/null &
gone=$!
wait_ready http://127.0.0.1:18091/stats
run_relay "A: chatrelay, its only sink down (410: held, ingest path alone)" http://127.0.0.1:18091/in
A=$res
"$work/nats-server" -a 127.0.0.1 -p 14222 -js -sd "$work/nats" >/dev/null 2>&1 &
nats=$!
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/14222) 2>/dev/null && break; sleep 0.1; done
run_relay "C: chatrelay on NATS JetStream, its only sink down" http://127.0.0.1:18091/in \
  "store: {driver: nats, nats: {url: 'nats://127.0.0.1:14222'}}"
N=$res
kill $nats; wait $nats 2>/dev/null || true
kill $gone; wait $gone 2>/dev/null || true

"$work/sinkd" -listen 127.0.0.1:18092 2>/dev/null &
wait_ready http://127.0.0.1:18092/stats
run_relay "B: chatrelay delivering to a local webhook receiver" http://127.0.0.1:18092/in
B=$res
echo "  destination: $(curl -s http://127.0.0.1:18092/stats)"

python3 - "$base" "$A" "$B" "$N" <<'PY'
import json, sys
base, a, b, c = (json.loads(x) for x in sys.argv[1:5])
print(f"ratios vs bare ({base['rps']:.0f} req/s): A {a['rps']/base['rps']:.2f}x (p99 {a['p99_ms']:.2f} ms, non-2xx {a['non_2xx']}), "
      f"B {b['rps']/base['rps']:.2f}x (p99 {b['p99_ms']:.2f} ms, non-2xx {b['non_2xx']}), "
      f"C (NATS) {c['rps']/base['rps']:.2f}x (p99 {c['p99_ms']:.2f} ms, non-2xx {c['non_2xx']}); NATS/bolt {c['rps']/a['rps']:.2f}x")
PY
