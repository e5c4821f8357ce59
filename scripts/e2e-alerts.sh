#!/usr/bin/env bash
# End-to-end test of the operations files against the real binary:
#   mock upstream (50 % errors, 300 ms) -> gateway (PostgreSQL: a throwaway database on a local
#   server; or SQLite with E2E_DB=sqlite; API keys required, one key rate-limited) -> Prometheus
#   (the repo's rules, a TEST copy with short `for:` and low thresholds; it scrapes the gateway
#   and Alertmanager) -> Alertmanager (the repo's config and templates, rewritten to local sinks:
#   a Slack webhook stand-in per receiver, an SMTP sink, and a heartbeat receiver that is gone).
# Drives /chat (with feedback on the answers) and streamed /v1/chat/completions traffic, then
# asserts that
#   1. a page (error-budget burn) reaches the page webhook and a ticket (p95 latency) the ticket
#      webhook, both also by mail, naming the model version and linking to the runbook, Grafana
#      and Prometheus URLs set for the templates (alertmanager/render-urls.sh);
#   2. the Watchdog goes to the heartbeat receiver, whose failure (a 404) shows up in
#      alertmanager_notifications_failed_total and raises LqoAlertmanagerNotificationsFailing,
#      which reaches the page webhook and the mailbox;
#   3. the inhibit rules are scoped (scripts/e2e_inhibition.py against the running Alertmanager);
#   4. every Prometheus query of every dashboard (panels, variables, deploy annotations) returns
#      data;
#   5. every SQL query of every dashboard's PostgreSQL panels (llm_logs, judge_scores, judge_jobs,
#      feedback) and its database-backed model_version variable runs through psql against the
#      gateway's database and returns rows (scripts/e2e_sql_panels.py), once with the dashboards'
#      default selection (All, empty filters) and once with every filter set; and every
#      affected-records query of docs/RUNBOOK.md runs there (scripts/check_runbook.py);
#   6. scripts/check_contract.py passes against the gateway's live /metrics, and fails once an
#      exposed metric family is on no dashboard and in no rule.
# Every process it starts is stopped on exit, and the database it created is dropped (also on
# failure). Needs: prometheus, alertmanager (Debian: prometheus-alertmanager), promtool, python3,
# curl, sha256sum, a built gateway, and for PostgreSQL psql and a server reachable as E2E_PG_URL
# whose user may create databases (Debian: apt-get install postgresql; trust auth on 127.0.0.1).
#
#   cargo build && scripts/e2e-alerts.sh
#   LQO_BIN=target/release/lqo E2E_TIMEOUT=300 KEEP_TMP=1 scripts/e2e-alerts.sh
#
# Environment:
#   LQO_BIN           gateway binary (default target/debug/lqo)
#   E2E_MODEL         model version (default gpt-5-mini)
#   E2E_TIMEOUT       seconds to wait for each group of notifications (default 180)
#   E2E_ALLOW_EMPTY   regex of dashboard panel titles that may return no data (default: none)
#   E2E_MOCK_ARGS     extra flags for `lqo mock-upstream`
#   E2E_DB            postgres (default) or sqlite (the SQL panels are then not checked)
#   E2E_PG_URL        PostgreSQL server, without a database (default postgres://postgres@127.0.0.1:5432);
#                     the test creates database lqo_e2e_<time>_<pid>_<random> there and drops it
#   KEEP_TMP=1        keep the temporary directory (logs, configs, received notifications)
#   KEEP_DB=1         do not drop the test database (its name is printed)
#
# Test-only changes, all generated into the temporary directory (the repo files are not touched):
#   rules: scripts/make_test_rules.py — every `for:` 5s; error budget 0.001 (SLO 99.9 %),
#          p95 latency 0.1 s, TTFT p95 0.1 s, minimum request rate 0.01/s, minimum calls 10;
#   alertmanager.yml: secret paths -> temp files (Slack page/ticket webhooks -> the sink's
#          /slack/page and /slack/ticket), the heartbeat's url_file -> url of the sink's
#          /fail/heartbeat (Debian's Alertmanager 0.25 predates url_file), the generated URL
#          template -> a temp file, smtp_smarthost -> the local sink, smtp_require_tls -> false,
#          every group_wait 1s, every group_interval 5s.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

