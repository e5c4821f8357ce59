#!/usr/bin/env bash
# Validates the operations files without running anything but the validators:
#   promtool check config / check rules / test rules; amtool check-config, routes tests and the
#   notification templates (scripts/check-alertmanager.sh); docker-compose config (with and without
#   the demo profile); the Grafana dashboard structure check; every alert's runbook section; and
#   the metrics contract against src/metrics.rs.
# Installs nothing: needs promtool, amtool (Debian: prometheus, prometheus-alertmanager),
# docker-compose (or `docker compose`) and python3. Exits non-zero on the first failing group,
# after running all of them.
#
#   scripts/validate-ops.sh            # everything
#   SKIP_COMPOSE=1 scripts/validate-ops.sh   # without the docker-compose check
set -uo pipefail
cd "$(dirname "$0")/.."

failed=()
missing=()

need() {
  if ! command -v "$1" >/dev/null 2>&1; then
    missing+=("$1 ($2)")
    return 1
  fi
}

step() {
  local name="$1"
  shift
  echo "==> $name"
  if "$@"; then
    echo "    ok: $name"
  else
    echo "    FAILED: $name" >&2
    failed+=("$name")
  fi
}

have_promtool=0; have_amtool=0; have_python=0; compose=()
need promtool "apt-get install prometheus" && have_promtool=1
need amtool "apt-get install prometheus-alertmanager" && have_amtool=1
need python3 "apt-get install python3" && have_python=1
if [[ -z "${SKIP_COMPOSE:-}" ]]; then
  if command -v docker-compose >/dev/null 2>&1; then
    compose=(docker-compose)
  elif command -v docker >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
  else
    missing+=("docker-compose (apt-get install docker-compose, or Docker's compose plugin)")
  fi
fi

if ((have_promtool)); then
  step "promtool check config prometheus/prometheus.yml" \
    promtool check config prometheus/prometheus.yml
  step "promtool check config prometheus/prometheus.ci.yml" \
    promtool check config prometheus/prometheus.ci.yml
  step "promtool check rules prometheus/rules/*.yml" \
    promtool check rules prometheus/rules/*.yml
  step "promtool test rules prometheus/tests/*.yml" \
    promtool test rules prometheus/tests/*.yml
fi

if ((have_amtool)); then
  step "scripts/check-alertmanager.sh (check-config, routes per severity, templates with .env URLs)" \
    bash scripts/check-alertmanager.sh
fi

if ((${#compose[@]})); then
  # Compose interpolates ${VAR} from the environment and .env; validation needs neither, and
  # the secret files need not exist for `config`.
  step "${compose[*]} config -q" "${compose[@]}" -f docker-compose.yml config -q
  step "${compose[*]} --profile demo config -q" "${compose[@]}" -f docker-compose.yml --profile demo config -q
fi

if ((have_python)); then
  step "scripts/check_dashboards.py" python3 scripts/check_dashboards.py
  step "scripts/test_check_dashboards.py (check_dashboards self-test)" \
    python3 scripts/test_check_dashboards.py
  step "scripts/test_check_contract.py (check_contract self-test)" \
    python3 scripts/test_check_contract.py
  step "scripts/check_contract.py --catalog src/metrics.rs --pending-file prometheus/pending-metrics.txt" \
    python3 scripts/check_contract.py --catalog src/metrics.rs \
      --pending-file prometheus/pending-metrics.txt
  step "scripts/check_runbook.py (every alert: verify, silence, escalate, affected-records SQL)" \
    python3 scripts/check_runbook.py
  step "scripts/make_test_rules.py (e2e rule rewrite applies cleanly)" \
    python3 scripts/make_test_rules.py --check
fi

if ((${#missing[@]})); then
  echo >&2
  for m in "${missing[@]}"; do
    echo "validate-ops: MISSING TOOL: $m" >&2
  done
  failed+=("missing tools")
fi

echo
if ((${#failed[@]})); then
  echo "validate-ops: FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "validate-ops: all checks passed"
