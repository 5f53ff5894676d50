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
#   A0 B0 (with BEFORE_BIN=<binary>) A and B on another build, in the same
#         rounds: before/after pairs measured a minute apart, not a session;
#   C     (with NATS=1) like A on the NATS JetStream store (a nats-server built
#         from the module cache, on loopback, default settings).
# Each round runs every variant once, one after the other (the relay variants
# in reverse order every other round); with several rounds the variants
# alternate. The summary gives the ratios within each round, their median,
# and each variant's best round (the machine is shared: ratios within one
# round pair runs of the same minute; best-of pairs runs of different ones).
# Every listener is on a free port the kernel picks, so that two runs on the
# same machine do not collide.
#
#   bench/ingest.sh [connections=32] [duration=10s] [rounds=1]
#   NATS=1 bench/ingest.sh 32 10s 3
#   CHATRELAY_BIN=/path/chatrelay bench/ingest.sh ...   # measure another build as A/B
#   BEFORE_BIN=/path/chatrelay bench/ingest.sh ...      # add A0/B0 on that build
#   PROFILE=/dir bench/ingest.sh ...                    # CPU profile (5 s) of each relay run
#   RELAYS="A A0" bench/ingest.sh ...                   # only these relay variants
set -euo pipefail
cd "$(dirname "$0")/.."
C=${1:-32}
D=${2:-10s}
R=${3:-1}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
if [ -n "${CHATRELAY_BIN:-}" ]; then cp "$CHATRELAY_BIN" "$work/chatrelay"; else go build -o "$work/chatrelay" ./cmd/chatrelay; fi
[ -n "${BEFORE_BIN:-}" ] && cp "$BEFORE_BIN" "$work/chatrelay0"
go build -o "$work/loadgen" ./bench/loadgen
go build -o "$work/bare" ./bench/bare
go build -o "$work/logrecv" ./bench/logrecv
go build -o "$work/sinkd" ./bench/sinkd
[ "${NATS:-0}" = 1 ] && go build -o "$work/nats-server" github.com/nats-io/nats-server/v2
[ -n "${PROFILE:-}" ] && mkdir -p "$PROFILE"
SECRET=bench-signing-secret
results="$work/results.jsonl"

freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_ready() { for _ in $(seq 100); do curl -fs "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "not ready: $1" >&2; exit 1; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; } # user + system CPU of a process, in clock ticks
load() { # $1 = variant, $2 = round, $3 = url, $4 = pid of the server under test
  t0=$(ticks "$4")
  res=$("$work/loadgen" -url "$3" -secret $SECRET -c "$C" -d "$D" -json)
  t1=$(ticks "$4")
  # The server's CPU per request answered, in microseconds.
  cpu=$(python3 -c "import json,sys; r=json.loads(sys.argv[1]); print(round(($t1-$t0)/$(getconf CLK_TCK)*1e6/max(r['requests'],1), 1))" "$res")
  res=${res%\}},\"cpu_us_per_req\":$cpu}
  echo "  $1: $res"
  echo "{\"variant\":\"$1\",\"round\":$2,\"result\":$res}" >> "$results"
}

run_relay() { # $1 = variant, $2 = round, $3 = sink url, $4 = binary, $5 = store block (default: bolt)
  rm -rf "$work/data"
  store=${5:-"store: {path: $work/data}"}
  port=$(freeport)
  admin=$(freeport)
  cat > "$work/cfg.yaml" <<YAML
listen: 127.0.0.1:$port
admin: {listen: 127.0.0.1:$admin}
signing_secrets: [$SECRET]
log: {level: warn, format: json}
$store
sinks:
  - {name: hook, type: webhook, url: "$3"}
YAML
  "$4" serve --config "$work/cfg.yaml" 2>"$work/relay.log" &
  relay=$!
  wait_ready "http://127.0.0.1:$port/readyz"
  prof=
  if [ -n "${PROFILE:-}" ]; then
    (sleep 2; curl -s -o "$PROFILE/$1-c$C-r$2.pprof" "http://127.0.0.1:$admin/debug/pprof/profile?seconds=5") &
    prof=$!
  fi
  load "$1" "$2" "http://127.0.0.1:$port/webhook" "$relay"
  [ -n "$prof" ] && wait "$prof"
  if ! kill $relay 2>/dev/null || [ "$(echo "$res" | python3 -c 'import json,sys; print(json.load(sys.stdin)["non_2xx"])')" != 0 ]; then
    echo "  $1: the relay failed; its log:" >&2; tail -c 2000 "$work/relay.log" >&2
  fi
  wait $relay 2>/dev/null || true
}

held=$(freeport)
"$work/sinkd" -listen "127.0.0.1:$held" -status 410 2>/dev/null &
wait_ready "http://127.0.0.1:$held/stats"
dest=$(freeport)
"$work/sinkd" -listen "127.0.0.1:$dest" 2>/dev/null &
wait_ready "http://127.0.0.1:$dest/stats"
if [ "${NATS:-0}" = 1 ]; then
  nport=$(freeport)
  "$work/nats-server" -a 127.0.0.1 -p "$nport" -js -sd "$work/nats" >/dev/null 2>&1 &
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$nport) 2>/dev/null && break; sleep 0.1; done
fi