LQO_BIN="${LQO_BIN:-target/debug/lqo}"
MODEL="${E2E_MODEL:-gpt-5-mini}"
TIMEOUT="${E2E_TIMEOUT:-180}"
ALLOW_EMPTY="${E2E_ALLOW_EMPTY-}"
E2E_DB="${E2E_DB:-postgres}"
PG_URL="${E2E_PG_URL:-postgres://postgres@127.0.0.1:5432}"
PG_URL="${PG_URL%/}"

die() { echo "e2e: ERROR: $*" >&2; exit 1; }
log() { echo "e2e: $*"; }

# ------------------------------------------------------------------ tools
[[ "$LQO_BIN" = /* ]] || LQO_BIN="$ROOT/$LQO_BIN"
[[ -x "$LQO_BIN" ]] || die "gateway binary $LQO_BIN not found: run cargo build (or set LQO_BIN)"
PROMETHEUS="$(command -v prometheus || true)"
ALERTMANAGER="$(command -v alertmanager || command -v prometheus-alertmanager || true)"
[[ -n "$PROMETHEUS" ]] || die "prometheus not found (Debian: apt-get install prometheus)"
[[ -n "$ALERTMANAGER" ]] || die "alertmanager not found (Debian: apt-get install prometheus-alertmanager)"
for t in python3 curl sha256sum; do command -v "$t" >/dev/null || die "$t not found"; done
case "$E2E_DB" in
  postgres)
    command -v psql >/dev/null || die "psql not found (Debian: apt-get install postgresql-client)"
    PGCONNECT_TIMEOUT=5 psql "$PG_URL/postgres" -X -Atq -c 'SELECT 1' >/dev/null 2>&1 ||
      die "no PostgreSQL at $PG_URL (set E2E_PG_URL, start the server — Debian: pg_ctlcluster <version> main start — or use E2E_DB=sqlite)"
    ;;
  sqlite) ;;
  *) die "E2E_DB must be postgres or sqlite, got '$E2E_DB'" ;;
esac

TMP="$(mktemp -d "${TMPDIR:-/tmp}/lqo-e2e.XXXXXX")"
PIDS=()
PG_DB=""
pg_admin() { # sql: run on the server's maintenance database
  PGCONNECT_TIMEOUT=5 psql "$PG_URL/postgres" -X -q -v ON_ERROR_STOP=1 -c "$1"
}
cleanup() {
  local rc=$?
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  if [[ -n "$PG_DB" ]]; then
    if [[ -n "${KEEP_DB:-}" ]]; then
      echo "e2e: database kept: $PG_URL/$PG_DB" >&2
    elif ! pg_admin "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >"$TMP/dropdb.log" 2>&1; then
      echo "e2e: could not drop database $PG_DB: $(cat "$TMP/dropdb.log")" >&2
      ((rc != 0)) || rc=1
    fi
  fi
  if ((rc != 0)); then
    echo "e2e: FAILED (exit $rc); last log lines:" >&2
    for f in "$TMP"/*.log; do
      [[ -f "$f" ]] || continue
      echo "----- $(basename "$f")" >&2
      tail -n 15 "$f" >&2
    done
  fi
  if [[ -n "${KEEP_TMP:-}" || $rc -ne 0 ]]; then
    echo "e2e: files kept in $TMP" >&2
  else
    rm -rf "$TMP"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Free TCP ports on 127.0.0.1, chosen by the kernel.
read -r P_MOCK P_GW P_PROM P_AM < <(python3 - <<'EOF'
import socket
socks = [socket.socket() for _ in range(4)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
EOF
)
log "tmp $TMP; ports mock=$P_MOCK gateway=$P_GW prometheus=$P_PROM alertmanager=$P_AM"

# ------------------------------------------------------------------ database
if [[ "$E2E_DB" = postgres ]]; then
  PG_DB="lqo_e2e_$(date +%s)_$$_${RANDOM}" # set before CREATE: the trap drops it IF EXISTS
  pg_admin "CREATE DATABASE $PG_DB" >"$TMP/createdb.log" 2>&1 ||
    die "could not create database $PG_DB on $PG_URL: $(cat "$TMP/createdb.log")"
  DB_URL="$PG_URL/$PG_DB"
else
  DB_URL="sqlite://$TMP/e2e.db"
fi
log "database $DB_URL"

wait_http() { # url seconds name
  local url="$1" secs="$2" name="$3" i
  for ((i = 0; i < secs * 4; i++)); do
    if curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null; then return 0; fi
    sleep 0.25
  done
  die "$name did not answer $url within ${secs}s"
}

# ------------------------------------------------------------------ notification sinks
python3 "$ROOT/scripts/e2e_sinks.py" serve --out "$TMP/sinks" >"$TMP/sinks.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 40); do [[ -f "$TMP/sinks/ports.json" ]] && break; sleep 0.25; done
[[ -f "$TMP/sinks/ports.json" ]] || die "notification sinks did not start"
read -r P_HOOK P_SMTP < <(python3 -c 'import json,sys; p=json.load(open(sys.argv[1])); print(p["hook"], p["smtp"])' "$TMP/sinks/ports.json")
log "webhook sink 127.0.0.1:$P_HOOK, smtp sink 127.0.0.1:$P_SMTP"

# ------------------------------------------------------------------ mock upstream + gateway
# --error-rate 0.5 fails exactly every second upstream request with a 500, which the gateway
# retries (2 retries by default): sequential calls would all succeed on retry. The traffic below
# sends 4 calls at a time, so about 1 in 8 calls still fails after its retries — far above the
# test copy's error budget (fast burn at 1.44 %). E2E_MOCK_ARGS adds flags (e.g. --error-status 400
# for errors that are never retried).
# shellcheck disable=SC2086
"$LQO_BIN" mock-upstream --port "$P_MOCK" --error-rate 0.5 --latency-ms 300 ${E2E_MOCK_ARGS:-} \
  >"$TMP/mock.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$P_MOCK/health" 30 "mock upstream"

mkdir -p "$TMP/gw"
# API keys are required (lqo.yaml in the gateway's working directory): the traffic uses the key
# e2e; the key e2e-limited may make one call a minute, so a second call is rate-limited, and one
# call with an unknown key is an authentication failure - the dashboards' auth panels get data.
E2E_KEY="lqo_e2e_$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
LIMITED_KEY="lqo_e2e_limited_$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
cat >"$TMP/gw/lqo.yaml" <<EOF
# Generated by scripts/e2e-alerts.sh. Providers and models come from the environment.
auth:
  required: true
  keys:
    - { name: e2e, sha256: $(printf %s "$E2E_KEY" | sha256sum | cut -d' ' -f1), scopes: [chat, feedback] }
    - { name: e2e-limited, sha256: $(printf %s "$LIMITED_KEY" | sha256sum | cut -d' ' -f1), scopes: [chat] }
  rate_limits:
    per_key:
      e2e-limited: { requests_per_minute: 1 }
EOF
AUTH=(-H "authorization: Bearer $E2E_KEY")
(
  cd "$TMP/gw" # its lqo.yaml above; data/ and spool/ land here
  exec env LLM_API_KEY=dummy LLM_API_BASE_URL="http://127.0.0.1:$P_MOCK/v1" LLM_API_KIND=chat \
    DATABASE_URL="$DB_URL" OPENAI_MODEL_MAIN="$MODEL" PORT="$P_GW" LOG_LEVEL=info \
    "$LQO_BIN" serve --port "$P_GW"
) >"$TMP/gateway.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$P_GW/health" 60 "gateway"
log "gateway up: $(curl -fsS "http://127.0.0.1:$P_GW/health")"

# ------------------------------------------------------------------ alertmanager (rewritten config)
mkdir -p "$TMP/am/templates" "$TMP/am/data"
cp "$ROOT"/alertmanager/templates/*.tmpl "$TMP/am/templates/"
# The URLs notifications link to, as .env would set them (values only this test uses).
export LQO_GRAFANA_URL="http://grafana.e2e.invalid:3000"
export LQO_DOCS_URL="https://docs.e2e.invalid/lqo/blob/main"
export LQO_PROMETHEUS_URL="http://prometheus.e2e.invalid:9090"
sh "$ROOT/alertmanager/render-urls.sh" "$TMP/am/urls/urls.tmpl"
echo "http://127.0.0.1:$P_HOOK/slack/page" >"$TMP/am/slack_webhook_page"
echo "http://127.0.0.1:$P_HOOK/slack/ticket" >"$TMP/am/slack_webhook_ticket"
echo "unused-by-the-sink" >"$TMP/am/smtp_password"
sed -e "s#/run/secrets/slack_webhook_page#$TMP/am/slack_webhook_page#g" \
    -e "s#/run/secrets/slack_webhook_ticket#$TMP/am/slack_webhook_ticket#g" \
    -e "s#/run/secrets/smtp_password#$TMP/am/smtp_password#g" \
    -e "s#url_file: /run/secrets/heartbeat_url#url: http://127.0.0.1:$P_HOOK/fail/heartbeat#" \
    -e "s#/tmp/lqo-alertmanager/\*.tmpl#$TMP/am/urls/*.tmpl#" \
    -e "s#^\(\s*smtp_smarthost:\).*#\1 127.0.0.1:$P_SMTP#" \
    -e "s#^\(\s*smtp_require_tls:\).*#\1 false#" \
    -e "s#^\(\s*group_wait:\).*#\1 1s#" \
    -e "s#^\(\s*group_interval:\).*#\1 5s#" \
    "$ROOT/alertmanager/alertmanager.yml" >"$TMP/am/alertmanager.yml"
for want in "127.0.0.1:$P_SMTP" "$TMP/am/slack_webhook_page" "$TMP/am/slack_webhook_ticket" \
  "/fail/heartbeat" "$TMP/am/urls/"; do
  grep -qF "$want" "$TMP/am/alertmanager.yml" || die "could not rewrite alertmanager.yml for $want"
done
if grep -v '^\s*#' "$TMP/am/alertmanager.yml" | grep -q "/run/secrets/\|/tmp/lqo-alertmanager"; then
  die "alertmanager.yml has a path this test does not rewrite: $(grep -v '^\s*#' "$TMP/am/alertmanager.yml" | grep "/run/secrets/\|/tmp/lqo-alertmanager")"
fi
if command -v amtool >/dev/null; then
  amtool check-config "$TMP/am/alertmanager.yml" >"$TMP/amtool.log" 2>&1 ||
    die "rewritten alertmanager.yml is invalid: $(cat "$TMP/amtool.log")"
fi
"$ALERTMANAGER" --config.file="$TMP/am/alertmanager.yml" --storage.path="$TMP/am/data" \
  --web.listen-address="127.0.0.1:$P_AM" --cluster.listen-address= \
  --web.external-url="http://127.0.0.1:$P_AM" >"$TMP/alertmanager.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$P_AM/-/ready" 30 "alertmanager"

# ------------------------------------------------------------------ prometheus (test rules)
python3 "$ROOT/scripts/make_test_rules.py" --out "$TMP/prom/rules" >/dev/null
cat >"$TMP/prom/prometheus.yml" <<EOF
# Generated by scripts/e2e-alerts.sh: the repo's rules (test copy in rules/), 1s intervals.
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - $TMP/prom/rules/*.yml
alerting:
  alertmanagers:
    - static_configs:
        - targets: ["127.0.0.1:$P_AM"]
scrape_configs:
  - job_name: lqo
    static_configs:
      - targets: ["127.0.0.1:$P_GW"]
  - job_name: alertmanager
    static_configs:
      - targets: ["127.0.0.1:$P_AM"]
EOF
if command -v promtool >/dev/null; then
  promtool check config "$TMP/prom/prometheus.yml" >"$TMP/promtool.log" 2>&1 ||
    die "generated prometheus.yml is invalid: $(cat "$TMP/promtool.log")"
fi
"$PROMETHEUS" --config.file="$TMP/prom/prometheus.yml" --storage.tsdb.path="$TMP/prom/data" \
  --web.listen-address="127.0.0.1:$P_PROM" --web.external-url="$LQO_PROMETHEUS_URL" \
  >"$TMP/prometheus.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$P_PROM/-/ready" 60 "prometheus"
PROM="http://127.0.0.1:$P_PROM"

# ------------------------------------------------------------------ traffic (bounded)
# Three /chat calls and one streamed completion at a time, all with the key e2e. The judge (the
# mock answers judge prompts too) scores a sample of the answers 4 of 5 ([mock:judge_score=4] in
# the prompt), and the first /chat answer of every round gets a thumbs up or down, so the
# feedback and judge-human agreement series move.
traffic() {
  trap 'kill $(jobs -p) 2>/dev/null; exit 0' TERM
  local deadline=$((SECONDS + 3 * TIMEOUT + 120)) n=0 id score
  local chat='{"prompt":"hi [mock:judge_score=4]","user_id":"u1","tags":["e2e"]}'
  local stream
  stream=$(printf '{"model":"%s","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true},"user":"u2"}' "$MODEL")
  while ((SECONDS < deadline && n < 20000)); do
    curl -sS -o "$TMP/traffic-answer.json" --max-time 10 "${AUTH[@]}" \
      -H 'content-type: application/json' -d "$chat" "http://127.0.0.1:$P_GW/chat" &
    for _ in 1 2; do
      curl -sS -o /dev/null --max-time 10 "${AUTH[@]}" -H 'content-type: application/json' \
        -d "$chat" "http://127.0.0.1:$P_GW/chat" &
    done
    curl -sS -N -o /dev/null --max-time 10 "${AUTH[@]}" -H 'content-type: application/json' \
      -d "$stream" "http://127.0.0.1:$P_GW/v1/chat/completions" &
    wait
    n=$((n + 4))
    id=$(sed -n 's/.*"request_id":"\([0-9a-f-]*\)".*/\1/p' "$TMP/traffic-answer.json" 2>/dev/null || true)
    if [[ -n "$id" ]]; then
      score=$(((n / 4) % 3 == 0 ? -1 : 1))
      curl -sS -o /dev/null --max-time 10 "${AUTH[@]}" -H 'content-type: application/json' \
        -d "{\"request_id\":\"$id\",\"score\":$score,\"user_id\":\"u1\",\"comment\":\"e2e\"}" \
        "http://127.0.0.1:$P_GW/v1/feedback" || true
    fi
  done
}
traffic >"$TMP/traffic.log" 2>&1 &
PIDS+=($!)

# A first look at the gateway's answers, for the log; then the auth and rate-limit paths once.
code=$(curl -sS -o "$TMP/first-chat.json" -w '%{http_code}' --max-time 10 "${AUTH[@]}" \
  -H 'content-type: application/json' -d '{"prompt":"hi","user_id":"u1"}' "http://127.0.0.1:$P_GW/chat" || true)
log "POST /chat -> $code $(head -c 300 "$TMP/first-chat.json" 2>/dev/null || true)"
code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 10 -H "authorization: Bearer lqo_not_a_key" \
  -H 'content-type: application/json' -d '{"prompt":"hi"}' "http://127.0.0.1:$P_GW/chat" || true)
