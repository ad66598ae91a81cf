#!/usr/bin/env bash
# Checks the compose cluster's monitoring files without running Prometheus or
# Grafana: the alert rules with `promtool check rules` and their unit tests
# (`promtool test rules`: each alert fires on the series that should trigger
# it, and not before its `for`), the scrape config, and that every metric the
# rules and the Grafana dashboard name is one the nodes export
# (crates/intake-server/src/observe.rs FAMILIES, or Prometheus' `up`), and that
# Grafana's datasource assumes the scrape interval Prometheus uses.
set -euo pipefail
cd "$(dirname "$0")/../.."

command -v promtool >/dev/null || { echo "promtool missing (Debian package prometheus)" >&2; exit 1; }
P=deploy/compose/prometheus
promtool check rules "$P/alerts.yml"
(cd "$P" && promtool test rules alerts_test.yml)
(cd "$P" && promtool check config --syntax-only prometheus.yml)

python3 - <<'PY'
import json, re, sys
families = set(re.findall(r'^\s*"([a-z_]+)",\s*$', open("crates/intake-server/src/observe.rs").read(), re.M))
known = families | {"up"}
dash = json.load(open("deploy/compose/grafana/dashboards/intake.json"))
exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
exprs += re.findall(r"expr: (.*)", open("deploy/compose/prometheus/alerts.yml").read())
words = {"sum", "max", "min", "by", "rate", "histogram_quantile", "count", "le", "instance", "shard",
         "node", "outcome", "job", "intake", "accepted", "shed", "unavailable", "deadline"}
unknown = set()
for e in exprs:
    for name in re.findall(r"\b([a-z_]+(?:_total|_seconds|_bytes|_tickets|_leader|_term)(?:_bucket)?)\b", e):
        base = re.sub(r"_bucket$", "", name)
        if base not in known:
            unknown.add(name)
    if "up{" in e and "up" not in known:
        unknown.add("up")
needed = {"intake_submit_total", "intake_submit_duration_seconds", "intake_dispatch_lag_seconds",
          "intake_raft_term", "intake_raft_is_leader", "process_resident_memory_bytes"}
used = " ".join(exprs)
missing = [n for n in sorted(needed) if n not in used]
# Grafana's $__rate_interval is built from the datasource's timeInterval
# (15s when unset): it must be the scrape interval Prometheus really uses.
scrape = re.search(r"^\s*scrape_interval:\s*(\S+)", open("deploy/compose/prometheus/prometheus.yml").read(), re.M)
ds = re.search(r"^\s*timeInterval:\s*(\S+)",
               open("deploy/compose/grafana/provisioning/datasources/prometheus.yml").read(), re.M)
mismatch = not scrape or not ds or scrape.group(1) != ds.group(1)
if mismatch:
    print(f"monitoring: the Grafana datasource's timeInterval ({ds and ds.group(1)}) is not prometheus.yml's "
          f"scrape_interval ({scrape and scrape.group(1)})", file=sys.stderr)
for n in sorted(unknown):
    print(f"monitoring: {n} is not a metric the nodes export", file=sys.stderr)
for n in missing:
    print(f"monitoring: the dashboard does not show {n}", file=sys.stderr)
sys.exit(1 if unknown or missing or mismatch else 0)
PY
echo "monitoring: rules, rule tests, scrape config and dashboard metrics check out"