relays=(A B)
[ -n "${BEFORE_BIN:-}" ] && relays+=(A0 B0)
[ "${NATS:-0}" = 1 ] && relays+=(C)
[ -n "${RELAYS:-}" ] && read -ra relays <<< "$RELAYS"
echo "$C connections, $D per run, $R round(s); load average $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq "$R"); do
  echo "round $round (load average $(cut -d' ' -f1-3 /proc/loadavg))"
  port=$(freeport)
  "$work/bare" -listen "127.0.0.1:$port" -secret $SECRET 2>/dev/null &
  pid=$!
  wait_ready "http://127.0.0.1:$port/healthz"
  load bare "$round" "http://127.0.0.1:$port/webhook" "$pid"
  kill $pid; wait $pid 2>/dev/null || true

  rm -rf "$work/log"
  port=$(freeport)
  "$work/logrecv" -listen "127.0.0.1:$port" -secret $SECRET -dir "$work/log" 2>/dev/null &
  pid=$!
  wait_ready "http://127.0.0.1:$port/healthz"
  load log "$round" "http://127.0.0.1:$port/webhook" "$pid"
  kill $pid; wait $pid 2>/dev/null || true

  order=("${relays[@]}")
  if [ $((round % 2)) = 0 ]; then
    order=()
    for ((i = ${#relays[@]} - 1; i >= 0; i--)); do order+=("${relays[$i]}"); done
  fi
  for v in "${order[@]}"; do
    case $v in
      A) run_relay A "$round" "http://127.0.0.1:$held/in" "$work/chatrelay" ;;
      B) run_relay B "$round" "http://127.0.0.1:$dest/in" "$work/chatrelay" ;;
      A0) run_relay A0 "$round" "http://127.0.0.1:$held/in" "$work/chatrelay0" ;;
      B0) run_relay B0 "$round" "http://127.0.0.1:$dest/in" "$work/chatrelay0" ;;
      C) run_relay C "$round" "http://127.0.0.1:$held/in" "$work/chatrelay" \
           "store: {driver: nats, nats: {url: 'nats://127.0.0.1:$nport'}}" ;;
    esac
  done
done
echo "  B's destination: $(curl -s "http://127.0.0.1:$dest/stats")"
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$results" "$C" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
rounds = sorted({r["round"] for r in rows})
by = {}
for r in rows:
    by.setdefault(r["variant"], {})[r["round"]] = r["result"]
order = [v for v in ["bare", "log", "A", "B", "A0", "B0", "C"] if v in by]
# Ratios within each round.
ratios = {}
for rd in rounds:
    got = {v: by[v][rd] for v in order if rd in by[v]}
    log = got.get("log", {}).get("rps") or 1
    bare = got.get("bare", {}).get("rps") or 1
    for v in got:
        ratios.setdefault(v, []).append((got[v]["rps"] / log, got[v]["p50_ms"] / (got.get("log", {}).get("p50_ms") or 1)))
    print(f"round {rd}: " + ", ".join(
        f"{v} {got[v]['rps']:.0f} req/s ({got[v]['rps']/log:.2f}x log, {got[v]['rps']/bare:.2f}x bare, p50 {got[v]['p50_ms']:.2f} ms, p99 {got[v]['p99_ms']:.2f} ms, non-2xx {got[v]['non_2xx']})"
        for v in got))
print(f"\nper round, {sys.argv[2]} connections (vs the log receiver of the same round):")
print("| | req/s vs log, each round | median | p50 vs log's, each round | median | p99, each round | CPU per request, each round |")
print("|---|---|---:|---|---:|---|---|")
for v in order:
    rs = [r[0] for r in ratios[v]]
    ps = [r[1] for r in ratios[v]]
    p99 = [by[v][rd]["p99_ms"] for rd in rounds if rd in by[v]]
    cpu = [by[v][rd].get("cpu_us_per_req", 0) for rd in rounds if rd in by[v]]
    print(f"| {v} | {' '.join(f'{x:.2f}' for x in rs)} | {statistics.median(rs):.2f}x | {' '.join(f'{x:.2f}' for x in ps)} | {statistics.median(ps):.2f}x | {' '.join(f'{x:.1f}' for x in p99)} ms | {' '.join(f'{x:.0f}' for x in cpu)} µs |")
best = {v: max(by[v].values(), key=lambda r: r["rps"]) for v in by}
log, bare = best["log"], best["bare"]
print(f"\nbest of {len(rounds)} round(s), {sys.argv[2]} connections:")
print("| | req/s | vs log | vs bare | p50 | p99 | non-2xx | CPU/req |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for v in order:
    r = best[v]
    print(f"| {v} | {r['rps']:,.0f} | {r['rps']/log['rps']:.2f}x | {r['rps']/bare['rps']:.2f}x | {r['p50_ms']:.2f} ms | {r['p99_ms']:.2f} ms | {r['non_2xx']} | {r.get('cpu_us_per_req', 0):.0f} µs |")
PY