[[ "$code" = 401 ]] || die "a call with an unknown key got $code, not 401"
codes=""
for _ in 1 2; do
  codes+="$(curl -sS -o /dev/null -w '%{http_code}' --max-time 10 -H "authorization: Bearer $LIMITED_KEY" \
    -H 'content-type: application/json' -d '{"prompt":"hi","user_id":"u3"}' "http://127.0.0.1:$P_GW/chat" || true) "
done
[[ "$codes" =~ 429 ]] || die "two calls of the key limited to one a minute got '$codes', no 429"
log "unknown key -> 401, limited key -> $codes"

prom_alerts() { # one line: alertname=state of every alert in Prometheus
  curl -fsS "$PROM/api/v1/alerts" 2>/dev/null | python3 -c 'import json,sys
try:
    a = json.load(sys.stdin)["data"]["alerts"]
    print(", ".join(sorted({x["labels"]["alertname"] + "=" + x["state"] for x in a})) or "none")
except Exception as e:
    print("?", e)' || true
}
wait_notifications() { # what, then e2e_sinks.py check arguments
  local what="$1" i
  shift
  log "waiting up to ${TIMEOUT}s for $what"
  for ((i = 0; i < TIMEOUT; i += 2)); do
    if python3 "$ROOT/scripts/e2e_sinks.py" check --out "$TMP/sinks" "$@"; then
      return 0
    fi
    ((i % 20 == 0)) && log "t=${i}s alerts in Prometheus: $(prom_alerts)"
    sleep 2
  done
  python3 "$ROOT/scripts/e2e_sinks.py" check --out "$TMP/sinks" -v "$@" || true
  die "$what did not arrive within ${TIMEOUT}s"
}

