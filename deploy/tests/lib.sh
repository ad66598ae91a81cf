# Helpers the deploy/tests scripts share; sourced, not run.

# port_taken PORT: something serves on 127.0.0.1:PORT.
port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# pick_base_port LOWEST FREE_FN: unless BASE_PORT is set, a random block
# LOWEST + 100k that FREE_FN (given the base) finds free; exits if none is.
# A port someone else serves on would put our load on their cluster.
pick_base_port() {
  if [[ -z ${BASE_PORT:-} ]]; then
    for _ in $(seq 1 20); do
      BASE_PORT=$(($1 + 100 * (RANDOM % 100)))
      "$2" "$BASE_PORT" && break
    done
  fi
  "$2" "$BASE_PORT" || { echo "ports $BASE_PORT+ are in use" >&2; exit 1; }
}

# remove_work: removes $WORK, unless KEEP=1 or the run FAILED.
remove_work() {
  if [[ ${KEEP:-0} == 1 || ${FAILED:-0} != 0 ]]; then
    echo "work directory kept: $WORK" >&2
  else
    rm -rf "$WORK"
  fi
}
