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
cargo build --release --bin intake >&2
BIN=target/release/intake
DIR=$(mktemp -d)
CLUSTER="1=127.0.0.1:$BASE,2=127.0.0.1:$((BASE+1)),3=127.0.0.1:$((BASE+2))"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$DIR"; }
trap cleanup EXIT
for i in 1 2 3; do
  "$BIN" start --node-id "$i" --listen "127.0.0.1:$((BASE+i-1))" --data-dir "$DIR/node-$i" \
    --initial-cluster "$CLUSTER" --shards "$SHARDS" --http "127.0.0.1:$((BASE+100+i))" 2>"$DIR/node-$i.log" &
  pids+=($!)
done
# Every shard needs a leader before the clock starts.
for _ in $(seq 1 150); do
  if "$BIN" status --endpoint "127.0.0.1:$BASE" --json 2>/dev/null \
    | python3 -c 'import json,sys; s=json.load(sys.stdin)["shards"]; sys.exit(0 if s and all(x["leader"] for x in s) else 1)'; then break; fi
  sleep 0.2
done
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
"$BIN" load --endpoints "127.0.0.1:$BASE,127.0.0.1:$((BASE+1)),127.0.0.1:$((BASE+2))" \
  --concurrency "$CONCURRENCY" --duration "$DURATION" --batch "$BATCH"
END=$(date +%s.%N)
echo "after:  $(flushes)" >&2
echo "elapsed_s=$(python3 -c "print(round($END-$START,2))")" >&2