# ------------------------------------------------------------------ 1. page and ticket
# The page goes to the page webhook, the ticket to the ticket webhook; both carry links built
# from the URLs above: runbook section, dashboard with the model version, Prometheus.
wait_notifications "a page and a ticket on their own Slack webhooks and by mail" \
  --needle "$MODEL" --needle "$LQO_DOCS_URL/docs/RUNBOOK.md#lqo" \
  --needle "$LQO_GRAFANA_URL/d/lqo-" --needle "$LQO_PROMETHEUS_URL/" \
  --alert 'LqoErrorBudgetBurnFast|LqoErrorBudgetBurnSlow=/slack/page' \
  --alert 'LqoLatencyP95High=/slack/ticket'

# ------------------------------------------------------------------ 2. watching the watchers
# The Watchdog was sent to the heartbeat receiver, which answers 404: Alertmanager counts a
# failed notification, Prometheus scrapes that, and the failure alert pages.
for ((i = 0; i < TIMEOUT * 4; i++)); do
  python3 "$ROOT/scripts/e2e_sinks.py" attempted --out "$TMP/sinks" --alert LqoWatchdog && break
  sleep 0.25
done
((i < TIMEOUT * 4)) || die "the Watchdog did not reach the heartbeat receiver within ${TIMEOUT}s"
wait_notifications "LqoAlertmanagerNotificationsFailing (the heartbeat receiver fails)" \
  --needle webhook --alert 'LqoAlertmanagerNotificationsFailing=/slack/page'
