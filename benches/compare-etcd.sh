#!/usr/bin/env bash
# Intake against etcd on the same machine, same client: 3 etcd members and
# 3 Intake nodes on 127.0.0.1, each driven in turn by `grpc-load` with the same
# CONCURRENCY (64), DURATION (10 s) and PAYLOAD bytes (400: the complaint text
# for Intake, the value for etcd's KV.Put); then a no-op gRPC server, to show
# the transport's ceiling for this client. Both clusters fsync (etcd by
# default, Intake always). SHARDS lists Intake configurations to run one after
# the other (default "1"; e.g. SHARDS="1 8"); the first one is compared.
# Everything is killed on exit; each server lives MAX_SERVER_S at most.
# Last line: intake_per_s=X etcd_per_s=Y ratio=X/Y
set -euo pipefail
cd "$(dirname "$0")/.."
CONCURRENCY=${CONCURRENCY:-64}
DURATION=${DURATION:-10}
PAYLOAD=${PAYLOAD:-400}
SHARDS=${SHARDS:-1}
BASE=${BASE_PORT:-17201}
MAX_SERVER_S=${MAX_SERVER_S:-300}

if ! command -v etcd >/dev/null; then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
  $SUDO apt-get install -y etcd-server >&2
fi
cargo build --release --bin intake --bin grpc-load >&2
BIN=target/release/intake
LOAD=target/release/grpc-load
# shellcheck source=benches/servers.sh
source benches/servers.sh
drive() { "$LOAD" drive --concurrency "$CONCURRENCY" --duration "$DURATION" --payload "$PAYLOAD" "$@"; }

intake_line=""
for shards in $SHARDS; do
  CLUSTER="1=127.0.0.1:$BASE,2=127.0.0.1:$((BASE+1)),3=127.0.0.1:$((BASE+2))"
  for i in 1 2 3; do
    bounded "$BIN" start --node-id "$i" --listen "127.0.0.1:$((BASE+i-1))" \
      --data-dir "$DIR/intake-$shards-$i" --initial-cluster "$CLUSTER" --shards "$shards" \
      --http "127.0.0.1:$((BASE+100+i))" 2>"$DIR/intake-$shards-$i.log"
  done
  ready=0
  for _ in $(seq 1 150); do
    if "$BIN" status --endpoint "127.0.0.1:$BASE" --json 2>/dev/null \
      | python3 -c 'import json,sys; s=json.load(sys.stdin)["shards"]; sys.exit(0 if s and all(x["leader"] for x in s) else 1)' 2>/dev/null; then
      ready=1; break
    fi
    sleep 0.2
  done
  [ "$ready" = 1 ] || { echo "intake cluster ($shards shards) did not elect leaders" >&2; exit 1; }
  line=$(drive --target intake --endpoints "127.0.0.1:$BASE,127.0.0.1:$((BASE+1)),127.0.0.1:$((BASE+2))")
  echo "shards=$shards $line"
  [ -n "$intake_line" ] || intake_line=$line
  stop_all
done

# etcd: 3 members (benches/servers.sh).
start_etcd
etcd_line=$(drive --target etcd --endpoints "$ETCD_EPS")
echo "$etcd_line"
stop_all

# The transport's ceiling: the same client against a server that does nothing.
NOOP="127.0.0.1:$((BASE+30))"
bounded "$LOAD" serve-noop --listen "$NOOP" --max-seconds "$MAX_SERVER_S"
sleep 0.5
echo "$(drive --target noop --endpoints "$NOOP")"
stop_all

x=$(sed -E 's/.*intake_per_s=([0-9.]+).*/\1/' <<<"$intake_line")
y=$(sed -E 's/.*etcd_per_s=([0-9.]+).*/\1/' <<<"$etcd_line")
echo "intake_per_s=$x etcd_per_s=$y ratio=$(python3 -c "print(round($x/$y, 2) if $y else 'inf')")"
