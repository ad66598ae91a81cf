#!/usr/bin/env bash
# Renders docs/dashboard.png: the shipped Grafana dashboard's panels, drawn by
# render-dashboard.py (matplotlib, not Grafana: these machines cannot run it)
# from a real Prometheus that scraped a real run:
#   - a 3-node release cluster on loopback (8 shards) delivering to the
#     reference sink, each node's /metrics scraped every 5 s by Debian's
#     `prometheus` with the shipped prometheus.yml and alerts.yml, the
#     targets changed to the loopback nodes (nothing else);
#   - `intake load`: a 5 s closed-loop probe of capacity (CAP), then RATE_PCT %
#     of CAP steady for the rest of the run, with on top of it
#       at SURGE_AT s   a surge of SURGE_X x CAP for SURGE_S s, 10 % emergencies,
#       at KILL_AT s    kill -9 of the node leading most shards, restarted
#                       DOWN_S s later on its data,
#       at SINK_AT s    the sink killed for SINK_S s (dispatch lag grows);
#   - the window rendered is the load's, plus TAIL_S s after it.
# About 3.5 minutes; on a machine shared with benchmarks run it under their
# lock (`flock LOCKFILE deploy/compose/render-dashboard.sh`). Everything it
# starts is stopped on exit; the data lives in a temporary directory.
#
#   deploy/compose/render-dashboard.sh [OUT.png]     # default docs/dashboard.png
#
# Needs: `prometheus` (Debian: apt-get install prometheus; the binary is run
# by hand here, not as the package's service), curl, python3 with venv (a
# virtualenv VENV is made and filled from render-requirements.txt when it has
# no matplotlib), and a release build of intake (INTAKE_BIN, or built here
# with cargo). BASE_PORT moves the ports (nodes BASE..BASE+2, sink BASE+50,
# Prometheus BASE+90, metrics BASE+100..BASE+102).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-docs/dashboard.png}
BASE=${BASE_PORT:-17601}
PROM_PORT=$((BASE + 90))
RATE_PCT=${RATE_PCT:-30}
SURGE_AT=${SURGE_AT:-30} SURGE_S=${SURGE_S:-8} SURGE_X=${SURGE_X:-5}
KILL_AT=${KILL_AT:-65} DOWN_S=${DOWN_S:-15}
SINK_AT=${SINK_AT:-105} SINK_S=${SINK_S:-20}
LOAD_S=${LOAD_S:-155} TAIL_S=${TAIL_S:-15}
VENV=${VENV:-${CARGO_TARGET_DIR:-target}/render-venv}
REQ=deploy/compose/render-requirements.txt

command -v prometheus >/dev/null || { echo "prometheus missing (Debian: apt-get install prometheus)" >&2; exit 1; }
command -v curl >/dev/null || { echo "curl missing" >&2; exit 1; }
if ! "$VENV/bin/python" -c 'import matplotlib' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q -r "$REQ"
fi
if [ -n "${INTAKE_BIN:-}" ]; then
  BIN=$INTAKE_BIN
else
  cargo build --release --bin intake >&2
  BIN=${CARGO_TARGET_DIR:-target}/release/intake
fi

DIR=$(mktemp -d)
CLUSTER="1=127.0.0.1:$BASE,2=127.0.0.1:$((BASE+1)),3=127.0.0.1:$((BASE+2))"
EPS="127.0.0.1:$BASE,127.0.0.1:$((BASE+1)),127.0.0.1:$((BASE+2))"
SINK="127.0.0.1:$((BASE+50))"
declare -A node_pid
sink_pid="" prom_pid="" load_pid=""
cleanup() {
  for p in "${node_pid[@]}" $sink_pid $prom_pid $load_pid; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "${KEEP:-}" ]; then echo "kept $DIR" >&2; else rm -rf "$DIR"; fi
}
trap cleanup EXIT
now() { date +%s.%N; }
event() { printf '%s\t%s\n' "$(now)" "$1" >>"$DIR/events.tsv"; echo "$(date -u +%T) $1" >&2; }
start_node() {
  local i=$1
  "$BIN" start --node-id "$i" --listen "127.0.0.1:$((BASE+i-1))" --data-dir "$DIR/node-$i" \
    --initial-cluster "$CLUSTER" --http "127.0.0.1:$((BASE+99+i))" --dispatch "$SINK" \
    2>>"$DIR/node-$i.log" &
  node_pid[$i]=$!
}
start_sink() {
  "$BIN" sink --listen "$SINK" --out "$DIR/sink.jsonl" --report-every 0 >>"$DIR/sink.log" 2>&1 &
  sink_pid=$!
}
shards_json() { "$BIN" status --endpoint "127.0.0.1:$BASE" --json 2>/dev/null || true; }
all_led() { shards_json | python3 -c 'import json,sys; s=json.load(sys.stdin)["shards"]; sys.exit(0 if s and all(x["leader"] for x in s) else 1)' 2>/dev/null; }

