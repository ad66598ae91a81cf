#!/usr/bin/env bash
# Delivery to the downstream, end to end, on a 3-node, 8-shard cluster on
# loopback with the reference sink (`intake sink`, fsync per batch):
#   1. drain rate: BACKLOG complaints are submitted (batches of 10) while
#      the sink is down; then the sink starts and the time until every
#      shard's dispatch lag is 0 gives delivered tickets per second;
#   2. outage under load: RATE complaints/s for LOAD_S seconds; the sink is
#      killed at OUTAGE_AT seconds for OUTAGE_S seconds; prints the seconds
#      from the sink's return until the lag is 0 again.
# Everything runs on 127.0.0.1 and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
BACKLOG=${BACKLOG:-50000}
RATE=${RATE:-1000}
LOAD_S=${LOAD_S:-30}
OUTAGE_AT=${OUTAGE_AT:-5}
OUTAGE_S=${OUTAGE_S:-10}
BASE=${BASE_PORT:-17301}
SINK="127.0.0.1:$((BASE+50))"
START_FLAGS="--dispatch $SINK"
source benches/intake-cluster.sh
SINK_FILE="$DIR/sink.jsonl"
sink_pid=""
start_sink() { "$BIN" sink --listen "$SINK" --out "$SINK_FILE" --report-every 0 >>"$DIR/sink.log" 2>&1 & sink_pid=$!; pids+=("$sink_pid"); }
stop_sink() { kill -9 "$sink_pid"; wait "$sink_pid" 2>/dev/null || true; }
lag() { "$BIN" status --endpoint "127.0.0.1:$BASE" --json 2>/dev/null \
  | python3 -c 'import json,sys; s=json.load(sys.stdin)["shards"]; print(sum((x.get("dispatch_lag") or {"tickets":10**9})["tickets"] for x in s))' \
  || echo 999999999; }
now() { python3 -c 'import time; print(time.time())'; }
wait_zero() { # seconds (float) until the total lag is 0; bounded at 300 s
  local t0; t0=$(now)
  for _ in $(seq 1 3000); do [ "$(lag)" = "0" ] && break; sleep 0.1; done
  python3 -c "print(round($(now) - $t0, 2))"
}

echo "== 1. drain: $BACKLOG complaints wait while the sink is down"
"$BIN" load --endpoints "$EPS" --concurrency 1024 --batch 10 --duration 20 --max-attempts 10 \
  --rate "$(python3 -c "print($BACKLOG / 10 / 20)")" --deadline-ms 10000 | tail -n 1
WAITING=$(lag)
echo "tickets waiting: $WAITING"
start_sink
SECS=$(wait_zero)
echo "drained=$WAITING seconds=$SECS delivered_per_s=$(python3 -c "print(round($WAITING / max($SECS, 0.001)))")"

echo "== 2. outage: ${RATE}/s for ${LOAD_S}s, sink down from ${OUTAGE_AT}s for ${OUTAGE_S}s"
"$BIN" load --endpoints "$EPS" --rate "$RATE" --duration "$LOAD_S" --concurrency 1024 --deadline-ms 5000 \
  >"$DIR/load2.out" &
load_pid=$!
sleep "$OUTAGE_AT"
stop_sink
sleep "$OUTAGE_S"
PEAK=$(lag)
start_sink
SECS=$(wait_zero)
echo "lag_at_return=$PEAK seconds_to_zero_lag=$SECS (under ${RATE}/s load)"
wait "$load_pid" || true
tail -n 1 "$DIR/load2.out"
echo "sink_lines=$(wc -l <"$SINK_FILE") unique=$(python3 -c "import json; print(len({json.loads(l)['ticket_id'] for l in open('$SINK_FILE')}))")"
