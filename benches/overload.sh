#!/usr/bin/env bash
# Surge benchmark of a 3-node, 8-shard Intake cluster on loopback:
#   1. capacity: closed loop, CONCURRENCY clients, unary (and batched);
#   2. open-loop arrivals at 50 %, 100 %, 200 % and 1000 % of that capacity,
#      unary and with BATCH complaints per SubmitBatch;
#   3. priority: 5x capacity (unary, then batched) with EMERGENCY_SHARE of
#      emergencies;
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
OPEN_CONCURRENCY=${OPEN_CONCURRENCY:-4096}
BASE=${BASE_PORT:-17201}
source benches/intake-cluster.sh
last() { tail -n 1; }
rate_of() { sed -n 's/.*throughput=\([0-9.]*\)\/s.*/\1/p'; }

echo "== capacity (closed loop, $CONCURRENCY clients, ${DURATION}s)"
CAP_LINE=$("$BIN" load --endpoints "$EPS" --concurrency "$CONCURRENCY" --duration "$DURATION" | last)
echo "unary:   $CAP_LINE"
CAP=$(echo "$CAP_LINE" | rate_of)
CAPB_LINE=$("$BIN" load --endpoints "$EPS" --concurrency "$CONCURRENCY" --duration "$DURATION" --batch "$BATCH" | last)
echo "batch$BATCH: $CAPB_LINE"
CAPB=$(echo "$CAPB_LINE" | rate_of)

for pct in 50 100 200 1000; do
  R=$(python3 -c "print(max(1, round($CAP * $pct / 100)))")
  echo "== ${pct}% of unary capacity: --rate $R"
  "$BIN" load --endpoints "$EPS" --rate "$R" --duration "$DURATION" --concurrency "$OPEN_CONCURRENCY" \
    --deadline-ms "$DEADLINE_MS" | grep -v '^class=' || true
  RB=$(python3 -c "print(max(1, round($CAPB * $pct / 100 / $BATCH)))")
  echo "== ${pct}% of batched capacity: --rate $RB requests/s x $BATCH"
  "$BIN" load --endpoints "$EPS" --rate "$RB" --batch "$BATCH" --duration "$DURATION" --concurrency "$OPEN_CONCURRENCY" \
    --deadline-ms "$DEADLINE_MS" | grep -v '^class=' || true
done

R=$(python3 -c "print(max(1, round($CAP * 5)))")
echo "== priority: 5x unary capacity, emergency share $EMERGENCY_SHARE: --rate $R"
"$BIN" load --endpoints "$EPS" --rate "$R" --duration "$DURATION" --concurrency "$OPEN_CONCURRENCY" \
  --deadline-ms "$DEADLINE_MS" --emergency-share "$EMERGENCY_SHARE" || true

RB=$(python3 -c "print(max(1, round($CAPB * 5 / $BATCH)))")
echo "== priority: 5x batched capacity, emergency share $EMERGENCY_SHARE: --rate $RB requests/s x $BATCH"
"$BIN" load --endpoints "$EPS" --rate "$RB" --batch "$BATCH" --duration "$DURATION" --concurrency "$OPEN_CONCURRENCY" \
  --deadline-ms "$DEADLINE_MS" --emergency-share "$EMERGENCY_SHARE" || true

echo "== peak RSS per node (VmHWM)"
for i in 0 1 2; do
  awk -v n=$((i+1)) '/VmHWM/ {printf "node%d_rss_peak_mib=%.1f\n", n, $2/1024}' "/proc/${pids[$i]}/status"
done
