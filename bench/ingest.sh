#!/usr/bin/env bash
# Ingest benchmark, all in one run with the same load generator:
#   bare  the bare receiver (verify + parse + 200, no durability): baseline 1;
#   log   the minimal group-commit log receiver (verify + parse, append to one
#         log file, answer after one fdatasync per group): baseline 2, the
#         limit of durable ingest on this disk;
#   A     the chatrelay binary with its only sink down (410: held; the ingest
#         path alone);
#   B     the chatrelay binary delivering every event to a fast local webhook
#         receiver;
#   C     (with NATS=1) like A on the NATS JetStream store (a nats-server built
#         from the module cache, on loopback, default settings).
# Each round runs every variant once, one after the other; with several rounds
# the variants alternate, and the summary takes each one's best round (the
# machine is shared: best-of over alternating runs, ratios within one run).
#
#   bench/ingest.sh [connections=32] [duration=10s] [rounds=1]
#   NATS=1 bench/ingest.sh 32 10s 3
set -euo pipefail
cd "$(dirname "$0")/.."
C=${1:-32}
D=${2:-10s}
R=${3:-1}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
go build -o "$work/chatrelay" ./cmd/chatrelay
go build -o "$work/loadgen" ./bench/loadgen
go build -o "$work/bare" ./bench/bare
go build -o "$work/logrecv" ./bench/logrecv
go build -o "$work/sinkd" ./bench/sinkd
[ "${NATS:-0}" = 1 ] && go build -o "$work/nats-server" github.com/nats-io/nats-server/v2
SECRET=bench-signing-secret
results="$work/results.jsonl"

wait_ready() { for _ in $(seq 100); do curl -fs "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "not ready: $1" >&2; exit 1; }
load() { # $1 = variant, $2 = round, $3 = url
  res=$("$work/loadgen" -url "$3" -secret $SECRET -c "$C" -d "$D" -json)
  echo "  $1: $res"
  echo "{\"variant\":\"$1\",\"round\":$2,\"result\":$res}" >> "$results"
}

run_relay() { # $1 = variant, $2 = round, $3 = sink url, $4 = store block (default: bolt)
  rm -rf "$work/data"
  store=${4:-"store: {path: $work/data}"}
  cat > "$work/cfg.yaml" <<YAML
listen: 127.0.0.1:18080
admin: {listen: 127.0.0.1:19090}
signing_secrets: [$SECRET]
log: {level: warn, format: json}
$store
sinks:
  - {name: hook, type: webhook, url: "$3"}
YAML
  "$work/chatrelay" serve --config "$work/cfg.yaml" 2>"$work/relay.log" &
  relay=$!
  wait_ready http://127.0.0.1:18080/readyz
  load "$1" "$2" http://127.0.0.1:18080/webhook
  if ! kill $relay 2>/dev/null || [ "$(echo "$res" | python3 -c 'import json,sys; print(json.load(sys.stdin)["non_2xx"])')" != 0 ]; then
    echo "  $1: the relay failed; its log:" >&2; tail -c 2000 "$work/relay.log" >&2
  fi
  wait $relay 2>/dev/null || true
}

"$work/sinkd" -listen 127.0.0.1:18091 -status 410 2>/dev/null &
wait_ready http://127.0.0.1:18091/stats
"$work/sinkd" -listen 127.0.0.1:18092 2>/dev/null &
wait_ready http://127.0.0.1:18092/stats
if [ "${NATS:-0}" = 1 ]; then
  "$work/nats-server" -a 127.0.0.1 -p 14222 -js -sd "$work/nats" >/dev/null 2>&1 &
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/14222) 2>/dev/null && break; sleep 0.1; done
fi

echo "$C connections, $D per run, $R round(s)"
for round in $(seq "$R"); do
  echo "round $round"
  "$work/bare" -listen 127.0.0.1:18090 -secret $SECRET 2>/dev/null &
  pid=$!
  wait_ready http://127.0.0.1:18090/healthz
  load bare "$round" http://127.0.0.1:18090/webhook
  kill $pid; wait $pid 2>/dev/null || true

  rm -rf "$work/log"
  "$work/logrecv" -listen 127.0.0.1:18093 -secret $SECRET -dir "$work/log" 2>/dev/null &
  pid=$!
  wait_ready http://127.0.0.1:18093/healthz
  load log "$round" http://127.0.0.1:18093/webhook
  kill $pid; wait $pid 2>/dev/null || true

  run_relay A "$round" http://127.0.0.1:18091/in
  run_relay B "$round" http://127.0.0.1:18092/in
  if [ "${NATS:-0}" = 1 ]; then
    run_relay C "$round" http://127.0.0.1:18091/in "store: {driver: nats, nats: {url: 'nats://127.0.0.1:14222'}}"
  fi
done
echo "  B's destination: $(curl -s http://127.0.0.1:18092/stats)"

python3 - "$results" "$C" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
rounds = sorted({r["round"] for r in rows})
by = {}
for r in rows:
    by.setdefault(r["variant"], {})[r["round"]] = r["result"]
# Ratios within each round, then the best round of each variant.
for rd in rounds:
    got = {v: by[v][rd] for v in by if rd in by[v]}
    log = got.get("log", {}).get("rps") or 1
    bare = got.get("bare", {}).get("rps") or 1
    print(f"round {rd}: " + ", ".join(
        f"{v} {got[v]['rps']:.0f} req/s ({got[v]['rps']/log:.2f}x log, {got[v]['rps']/bare:.2f}x bare, p50 {got[v]['p50_ms']:.2f} ms, p99 {got[v]['p99_ms']:.2f} ms, non-2xx {got[v]['non_2xx']})"
        for v in got))
best = {v: max(by[v].values(), key=lambda r: r["rps"]) for v in by}
log, bare = best["log"], best["bare"]
print(f"\nbest of {len(rounds)} round(s), {sys.argv[2]} connections:")
print("| | req/s | vs log | vs bare | p50 | p99 | non-2xx |")
print("|---|---:|---:|---:|---:|---:|---:|")
for v in ["bare", "log", "A", "B", "C"]:
    if v in best:
        r = best[v]
        print(f"| {v} | {r['rps']:,.0f} | {r['rps']/log['rps']:.2f}x | {r['rps']/bare['rps']:.2f}x | {r['p50_ms']:.2f} ms | {r['p99_ms']:.2f} ms | {r['non_2xx']} |")
PY
