# Sourced by compare-etcd.sh and compare-peers.sh: a scratch directory and
# the servers a benchmark starts, each bounded in time (MAX_SERVER_S) and all
# stopped, with the directory removed, when the script exits; and
# `start_etcd`, a 3-member etcd cluster on 127.0.0.1 (client ports
# BASE+11..13, peer ports BASE+21..23, data under $DIR) that sets ETCD_EPS
# once healthy and exits the script if it never is.
DIR=$(mktemp -d)
pids=()
stop_all() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}
cleanup() { stop_all; rm -rf "$DIR"; }
trap cleanup EXIT
# Runs a server in the background, killed after MAX_SERVER_S whatever happens.
bounded() { timeout --signal=TERM --kill-after=5 "$MAX_SERVER_S" "$@" & pids+=($!); }

start_etcd() {
  local initial="" i
  for i in 1 2 3; do initial+="${initial:+,}e$i=http://127.0.0.1:$((BASE+20+i))"; done
  for i in 1 2 3; do
    bounded etcd --name "e$i" --data-dir "$DIR/etcd-$i" \
      --listen-client-urls "http://127.0.0.1:$((BASE+10+i))" \
      --advertise-client-urls "http://127.0.0.1:$((BASE+10+i))" \
      --listen-peer-urls "http://127.0.0.1:$((BASE+20+i))" \
      --initial-advertise-peer-urls "http://127.0.0.1:$((BASE+20+i))" \
      --initial-cluster "$initial" --initial-cluster-state new \
      --initial-cluster-token "intake-bench-$$" \
      --quota-backend-bytes $((2 << 30)) 2>"$DIR/etcd-$i.log"
  done
  ETCD_EPS="127.0.0.1:$((BASE+11)),127.0.0.1:$((BASE+12)),127.0.0.1:$((BASE+13))"
  for _ in $(seq 1 150); do
    if curl -sf "http://127.0.0.1:$((BASE+11))/health" | grep -q '"health":"true"'; then return 0; fi
    sleep 0.2
  done
  echo "etcd cluster did not become healthy" >&2
  exit 1
}
