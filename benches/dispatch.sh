#!/usr/bin/env bash
# Delivery to the downstream, end to end, on a 3-node, 8-shard cluster on
# loopback with the reference sink (`intake sink`, fsync per batch):
#   1. drain rate: BACKLOG complaints are submitted (batches of 10) while
#      the sink is down; then the sink starts and the time until every
#      shard's dispatch lag is 0 gives delivered tickets per second;
#   2. outage under load: RATE complaints/s for LOAD_S seconds; the sink is
#      killed at OUTAGE_AT seconds for OUTAGE_S seconds. From the sink's
#      return it prints the seconds until the outage's backlog is gone (every
#      shard's oldest waiting ticket younger than 1 s) and until the lag is
#      exactly 0 on every shard at once (under steady arrivals that can take
#      longer: a ticket committed a moment ago is waiting too).
# BACKLOG=0 skips the first part.
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
oldest() { "$BIN" status --endpoint "127.0.0.1:$BASE" --json 2>/dev/null \
  | python3 -c 'import json,sys; s=json.load(sys.stdin)["shards"]; print(max((x.get("dispatch_lag") or {"seconds":1e9})["seconds"] for x in s))' \
  || echo 1e9; }
wait_young() { # seconds until every shard's oldest waiting ticket is < 1 s old
  local t0; t0=$(now)
  for _ in $(seq 1 3000); do python3 -c "import sys; sys.exit(0 if $(oldest) < 1.0 else 1)" && break; sleep 0.1; done
  python3 -c "print(round($(now) - $t0, 2))"
}

if [ "$BACKLOG" -gt 0 ]; then
echo "== 1. drain: $BACKLOG complaints wait while the sink is down"
"$BIN" load --endpoints "$EPS" --concurrency 1024 --batch 10 --duration 20 --max-attempts 10 \
  --rate "$(python3 -c "print($BACKLOG / 10 / 20)")" --deadline-ms 10000 | tail -n 1
WAITING=$(lag)
echo "tickets waiting: $WAITING"
start_sink
t0=$(now)
# The dispatchers are backing off (at most 2 s) when the sink returns; the
# rate is taken from the first fall of the lag to zero.
for _ in $(seq 1 600); do L1=$(lag); [ "$L1" -lt "$WAITING" ] && break; sleep 0.05; done
t1=$(now)
SECS=$(wait_zero)
echo "drained=$WAITING wake_up_s=$(python3 -c "print(round($t1 - $t0, 2))") drain_s=$SECS delivered_per_s=$(python3 -c "print(round($L1 / max($SECS, 0.001)))")"
else
  start_sink
fi

echo "== 2. outage: ${RATE}/s for ${LOAD_S}s, sink down from ${OUTAGE_AT}s for ${OUTAGE_S}s"
"$BIN" load --endpoints "$EPS" --rate "$RATE" --duration "$LOAD_S" --concurrency 1024 --deadline-ms 5000 \
  >"$DIR/load2.out" &
load_pid=$!
sleep "$OUTAGE_AT"
stop_sink
sleep "$OUTAGE_S"
PEAK=$(lag)
start_sink
t0=$(now)
YOUNG=$(wait_young)
ZERO=$(wait_zero)
echo "lag_at_return=$PEAK seconds_to_backlog_gone=$YOUNG seconds_to_zero_lag=$(python3 -c "print(round($(now) - $t0, 2))") (under ${RATE}/s load for $((LOAD_S - OUTAGE_AT - OUTAGE_S))s more)"
wait "$load_pid" || true
grep -v "^class=" "$DIR/load2.out" || true
echo "sink_lines=$(wc -l <"$SINK_FILE") unique=$(python3 -c "import json; print(len({json.loads(l)['ticket_id'] for l in open('$SINK_FILE')}))")"
