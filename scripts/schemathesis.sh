#!/usr/bin/env bash
# Runs Schemathesis (from PyPI) against /openapi.json of a real gateway: auth on with a key holding
# every scope, the built-in mock model, a temporary SQLite database, a random loopback port.
# Fails on any server error (5xx) or any response that does not match the OpenAPI document.
#
# Usage: scripts/schemathesis.sh [extra `st run` options]
#   ST_MAX_EXAMPLES   test cases per operation and phase (default 50)
#   ST_SEED           fixed seed for a reproducible run (default: a new one each run)
#   ST_VENV           where the virtualenv lives (absolute; default target/schemathesis-venv)
#   LQO_BIN           a prebuilt lqo binary (default: cargo build, then target/debug/lqo)
set -euo pipefail
cd "$(dirname "$0")/.."

max_examples="${ST_MAX_EXAMPLES:-50}"
venv="${ST_VENV:-$PWD/target/schemathesis-venv}"

if [ ! -x "$venv/bin/st" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis>=4,<5"
fi

if [ -z "${LQO_BIN:-}" ]; then
  cargo build --quiet --bin lqo
  LQO_BIN="$PWD/target/debug/lqo"
fi

work="$(mktemp -d)"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"

# A clean environment: the built-in mock model, a throwaway database, $work/lqo.yaml. Run in the
# background, the function is its own subshell and `exec` turns it into the gateway, so `$!` is the
# gateway's pid and the cleanup trap stops the gateway itself, not a subshell around it.
run_lqo() {
  cd "$work" && exec env -u LLM_API_KEY -u LLM_API_BASE_URL -u OPENAI_MODEL_MAIN -u LQO_CONFIG \
    -u LQO_METRICS_TOKEN -u PORT \
    DATABASE_URL="sqlite://$work/lqo.db" LOG_LEVEL=warn "$LQO_BIN" "$@"
}

# The run's key is declared in the config by its hash, so that the admin routes under test cannot
# revoke it (config keys are not revocable over HTTP); keys the run creates live in the database.
key="lqo_$(python3 -c 'import secrets; print(secrets.token_hex(24))')"
key_sha256="$(printf %s "$key" | sha256sum | cut -d' ' -f1)"
cat >"$work/lqo.yaml" <<YAML
auth:
  required: true
  keys:
    - { name: schemathesis, sha256: "$key_sha256", scopes: [chat, feedback, "logs:read", admin] }
YAML

run_lqo serve --port "$port" >"$work/server.log" 2>&1 &
server_pid=$!

for _ in $(seq 1 200); do
  if curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "the gateway exited:" >&2
    cat "$work/server.log" >&2
    exit 1
  fi
  sleep 0.1
done

seed_args=()
if [ -n "${ST_SEED:-}" ]; then seed_args=(--seed "$ST_SEED"); fi

status=0
# From the work directory, so Schemathesis' replay cache (.schemathesis/) goes away with it.
cd "$work"
"$venv/bin/st" run "http://127.0.0.1:$port/openapi.json" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --header "Authorization: Bearer $key" \
  --max-examples "$max_examples" \
  --workers 2 \
  --request-timeout 30 \
  --report junit --report-dir "$work/report" \
  "${seed_args[@]}" "$@" || status=$?

if [ "$status" -ne 0 ]; then
  echo "--- gateway log (warnings and errors) ---" >&2
  tail -n 50 "$work/server.log" >&2
fi
exit "$status"
