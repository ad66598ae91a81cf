#!/usr/bin/env bash
# A real power-loss test: each node's --data-dir (and the adapter's outbox)
# lives on an intake-powercut FUSE mount, which keeps every write that was not
# fsync'd in memory and drops it when its power is cut (SIGUSR1). A cut is the
# node's process SIGKILLed and its mount cut at the same moment; the node then
# restarts on what its disk really held.
#
#   deploy/tests/power-loss.sh            # every case (~6-10 minutes, debug build)
#   deploy/tests/power-loss.sh --smoke    # one case (all nodes at once), for CI
#
# Cases, run in turn on one cluster under `intake load`:
#   one_node   the power of node NODES is cut, then it restarts;
#   minority   the power of the (NODES-1)/2 nodes leading most shards (with
#              3 nodes: the one node leading most shards);
#   all_nodes  the power of every node at once, then all restart;
#   outbox     the adapter's host: the power of the outbox's disk is cut while
#              it holds unsent complaints (the cluster is out of its reach),
#              then it reopens with the cluster and drains.
# After each case `intake-powercut verify` checks, through the cluster, every
# complaint the case acknowledged (the load's acks; for the outbox, every
# acknowledged enqueue) and prints
#   case=NAME acked=N found=N lost=N duplicates=N leaders=L/S sink_missing=N
# (duplicates: a key answered with two tickets, or held twice by the sink);
# a last line, case=final, checks every case's acknowledgements again.
# Exits non-zero on any loss, duplicate or leaderless shard.
#
# Environment: CASES (a subset of the case names, in order), NODES (3),
# PROFILE (debug|release), BASE_PORT (default: a free block of 100 ports
# between 20000 and 29999), RATE
# (complaints/s offered, 40), LOAD_S (seconds of load per case, 20), OUTBOX_N
# (complaints enqueued, 400), OUTBOX_TEXT_BYTES (their text, 8000, near the
# cluster's 8 KiB limit: large records, towards sled's blob threshold), KEEP=1 keeps the work directory,
# POWERCUT_MOUNT_ARGS=--fsync-lies makes every disk lie about fsync (the
# test must then report losses: a check that it can fail).
set -euo pipefail
cd "$(dirname "$0")/../.."

CASES=${CASES:-one_node minority all_nodes outbox}
case "${1:-}" in
  --smoke) CASES=all_nodes ;;
  "") ;;
  *) echo "usage: $0 [--smoke]" >&2; exit 2 ;;
esac
NODES=${NODES:-3}
PROFILE=${PROFILE:-debug}
RATE=${RATE:-40}
LOAD_S=${LOAD_S:-20}
OUTBOX_N=${OUTBOX_N:-400}
OUTBOX_TEXT_BYTES=${OUTBOX_TEXT_BYTES:-8000}

# shellcheck source=deploy/tests/lib.sh
. deploy/tests/lib.sh
# Every port of a run: nodes BASE+1.., metrics BASE+51.., sink BASE+99.
ports_free() {
  local i
  for i in $(seq 1 "$NODES"); do
    port_taken $(($1 + i)) && return 1
    port_taken $(($1 + 50 + i)) && return 1
  done
  ! port_taken $(($1 + 99))
}
pick_base_port 20000 ports_free
SINK_PORT=$((BASE_PORT + 99))

if ! command -v fusermount3 >/dev/null; then
  echo "fusermount3 missing: installing Debian's fuse3" >&2
  apt-get update -qq && apt-get install -y -qq fuse3 >/dev/null
fi
[[ -e /dev/fuse ]] || { echo "/dev/fuse is required" >&2; exit 1; }

build=(cargo build -q -p intake --bin intake -p intake-powercut --bin intake-powercut)
[[ $PROFILE == release ]] && build+=(--release)
"${build[@]}"
TARGET=${CARGO_TARGET_DIR:-target}/$PROFILE
BIN=$TARGET/intake
PC=$TARGET/intake-powercut

WORK=$(mktemp -d /tmp/intake-power-loss.XXXXXX)
declare -A NODE_PID MOUNT_PID
OTHER_PIDS=()
CLUSTER=""
EPS=""
for i in $(seq 1 "$NODES"); do
  CLUSTER+="${CLUSTER:+,}$i=127.0.0.1:$((BASE_PORT + i))"
  EPS+="${EPS:+,}127.0.0.1:$((BASE_PORT + i))"
