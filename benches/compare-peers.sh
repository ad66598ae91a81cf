#!/usr/bin/env bash
# Intake beside its peers on this machine, one run, the same closed-loop
# client (`grpc-load`) for every row: CONCURRENCY (64) in flight, DURATION
# (10 s) each, PAYLOAD bytes (400), three servers on 127.0.0.1, fresh data
# per row. Rows:
#   noop        a gRPC server that does nothing (the transport's ceiling)
#   etcd        etcd KV.Put, 3 members (fsync per commit)
#   nats        NATS JetStream, R3 file stream, Nats-Msg-Id dedup
#   one_shard   Intake, 1 shard, unary Submit to one district
#   spread      Intake, default shards, unary Submit, districts by population
#   batch10     Intake, default shards, SubmitBatch of 10, complaints/s
#   spread_leaders  (only when named in ROWS) the spread row with each
#               complaint sent to its shard leader's node, as intake-client
#               routes: what forwarding costs the spread row
#   spread_plain_keys  (only when named in ROWS) the spread row with keys
#               that name no district: most are claimed at another shard
#               first, a second Raft write (what others' keys cost)
# Each row also gives server CPU per operation: utime+stime of the server
# processes from /proc, before and after the drive, over the operations.
# INTAKE_BIN picks another intake binary (A/B runs), INTAKE_FLAGS adds
# `intake start` flags, ROWS limits the rows run (e.g. "spread batch10";
# skipped rows print 0 in the last line); each server lives
# MAX_SERVER_S at most; everything is killed on exit.
# Last line, exactly:
# spread_unary_per_s=A batch10_per_s=B one_shard_per_s=C etcd_per_s=E nats_per_s=N noop_per_s=O spread_vs_etcd=R1 batch10_vs_etcd=R2
set -euo pipefail
cd "$(dirname "$0")/.."
CONCURRENCY=${CONCURRENCY:-64}
DURATION=${DURATION:-10}
PAYLOAD=${PAYLOAD:-400}
BASE=${BASE_PORT:-17401}
MAX_SERVER_S=${MAX_SERVER_S:-300}

need() { command -v "$1" >/dev/null || apt-get install -y "$2" >&2; }
if ! command -v etcd >/dev/null || ! command -v nats-server >/dev/null; then
  apt-get update >&2 || true
fi
need etcd etcd-server
need nats-server nats-server
cargo build --release --bin intake --bin grpc-load >&2
BIN=${INTAKE_BIN:-target/release/intake}
LOAD=target/release/grpc-load
TCK=$(getconf CLK_TCK)
# shellcheck source=benches/servers.sh
source benches/servers.sh
# utime+stime, in clock ticks, of the running servers (the children of the
# `timeout` wrappers, and theirs).
server_ticks() {
  local all=() p
  for p in "${pids[@]}"; do all+=($(pgrep -P "$p" || true)); done
  local total=0 t
  for p in "${all[@]}"; do
    t=$(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)
    total=$((total + t))
  done
  echo "$total"
}
# drive NAME ARGS...: runs the load, prints its line with cpu_us_per_op added.
drive() {
  local name=$1; shift
  local t0 line t1 ok
  t0=$(server_ticks)
  line=$("$LOAD" drive --concurrency "$CONCURRENCY" --duration "$DURATION" --payload "$PAYLOAD" "$@")
  t1=$(server_ticks)
  ok=$(sed -E 's/.* ok=([0-9]+).*/\1/' <<<"$line")
  echo "row=$name $line cpu_us_per_op=$(python3 -c "print(round(($t1-$t0)*1e6/$TCK/$ok) if $ok else 'inf')")"
}
rate() { sed -E 's/.*_per_s=([0-9.]+).*/\1/' <<<"${1:-x_per_s=0}"; }
want() { [ -z "${ROWS:-}" ] || [[ " $ROWS " == *" $1 "* ]]; }
named() { [[ " ${ROWS:-} " == *" $1 "* ]]; }
noop="" etcd_row="" nats_row="" one_row="" spread_row="" batch_row=""

