#!/usr/bin/env bash
# End-to-end test of the operations files against the real binary:
#   mock upstream (50 % errors, 300 ms) -> gateway (SQLite) -> Prometheus (the repo's rules, a
#   TEST copy with short `for:` and low thresholds) -> Alertmanager (the repo's config and
#   templates, rewritten to a local Slack webhook stand-in and a local SMTP sink).
# Drives /chat and streamed /v1/chat/completions traffic, then asserts that
#   1. an error-budget burn alert and the p95 latency alert reach BOTH the webhook and the mailbox,
#      naming the model version gpt-5-mini;
#   2. every Prometheus query of every dashboard returns data (the pending-metrics dashboard only
#      when its metrics are exposed);
#   3. scripts/check_contract.py passes against the gateway's live /metrics.
# Every process it starts is stopped on exit. Needs: prometheus, alertmanager (Debian:
# prometheus-alertmanager), promtool, python3, curl, and a built gateway.
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
#   KEEP_TMP=1        keep the temporary directory (logs, configs, received notifications)
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

TMP="$(mktemp -d "${TMPDIR:-/tmp}/lqo-e2e.XXXXXX")"
PIDS=()
cleanup() {
  local rc=$?
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
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
    DATABASE_URL="sqlite://$TMP/e2e.db" OPENAI_MODEL_MAIN="$MODEL" PORT="$P_GW" LOG_LEVEL=info \
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
  local chat='{"prompt":"hi","user_id":"u1"}'
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

# ------------------------------------------------------------------ 3. metrics contract
curl -fsS "http://127.0.0.1:$P_GW/metrics" >"$TMP/metrics.txt"
python3 "$ROOT/scripts/check_contract.py" --metrics "$TMP/metrics.txt" \
  --pending-file "$ROOT/prometheus/pending-metrics.txt" || die "metrics contract violated"

log "OK: alerts delivered to Slack (webhook) and email, dashboards return data, contract holds"
