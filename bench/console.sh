#!/usr/bin/env bash
# Console benchmark (issues 11 and 15): what the web console's overview
# costs the relay, watched and not.
#
# chatrelay runs with its only sink down (a closed port) and the console on
# by default on its admin listener. Its CPU (utime+stime from /proc/PID/stat,
# as a share of one core) over four windows:
#   1. 30 s of steady traffic (-rate events/s, default 200), nobody watching;
#   2. the same with a live overview open (curl on /live: the server-sent
#      events a browser's overview page reads);
#   3. 15 s idle after a fast ingest of N events (default 75,000), nobody
#      watching;
#   4. the same 15 s with a live overview open.
# Then the overview page's count of chat events in the last day (all of them
# were sent within it), read as the console shows it.
#
#   bench/console.sh [rate=200] [events=75000]
#   CHATRELAY_BIN=/path/to/chatrelay bench/console.sh   # measure another build
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${1:-200}
N=${2:-75000}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
bin=${CHATRELAY_BIN:-}
if [ -z "$bin" ]; then
  go build -o "$work/chatrelay" ./cmd/chatrelay
  bin=$work/chatrelay
fi
go build -o "$work/loadgen" ./bench/loadgen
SECRET=bench-signing-secret
TCK=$(getconf CLK_TCK)
# Free ports, chosen by the kernel: several copies can run side by side.
read -r LISTEN ADMIN CLOSED < <(python3 -c 'import socket
ss = [socket.socket() for _ in range(3)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')
cat > "$work/cfg.yaml" <<YAML
listen: 127.0.0.1:$LISTEN
admin: {listen: 127.0.0.1:$ADMIN}
signing_secrets: [$SECRET]
log: {level: warn, format: json}
store: {path: $work/data}
retry: {initial: 1s, max: 5m, max_age: 24h}
sinks:
  - {name: hook, type: webhook, url: "http://127.0.0.1:$CLOSED/in"}
YAML
"$bin" serve --config "$work/cfg.yaml" 2>"$work/relay.log" &
pid=$!
for _ in $(seq 200); do curl -fs "http://127.0.0.1:$LISTEN/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fs "http://127.0.0.1:$LISTEN/readyz" >/dev/null || { echo "not ready" >&2; exit 1; }

ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
share() { python3 -c "print(f'{100*($2-$1)/($TCK*$3):.2f}')"; }
watch_on() { curl -sN "http://127.0.0.1:$ADMIN/live" >/dev/null 2>&1 & watcher=$!; sleep 0.5; }
watch_off() { kill "$watcher" 2>/dev/null || true; wait "$watcher" 2>/dev/null || true; }
steady() {
  local t0 t1
  t0=$(ticks)
  "$work/loadgen" -url "http://127.0.0.1:$LISTEN/webhook" -secret $SECRET -c 8 -rate "$RATE" -d 30s -convs 1000 -json > "$work/lg.json"
  t1=$(ticks)
  echo "steady $RATE/s for 30s, $1: CPU $(share "$t0" "$t1" 30)% of a core ($(python3 -c "import json; print(round(json.load(open('$work/lg.json'))['rps']))") req/s answered)"
}
idle() {
  local t0 t1
  t0=$(ticks); sleep 15; t1=$(ticks)
  echo "idle and down 15s after $N events, $1: CPU $(share "$t0" "$t1" 15)% of a core"
}

steady "nobody watching"
watch_on; steady "overview open"; watch_off
"$work/loadgen" -url "http://127.0.0.1:$LISTEN/webhook" -secret $SECRET -c 32 -n "$N" -convs 1000 -json >/dev/null
sleep 2 # let the last requests' work settle
idle "nobody watching"
watch_on; idle "overview open"; watch_off
curl -s "http://127.0.0.1:$ADMIN/" > "$work/overview.html"
python3 - "$work/overview.html" <<'PY'
import re, sys
m = re.search(r'<th scope="row">chat</th><td class="num">(\d+)</td><td class="num">(\d+)</td>', open(sys.argv[1]).read())
print("overview: chat events, last hour / last 24 h: " + (" / ".join(m.groups()) if m else "none shown"))
PY
