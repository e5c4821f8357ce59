#!/usr/bin/env python3
"""Multi-replica end-to-end test: three real `lqo serve` processes on one PostgreSQL database
(created for the run, dropped after), one Redis (a key prefix of its own), `lqo mock-upstream`,
and a real Prometheus scraping all three with the repository's rules. It shows that the replicas
behave as one gateway:

  1. shared limits: a key limited to 30 requests/min sends 90 calls spread over the replicas;
     the accepted count must be 30 plus what refills during the run (one per 2 s), not 90;
  2. revocation: keys revoked through one replica's admin API and through `lqo keys revoke` are
     refused by every replica within 1 s (measured per replica, cache TTL 30 s);
  3. records: every answered model call is stored exactly once, and judged exactly once (the
     judge_requests counters of all replicas, summed by Prometheus, equal the stored records);
     30 of them get human feedback through the three replicas;
  4. dashboards aggregate: every Prometheus query of every dashboard returns data and — unless it
     groups by instance on purpose — no two of its series differ only by `instance`; Prometheus'
     sum of lqo_requests_total equals the calls answered; the Build panel counts 3 replicas;
  5. kill -9: while PostgreSQL holds llm_logs locked (writes time out and go to the spool), one
     replica is killed with SIGKILL and restarted on its spool volume; every record it answered is
     stored except those still in memory, and each of those was answered within the documented
     window before the kill (writer.db_timeout_ms + writer.flush_interval_ms, plus 1 s of
     scheduling slack on this shared machine). `lqo judge --since` then judges what the killed
     process had not queued, and every stored record ends up judged exactly once.

It also measures PostgreSQL connections per replica (ss: established connections to the server
by process) at rest and under load. Prints the figures and writes them as JSON (--out).

  cargo build && python3 scripts/e2e_replicas.py [--lqo target/debug/lqo] [--out summary.json]

Environment: E2E_PG_URL (default postgres://postgres@127.0.0.1:5432), E2E_REDIS_URL (default
redis://127.0.0.1:6379/0), KEEP_TMP=1 keeps the temporary directory. Needs psql, redis-cli,
prometheus, ss. Every process it starts is stopped and the database dropped, also on failure.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import glob
import hashlib
from http.client import HTTPException
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_dashboards  # noqa: E402  (same folder; stdlib only)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = "gpt-5-mini"
LIMIT_RPM = 30
LIMITED_CALLS = 90
RECORD_CALLS = 240
CRITERIA = 3  # overall, instruction_following, truthfulness (the default judge criteria)
FLUSH_MS = 100
DB_TIMEOUT_MS = 1000
ADMIN_KEY = "lqo_e2e_admin_" + secrets.token_hex(16)
# Dashboard panels that have no data in this run: no upstream call is retried, no alert fires.
ALLOW_EMPTY = re.compile(r"^Upstream retries|[Rr]etries|^Firing LQO alerts")


class Failed(Exception):
    pass


def log(msg: str) -> None:
    print(f"e2e-replicas: {msg}", flush=True)


def check(cond: bool, msg: str) -> None:
    if not cond:
        raise Failed(msg)


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def http(method: str, url: str, body: dict | None = None, key: str | None = None,
         request_id: str | None = None, timeout: float = 15) -> tuple[int, bytes, dict]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("content-type", "application/json")
    if key:
        req.add_header("authorization", f"Bearer {key}")
    if request_id:
        req.add_header("x-request-id", request_id)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 (loopback)
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)
    except (urllib.error.URLError, HTTPException, OSError):
        # Refused, reset, timed out, or a stream cut off (the replica was killed): not answered.
        return 0, b"", {}


class Run:
    def __init__(self, lqo: str, out: str | None) -> None:
        self.lqo = lqo
        self.out = out
        self.tmp = tempfile.mkdtemp(prefix="lqo-e2e-replicas.")
        self.procs: dict[str, subprocess.Popen] = {}
        self.pg = os.environ.get("E2E_PG_URL", "postgres://postgres@127.0.0.1:5432").rstrip("/")
        self.redis = os.environ.get("E2E_REDIS_URL", "redis://127.0.0.1:6379/0")
        self.prefix = "lqo-e2e-" + secrets.token_hex(6)
        self.db = ""
        self.summary: dict = {}
        (self.p_mock, self.p_prom, *self.p_gw) = free_ports(5)
        self.answered: dict[str, dict] = {}  # request id -> {replica, t, phase}
        self.lock = threading.Lock()

    # ------------------------------------------------------------------ plumbing
    def psql(self, sql: str, db: str | None = None) -> str:
        url = f"{self.pg}/{db or self.db}"
        r = subprocess.run(["psql", url, "-X", "-Atq", "-v", "ON_ERROR_STOP=1", "-c", sql],
                           capture_output=True, text=True, timeout=60,
                           env={**os.environ, "PGCONNECT_TIMEOUT": "5"})
        if r.returncode != 0:
            raise Failed(f"psql failed: {r.stderr.strip()}\n  {sql}")
        return r.stdout.strip()

    def gw_url(self, i: int, path: str) -> str:
        return f"http://127.0.0.1:{self.p_gw[i]}{path}"

    def wait_http(self, url: str, secs: float, name: str) -> None:
        deadline = time.monotonic() + secs
        while time.monotonic() < deadline:
            if http("GET", url, timeout=2)[0] == 200:
                return
            time.sleep(0.1)
        raise Failed(f"{name} did not answer {url} within {secs}s")

    def gw_env(self) -> dict:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("LQO_", "LLM_", "OPENAI_")) and k not in ("PORT", "REDIS_URL")}
        env.update({
            "DATABASE_URL": f"{self.pg}/{self.db}",
            "LLM_API_KEY": "dummy",
            "LLM_API_KIND": "chat",
            "LLM_API_BASE_URL": f"http://127.0.0.1:{self.p_mock}/v1",
            "OPENAI_MODEL_MAIN": MODEL,
            "LOG_LEVEL": "info",
        })
        return env

    def write_config(self, i: int) -> str:
        d = os.path.join(self.tmp, f"gw{i}")
        os.makedirs(d, exist_ok=True)
        admin_hash = hashlib.sha256(ADMIN_KEY.encode()).hexdigest()
        path = os.path.join(d, "lqo.yaml")
        with open(path, "w", encoding="utf-8") as f:
            f.write(f"""# generated by scripts/e2e_replicas.py
