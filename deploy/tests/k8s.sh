#!/usr/bin/env bash
# Validates deploy/k8s/ against Kubernetes' schemas (kubernetes-validate,
# pinned, bundles the schemas: no cluster or network needed) and checks what
# a schema cannot: the ConfigMap's tables are the built-in ones, node ids
# and --initial-cluster agree with the StatefulSet, the probes run the
# image's health subcommand.
#
#   deploy/tests/k8s.sh    (needs `pip install kubernetes-validate==1.37.0`)
set -euo pipefail
cd "$(dirname "$0")/../.."

KUBE_VERSION=${KUBE_VERSION:-1.33.0}
python3 -m kubernetes_validate --version >/dev/null 2>&1 ||
  { echo "kubernetes-validate missing: pip install kubernetes-validate==1.37.0" >&2; exit 1; }
python3 -m kubernetes_validate --strict -k "$KUBE_VERSION" deploy/k8s/*.yaml

python3 - <<'PY'
import sys, yaml
docs = {}
for f in ["configmap", "services", "statefulset", "pdb"]:
    for d in yaml.safe_load_all(open(f"deploy/k8s/{f}.yaml")):
        docs[(d["kind"], d["metadata"]["name"])] = d
problems = []
cm = docs[("ConfigMap", "intake-tables")]["data"]
for key, path in [("districts.csv", "crates/intake-core/data/beijing-districts.csv"),
                  ("categories.csv", "crates/intake-core/data/categories.csv")]:
    if cm[key].strip() != open(path).read().strip():
        problems.append(f"ConfigMap {key} differs from {path}")
sts = docs[("StatefulSet", "intake")]
spec = sts["spec"]
c = spec["template"]["spec"]["containers"][0]
env = {e["name"]: e.get("value") for e in c["env"]}
want = ",".join(f"{i + 1}=intake-{i}.{spec['serviceName']}:7001" for i in range(spec["replicas"]))
if env.get("INTAKE_INITIAL_CLUSTER") != want:
    problems.append(f"INTAKE_INITIAL_CLUSTER {env.get('INTAKE_INITIAL_CLUSTER')!r}, want {want!r}")
if env.get("INTAKE_NODE_ID_FROM_HOSTNAME") != "true":
    problems.append("the node id must come from the pod's ordinal")
if c["readinessProbe"]["exec"]["command"] != ["intake", "health"]:
    problems.append("readiness must run `intake health`")
if c["livenessProbe"]["exec"]["command"] != ["intake", "health", "--live"]:
    problems.append("liveness must run `intake health --live`")
headless = docs[("Service", spec["serviceName"])]["spec"]
if headless.get("clusterIP") != "None" or not headless.get("publishNotReadyAddresses"):
    problems.append("the StatefulSet's Service must be headless and publish not-ready pods")
if spec.get("podManagementPolicy") != "Parallel":
    problems.append("pods must start in parallel (readiness needs a quorum)")
if docs[("PodDisruptionBudget", "intake")]["spec"].get("maxUnavailable") != 1:
    problems.append("the PodDisruptionBudget must keep a quorum of 3 (maxUnavailable 1)")
for p in problems:
    print("k8s:", p, file=sys.stderr)
sys.exit(1 if problems else 0)
PY
echo "k8s: deploy/k8s/*.yaml valid for Kubernetes $KUBE_VERSION"
