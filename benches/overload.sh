#!/usr/bin/env bash
# Surge benchmark of a 3-node, 8-shard Intake cluster on loopback:
#   1. capacity: closed loop, CONCURRENCY clients, unary (and batched);
#   2. open-loop arrivals at 50 %, 100 %, 200 % and 1000 % of that capacity,
#      unary and with BATCH complaints per SubmitBatch;
#   3. priority: 5x capacity, measured again just before (unary, then
#      batched) with EMERGENCY_SHARE of
#      emergencies, the unary case once more with clients that send every
#      arrival (--no-client-throttle), the batched case PRIORITY_RUNS times,
#      then once more with clients that have no retry budget
#      (--no-retry-budget);
#   4. the peak RSS (VmHWM) of every node at the end, after 10x was offered.
# Each run lasts DURATION seconds; everything runs on 127.0.0.1 and stops by
# itself. The last line of each `intake load` run is its contract line.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
CONCURRENCY=${CONCURRENCY:-128}
BATCH=${BATCH:-10}
DEADLINE_MS=${DEADLINE_MS:-2000}
EMERGENCY_SHARE=${EMERGENCY_SHARE:-0.1}
# Enough in-flight room that the tool sends every arrival at 5x.
OPEN_CONCURRENCY=${OPEN_CONCURRENCY:-16384}
PRIORITY_RUNS=${PRIORITY_RUNS:-3}
BASE=${BASE_PORT:-17201}
source benches/intake-cluster.sh
last() { tail -n 1; }
rate_of() { sed -n 's/.*throughput=\([0-9.]*\)\/s.*/\1/p'; }
# Closed loop, unary then batched; prints both contract lines and sets CAP
# and CAPB (complaints/s).
measure_capacity() {
  local line
  line=$("$LOAD" load --endpoints "$EPS" --concurrency "$CONCURRENCY" --duration "$DURATION" | last)
  echo "unary:   $line"
  CAP=$(echo "$line" | rate_of)
  line=$("$LOAD" load --endpoints "$EPS" --concurrency "$CONCURRENCY" --duration "$DURATION" --batch "$BATCH" | last)
  echo "batch$BATCH: $line"
  CAPB=$(echo "$line" | rate_of)
}

echo "== capacity (closed loop, $CONCURRENCY clients, ${DURATION}s)"
measure_capacity

for pct in 50 100 200 1000; do
  R=$(python3 -c "print(max(1, round($CAP * $pct / 100)))")
  echo "== ${pct}% of unary capacity: --rate $R"
  "$LOAD" load --endpoints "$EPS" --rate "$R" --duration "$DURATION" --concurrency "$OPEN_CONCURRENCY" \
    --deadline-ms "$DEADLINE_MS" | grep -v '^class=' || true
  RB=$(python3 -c "print(max(1, round($CAPB * $pct / 100 / $BATCH)))")
  echo "== ${pct}% of batched capacity: --rate $RB requests/s x $BATCH"
  "$LOAD" load --endpoints "$EPS" --rate "$RB" --batch "$BATCH" --duration "$DURATION" --concurrency "$OPEN_CONCURRENCY" \
    --deadline-ms "$DEADLINE_MS" | grep -v '^class=' || true
done

# The cluster is slower now than when empty (it holds every complaint taken
# so far: about a quarter less capacity in one run), so 5x is 5x of what it
# can take now, measured the same way as at the start, once the shedding
# that the 1000 % runs set off has died down (it fades within seconds).
sleep 5
echo "== capacity before the priority runs (closed loop, $CONCURRENCY clients, ${DURATION}s)"
measure_capacity

R=$(python3 -c "print(max(1, round($CAP * 5)))")
echo "== priority: 5x unary capacity, emergency share $EMERGENCY_SHARE: --rate $R"
"$LOAD" load --endpoints "$EPS" --rate "$R" --duration "$DURATION" --concurrency "$OPEN_CONCURRENCY" \
  --deadline-ms "$DEADLINE_MS" --emergency-share "$EMERGENCY_SHARE" || true

echo "== priority: 5x unary capacity, clients without the client-side throttle: --rate $R --no-client-throttle"
"$LOAD" load --endpoints "$EPS" --rate "$R" --duration "$DURATION" --concurrency "$OPEN_CONCURRENCY" \
  --deadline-ms "$DEADLINE_MS" --emergency-share "$EMERGENCY_SHARE" --no-client-throttle || true

# METRICS_DIR: each node's /metrics before and after the batched priority
# runs, to see where their time went (the counters are cumulative).
dump_metrics() {
  [ -n "${METRICS_DIR:-}" ] || return 0
  mkdir -p "$METRICS_DIR"
  for i in 1 2 3; do
    curl -s "http://127.0.0.1:$((BASE+100+i))/metrics" >"$METRICS_DIR/node$i.$1.prom" || true
  done
}
RB=$(python3 -c "print(max(1, round($CAPB * 5 / $BATCH)))")
dump_metrics before_batched
for run in $(seq 1 "$PRIORITY_RUNS"); do
  echo "== priority: 5x batched capacity, emergency share $EMERGENCY_SHARE: --rate $RB requests/s x $BATCH (run $run)"
  "$LOAD" load --endpoints "$EPS" --rate "$RB" --batch "$BATCH" --duration "$DURATION" --concurrency "$OPEN_CONCURRENCY" \
    --deadline-ms "$DEADLINE_MS" --emergency-share "$EMERGENCY_SHARE" || true
done
dump_metrics after_batched
echo "== priority: 5x batched capacity, clients without a retry budget: --rate $RB requests/s x $BATCH --no-retry-budget"
"$LOAD" load --endpoints "$EPS" --rate "$RB" --batch "$BATCH" --duration "$DURATION" --concurrency "$OPEN_CONCURRENCY" \
  --deadline-ms "$DEADLINE_MS" --emergency-share "$EMERGENCY_SHARE" --no-retry-budget || true

echo "== peak RSS per node (VmHWM)"
for i in 0 1 2; do
  awk -v n=$((i+1)) '/VmHWM/ {printf "node%d_rss_peak_mib=%.1f\n", n, $2/1024}' "/proc/${pids[$i]}/status"
done
