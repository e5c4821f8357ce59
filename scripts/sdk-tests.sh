#!/usr/bin/env bash
# Client-compatibility tests: real OpenAI SDKs against a real gateway (`lqo serve`, SQLite) in front
# of `lqo mock-upstream`, both on random loopback ports. The official openai Python SDK always
# (scripts/sdk/test_openai_python.py, in a venv); with SDK_EXTRA=1 also LangChain's ChatOpenAI
# (scripts/sdk/check_langchain.py, same venv) and the openai Node SDK (scripts/sdk/check_node.mjs,
# `npm install` in a temporary directory) — those two print a feature table and are not run by CI.
#
#   SDK_VENV   where the virtualenv lives (absolute; default target/sdk-venv)
#   LQO_BIN    a prebuilt lqo binary (default: cargo build, then target/debug/lqo)
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
venv="${SDK_VENV:-$PWD/target/sdk-venv}"

if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import openai' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "openai>=3.50,<4"
fi
if [ -n "${SDK_EXTRA:-}" ] && ! "$venv/bin/python" -c 'import langchain_openai' 2>/dev/null; then
  "$venv/bin/pip" install --quiet --disable-pip-version-check "langchain-openai>=1.7,<2"
fi

if [ -z "${LQO_BIN:-}" ]; then
  cargo build --quiet --bin lqo
  LQO_BIN="$PWD/target/debug/lqo"
fi

work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    fi
  done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}
wait_for() {
  local url="$1" pid="$2" log="$3"
  for _ in $(seq 1 200); do
    if curl -fsS "$url" >/dev/null 2>&1; then return 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "process for $url exited:" >&2
      cat "$log" >&2
      exit 1
    fi
    sleep 0.1
  done
  echo "$url did not come up" >&2
  exit 1
}

up_port="$(free_port)"
gw_port="$(free_port)"
"$LQO_BIN" mock-upstream --port "$up_port" >"$work/upstream.log" 2>&1 &
pids+=($!)
wait_for "http://127.0.0.1:$up_port/health" "${pids[-1]}" "$work/upstream.log"

cat >"$work/lqo.yaml" <<YAML
providers:
  chat: { kind: openai_chat, base_url: "http://127.0.0.1:$up_port/v1", api_key_env: LQO_SDK_UPSTREAM_KEY, max_retries: 2, retry_backoff_ms: 10 }
  responses: { kind: openai_responses, base_url: "http://127.0.0.1:$up_port/v1", api_key_env: LQO_SDK_UPSTREAM_KEY, max_retries: 2, retry_backoff_ms: 10 }
  local: { kind: mock }
models:
  gpt-test: { provider: chat, upstream_model: gpt-5-mini, aliases: [gpt-4o], pricing: { input_per_1m: 0.25, output_per_1m: 2.0 } }
  gpt-resp: { provider: responses, upstream_model: gpt-5-mini, pricing: { input_per_1m: 0.25, output_per_1m: 2.0 } }
  mock-local: { provider: local }
default_model: gpt-test
writer: { flush_interval_ms: 10, spool_dir: "$work/spool" }
judge: { enabled: false }
YAML

# A clean environment, as in scripts/schemathesis.sh; `exec` makes $! the gateway itself.
run_lqo() {
  cd "$work" && exec env -u LLM_API_KEY -u LLM_API_BASE_URL -u OPENAI_MODEL_MAIN -u LQO_METRICS_TOKEN \
    -u PORT -u LQO_AUTH LQO_CONFIG="$work/lqo.yaml" LQO_SDK_UPSTREAM_KEY=sk-upstream-test-key \
    DATABASE_URL="sqlite://$work/lqo.db" LOG_LEVEL=warn "$LQO_BIN" "$@"
}
run_lqo serve --port "$gw_port" >"$work/gateway.log" 2>&1 &
pids+=($!)
wait_for "http://127.0.0.1:$gw_port/health" "${pids[-1]}" "$work/gateway.log"

export LQO_URL="http://127.0.0.1:$gw_port" LQO_UPSTREAM_URL="http://127.0.0.1:$up_port" LQO_DB="$work/lqo.db"
status=0
"$venv/bin/python" "$root/scripts/sdk/test_openai_python.py" || status=$?

if [ -n "${SDK_EXTRA:-}" ]; then
  "$venv/bin/python" "$root/scripts/sdk/check_langchain.py" || status=$?
  node_dir="$work/node"
  mkdir -p "$node_dir"
  (cd "$node_dir" && npm init -y >/dev/null && npm install --silent --no-audit --no-fund openai@latest zod >/dev/null)
  cp "$root/scripts/sdk/check_node.mjs" "$node_dir/"
  (cd "$node_dir" && node check_node.mjs) || status=$?
fi

if [ "$status" -ne 0 ]; then
  echo "--- gateway log ---" >&2
  tail -n 40 "$work/gateway.log" >&2
fi
exit "$status"
