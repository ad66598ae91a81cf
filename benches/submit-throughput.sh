#!/usr/bin/env bash
# Unary Submit throughput of a 3-node Intake cluster on loopback, 64 clients,
# 10 s (override with CONCURRENCY, DURATION, BATCH). Everything runs on
# 127.0.0.1 and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
CONCURRENCY=${CONCURRENCY:-64}
DURATION=${DURATION:-10}
BATCH=${BATCH:-1}
SHARDS=${SHARDS:-8}
BASE=${BASE_PORT:-17101}
START_FLAGS="--shards $SHARDS"
source benches/intake-cluster.sh
flushes() {
  for i in 1 2 3; do
    curl -s "http://127.0.0.1:$((BASE+100+i))/metrics" | awk -v n="$i" '
      /^intake_storage_flushes_total/ {f=$2} /^intake_storage_entries_per_flush_sum/ {e=$2}
      END {printf "node%s_flushes=%d node%s_entries=%d ", n, f, n, e}'
  done
  echo
}
echo "before: $(flushes)" >&2
START=$(date +%s.%N)
"$BIN" load --endpoints "$EPS" \
  --concurrency "$CONCURRENCY" --duration "$DURATION" --batch "$BATCH"
END=$(date +%s.%N)
echo "after:  $(flushes)" >&2
echo "elapsed_s=$(python3 -c "print(round($END-$START,2))")" >&2