failed=$(curl -fsS "$PROM/api/v1/query" --data-urlencode \
  'query=sum(alertmanager_notifications_failed_total{integration="webhook"})' |
  python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else 0)')
log "alertmanager_notifications_failed_total{integration=\"webhook\"} = $failed"

# ------------------------------------------------------------------ 3. inhibition
python3 "$ROOT/scripts/e2e_inhibition.py" --am "http://127.0.0.1:$P_AM" ||
  die "an inhibit rule does not behave as alertmanager.yml says"

# ------------------------------------------------------------------ 4. dashboard queries
# The quality panels need judged and rated answers, and an agreement between the two; wait for
# those series to move (bounded), then run every query.
prom_value() { # PromQL -> first value or empty
  curl -fsS "$PROM/api/v1/query" --data-urlencode "query=$1" 2>/dev/null |
    python3 -c 'import json,sys
try:
    r = json.load(sys.stdin)["data"]["result"]
    print(r[0]["value"][1] if r else "")
except Exception:
    print("")' || true
}
for ((i = 0; i < 240; i++)); do
  ready=1
  for q in 'sum(lqo_judge_human_agreement_total)' 'sum(lqo_feedback_total)' \
    'sum(lqo_judge_score_count)' 'sum(lqo_rate_limited_total)' \
    'count(model_version:lqo_judge_human_agreement:ratio_24h)' \
    'count(model_version:lqo_feedback:negative_ratio_24h)'; do
    v=$(prom_value "$q")
    [[ -n "$v" && "$v" != 0 ]] || { ready=0; break; }
  done
  ((ready)) && break
  sleep 0.5
