#!/usr/bin/env bash
# End-to-end test of the operations files against the real binary:
#   mock upstream (50 % errors, 300 ms) -> gateway (PostgreSQL: a throwaway database on a local
#   server; or SQLite with E2E_DB=sqlite) -> Prometheus (the repo's rules, a
#   TEST copy with short `for:` and low thresholds) -> Alertmanager (the repo's config and
#   templates, rewritten to a local Slack webhook stand-in and a local SMTP sink).
# Drives /chat and streamed /v1/chat/completions traffic, then asserts that
#   1. an error-budget burn alert and the p95 latency alert reach BOTH the webhook and the mailbox,
#      naming the model version gpt-5-mini;
#   2. every Prometheus query of every dashboard returns data (the pending-metrics dashboard only
#      when its metrics are exposed);
#   3. every SQL query of every dashboard's PostgreSQL panels runs through psql against the
#      gateway's database and returns rows (scripts/e2e_sql_panels.py), once with the dashboards'
#      default selection (All, empty filters) and once with every filter set;
#   4. scripts/check_contract.py passes against the gateway's live /metrics.
# Every process it starts is stopped on exit, and the database it created is dropped (also on
# failure). Needs: prometheus, alertmanager (Debian: prometheus-alertmanager), promtool, python3,
# curl, a built gateway, and for PostgreSQL psql and a server reachable as E2E_PG_URL whose user
# may create databases (Debian: apt-get install postgresql; trust auth on 127.0.0.1).
#
#   cargo build && scripts/e2e-alerts.sh
#   LQO_BIN=target/release/lqo E2E_TIMEOUT=300 KEEP_TMP=1 scripts/e2e-alerts.sh
#
# Environment:
#   LQO_BIN           gateway binary (default target/debug/lqo)
#   E2E_MODEL         model version (default gpt-5-mini)
#   E2E_TIMEOUT       seconds to wait for the notifications (default 180)
#   E2E_ALLOW_EMPTY   regex of dashboard panel titles that may return no data
#                     (default: '^Upstream retries' — the series exists only after a retry)
#   E2E_MOCK_ARGS     extra flags for `lqo mock-upstream`
#   E2E_DB            postgres (default) or sqlite (the SQL panels are then not checked)
#   E2E_PG_URL        PostgreSQL server, without a database (default postgres://postgres@127.0.0.1:5432);
#                     the test creates database lqo_e2e_<time>_<pid>_<random> there and drops it
#   KEEP_TMP=1        keep the temporary directory (logs, configs, received notifications)
#   KEEP_DB=1         do not drop the test database (its name is printed)
#
# Test-only changes, all generated into the temporary directory (the repo files are not touched):
#   rules: scripts/make_test_rules.py — every `for:` 5s; error budget 0.001 (SLO 99.9 %),
#          p95 latency 0.1 s, TTFT p95 0.1 s, minimum request rate 0.01/s;
#   alertmanager.yml: secret paths -> temp files, smtp_smarthost -> the local sink,
#          smtp_require_tls -> false, group_wait 1s, group_interval 5s.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

