#!/usr/bin/env bash
# Starts a local 3-node Intake cluster on 127.0.0.1:7001-7003 (data in
# ./intake-data), prints its status, and stops it on Ctrl-C.
# `intake demo` runs the same cluster in one process; this script runs three
# separate `intake start` processes, as a deployment would.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin intake
BIN=target/release/intake
CLUSTER="1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003"
pids=()
stop() {
  echo "stopping..."
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait || true
  exit 0
}
trap stop INT TERM
mkdir -p intake-data
for i in 1 2 3; do
  "$BIN" start --node-id "$i" --listen "127.0.0.1:700$i" --data-dir "intake-data/node-$i" \
    --initial-cluster "$CLUSTER" --http "127.0.0.1:910$i" 2>>"intake-data/node-$i.log" &
  pids+=($!)
done
for _ in $(seq 1 50); do
  "$BIN" status --endpoint 127.0.0.1:7001 >/dev/null 2>&1 && break
  sleep 0.2
done
cat <<MSG

Intake is running: gRPC on 127.0.0.1:7001-7003, metrics on http://127.0.0.1:9101-9103/metrics,
logs in intake-data/node-N.log. Try, in another terminal:

  $BIN submit --endpoint 127.0.0.1:7002 --district 110105 --category noise --channel web --text "Loud music at 2am"
  $BIN get --endpoint 127.0.0.1:7003 <TICKET_ID>

Ctrl-C stops the cluster.
MSG
while true; do
  clear 2>/dev/null || true
  date
  "$BIN" status --endpoint 127.0.0.1:7001 || true
  sleep 2
done
