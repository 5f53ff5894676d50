#!/usr/bin/env bash
# Outage benchmark (issue 11): what a sink outage costs the relay.
#
# Two chatrelay processes run side by side, each with its only sink down and
# a backlog of 1,000 pending deliveries over 1,000 conversations, built
# before anything is measured:
#   refused: the sink's URL is a closed port (connection refused): the
#            circuit breaker marks it down after 5 failures in a row;
#   gone:    the destination answers 410 (marked down at once, its
#            deliveries held): the baseline, an outage that costs nothing
#            but its probe.
# Ingest: the same load generator drives them in turns, SLICES short slices
# each, alternating (ABBA), so that the load of a shared machine falls on
# both alike; the ratio is refused/gone requests per second (want >= 0.9).
# CPU: each one's utime+stime from /proc/PID/stat, as a share of one core
# (want < 5%), over two windows while idle and down: the first seconds of
# the outage, right after the backlog was built (when every pending delivery
# would retry soonest without the breaker), and again after the ingest.
#
#   bench/outage.sh [slices=10] [slice=2s] [idle_window_s=30]
#   CHATRELAY_BIN=/path/to/chatrelay bench/outage.sh   # measure another build
set -euo pipefail
cd "$(dirname "$0")/.."
SLICES=${1:-10}
SLICE=${2:-2s}
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
GONE=127.0.0.1:18391 CLOSED=127.0.0.1:18399
TCK=$(getconf CLK_TCK)
declare -A listen=([refused]=127.0.0.1:18380 [gone]=127.0.0.1:18381)
declare -A admin=([refused]=127.0.0.1:19390 [gone]=127.0.0.1:19391)
declare -A url=([refused]=http://$CLOSED/in [gone]=http://$GONE/in)
declare -A pid

wait_ready() { for _ in $(seq 200); do curl -fs "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "not ready: $1" >&2; exit 1; }
metric() { curl -s "http://${admin[$1]}/metrics" | awk -v m="$2" '$1 == m {print $2}'; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
if (exec 3<>"/dev/tcp/${CLOSED%:*}/${CLOSED#*:}") 2>/dev/null; then echo "$CLOSED is in use; it must be closed" >&2; exit 1; fi

"$work/sinkd" -listen "$GONE" -status 410 2>/dev/null &
wait_ready "http://$GONE/stats"

for c in refused gone; do
  mkdir -p "$work/$c"
  cat > "$work/$c/cfg.yaml" <<YAML
listen: ${listen[$c]}
admin: {listen: ${admin[$c]}}
signing_secrets: [$SECRET]
log: {level: warn, format: json}
store: {path: $work/$c/data}
retry: {initial: 1s, max: 5m, max_age: 24h}
sinks:
  - {name: hook, type: webhook, url: "${url[$c]}"}
YAML
  "$bin" serve --config "$work/$c/cfg.yaml" 2>"$work/$c/relay.log" &
  pid[$c]=$!
  wait_ready "http://${listen[$c]}/readyz"
  "$work/loadgen" -url "http://${listen[$c]}/webhook" -secret $SECRET -c 8 -n 1000 -convs 1000 -json >/dev/null
done
idle_cpu() { # $1 = window label: both idle for IDLE seconds
  declare -A t0 a0
  for c in refused gone; do t0[$c]=$(cpu_ticks ${pid[$c]}); a0[$c]=$(metric $c 'chatrelay_delivery_attempts_total{sink="hook"}'); done
  sleep "$IDLE"
  for c in refused gone; do
    t1=$(cpu_ticks ${pid[$c]})
    a1=$(metric $c 'chatrelay_delivery_attempts_total{sink="hook"}')
    echo "cpu $1 $c $(python3 -c "print(100*(${t1}-${t0[$c]})/($TCK*$IDLE))") $((${a1%.*}-${a0[$c]%.*})) $(metric $c 'chatrelay_queue_depth{sink="hook"}') $(metric $c 'chatrelay_sink_up{sink="hook"}')" >> "$work/slices"
  done
}
: > "$work/slices"
for _ in $(seq 50); do [ "$(metric refused 'chatrelay_sink_up{sink="hook"}')" = "0" ] && break; sleep 0.1; done
idle_cpu first

for i in $(seq "$SLICES"); do
  order="refused gone"
  [ $((i % 2)) -eq 0 ] && order="gone refused" # ABBA: neither goes first every time
  for c in $order; do
    echo "$c $("$work/loadgen" -url "http://${listen[$c]}/webhook" -secret $SECRET -c 32 -d "$SLICE" -convs 1000 -json)" >> "$work/slices"
  done
done

sleep 2 # let the last requests' work settle
idle_cpu later

python3 - "$work/slices" "$IDLE" <<'PY'
import json, sys
reqs, secs, cpu = {}, {}, {}
per = {"refused": [], "gone": []}
for line in open(sys.argv[1]):
    f = line.split(" ", 1)
    if f[0] == "cpu":
        window, c, pct, attempts, depth, up = f[1].split()
        cpu[(window, c)] = (float(pct), int(attempts), int(float(depth)), up)
        continue
    r = json.loads(f[1])
    reqs[f[0]] = reqs.get(f[0], 0) + r["requests"]
    secs[f[0]] = secs.get(f[0], 0) + r["seconds"]
    per[f[0]].append(r["rps"])
rps = {c: reqs[c] / secs[c] for c in reqs}
print(f"ingest, sink down with 1,000+ pending ({len(per['gone'])} alternating slices each): "
      f"refused {rps['refused']:.0f} req/s, gone (410, held) {rps['gone']:.0f} req/s: ratio {rps['refused']/rps['gone']:.2f} (want >= 0.9)")
print("  refused/gone per slice pair: " + " ".join(f"{a/b:.2f}" for a, b in zip(per["refused"], per["gone"])))
for window, what in (("first", "the outage's first"), ("later", "after the ingest,")):
    for c in ("refused", "gone"):
        pct, attempts, depth, up = cpu[(window, c)]
        print(f"idle and down, {what} {sys.argv[2]}s, {c}: CPU {pct:.2f}% of a core (want < 5%), "
              f"{attempts} send attempts, {depth} pending, sink_up {up}")
PY