done
FAILED=0

cleanup() {
  local p
  for p in "${NODE_PID[@]}" "${OTHER_PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for p in "${!MOUNT_PID[@]}"; do unmount "$p" || true; done
  { wait; } 2>/dev/null || true
  remove_work
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# mount NAME: serves $WORK/disk-NAME on $WORK/mnt-NAME.
mount_disk() {
  local n=$1 mnt=$WORK/mnt-$1
  mkdir -p "$WORK/disk-$n" "$mnt"
  # shellcheck disable=SC2086 # POWERCUT_MOUNT_ARGS is a list of flags
  "$PC" mount --backing "$WORK/disk-$n" --mountpoint "$mnt" ${POWERCUT_MOUNT_ARGS:-} \
    >>"$WORK/mount-$n.log" 2>&1 &
  MOUNT_PID[$n]=$!
  for _ in $(seq 1 100); do
    grep -qs " $mnt fuse" /proc/mounts && return 0
    sleep 0.1
  done
  echo "mount $n did not come up (see $WORK/mount-$n.log)" >&2
  return 1
}

# unmount NAME: after a cut (or at the end); the backing dir is the disk.
unmount() {
  local n=$1 mnt=$WORK/mnt-$1
  for _ in $(seq 1 20); do
    grep -qs " $mnt fuse" /proc/mounts || break
    fusermount3 -u "$mnt" 2>/dev/null && break
    sleep 0.2
  done
  grep -qs " $mnt fuse" /proc/mounts && fusermount3 -u -z "$mnt" 2>/dev/null
  kill "${MOUNT_PID[$n]}" 2>/dev/null || true
  wait "${MOUNT_PID[$n]}" 2>/dev/null || true
  unset "MOUNT_PID[$n]"
}

start_node() {
  local i=$1
  "$BIN" start --node-id "$i" --listen "127.0.0.1:$((BASE_PORT + i))" \
    --data-dir "$WORK/mnt-node$i/data" --initial-cluster "$CLUSTER" \
    --http "127.0.0.1:$((BASE_PORT + 50 + i))" --dispatch "127.0.0.1:$SINK_PORT" \
    >>"$WORK/node-$i.log" 2>&1 &
  NODE_PID[$i]=$!
}

# cut N...: every listed node loses power at once: mounts first (from then
# on nothing more reaches their disks), then the processes.
cut() {
  local i
  for i in "$@"; do kill -USR1 "${MOUNT_PID[node$i]}"; done
  for i in "$@"; do kill -9 "${NODE_PID[$i]}" 2>/dev/null || true; done
  for i in "$@"; do wait "${NODE_PID[$i]}" 2>/dev/null || true; unset "NODE_PID[$i]"; done
  for i in "$@"; do grep 'power cut' "$WORK/mount-node$i.log" | tail -n 1 >&2; done
}

power_on() {
  local i
  for i in "$@"; do unmount "node$i"; done
  for i in "$@"; do mount_disk "node$i"; start_node "$i"; done
}

# The nodes leading most shards, most first.
leader_heavy() {
  "$BIN" status --endpoint "127.0.0.1:$((BASE_PORT + 1))" --json 2>/dev/null |
    grep -oE '"leader": ?[0-9]+' | grep -oE '[0-9]+$' | sort | uniq -c | sort -rn |
    awk '{print $2}' | head -n "$1"
}

ACKED=()
# verify NAME FILE...: the case's line; also remembers the files, so that
# the final line checks every case's acknowledgements again.
verify() {
  local name=$1
  shift
  local args=(verify --case "$name" --endpoints "$EPS" --sink-file "$WORK/sink.jsonl" --wait-s 120)
  local f i
  for f in "$@"; do args+=(--acked "$f"); ACKED+=("$f"); done
  # The cluster that answers must be ours, every node of it running.
  for i in "${!NODE_PID[@]}"; do
    kill -0 "${NODE_PID[$i]}" 2>/dev/null ||
      { echo "case $name: node $i is not running (see $WORK/node-$i.log)" >&2; FAILED=1; }
  done
  if ! "$PC" "${args[@]}" 2>>"$WORK/verify.log"; then FAILED=1; fi
}

# load_case NAME NODE...: load runs; mid-way the nodes' power is cut; after
# a few seconds they come back; the load ends; everything is checked.
load_case() {
  local name=$1
  shift
  local acked=$WORK/acked-$name.txt
  timeout $((LOAD_S + 180)) "$BIN" load --endpoints "$EPS" --rate "$RATE" --duration "$LOAD_S" \
    --deadline-ms 5000 --max-attempts 5 --drain-timeout-s 1 --acked-out "$acked" \
    >"$WORK/load-$name.out" 2>&1 &
  local load=$!
  OTHER_PIDS+=("$load")
  sleep $((LOAD_S / 2))
  cut "$@"
  sleep 3
  power_on "$@"
  wait "$load" || true
  [[ -f $acked ]] || { echo "case $name: the load wrote no acked file (see $WORK/load-$name.out)" >&2; FAILED=1; return; }
  verify "$name" "$acked"
}

outbox_case() {
  mount_disk adapter
  # Nobody listens on port 1: everything enqueued stays pending.
  "$PC" adapter --outbox "$WORK/mnt-adapter/outbox" --endpoints 127.0.0.1:1 \
    --enqueue "$OUTBOX_N" --text-bytes "$OUTBOX_TEXT_BYTES" --acked-out "$WORK/outbox-keys.txt" --hold-s 300 \
    >>"$WORK/adapter.log" 2>&1 &
  local adapter=$!
  OTHER_PIDS+=("$adapter")
  # Cut while it is still enqueueing, once half its complaints are stored.
  for _ in $(seq 1 300); do
    [[ -f $WORK/outbox-keys.txt && $(wc -l <"$WORK/outbox-keys.txt") -ge $((OUTBOX_N / 2)) ]] && break
    sleep 0.1
  done
  kill -USR1 "${MOUNT_PID[adapter]}"
  kill -9 "$adapter" 2>/dev/null || true
  wait "$adapter" 2>/dev/null || true
  grep 'power cut' "$WORK/mount-adapter.log" | tail -n 1 >&2
  echo "(the adapter had acknowledged $(wc -l <"$WORK/outbox-keys.txt") enqueues)" >&2
  unmount adapter
  mount_disk adapter
  if ! "$PC" adapter --outbox "$WORK/mnt-adapter/outbox" --endpoints "$EPS" \
    --check "$WORK/outbox-keys.txt" --tickets-out "$WORK/outbox-tickets.txt" \
    --drain-timeout-s 120 2>>"$WORK/adapter.log"; then
    FAILED=1
  fi
  verify outbox "$WORK/outbox-tickets.txt"
}

"$BIN" sink --listen "127.0.0.1:$SINK_PORT" --out "$WORK/sink.jsonl" --report-every 0 \
  >>"$WORK/sink.log" 2>&1 &
OTHER_PIDS+=($!)
for i in $(seq 1 "$NODES"); do mount_disk "node$i"; start_node "$i"; done
: >"$WORK/none.txt"
"$PC" verify --case ready --endpoints "$EPS" --acked "$WORK/none.txt" --wait-s 90 >/dev/null ||
  { echo "the cluster did not elect a leader for every shard" >&2; FAILED=1; exit 1; }
for i in $(seq 1 "$NODES"); do
  kill -0 "${NODE_PID[$i]}" 2>/dev/null ||
    { echo "node $i did not start (see $WORK/node-$i.log)" >&2; FAILED=1; exit 1; }
done

for c in $CASES; do
  case $c in
    one_node) load_case one_node "$NODES" ;;
    # shellcheck disable=SC2046 # one word per node id
    minority) load_case minority $(leader_heavy $(((NODES - 1) / 2))) ;;
    # shellcheck disable=SC2046
    all_nodes) load_case all_nodes $(seq 1 "$NODES") ;;
    outbox) outbox_case ;;
    *) echo "unknown case $c" >&2; FAILED=1 ;;
  esac
done
# After the later cuts, is what the earlier cases acknowledged still there?
if [[ ${#ACKED[@]} -gt 1 ]]; then verify final "${ACKED[@]}"; fi
[[ $FAILED == 0 ]] || { echo "power-loss: FAILED (logs in $WORK)" >&2; exit 1; }
echo "power-loss: every acknowledged complaint survived" >&2
