#!/usr/bin/env bash
# Accept→delivered latency: a steady R events/s (default 1,000) for D
# (default 20s) into chatrelay with three unthrottled webhook sinks, all
# pointing at one fast local destination (bench/sinkd), which measures the
# time from each event's send to each of its deliveries.
#
#   bench/latency.sh [rate=1000] [duration=20s]
set -euo pipefail
cd "$(dirname "$0")/.."
R=${1:-1000}
D=${2:-20s}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
go build -o "$work/chatrelay" ./cmd/chatrelay
go build -o "$work/loadgen" ./bench/loadgen
go build -o "$work/sinkd" ./bench/sinkd
SECRET=bench-signing-secret
wait_ready() { for _ in $(seq 100); do curl -fs "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "not ready: $1" >&2; exit 1; }

"$work/sinkd" -listen 127.0.0.1:18291 2>/dev/null &
wait_ready http://127.0.0.1:18291/stats
cat > "$work/cfg.yaml" <<YAML
listen: 127.0.0.1:18280
admin: {listen: 127.0.0.1:19290}
signing_secrets: [$SECRET]
log: {level: warn, format: json}
store: {path: $work/data}
sinks:
  - {name: one, type: webhook, url: "http://127.0.0.1:18291/one"}
  - {name: two, type: webhook, url: "http://127.0.0.1:18291/two"}
  - {name: three, type: webhook, url: "http://127.0.0.1:18291/three"}
YAML
"$work/chatrelay" serve --config "$work/cfg.yaml" 2>"$work/relay.log" &
wait_ready http://127.0.0.1:18280/readyz
echo "sending $R events/s for $D into three webhook sinks..."
load=$("$work/loadgen" -url http://127.0.0.1:18280/webhook -secret $SECRET -c 64 -rate "$R" -d "$D" -convs 1000 -json)
echo "  ingest: $load"
sleep 2
echo "  deliveries: $(curl -s http://127.0.0.1:18291/stats)"