LQO_BIN="${LQO_BIN:-target/debug/lqo}"
MODEL="${E2E_MODEL:-gpt-5-mini}"
TIMEOUT="${E2E_TIMEOUT:-180}"
ALLOW_EMPTY="${E2E_ALLOW_EMPTY-^Upstream retries}"
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
for t in python3 curl; do command -v "$t" >/dev/null || die "$t not found"; done
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
(
  cd "$TMP/gw" # no lqo.yaml from the repo; data/ and spool/ land here
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
echo "http://127.0.0.1:$P_HOOK/slack" >"$TMP/am/slack_webhook_url"
echo "unused-by-the-sink" >"$TMP/am/smtp_password"
sed -e "s#/run/secrets/slack_webhook_url#$TMP/am/slack_webhook_url#g" \
    -e "s#/run/secrets/smtp_password#$TMP/am/smtp_password#g" \
    -e "s#^\(\s*smtp_smarthost:\).*#\1 127.0.0.1:$P_SMTP#" \
    -e "s#^\(\s*smtp_require_tls:\).*#\1 false#" \
    -e "s#^\(\s*group_wait:\).*#\1 1s#" \
    -e "s#^\(\s*group_interval:\).*#\1 5s#" \
    "$ROOT/alertmanager/alertmanager.yml" >"$TMP/am/alertmanager.yml"
grep -q "127.0.0.1:$P_SMTP" "$TMP/am/alertmanager.yml" || die "could not rewrite smtp_smarthost"
grep -q "$TMP/am/slack_webhook_url" "$TMP/am/alertmanager.yml" || die "could not rewrite api_url_file"
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
EOF
if command -v promtool >/dev/null; then
  promtool check config "$TMP/prom/prometheus.yml" >"$TMP/promtool.log" 2>&1 ||
    die "generated prometheus.yml is invalid: $(cat "$TMP/promtool.log")"
fi
"$PROMETHEUS" --config.file="$TMP/prom/prometheus.yml" --storage.tsdb.path="$TMP/prom/data" \
  --web.listen-address="127.0.0.1:$P_PROM" >"$TMP/prometheus.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$P_PROM/-/ready" 60 "prometheus"
PROM="http://127.0.0.1:$P_PROM"

# ------------------------------------------------------------------ traffic (bounded)
traffic() {
  trap 'kill $(jobs -p) 2>/dev/null; exit 0' TERM
  local deadline=$((SECONDS + TIMEOUT + 60)) n=0
  local chat='{"prompt":"hi","user_id":"u1","tags":["e2e"]}'
  local stream
  stream=$(printf '{"model":"%s","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true},"user":"u2"}' "$MODEL")
  while ((SECONDS < deadline && n < 5000)); do
    for _ in 1 2 3; do
      curl -sS -o /dev/null --max-time 10 -H 'content-type: application/json' \
        -d "$chat" "http://127.0.0.1:$P_GW/chat" &
    done
    curl -sS -N -o /dev/null --max-time 10 -H 'content-type: application/json' \
      -d "$stream" "http://127.0.0.1:$P_GW/v1/chat/completions" &
    wait
    n=$((n + 4))
  done
}
traffic >"$TMP/traffic.log" 2>&1 &
PIDS+=($!)

# A first look at the gateway's answers, for the log.
code=$(curl -sS -o "$TMP/first-chat.json" -w '%{http_code}' --max-time 10 \
  -H 'content-type: application/json' -d '{"prompt":"hi","user_id":"u1"}' "http://127.0.0.1:$P_GW/chat" || true)
log "POST /chat -> $code $(head -c 300 "$TMP/first-chat.json" 2>/dev/null || true)"

# ------------------------------------------------------------------ 1. notifications
log "waiting up to ${TIMEOUT}s for the alerts to reach the webhook and the mailbox"
ALERTS_OK=0
for ((i = 0; i < TIMEOUT; i += 2)); do
  if python3 "$ROOT/scripts/e2e_sinks.py" check --out "$TMP/sinks" --needle "$MODEL" \
    --alert 'LqoErrorBudgetBurnFast|LqoErrorBudgetBurnSlow' --alert LqoLatencyP95High; then
    ALERTS_OK=1
    break
  fi
  if ((i % 20 == 0)); then
    firing=$(curl -fsS "$PROM/api/v1/alerts" 2>/dev/null | python3 -c 'import json,sys
try:
    a = json.load(sys.stdin)["data"]["alerts"]
    print(", ".join(sorted({x["labels"]["alertname"] + "=" + x["state"] for x in a})) or "none")
except Exception as e:
    print("?", e)' || true)
    log "t=${i}s alerts in Prometheus: $firing"
  fi
  sleep 2
done
if ((ALERTS_OK == 0)); then
  python3 "$ROOT/scripts/e2e_sinks.py" check --out "$TMP/sinks" --needle "$MODEL" -v \
    --alert 'LqoErrorBudgetBurnFast|LqoErrorBudgetBurnSlow' --alert LqoLatencyP95High || true
  die "the alerts did not reach both the webhook and the mailbox within ${TIMEOUT}s"
fi

# ------------------------------------------------------------------ 2. dashboard queries
curl -fsS "http://127.0.0.1:$P_GW/metrics" >"$TMP/metrics.txt"
skip=()
if ! grep -q '^lqo_judge_score_bucket' "$TMP/metrics.txt"; then
  log "evaluation metrics not exposed yet: skipping the pending-metrics dashboard lqo-quality"
  skip=(--skip-uid lqo-quality)
fi
python3 "$ROOT/scripts/e2e_dashboards.py" --prom "$PROM" --var "model_version=$MODEL" \
  --allow-empty "$ALLOW_EMPTY" "${skip[@]}" || die "some dashboard queries returned no data"

# ------------------------------------------------------------------ 3. dashboard SQL queries
if [[ "$E2E_DB" = postgres ]]; then
  # The gateway's batching writer lands records within ~100 ms; wait (bounded) until the rows the
  # filtered run below selects exist: errors of user u1 with tag e2e.
  counts=""
  for ((i = 0; i < 120; i++)); do
    counts=$(psql "$DB_URL" -X -Atq -F ' ' -c "SELECT count(*), count(*) FILTER (WHERE status = 'error'
      AND user_id = 'u1' AND 'e2e' = ANY(tags) AND prompt ILIKE '%hi%') FROM llm_logs" 2>&1 || true)
    [[ "$counts" =~ ^[1-9][0-9]*\ [1-9][0-9]*$ ]] && break
    sleep 0.25
  done
  [[ "$counts" =~ ^[1-9][0-9]*\ [1-9][0-9]*$ ]] ||
    die "llm_logs has no rows (or no error rows of u1/e2e) after 30s: '$counts'"
  log "llm_logs: $counts (rows, error rows of u1 tagged e2e)"
  python3 "$ROOT/scripts/e2e_sql_panels.py" --db-url "$DB_URL" --prom "$PROM" \
    --label "default selection" || die "some dashboard SQL queries failed or returned no rows"
  python3 "$ROOT/scripts/e2e_sql_panels.py" --db-url "$DB_URL" --prom "$PROM" \
    --label "filtered" --var "model_version=$MODEL" --var status=error \
    --var user=u1 --var tag=e2e --var search=hi ||
    die "some dashboard SQL queries failed or returned no rows with every filter set"
else
  log "E2E_DB=sqlite: the dashboards' PostgreSQL panels are not checked"
fi

# ------------------------------------------------------------------ 4. metrics contract
curl -fsS "http://127.0.0.1:$P_GW/metrics" >"$TMP/metrics.txt"
python3 "$ROOT/scripts/check_contract.py" --metrics "$TMP/metrics.txt" \
  --pending-file "$ROOT/prometheus/pending-metrics.txt" || die "metrics contract violated"

if [[ "$E2E_DB" = postgres ]]; then
  log "OK: alerts delivered to Slack (webhook) and email, dashboards return data (PromQL and SQL), contract holds"
else
  log "OK: alerts delivered to Slack (webhook) and email, dashboards return data (PromQL only), contract holds"
fi
