#!/usr/bin/env bash
# Unary Submit throughput of a 3-node Intake cluster on loopback, 64 clients,
# 10 s (override with CONCURRENCY, DURATION, BATCH). Everything runs on
# 127.0.0.1 and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
CONCURRENCY=${CONCURRENCY:-64}
DURATION=${DURATION:-10}
BATCH=${BATCH:-1}
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
    --initial-cluster "$CLUSTER" 2>"$DIR/node-$i.log" &
  pids+=($!)
done
for _ in $(seq 1 100); do
  if "$BIN" status --endpoint "127.0.0.1:$BASE" --json 2>/dev/null | grep -q '"leader": [0-9]'; then break; fi
  sleep 0.2
done
"$BIN" load --endpoints "127.0.0.1:$BASE,127.0.0.1:$((BASE+1)),127.0.0.1:$((BASE+2))" \
  --concurrency "$CONCURRENCY" --duration "$DURATION" --batch "$BATCH"
