#!/usr/bin/env bash
# Outage benchmark (issue 11): what a sink outage costs the relay.
#
# Two cases, each with chatrelay's only sink down and a backlog of 1,000
# pending deliveries (1,000 conversations) built before measuring:
#   refused: the sink's URL is a closed port (connection refused): the
#            circuit breaker marks it down after 5 failures in a row;
#   gone:    the destination answers 410 (marked down at once, held): the
#            baseline, an outage that costs nothing but its probe.
# For each: ingest throughput with the same load generator, then the relay's
# CPU while idle and down (its utime+stime from /proc/PID/stat over a
# window). The cases alternate, ROUNDS times, in one run; the ratio is
# refused/gone ingest (want >= 0.9) and the CPU is a share of one core
# (want < 5%).
#
#   bench/outage.sh [rounds=2] [duration=10s] [idle_window_s=30]
#   CHATRELAY_BIN=/path/to/chatrelay bench/outage.sh   # measure another build
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-2}
D=${2:-10s}
IDLE=${3:-30}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
bin=${CHATRELAY_BIN:-}
if [ -z "$bin" ]; then
  go build -o "$work/chatrelay" ./cmd/chatrelay
  bin=$work/chatrelay
fi
go build -o "$work/loadgen" ./bench/loadgen
go build -o "$work/sinkd" ./bench/sinkd
SECRET=bench-signing-secret
LISTEN=127.0.0.1:18380 ADMIN=127.0.0.1:19390 GONE=127.0.0.1:18391 CLOSED=127.0.0.1:18399
TCK=$(getconf CLK_TCK)

wait_ready() { for _ in $(seq 200); do curl -fs "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "not ready: $1" >&2; exit 1; }
metric() { curl -s "http://$ADMIN/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
if (exec 3<>"/dev/tcp/${CLOSED%:*}/${CLOSED#*:}") 2>/dev/null; then echo "$CLOSED is in use; it must be closed" >&2; exit 1; fi

"$work/sinkd" -listen "$GONE" -status 410 2>/dev/null &
wait_ready "http://$GONE/stats"

results=()
run_case() { # $1 = label, $2 = sink url
  rm -rf "$work/data"
  cat > "$work/cfg.yaml" <<YAML
listen: $LISTEN
admin: {listen: $ADMIN}
signing_secrets: [$SECRET]
log: {level: warn, format: json}
store: {path: $work/data}
retry: {initial: 1s, max: 5m, max_age: 24h}
sinks:
  - {name: hook, type: webhook, url: "$2"}
YAML
  "$bin" serve --config "$work/cfg.yaml" 2>"$work/relay-$1.log" &
  relay=$!
  wait_ready "http://$LISTEN/readyz"
  "$work/loadgen" -url "http://$LISTEN/webhook" -secret $SECRET -c 8 -n 1000 -convs 1000 -json >/dev/null
  for _ in $(seq 300); do [ "$(metric 'chatrelay_sink_up{sink="hook"}')" = "0" ] && break; sleep 0.1; done
  up=$(metric 'chatrelay_sink_up{sink="hook"}')
  res=$("$work/loadgen" -url "http://$LISTEN/webhook" -secret $SECRET -c 32 -d "$D" -convs 1000 -json)
  depth=$(metric 'chatrelay_queue_depth{sink="hook"}')
  sleep 2 # let the last requests' work settle
  attempts0=$(metric 'chatrelay_delivery_attempts_total{sink="hook"}')
  t0=$(cpu_ticks $relay)
  sleep "$IDLE"
  t1=$(cpu_ticks $relay)
  attempts1=$(metric 'chatrelay_delivery_attempts_total{sink="hook"}')
  cpu=$(python3 -c "print(f'{100*($t1-$t0)/($TCK*$IDLE):.2f}')")
  echo "$1: sink_up $up while measured; ingest $res; then $depth pending, idle and down ${IDLE}s: CPU ${cpu}% of a core, $((${attempts1%.*}-${attempts0%.*})) send attempts"
  results+=("$1 $(echo "$res" | python3 -c 'import json,sys; print(json.load(sys.stdin)["rps"])') $cpu")
  kill $relay; wait $relay 2>/dev/null || true
}

for r in $(seq "$ROUNDS"); do
  run_case refused "http://$CLOSED/in"
  run_case gone "http://$GONE/in"
done

printf '%s\n' "${results[@]}" | python3 -c '
import sys
rows = [l.split() for l in sys.stdin if l.strip()]
by = {}
for label, rps, cpu in rows:
    by.setdefault(label, []).append((float(rps), float(cpu)))
mean = lambda xs: sum(xs) / len(xs)
r, g = by["refused"], by["gone"]
ratio = mean([x[0] for x in r]) / mean([x[0] for x in g])
print(f"ingest with 1,000+ pending: refused {mean([x[0] for x in r]):.0f} req/s, gone (410, held) {mean([x[0] for x in g]):.0f} req/s: "
      f"ratio {ratio:.2f} (want >= 0.9); per round: " + ", ".join(f"{a[0]/b[0]:.2f}" for a, b in zip(r, g)))
print(f"CPU idle and down: refused {max(x[1] for x in r):.2f}% of a core at most, gone {max(x[1] for x in g):.2f}% (want < 5%)")
'