# Prometheus: the shipped config and rules; only the targets become the
# loopback nodes' --http ports.
mkdir -p "$DIR/prom"
cp deploy/compose/prometheus/alerts.yml "$DIR/prom/"
TARGETS="\"127.0.0.1:$((BASE+100))\", \"127.0.0.1:$((BASE+101))\", \"127.0.0.1:$((BASE+102))\""
sed "s|\"node1:9100\", \"node2:9100\", \"node3:9100\"|$TARGETS|" deploy/compose/prometheus/prometheus.yml \
  >"$DIR/prom/prometheus.yml"
grep -q "127.0.0.1:$((BASE+100))" "$DIR/prom/prometheus.yml" \
  || { echo "render-dashboard: prometheus.yml's targets line changed; update the sed here" >&2; exit 1; }
promtool check config "$DIR/prom/prometheus.yml" >/dev/null

run() {
  start_sink
  for i in 1 2 3; do start_node "$i"; done
  for _ in $(seq 1 150); do all_led && break; sleep 0.2; done
  all_led || { echo "render-dashboard: the cluster found no leaders" >&2; exit 1; }
  prometheus --config.file="$DIR/prom/prometheus.yml" --storage.tsdb.path="$DIR/prom/data" \
    --web.listen-address="127.0.0.1:$PROM_PORT" >"$DIR/prom.log" 2>&1 &
  prom_pid=$!
  # Every node scraped before the window opens (a window that starts with
  # one node's series only shows groups without leaders that have them),
  # then two more scrapes, so every panel begins at the left edge.
  for _ in $(seq 1 60); do
    [ "$(curl -sG "http://127.0.0.1:$PROM_PORT/api/v1/query" --data-urlencode 'query=count(up{job="intake"} == 1)' \
      | python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else 0)' 2>/dev/null)" = 3 ] && break
    sleep 1
  done
  sleep 10
  START=$(now)
  event "capacity probe"
  CAP=$("$BIN" load --endpoints "$EPS" --concurrency 128 --duration 5 | tail -n 1 \
    | sed -n 's/.*throughput=\([0-9.]*\)\/s.*/\1/p')
  [ -n "$CAP" ] || { echo "render-dashboard: the capacity probe printed no throughput" >&2; exit 1; }
  echo "capacity: ${CAP}/s" >&2
  RATE=$(python3 -c "print(max(1, round($CAP * $RATE_PCT / 100)))")
  SURGE=$(python3 -c "print(max(1, round($CAP * $SURGE_X)))")
  T0=$(now)
  event "steady ${RATE}/s"
  "$BIN" load --endpoints "$EPS" --rate "$RATE" --duration "$LOAD_S" --concurrency 2048 --deadline-ms 5000 \
    --attempt-timeout-ms 1500 --max-attempts 5 >"$DIR/load.out" 2>&1 &
  load_pid=$!
  at() { sleep "$(python3 -c "print(max(0, $T0 + $1 - $(now)))")"; }
  at "$SURGE_AT"
  event "surge ${SURGE}/s"
  "$BIN" load --endpoints "$EPS" --rate "$SURGE" --duration "$SURGE_S" --concurrency 16384 --deadline-ms 2000 \
    --emergency-share 0.1 >"$DIR/surge.out" 2>&1 || true
  at "$KILL_AT"
  VICTIM=$(shards_json | python3 -c 'import json,sys,collections; s=json.load(sys.stdin)["shards"]; print(collections.Counter(x["leader"] for x in s if x["leader"]).most_common(1)[0][0])')
  kill -9 "${node_pid[$VICTIM]}"
  wait "${node_pid[$VICTIM]}" 2>/dev/null || true
  event "kill -9 node $VICTIM"
  at "$((KILL_AT + DOWN_S))"
  start_node "$VICTIM"
  event "node $VICTIM back"
  at "$SINK_AT"
  kill -9 "$sink_pid"
  wait "$sink_pid" 2>/dev/null || true
  event "sink down"
  at "$((SINK_AT + SINK_S))"
  start_sink
  event "sink back"
  wait "$load_pid" || true
  load_pid=""
  END=$(python3 -c "print($(now) + $TAIL_S)")
  sleep "$TAIL_S"
  echo "== steady load" >&2
  # (without the surge-watch lines: one per district and category alerted)
  grep -v -e '^class=' -e '^alert ' "$DIR/load.out" >&2 || true
  echo "== surge" >&2
  grep -v '^alert ' "$DIR/surge.out" >&2 || true
  # The scrape after END, then render while Prometheus still runs.
  sleep 6
  NOTE="Run: 3-node intake release cluster on 127.0.0.1 (8 shards, reference sink), scraped every 5 s by Prometheus $(prometheus --version 2>&1 | sed -n 's/^prometheus, version \([^ ]*\).*/\1/p') with deploy/compose/prometheus/ (targets on loopback). \
intake load: capacity probe ${CAP}/s (5 s closed loop), then ${RATE}/s steady; surge ${SURGE}/s for ${SURGE_S} s (10 % emergencies); \
node $VICTIM (most leaders) kill -9 for ${DOWN_S} s; sink down ${SINK_S} s. Tree: $(git describe --always --dirty 2>/dev/null || echo unknown)."
  "$VENV/bin/python" deploy/compose/render-dashboard.py --prometheus "http://127.0.0.1:$PROM_PORT" \
    --start "$START" --end "$END" --events "$DIR/events.tsv" --note "$NOTE" --out "$OUT"
}

run
ls -l "$OUT"