auth:
  required: true
  cache_ttl_secs: 30
  keys:
    - {{ name: e2e-admin, sha256: {admin_hash}, scopes: [admin, chat, feedback, logs:read] }}
  rate_limits:
    per_key:
      limited: {{ requests_per_minute: {LIMIT_RPM}, tokens_per_minute: 0 }}
redis:
  url: {self.redis}
  key_prefix: {self.prefix}
  timeout_ms: 500
writer:
  spool_dir: {d}/spool
  flush_interval_ms: {FLUSH_MS}
  db_timeout_ms: {DB_TIMEOUT_MS}
judge:
  sample_rate: 1.0
  poll_interval_ms: 200
  # Short, so that what the killed replica held comes back within the run: its claimed jobs
  # after the lease; jobs of records lost with it end as record_missing, while records replayed
  # from a spool (the 5 s stall, the restart) arrive well within the wait.
  timeout_secs: 2
  lease_secs: 10
  record_wait_secs: 30
""")
        return path

    def start_gateway(self, i: int) -> None:
        cfg = os.path.join(self.tmp, f"gw{i}", "lqo.yaml")
        logf = open(os.path.join(self.tmp, f"gateway{i}.log"), "ab")
        self.procs[f"gw{i}"] = subprocess.Popen(
            [self.lqo, "serve", "--config", cfg, "--port", str(self.p_gw[i])],
            cwd=os.path.join(self.tmp, f"gw{i}"), env=self.gw_env(), stdout=logf,
            stderr=subprocess.STDOUT)
        self.wait_http(self.gw_url(i, "/health"), 60, f"gateway {i}")

    def lqo_cli(self, *args: str) -> subprocess.CompletedProcess:
        cfg = os.path.join(self.tmp, "gw0", "lqo.yaml")
        try:
            return subprocess.run([self.lqo, *args, "--config", cfg], capture_output=True,
                                  text=True, env=self.gw_env(), cwd=os.path.join(self.tmp, "gw0"),
                                  timeout=120)
        except subprocess.TimeoutExpired as e:
            raise Failed(f"lqo {' '.join(args)} did not finish within 120 s: {e.stderr!r}") from e

    def stop(self, name: str, sig: int = signal.SIGTERM) -> None:
        p = self.procs.pop(name, None)
        if p and p.poll() is None:
            p.send_signal(sig)
            try:
                p.wait(timeout=40)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def cleanup(self, ok: bool) -> None:
        for name in list(self.procs):
            self.stop(name)
        if self.db:
            try:
                self.psql(f"DROP DATABASE IF EXISTS {self.db} WITH (FORCE)", db="postgres")
            except Failed as e:
                log(f"could not drop {self.db}: {e}")
                ok = False
        # The limit keys expire within a minute anyway; remove them now.
        keys = subprocess.run(["redis-cli", "-u", self.redis, "--scan", "--pattern",
                               "{" + self.prefix + ":*"], capture_output=True, text=True)
        for k in keys.stdout.split():
            subprocess.run(["redis-cli", "-u", self.redis, "DEL", k], capture_output=True)
        if not ok:
            for f in sorted(glob.glob(os.path.join(self.tmp, "*.log"))):
                with open(f, errors="replace") as fh:
                    tail = fh.readlines()[-12:]
                print(f"----- {os.path.basename(f)}\n{''.join(tail)}", file=sys.stderr)
        if os.environ.get("KEEP_TMP") or not ok:
            log(f"files kept in {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # ------------------------------------------------------------------ traffic
    def call(self, i: int, key: str, phase: str, stream: bool = False) -> int:
        rid = str(uuid.uuid4())
        if stream:
            body = {"model": MODEL, "stream": True, "stream_options": {"include_usage": True},
                    "messages": [{"role": "user", "content": f"hello from {phase}"}], "user": phase}
            code, _, _ = http("POST", self.gw_url(i, "/v1/chat/completions"), body, key, rid)
        else:
            body = {"prompt": f"hello from {phase}", "user_id": phase, "tags": ["e2e", phase]}
            code, _, _ = http("POST", self.gw_url(i, "/chat"), body, key, rid)
        if code == 200:
            with self.lock:
                self.answered[rid] = {"replica": i, "t": time.monotonic(), "phase": phase}
        return code

    def create_key(self, name: str, via: int | None) -> str:
        if via is None:
            r = self.lqo_cli("keys", "create", "--name", name, "--scopes", "chat")
            check(r.returncode == 0, f"lqo keys create failed: {r.stderr}")
            return r.stdout.strip()
        code, body, _ = http("POST", self.gw_url(via, "/v1/admin/keys"),
                             {"name": name, "scopes": ["chat"]}, ADMIN_KEY)
        check(code == 201, f"admin key creation answered {code}: {body[:300]!r}")
        return json.loads(body)["key"]

    # ------------------------------------------------------------------ phases
    def setup(self) -> None:
        for tool in ("psql", "redis-cli", "prometheus", "ss"):
            check(shutil.which(tool) is not None, f"{tool} not found")
        check(subprocess.run(["redis-cli", "-u", self.redis, "PING"], capture_output=True,
                             text=True).stdout.strip() == "PONG", f"no Redis at {self.redis}")
        self.db = f"lqo_e2e_replicas_{int(time.time())}_{os.getpid()}_{secrets.token_hex(3)}"
        self.psql(f"CREATE DATABASE {self.db}", db="postgres")
        log(f"tmp {self.tmp}; database {self.db}; redis prefix {self.prefix}; "
            f"ports mock={self.p_mock} gateways={self.p_gw} prometheus={self.p_prom}")
        logf = open(os.path.join(self.tmp, "mock.log"), "ab")
        self.procs["mock"] = subprocess.Popen(
            [self.lqo, "mock-upstream", "--port", str(self.p_mock), "--latency-ms", "20"],
            stdout=logf, stderr=subprocess.STDOUT, cwd=self.tmp)
        self.wait_http(f"http://127.0.0.1:{self.p_mock}/health", 30, "mock upstream")
        for i in range(3):
            self.write_config(i)
        # The first gateway applies the migrations; the others start on a migrated database
        # (concurrent starts are safe too: sqlx takes an advisory lock).
        for i in range(3):
            self.start_gateway(i)
        prom_dir = os.path.join(self.tmp, "prom")
        os.makedirs(prom_dir)
        targets = ", ".join(f'"127.0.0.1:{p}"' for p in self.p_gw)
        with open(os.path.join(prom_dir, "prometheus.yml"), "w") as f:
            f.write(f"""global: {{ scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s }}
