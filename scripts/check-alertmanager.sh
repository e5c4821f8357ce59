#!/usr/bin/env bash
# Checks alertmanager/ with the real amtool (called by scripts/validate-ops.sh):
#   1. amtool check-config alertmanager/alertmanager.yml;
#   2. amtool config routes test: every severity reaches its receiver (page -> lqo-page,
#      ticket -> lqo-ticket, heartbeat -> lqo-heartbeat, anything else -> lqo-ticket);
#   3. the notification templates, rendered with the URLs of .env (alertmanager/render-urls.sh)
#      for scripts/testdata/notification.json, link to LQO_DOCS_URL/docs/RUNBOOK.md#<alert>,
#      LQO_GRAFANA_URL/d/<dashboard> and LQO_PROMETHEUS_URL.
# alertmanager.yml needs Alertmanager >= 0.26 (webhook url_file, the heartbeat secret), which
# docker-compose.yml runs. Debian bookworm's amtool is 0.25: with an older amtool the checks read
# a copy whose `url_file: <path>` lines are `url: http://url-file.invalid/` (said in the output).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v amtool >/dev/null || { echo "check-alertmanager: amtool not found (apt-get install prometheus-alertmanager)" >&2; exit 1; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
config=alertmanager/alertmanager.yml
version="$(amtool --version 2>&1 | sed -n 's/^amtool, version \([0-9][0-9]*\.[0-9][0-9]*\).*/\1/p' | head -n1)"
major="${version%%.*}"; minor="${version#*.}"
if [[ -z "$version" ]] || ((major == 0 && minor < 26)); then
  sed -E 's|^(\s*-?\s*)url_file: (.*)$|\1url: http://url-file.invalid/  # url_file: \2 (Alertmanager >= 0.26)|' \
    "$config" >"$tmp/alertmanager.yml"
  cp -r alertmanager/templates "$tmp/templates"
  echo "check-alertmanager: amtool ${version:-?} predates webhook url_file (0.26): checking a copy with url_file -> url"
  config="$tmp/alertmanager.yml"
fi

echo "--- amtool check-config"
amtool check-config "$config"

echo "--- amtool config routes test"
route() { # expected receiver, labels...
  local want="$1"
  shift
  amtool config routes test --config.file="$config" --verify.receivers="$want" "$@" >/dev/null 2>&1 ||
    { echo "check-alertmanager: $* is not routed to $want: $(amtool config routes test --config.file="$config" "$@" 2>/dev/null)" >&2; return 1; }
  echo "ok: $* -> $want"
}
route lqo-page alertname=LqoErrorBudgetBurnFast severity=page model_version=gpt-5-mini
route lqo-page alertname=LqoAlertmanagerNotificationsFailing severity=page integration=slack
route lqo-ticket alertname=LqoErrorBudgetLeak severity=ticket model_version=gpt-5-mini
route lqo-ticket alertname=LqoGatewayDown severity=ticket instance=gateway:18000
route lqo-heartbeat alertname=LqoWatchdog severity=heartbeat
route lqo-ticket alertname=SomethingElse

echo "--- notification templates with the URLs of .env"
set -a
# shellcheck disable=SC1091
. ./.env
set +a
sh alertmanager/render-urls.sh "$tmp/urls/urls.tmpl"
render() { # template name
  amtool template render --template.glob='alertmanager/templates/*.tmpl' \
    --template.glob="$tmp/urls/*.tmpl" --template.data=scripts/testdata/notification.json \
    --template.text="{{ template \"$1\" . }}"
}
for t in lqo.slack.text lqo.email.text lqo.email.html lqo.runbook_link lqo.slack.title_link; do
  render "$t" >"$tmp/$t.out"
done
expect() { # file, text
  grep -qF -- "$2" "$tmp/$1.out" || { echo "check-alertmanager: $1 lacks $2:" >&2; cat "$tmp/$1.out" >&2; return 1; }
}
for t in lqo.slack.text lqo.email.text lqo.email.html; do
  expect "$t" "${LQO_DOCS_URL%/}/docs/RUNBOOK.md#lqoerrorbudgetburnfast"
  expect "$t" "${LQO_GRAFANA_URL%/}/d/lqo-overview?var-model_version=gpt-5-mini"
  expect "$t" "${LQO_PROMETHEUS_URL%/}/alerts"
done
expect lqo.runbook_link "${LQO_DOCS_URL%/}/docs/RUNBOOK.md#lqoerrorbudgetburnfast"
expect lqo.slack.title_link "${LQO_GRAFANA_URL%/}/d/lqo-overview?var-model_version=gpt-5-mini"
echo "ok: runbook, dashboard and Prometheus links use .env"
echo "check-alertmanager: OK"
