#!/usr/bin/env bash
# Growing a loaded cluster (issue 16 item 8), on 127.0.0.1, release build:
#   1. 3 nodes x 8 shards; fill them with TICKETS complaints (closed loop);
#      report the data on disk.
#   2. Steady open-loop load (RATE/s for WINDOW s) with nothing moving:
#      the baseline p99.
#   3. Node 4 joins (--join) and the same load runs while the meta leader
#      moves replicas onto it: p99 during the moves, and the time from the
#      join to a balanced cluster (nothing moving, node 4 holding 4 or more
#      of the 24 replicas).
# Each load line carries the servers' CPU per acknowledged complaint (utime
# + stime of the node processes, from /proc). Everything stops by itself.
# Last line: scale_out_s=T rebalanced_replicas=N data_mib=M p99_steady_ms=A
# p99_moving_ms=B moving_vs_steady=R
set -euo pipefail
cd "$(dirname "$0")/.."
TICKETS=${TICKETS:-200000}
RATE=${RATE:-300}
WINDOW=${WINDOW:-20}
BASE=${BASE_PORT:-17401}
START_FLAGS="--shards 8 ${START_FLAGS:-}"
source benches/intake-cluster.sh
TCK=$(getconf CLK_TCK)
cpu() { local t=0; for p in "${pids[@]}"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done; echo "$t"; }
# load NAME ARGS...: runs `intake load`, prints its last line with cpu_us_per_op.
load() {
  local name=$1; shift
  local t0; t0=$(cpu)
  local out; out=$("$LOAD" load --endpoints "$EPS" "$@")
  grep -E '^(class=|errors_by_code|error_sample|refusal_sample)' <<<"$out" | sed "s/^/  $name: /" >&2 || true
  local line; line=$(tail -1 <<<"$out")
  local t1; t1=$(cpu)
  local ok; ok=$(sed -n 's/.*acked=\([0-9]*\).*/\1/p' <<<"$line")
  echo "phase=$name $line cpu_us_per_op=$(python3 -c "print(round(($t1-$t0)*1e6/$TCK/$ok) if $ok else 'inf')")"
}
field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p" <<<"$2"; }

# 1. Fill.
secs=$(python3 -c "print(max(10, round($TICKETS/4000)))")
fill=$(load fill --concurrency 128 --batch 10 --duration "$secs" --deadline-ms 10000)
echo "$fill" >&2
data_mib=$(du -sm "$DIR"/node-1 | cut -f1)
echo "data_per_node_mib=$data_mib tickets=$(field acked "$fill")" >&2

# 2. Baseline.
steady=$(load steady --rate "$RATE" --duration "$WINDOW" --deadline-ms 10000 --max-attempts 10)
echo "$steady" >&2

# 3. Join node 4, load while it fills.
"$BIN" start --node-id 4 --listen "127.0.0.1:$((BASE+3))" --data-dir "$DIR/node-4" \
  --join "127.0.0.1:$BASE" --http "127.0.0.1:$((BASE+104))" 2>"$DIR/node-4.log" &
pids+=($!)
T0=$(date +%s.%N)
moving_out=$(mktemp)
load moving --rate "$RATE" --duration "$WINDOW" --deadline-ms 10000 --max-attempts 10 >"$moving_out" &
load_pid=$!
balanced=
for _ in $(seq 1 1200); do
  if "$BIN" node list --endpoint "127.0.0.1:$BASE" --json 2>/dev/null | python3 2>/dev/null -c '
import json, sys
l = json.load(sys.stdin)
four = [n for n in l["nodes"] if n["id"] == 4]
sys.exit(0 if four and four[0]["replicas"] >= 4 and not l["moves"] else 1)'; then
    balanced=$(date +%s.%N); break
  fi
  sleep 0.25
done
wait "$load_pid"
moving=$(cat "$moving_out"); rm -f "$moving_out"
echo "$moving" >&2
"$BIN" node list --endpoint "127.0.0.1:$BASE" >&2
if [ -z "$balanced" ]; then echo "not balanced within 300 s" >&2; exit 1; fi
p99s=$(field p99_ms "$steady"); p99m=$(field p99_ms "$moving")
echo "scale_out_s=$(python3 -c "print(round($balanced-$T0,1))") rebalanced_replicas=$("$BIN" node list --endpoint "127.0.0.1:$BASE" --json | python3 -c 'import json,sys; print([n["replicas"] for n in json.load(sys.stdin)["nodes"] if n["id"]==4][0])') data_mib=$data_mib p99_steady_ms=$p99s p99_moving_ms=$p99m moving_vs_steady=$(python3 -c "print(round($p99m/$p99s,2) if $p99s else 'inf')")"
