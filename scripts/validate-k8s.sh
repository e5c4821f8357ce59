#!/usr/bin/env bash
# Validates deploy/kubernetes/ offline:
#   1. the generated manifests (PrometheusRules from prometheus/rules/, dashboard ConfigMaps from
#      grafana/dashboards/) are up to date — regenerate with `python3 scripts/k8s_manifests.py`;
#   2. every core manifest passes `kubernetes-validate --strict` (PyPI; it ships the Kubernetes
#      JSON schemas, no network needed once installed) — unknown fields are errors;
#   3. the custom resources it has no schema for: the PrometheusRules' groups equal the rule files'
#      as data and pass `promtool check rules`; the ServiceMonitor passes a small schema check and
#      selects exactly the Service `lqo` by a port it has; kustomization.yaml lists every manifest;
#   4. `kubectl kustomize` builds the folder, when kubectl is installed (skipped otherwise).
# Needs python3 (venv) and promtool (Debian: prometheus).
#   K8S_VENV  where the virtualenv lives (default target/k8s-venv; created on first use)
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${K8S_VENV:-$PWD/target/k8s-venv}"
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==1.37.0"
fi
command -v promtool >/dev/null || { echo "validate-k8s: promtool not found (apt-get install prometheus)" >&2; exit 1; }

echo "==> generated manifests up to date"
python3 scripts/k8s_manifests.py --check

echo "==> kubernetes-validate --strict (core manifests)"
core=()
for f in deploy/kubernetes/*.yaml; do
  case "$(basename "$f")" in
    kustomization.yaml | servicemonitor.yaml | prometheusrule.yaml) ;;
    *) core+=("$f") ;;
  esac
done
"$venv/bin/kubernetes-validate" --strict --quiet "${core[@]}"
echo "    ok: ${#core[@]} files"

echo "==> custom resources (ServiceMonitor, PrometheusRule) and kustomization.yaml"
"$venv/bin/python" scripts/k8s_manifests.py --check-crds

echo "==> promtool check rules (the PrometheusRules' groups)"
rules="$(mktemp -d)"
trap 'rm -rf "$rules"' EXIT
"$venv/bin/python" scripts/k8s_manifests.py --extract-rules "$rules" >/dev/null
promtool check rules "$rules"/*.yml

if command -v kubectl >/dev/null 2>&1; then
  echo "==> kubectl kustomize deploy/kubernetes"
  n=$(kubectl kustomize deploy/kubernetes | grep -c '^kind:')
  echo "    ok: $n resources"
else
  echo "==> kubectl not installed: kustomize build skipped"
fi
echo "validate-k8s: all checks passed"