intake_cluster() { # intake_cluster SHARDS TAG
  local shards=$1 tag=$2
  local cluster="1=127.0.0.1:$BASE,2=127.0.0.1:$((BASE+1)),3=127.0.0.1:$((BASE+2))"
  for i in 1 2 3; do
    # shellcheck disable=SC2086 # INTAKE_FLAGS is a list of flags
    bounded "$BIN" start --node-id "$i" --listen "127.0.0.1:$((BASE+i-1))" \
      --data-dir "$DIR/intake-$tag-$i" --initial-cluster "$cluster" --shards "$shards" \
      --http "127.0.0.1:$((BASE+100+i))" ${INTAKE_FLAGS:-} 2>"$DIR/intake-$tag-$i.log"
  done
  for _ in $(seq 1 150); do
    if "$BIN" status --endpoint "127.0.0.1:$BASE" --json 2>/dev/null \
      | python3 -c 'import json,sys; s=json.load(sys.stdin)["shards"]; sys.exit(0 if s and all(x["leader"] for x in s) else 1)' 2>/dev/null; then
      return 0
    fi
    sleep 0.2
  done
  echo "intake cluster ($shards shards) did not elect leaders" >&2
  exit 1
}
IEPS="127.0.0.1:$BASE,127.0.0.1:$((BASE+1)),127.0.0.1:$((BASE+2))"

# The transport's ceiling.
if want noop; then
bounded "$LOAD" serve-noop --listen "127.0.0.1:$((BASE+30))" --max-seconds "$MAX_SERVER_S"
sleep 0.5
noop=$(drive noop --target noop --endpoints "127.0.0.1:$((BASE+30))"); echo "$noop"
stop_all
fi

# etcd: 3 members (benches/servers.sh).
if want etcd; then
start_etcd
etcd_row=$(drive etcd --target etcd --endpoints "$ETCD_EPS")
echo "$etcd_row"
stop_all
fi

# NATS JetStream: 3 servers in one cluster, each with its own store.
if want nats; then
ROUTES=""
for i in 1 2 3; do ROUTES+="${ROUTES:+, }nats-route://127.0.0.1:$((BASE+50+i))"; done
for i in 1 2 3; do
  mkdir -p "$DIR/nats-$i"
  cat >"$DIR/nats-$i.conf" <<CONF
server_name: n$i
listen: 127.0.0.1:$((BASE+40+i))
jetstream { store_dir: "$DIR/nats-$i" }
cluster { name: peers, listen: 127.0.0.1:$((BASE+50+i)), routes: [ $ROUTES ] }
CONF
  bounded nats-server -c "$DIR/nats-$i.conf" 2>"$DIR/nats-$i.log"
done
sleep 1
nats_row=$(drive nats --target nats --endpoints "nats://127.0.0.1:$((BASE+41)),nats://127.0.0.1:$((BASE+42)),nats://127.0.0.1:$((BASE+43))")
echo "$nats_row"
stop_all
fi

if want one_shard; then
  intake_cluster 1 one
  one_row=$(drive one_shard --target intake --endpoints "$IEPS"); echo "$one_row"
  stop_all
fi
if want spread; then
  intake_cluster 8 spread
  spread_row=$(drive spread --target intake --spread --endpoints "$IEPS"); echo "$spread_row"
  stop_all
fi
if named spread_leaders; then
  intake_cluster 8 leaders
  echo "$(drive spread_leaders --target intake --spread --leaders --endpoints "$IEPS")"
  stop_all
fi
if named spread_plain_keys; then
  intake_cluster 8 plain
  echo "$(drive spread_plain_keys --target intake --spread --plain-keys --endpoints "$IEPS")"
  stop_all
fi
if want batch10; then
  intake_cluster 8 batch
  batch_row=$(drive batch10 --target intake --spread --batch 10 --endpoints "$IEPS"); echo "$batch_row"
  stop_all
fi

S=$(rate "$spread_row"); B=$(rate "$batch_row"); C=$(rate "$one_row")
E=$(rate "$etcd_row"); N=$(rate "$nats_row"); O=$(rate "$noop")
ratio() { python3 -c "print(round($1/$2, 2) if $2 else 0)"; }
echo "spread_unary_per_s=$S batch10_per_s=$B one_shard_per_s=$C etcd_per_s=$E nats_per_s=$N noop_per_s=$O spread_vs_etcd=$(ratio "$S" "$E") batch10_vs_etcd=$(ratio "$B" "$E")"
