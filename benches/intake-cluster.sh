# Sourced by the benchmark scripts: a 3-node Intake cluster on 127.0.0.1,
# stopped and removed when the script exits. Before sourcing, set BASE (first
# client port); extra `intake start` flags may be given in START_FLAGS, and
# another binary than this tree's release build in INTAKE_BIN.
# Afterwards: BIN, LOAD, DIR, EPS (the three endpoints), API_EPS (each node's
# HTTP door, `--api`, on BASE+200..202) and pids are set, and every shard
# has a leader.
# INTAKE_BIN runs another build (e.g. an earlier release) as the nodes, and
# then nothing is built. LOAD (default BIN) is the binary whose `intake
# load` drives the load: set LOAD_BIN to compare builds with one load tool,
# e.g. an old release's nodes driven by this tree's client (an old binary
# lacks the newer load flags). A binary without `--api` gets no HTTP door.
if [ -n "${INTAKE_BIN:-}" ]; then
  BIN=$INTAKE_BIN
else
  cargo build --release --bin intake >&2
  BIN=target/release/intake
fi
LOAD=${LOAD_BIN:-$BIN}
HAS_API=
if "$BIN" start --help 2>/dev/null | grep -q -- '--api'; then HAS_API=1; fi
DIR=$(mktemp -d)
CLUSTER="1=127.0.0.1:$BASE,2=127.0.0.1:$((BASE+1)),3=127.0.0.1:$((BASE+2))"
EPS="127.0.0.1:$BASE,127.0.0.1:$((BASE+1)),127.0.0.1:$((BASE+2))"
API_EPS="127.0.0.1:$((BASE+200)),127.0.0.1:$((BASE+201)),127.0.0.1:$((BASE+202))"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$DIR"; }
trap cleanup EXIT
for i in 1 2 3; do
  api=()
  if [ -n "$HAS_API" ]; then api=(--api "127.0.0.1:$((BASE+200+i-1))"); fi
  # shellcheck disable=SC2086 # START_FLAGS is a list of flags
  "$BIN" start --node-id "$i" --listen "127.0.0.1:$((BASE+i-1))" --data-dir "$DIR/node-$i" \
    --initial-cluster "$CLUSTER" --http "127.0.0.1:$((BASE+100+i))" \
    "${api[@]}" ${START_FLAGS:-} 2>"$DIR/node-$i.log" &
  pids+=($!)
done
# Every shard needs a leader before the clock starts.
for _ in $(seq 1 150); do
  if "$BIN" status --endpoint "127.0.0.1:$BASE" --json 2>/dev/null \
    | python3 -c 'import json,sys; s=json.load(sys.stdin)["shards"]; sys.exit(0 if s and all(x["leader"] for x in s) else 1)'; then break; fi
  sleep 0.2
done