done
((ready)) || die "no judge-human agreement / feedback / judge scores / rate-limit series after 120s (last: $q = '${v:-}')"
python3 "$ROOT/scripts/e2e_dashboards.py" --prom "$PROM" --var "model_version=$MODEL" \
  --allow-empty "$ALLOW_EMPTY" || die "some dashboard queries returned no data"

# ------------------------------------------------------------------ 5. dashboard SQL queries
if [[ "$E2E_DB" = postgres ]]; then
  # The gateway's batching writer lands records within ~100 ms and the judge scores a sample;
  # wait (bounded) until the rows the filtered run below selects exist: errors of user u1 with
  # tag e2e, and judged and rated answers of u1.
  counts=""
  for ((i = 0; i < 240; i++)); do
    counts=$(psql "$DB_URL" -X -Atq -F ' ' -c "SELECT
      (SELECT count(*) FROM llm_logs),
      (SELECT count(*) FROM llm_logs WHERE status = 'error' AND user_id = 'u1' AND 'e2e' = ANY(tags)
         AND prompt ILIKE '%hi%'),
      (SELECT count(*) FROM judge_scores s JOIN llm_logs l USING (request_id) WHERE l.user_id = 'u1'),
      (SELECT count(*) FROM feedback f JOIN llm_logs l USING (request_id) WHERE l.user_id = 'u1')" 2>&1 || true)
    [[ "$counts" =~ ^[1-9][0-9]*\ [1-9][0-9]*\ [1-9][0-9]*\ [1-9][0-9]*$ ]] && break
    sleep 0.5
  done
  [[ "$counts" =~ ^[1-9][0-9]*\ [1-9][0-9]*\ [1-9][0-9]*\ [1-9][0-9]*$ ]] ||
    die "the database lacks rows after 120s (records, error records of u1/e2e, judge scores of u1, feedback of u1): '$counts'"
  log "rows: $counts (records, error records of u1 tagged e2e, judge scores of u1, feedback of u1)"
  python3 "$ROOT/scripts/e2e_sql_panels.py" --db-url "$DB_URL" --prom "$PROM" \
    --label "default selection" || die "some dashboard SQL queries failed or returned no rows"
  python3 "$ROOT/scripts/e2e_sql_panels.py" --db-url "$DB_URL" --prom "$PROM" \
    --label "filtered" --var "model_version=$MODEL" --var status=error \
    --var user=u1 --var tag=e2e --var search=hi ||
    die "some dashboard SQL queries failed or returned no rows with every filter set"
  python3 "$ROOT/scripts/check_runbook.py" --db-url "$DB_URL" --model "$MODEL" ||
    die "a runbook query does not run against the gateway's database"
else
  log "E2E_DB=sqlite: the dashboards' PostgreSQL panels are not checked"
fi

# ------------------------------------------------------------------ 6. metrics contract
curl -fsS "http://127.0.0.1:$P_GW/metrics" >"$TMP/metrics.txt"
python3 "$ROOT/scripts/check_contract.py" --metrics "$TMP/metrics.txt" \
  --pending-file "$ROOT/prometheus/pending-metrics.txt" || die "metrics contract violated"
# ... and it notices a family nobody watches: the live exposition plus one made-up family.
{ cat "$TMP/metrics.txt"; printf '# HELP lqo_e2e_unwatched_total Exposed, on no dashboard, in no rule.\n# TYPE lqo_e2e_unwatched_total counter\nlqo_e2e_unwatched_total 1\n'; } \
  >"$TMP/metrics-unwatched.txt"
if python3 "$ROOT/scripts/check_contract.py" --metrics "$TMP/metrics-unwatched.txt" \
  --pending-file "$ROOT/prometheus/pending-metrics.txt" >"$TMP/contract-unwatched.log" 2>&1; then
  die "check_contract.py passed although lqo_e2e_unwatched_total is on no dashboard and in no rule"
fi
grep -q "metric family lqo_e2e_unwatched_total is exposed but on no dashboard and in no rule" \
  "$TMP/contract-unwatched.log" || die "check_contract.py failed for another reason: $(cat "$TMP/contract-unwatched.log")"
log "check_contract.py fails for a family on no dashboard and in no rule, as it should"

if [[ "$E2E_DB" = postgres ]]; then
  log "OK: page and ticket on their own webhooks and by mail with .env links, failing heartbeat receiver paged, inhibition scoped, dashboards return data (PromQL and SQL), contract holds"
else
  log "OK: page and ticket on their own webhooks and by mail with .env links, failing heartbeat receiver paged, inhibition scoped, dashboards return data (PromQL only), contract holds"
fi
