#!/usr/bin/env bash
# The 5x surge through both doors of one 3-node, 8-shard cluster on
# loopback, back to back: gRPC and the HTTP/JSON door (`--api`,
# `intake load --protocol http`), each unary and in batches of BATCH.
#   1. capacity of each door: closed loop, CONCURRENCY clients;
#   2. priority: the same surge through each door: open-loop arrivals at 5x
#      the gRPC capacity (the cluster's, as benches/overload.sh measures it)
#      with EMERGENCY_SHARE of emergencies (target: >= 99 % of them
#      acknowledged within DEADLINE_MS), unary then batched, gRPC then HTTP.
# Each run lasts DURATION seconds; the last line of each `intake load` run is
# its contract line, and its `class=emergency` line gives the emergencies'
# acknowledgement. benches/overload.sh is the full gRPC surge (50-1000 %).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-8}
CONCURRENCY=${CONCURRENCY:-128}
BATCH=${BATCH:-10}
DEADLINE_MS=${DEADLINE_MS:-2000}
EMERGENCY_SHARE=${EMERGENCY_SHARE:-0.1}
OPEN_CONCURRENCY=${OPEN_CONCURRENCY:-16384}
# Not overload.sh's ports, so the two can run on one machine (not at once).
BASE=${BASE_PORT:-18201}
source benches/intake-cluster.sh
rate_of() { sed -n 's/.*throughput=\([0-9.]*\)\/s.*/\1/p'; }
# SYNs dropped because a listening socket's accept queue was full (since
# boot, every socket of the machine): a client retries one after 1 s.
overflows() { awk '/^TcpExt:/ { if (!n) { for (i = 1; i <= NF; i++) h[i] = $i; n = 1 } else { for (i = 1; i <= NF; i++) if (h[i] == "ListenOverflows") print $i } }' /proc/net/netstat; }
door() {
  case "$1" in
    grpc) echo --endpoints "$EPS" ;;
    http) echo --endpoints "$EPS" --protocol http --api-endpoints "$API_EPS" ;;
  esac
}

declare -A CAP
echo "== capacity (closed loop, $CONCURRENCY clients, ${DURATION}s)"
for b in 1 "$BATCH"; do
  for p in grpc http; do
    # shellcheck disable=SC2046 # door prints a list of flags
    line=$("$BIN" load $(door $p) --concurrency "$CONCURRENCY" --duration "$DURATION" --batch "$b" | tail -n 1)
    echo "$p batch=$b: $line"
    CAP[$p,$b]=$(echo "$line" | rate_of)
  done
done

for b in 1 "$BATCH"; do
  for p in grpc http; do
    # Requests per second: 5x the gRPC capacity in complaints, over b.
    R=$(python3 -c "print(max(1, round(${CAP[grpc,$b]} * 5 / $b)))")
    sleep 5 # the previous run's shedding dies down within seconds
    echo "== priority: $p, 5x gRPC capacity, batch=$b, emergency share $EMERGENCY_SHARE: --rate $R requests/s"
    # shellcheck disable=SC2046
    before=$(overflows)
    "$BIN" load $(door $p) --rate "$R" --batch "$b" --duration "$DURATION" --concurrency "$OPEN_CONCURRENCY" \
      --deadline-ms "$DEADLINE_MS" --emergency-share "$EMERGENCY_SHARE" | grep -v '^alert ' || true
    echo "listen_overflows=$(($(overflows) - before))"
  done
done

echo "== peak RSS per node (VmHWM)"
for i in 0 1 2; do
  awk -v n=$((i+1)) '/VmHWM/ {printf "node%d_rss_peak_mib=%.1f\n", n, $2/1024}' "/proc/${pids[$i]}/status"
done
