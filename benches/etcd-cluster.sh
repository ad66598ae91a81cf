# Sourced by compare-etcd.sh and compare-peers.sh: starts a 3-member etcd
# cluster on 127.0.0.1 (client ports BASE+11..13, peer ports BASE+21..23,
# data under $DIR) through the caller's `bounded`, waits until it is
# healthy, and sets ETCD_EPS to its client endpoints. Exits the script if
# it never becomes healthy.
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