rule_files: ["{ROOT}/prometheus/rules/*.yml"]
scrape_configs:
  - job_name: lqo
    static_configs:
      - targets: [{targets}]
""")
        logf = open(os.path.join(self.tmp, "prometheus.log"), "ab")
        self.procs["prometheus"] = subprocess.Popen(
            ["prometheus", f"--config.file={prom_dir}/prometheus.yml",
             f"--storage.tsdb.path={prom_dir}/data", f"--web.listen-address=127.0.0.1:{self.p_prom}"],
            stdout=logf, stderr=subprocess.STDOUT)
        self.wait_http(f"http://127.0.0.1:{self.p_prom}/-/ready", 60, "prometheus")
        # Prometheus hands new targets to its scrapers after up to 5 s. Traffic must come after
        # the first scrape of every replica, or every counter's first sample already holds it
        # and rates over the run are 0.
        deadline = time.monotonic() + 30
        while self.prom('count(up{job="lqo"} == 1)') != 3:
            check(time.monotonic() < deadline, "Prometheus did not scrape the 3 gateways in 30 s")
            time.sleep(0.2)
        # Every replica follows key changes and reaches Redis before the run starts.
        for i in range(3):
            deadline = time.monotonic() + 20
            while True:
                code, body, _ = http("GET", self.gw_url(i, "/ready"))
                if code == 200 and json.loads(body).get("status") == "ready":
                    break
                check(time.monotonic() < deadline, f"gateway {i} not ready: {body[:400]!r}")
                time.sleep(0.1)

    def phase_limits(self) -> None:
        key = self.create_key("limited", via=None)  # through the CLI
        t0 = time.monotonic()
        with cf.ThreadPoolExecutor(9) as pool:
            codes = list(pool.map(lambda n: self.call(n % 3, key, "limits"), range(LIMITED_CALLS)))
        elapsed = time.monotonic() - t0
        accepted = codes.count(200)
        refused = codes.count(429)
        # GCRA, burst = one minute's worth: 30 at once, then one more every 2 s.
        allowed_max = LIMIT_RPM + int(elapsed * LIMIT_RPM / 60) + 1
        log(f"shared limit: {accepted} of {LIMITED_CALLS} accepted, {refused} refused (429) "
            f"across 3 replicas in {elapsed:.1f} s; limit {LIMIT_RPM}/min allows at most "
            f"{allowed_max}")
        check(accepted + refused == LIMITED_CALLS, f"unexpected statuses: {sorted(set(codes))}")
        check(LIMIT_RPM <= accepted <= allowed_max,
              f"shared limit broken: {accepted} accepted (want {LIMIT_RPM}..{allowed_max})")
        self.summary["shared_limit"] = {"limit_per_minute": LIMIT_RPM, "sent": LIMITED_CALLS,
                                        "accepted": accepted, "refused": refused,
                                        "elapsed_s": round(elapsed, 2),
                                        "allowed_max": allowed_max}

    def revocation_delay(self, key: str, revoke, replicas: list[int]) -> dict[int, float]:
        """Polls GET /v1/models on each replica with `key` until it answers 401; returns the
        delay from the end of `revoke()` to each replica's first 401."""
        for i in range(3):
            code = http("GET", self.gw_url(i, "/v1/models"), key=key)[0]
            check(code == 200, f"replica {i} does not accept the key before revocation: {code}")
        done = threading.Event()
        revoked_at: list[float] = []
        first_401: dict[int, float] = {}

        def poll(i: int) -> None:
            while not done.is_set():
                code = http("GET", self.gw_url(i, "/v1/models"), key=key, timeout=5)[0]
                now = time.monotonic()
                if code == 401 and revoked_at:
                    first_401[i] = now
                    return
                check(code in (200, 401), f"replica {i} answered {code}")
                time.sleep(0.005)

        threads = [threading.Thread(target=poll, args=(i,), daemon=True) for i in replicas]
        for t in threads:
            t.start()
        time.sleep(0.3)  # pollers running, caches warm
        revoke()
        revoked_at.append(time.monotonic())
        for t in threads:
            t.join(timeout=10)
        done.set()
        delays = {i: first_401[i] - revoked_at[0] for i in replicas if i in first_401}
        check(len(delays) == len(replicas), f"not refused everywhere within 10 s: {delays}")
        return delays

    def phase_revocation(self) -> None:
        key = self.create_key("roaming-api", via=0)

        def revoke_api() -> None:
            code, body, _ = http("DELETE", self.gw_url(0, "/v1/admin/keys/roaming-api"),
                                 key=ADMIN_KEY)
            check(code == 200, f"admin revoke answered {code}: {body[:200]!r}")

        api = self.revocation_delay(key, revoke_api, [1, 2])
        key = self.create_key("roaming-cli", via=None)

        def revoke_cli() -> None:
            r = self.lqo_cli("keys", "revoke", "roaming-cli")
            check(r.returncode == 0, f"lqo keys revoke failed: {r.stderr}")

        cli = self.revocation_delay(key, revoke_cli, [0, 1, 2])
        worst = max([*api.values(), *cli.values()])
        log("revocation: admin API on replica 0 -> refused by "
            + ", ".join(f"replica {i} after {d * 1000:.0f} ms" for i, d in sorted(api.items()))
            + "; CLI -> " + ", ".join(f"replica {i} after {d * 1000:.0f} ms"
                                      for i, d in sorted(cli.items())))
        check(worst < 1.0, f"a revoked key was accepted {worst:.3f} s after revocation")
        self.summary["revocation_ms"] = {
            "admin_api": {str(i): round(d * 1000, 1) for i, d in api.items()},
            "cli": {str(i): round(d * 1000, 1) for i, d in cli.items()},
            "worst": round(worst * 1000, 1)}

    def connections(self) -> dict[int, int]:
        """Established TCP connections to PostgreSQL per gateway replica (by process id)."""
        port = urllib.parse.urlparse(self.pg).port or 5432
        out = subprocess.run(["ss", "-tnpH", "state", "established", f"( dport = :{port} )"],
                             capture_output=True, text=True).stdout
        pids = {p.pid: i for i in range(3) if (p := self.procs.get(f"gw{i}"))}
        counts = {i: 0 for i in range(3)}
        for line in out.splitlines():
            for pid in re.findall(r"pid=(\d+)", line):
                if int(pid) in pids:
                    counts[pids[int(pid)]] += 1
        return counts

    def wait_stored(self, ids: list[str], secs: float) -> int:
        deadline = time.monotonic() + secs
        with open(os.path.join(self.tmp, "ids.txt"), "w") as f:
            f.write("\n".join(ids))
        while True:
            n = int(self.stored_count(ids))
            if n >= len(ids) or time.monotonic() > deadline:
                return n
            time.sleep(0.25)

    def id_list(self, ids: list[str]) -> str:
        """The clients' own x-request-ids, as the text[] that client_request_id is matched with."""
        return "ARRAY[" + ",".join(f"'{i}'" for i in ids) + "]::text[]"

    def gateway_ids(self, ids: list[str]) -> str:
        """The gateway's ids of the records the clients' ids name (judge tables use those)."""
        return f"(SELECT request_id FROM llm_logs WHERE client_request_id = ANY({self.id_list(ids)}))"

    def stored_count(self, ids: list[str]) -> int:
        if not ids:
            return 0
        return int(self.psql(
            f"SELECT count(*) FROM llm_logs WHERE client_request_id = ANY({self.id_list(ids)})"))

    def prom(self, expr: str) -> float | None:
        body = e2e_dashboards.get(f"http://127.0.0.1:{self.p_prom}/api/v1/query?"
                                  + urllib.parse.urlencode({"query": expr}))
        res = body["data"]["result"]
        return float(res[0]["value"][1]) if res else None

    def phase_records(self) -> None:
        key = self.create_key("busy", via=1)
        at_rest = self.connections()
        peak = dict(at_rest)
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                for i, n in self.connections().items():
                    peak[i] = max(peak[i], n)
                time.sleep(0.1)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        with cf.ThreadPoolExecutor(12) as pool:
            codes = list(pool.map(lambda n: self.call(n % 3, key, "records", stream=n % 4 == 3),
                                  range(RECORD_CALLS)))
        stop.set()
        sampler.join()
        check(codes.count(200) == RECORD_CALLS, f"some calls failed: {sorted(set(codes))}")
        ids = list(self.answered)  # phases 1-3: every answered model call so far
        stored = self.wait_stored(ids, 30)
        dupes = int(self.psql(
            f"SELECT count(*) - count(DISTINCT client_request_id) FROM llm_logs "
            f"WHERE client_request_id = ANY({self.id_list(ids)})"))
        total_rows = int(self.psql("SELECT count(*) FROM llm_logs"))
        log(f"records: {len(ids)} answered, {stored} stored, {dupes} duplicates, "
            f"{total_rows} rows in llm_logs")
        check(stored == len(ids) and dupes == 0 and total_rows == len(ids),
              f"stored {stored}/{len(ids)}, duplicates {dupes}, rows {total_rows}")
        # Judged exactly once: every record's job done with one score per criterion, and the
        # judge calls of all replicas (summed by Prometheus) equal the records.
        deadline = time.monotonic() + 60
        while True:
            done, scores = self.psql(
                f"SELECT (SELECT count(*) FROM judge_jobs WHERE status = 'done' AND request_id IN "
                f"{self.gateway_ids(ids)}), (SELECT count(*) FROM judge_scores WHERE request_id IN "
                f"{self.gateway_ids(ids)})").split("|")
            if int(done) == len(ids) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        judge_calls = None
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            judge_calls = self.prom('sum(lqo_judge_requests_total{status="ok"})')
            model_calls = self.prom('sum(lqo_requests_total{status="ok"})')
            if judge_calls == len(ids) and model_calls == len(ids):
                break
            time.sleep(0.5)
        per_replica = [self.prom(f'sum(lqo_judge_requests_total{{status="ok",instance="127.0.0.1:{p}"}})')
                       for p in self.p_gw]
        log(f"judge: {done} jobs done, {scores} scores ({CRITERIA} per record), judge calls "
            f"summed over replicas {judge_calls} (per replica {per_replica}); Prometheus "
            f"sum(lqo_requests_total{{status=ok}}) = {model_calls}")
        check(int(done) == len(ids) and int(scores) == CRITERIA * len(ids),
              f"judged {done}/{len(ids)}, scores {scores}")
        check(judge_calls == len(ids), f"judge calls {judge_calls} != records {len(ids)}")
        check(model_calls == len(ids),
              f"Prometheus sums {model_calls} answered calls over the replicas, want {len(ids)}")
        # Human feedback on some of them, through every replica: the dashboards' feedback and
        # judge-human agreement panels aggregate it.
        for n, rid in enumerate(ids[:30]):
            code, body, _ = http("POST", self.gw_url(n % 3, "/v1/feedback"),
                                 {"request_id": rid, "score": 1 if n % 3 else -1}, ADMIN_KEY)
            check(code == 201, f"feedback answered {code}: {body[:200]!r}")
        log(f"PostgreSQL connections per replica: at rest {at_rest}, peak under load {peak}")
        self.summary["records"] = {"answered": len(ids), "stored": stored, "duplicates": dupes,
                                   "judged": int(done), "scores": int(scores),
                                   "judge_calls_all_replicas": judge_calls,
                                   "judge_calls_per_replica": per_replica}
        self.summary["pg_connections_per_replica"] = {"at_rest": at_rest, "peak": peak}

    def phase_dashboards(self) -> None:
        prom = f"http://127.0.0.1:{self.p_prom}"
        variables = {"model_version": MODEL}
        failures, checked = [], 0
        time.sleep(2)  # two evaluations of the recording rules over the last traffic
        for path in sorted(glob.glob(os.path.join(ROOT, "grafana/dashboards/*.json"))):
            with open(path) as f:
                d = json.load(f)

            def walk(panels):
                nonlocal checked
                for p in panels or []:
                    if p.get("type") == "row":
                        walk(p.get("panels"))
                        continue
                    for t in p.get("targets") or []:
                        ds = t.get("datasource") or p.get("datasource") or {}
                        expr = t.get("expr")
                        if not expr or (isinstance(ds, dict) and ds.get("type") not in (None, "prometheus")):
                            continue
                        where = f"{d['uid']}: {p.get('title')!r} {t.get('refId')}"
                        e = e2e_dashboards.substitute(expr, variables, "30s", "5m")
                        body = e2e_dashboards.get(f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": e}))
                        res = body["data"]["result"]
                        if isinstance(res, list) and not res:
                            # Nothing retries and no alert fires in this run.
                            if not ALLOW_EMPTY.search(p.get("title") or ""):
                                failures.append(f"{where}: no data")
                            continue
                        checked += 1
                        if "instance" in expr or not isinstance(res, list):
                            continue  # per instance on purpose
                        seen = {}
                        for s in res:
                            labels = {k: v for k, v in s["metric"].items() if k != "instance"}
                            k = json.dumps(labels, sort_keys=True)
                            if k in seen and seen[k] != s["metric"].get("instance"):
                                failures.append(f"{where}: series split by instance: {labels}")
                                break
                            seen[k] = s["metric"].get("instance")

            walk(d.get("panels"))
        build = self.prom("count by (version) (lqo_build_info)")
        log(f"dashboards: {checked} Prometheus queries return data aggregated over the replicas; "
            f"the Build panel counts {build} replicas")
        check(build == 3, f"Build panel counts {build} replicas, want 3")
        check(not failures, "dashboard queries:\n  " + "\n  ".join(failures))
        self.summary["dashboards"] = {"queries_checked": checked, "replicas_counted": build}

    def phase_kill(self) -> None:
        key = self.create_key("survivor", via=2)
        stop = threading.Event()
        before = set(self.answered)

        def traffic(i: int) -> None:
            n = 0
            while not stop.is_set():
                self.call(i, key, "kill", stream=n % 5 == 4)
                n += 1

        # Lock llm_logs against writes: every replica's batches time out (writer.db_timeout_ms)
        # and go to their spools.
        locker = subprocess.Popen(
            ["psql", f"{self.pg}/{self.db}", "-X", "-q", "-c",
             "BEGIN; LOCK TABLE llm_logs IN SHARE MODE; SELECT pg_sleep(5); COMMIT;"],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.tmp, "locker.log"), "ab"))
        deadline = time.monotonic() + 10
        while self.psql("SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                        "WHERE c.relname = 'llm_logs' AND l.mode = 'ShareLock' AND l.granted") == "0":
            check(time.monotonic() < deadline, "could not lock llm_logs")
            time.sleep(0.05)
        threads = [threading.Thread(target=traffic, args=(i,), daemon=True)
                   for i in (0, 1, 2, 2, 2)]
        for t in threads:
            t.start()
        time.sleep(2.5)
        victim = self.procs["gw2"]
        spool_dir = os.path.join(self.tmp, "gw2", "spool")
        victim.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        victim.wait()
        del self.procs["gw2"]
        time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join(timeout=20)
        spool_bytes = sum(os.path.getsize(f) for f in glob.glob(os.path.join(spool_dir, "*"))
                          if os.path.isfile(f))
        locker.wait(timeout=30)
        kill_ids = [r for r in self.answered if r not in before]
        victim_ids = [r for r in kill_ids if self.answered[r]["replica"] == 2]
        log(f"kill -9: replica 2 killed after answering {len(victim_ids)} calls during the "
            f"database stall; its spool held {spool_bytes} bytes; restarting it on that spool")
        self.start_gateway(2)
        stored = self.wait_stored(kill_ids, 60)
        # Settle: the spools replay, and a batch that hung on the lock may land late.
        last, still = -1, 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            n = self.stored_count(kill_ids)
            still = still + 1 if n == last else 0
            if n == len(kill_ids) or still >= 8:
                break
            last = n
            time.sleep(0.25)
        stored_rows = set(self.psql(
            f"SELECT client_request_id FROM llm_logs "
            f"WHERE client_request_id = ANY({self.id_list(kill_ids)})"
        ).split())
        lost = [r for r in kill_ids if r not in stored_rows]
        window = (DB_TIMEOUT_MS + FLUSH_MS) / 1000 + 1.0
        lost_ages = sorted(killed_at - self.answered[r]["t"] for r in lost)
        outside = [(r, killed_at - self.answered[r]["t"], self.answered[r]["replica"]) for r in lost
                   if killed_at - self.answered[r]["t"] > window or self.answered[r]["replica"] != 2]
        dupes = int(self.psql("SELECT count(*) - count(DISTINCT request_id) FROM llm_logs"))
        log(f"kill -9: {len(kill_ids)} answered during the stall ({len(victim_ids)} by the killed "
            f"replica), {len(stored_rows)} stored, {len(lost)} lost"
            + (f", answered {lost_ages[-1] * 1000:.0f}..{lost_ages[0] * 1000:.0f} ms before the "
               f"kill" if lost else "")
            + f"; window allowed {window * 1000:.0f} ms; duplicates {dupes}")
        check(not outside, f"records lost outside the killed replica's in-memory window "
                           f"(id, age s, replica): {outside}")
        check(dupes == 0, f"{dupes} duplicate rows")
        # What the killed process had not yet queued for the judge: the documented backfill.
        r = self.lqo_cli("judge", "--since", "30m")
        check(r.returncode == 0, f"lqo judge failed: {r.stderr[-2000:]}")
        all_ids = [r for r in self.answered if r in stored_rows or r in before]
        rows, done, scores, missing, other = self.psql(
            "SELECT (SELECT count(*) FROM llm_logs), "
            "(SELECT count(*) FROM judge_jobs WHERE status = 'done'), "
            "(SELECT count(*) FROM judge_scores), "
            "(SELECT count(*) FROM judge_jobs WHERE status = 'error' "
            " AND error_type = 'record_missing'), "
            "(SELECT count(*) FROM judge_jobs WHERE status NOT IN ('done') "
            " AND error_type IS DISTINCT FROM 'record_missing')").split("|")
        log(f"after lqo judge --since: {rows} records stored, {done} judged ({scores} scores), "
            f"{missing} jobs of lost records ended record_missing, {other} other open or failed")
        check(int(rows) == len(all_ids), f"{rows} rows, want {len(all_ids)}")
        check(int(done) == int(rows) and int(scores) == CRITERIA * int(rows) and int(other) == 0,
              f"judged {done} of {rows} records, {scores} scores, {other} jobs open or failed")
        check(int(missing) <= len(lost), f"{missing} record_missing jobs but {len(lost)} lost")
        self.summary["kill"] = {"answered": len(kill_ids), "answered_by_killed": len(victim_ids),
                                "spool_bytes_at_restart": spool_bytes, "stored": len(stored_rows),
                                "lost": len(lost), "lost_age_ms": [round(a * 1000) for a in lost_ages],
                                "window_ms": round(window * 1000), "judged_after_backfill": int(done),
                                "judge_jobs_record_missing": int(missing), "rows": int(rows)}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lqo", default=os.path.join(ROOT, "target/debug/lqo"))
    ap.add_argument("--out", help="write the measured figures here (JSON)")
    args = ap.parse_args(argv)
    check(os.access(args.lqo, os.X_OK), f"{args.lqo} not found: cargo build first")
    run = Run(os.path.abspath(args.lqo), args.out)
    ok = False
    t0 = time.monotonic()
    try:
        run.setup()
        run.phase_limits()
        run.phase_revocation()
        run.phase_records()
        run.phase_dashboards()
        run.phase_kill()
        ok = True
    except Failed as e:
        print(f"e2e-replicas: FAILED: {e}", file=sys.stderr)
    finally:
        run.cleanup(ok)
    run.summary["duration_s"] = round(time.monotonic() - t0, 1)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(run.summary, f, indent=2)
    if ok:
        log(f"OK in {run.summary['duration_s']} s: {json.dumps(run.summary)}")
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except Failed as e:
        print(f"e2e-replicas: FAILED: {e}", file=sys.stderr)
        sys.exit(1)
