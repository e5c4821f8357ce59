#!/usr/bin/env python3
"""Reliability probe (issue 14): replays, against the real `lqo` binary, what a hostile or
careless client did to the gateway, on SQLite and on PostgreSQL, and prints a table — probe,
expected, observed, records lost — and the closing figures: inputs tried, 5xx seen, panics,
records lost.

  cargo build && python3 scripts/probe_reliability.py [--lqo target/debug/lqo] [--short]
                                                       [--backend sqlite|postgres|both]

Loopback only; every process it starts (the gateway, `lqo mock-upstream`, a TCP proxy thread in
front of PostgreSQL) is stopped, and the PostgreSQL database it creates dropped, also on failure.
Bounded: each probe has its own timeouts and the run stops itself after --deadline seconds
(default 900, --short 300). --short is the CI run (.ci/run): the same probes, smaller numbers.

Probes (the issue's findings):
  1 /v1/logs pages of large records: memory (peak RSS) and page sizes bounded, pages continue;
  2 a reused x-request-id: every call stored, found by either id; chosen ids do not decide the
    judge's sample;
  3 clients hanging up before the first byte (plain, stream): recorded once as cancelled;
  4 390,000-character prompts of one letter: /health latency while they run;
  5 connections that never finish their headers: closed, and new clients served;
  6 the database down at start (PostgreSQL): the gateway starts, serves into the spool, migrates
    and replays once the database answers; 7 /ready latency while the database does not answer;
  8 values the database cannot hold (3,000-character user id, NUL): 400 before any call;
  9 URL secrets in `lqo check-config` and in start-up errors;
 10 bad query values (NUL, a cursor before 4713 BC, huge spans, year 10000): 400, never 5xx;
 11 500 thumbs-down from one user: one rating, the agreement rate unmoved;
 12 smaller ones: upstream usage 2^64-1, trailing JSON, the 405 message, the spool lock error;
 and ~1,000 malformed requests (--short: 200) that must never get a 5xx.

Environment: PROBE_PG_URL (default postgres://postgres@127.0.0.1:5432). Needs psql for the
PostgreSQL run (skipped with a note when it is missing). Exit status 0 when every probe met its
expectation, 1 otherwise.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import random
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEADLINE = time.monotonic() + 900


class Tally:
    """Every request sent, every 5xx seen, every record owed."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.inputs = 0
        self.fivexx: list[str] = []
        self.rows: list[tuple[str, str, str, str, str, bool]] = []

    def sent(self, status: int, what: str) -> None:
        with self.lock:
            self.inputs += 1
            if status >= 500:
                self.fivexx.append(f"{status} {what}")

    def row(self, backend: str, probe: str, expected: str, observed: str, lost: str, ok: bool) -> None:
        with self.lock:
            self.rows.append((backend, probe, expected, observed, lost, ok))
        mark = "ok  " if ok else "FAIL"
        print(f"  [{mark}] {probe}: {observed} (lost {lost})", flush=True)


TALLY = Tally()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, body=None, headers: dict | None = None, timeout: float = 30,
         raw: bytes | None = None, count: bool = True) -> tuple[int, bytes, dict]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("content-type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 (loopback)
            status, out, hdrs = r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        status, out, hdrs = e.code, e.read(), dict(e.headers)
    except (urllib.error.URLError, OSError) as e:
        status, out, hdrs = 0, str(e).encode(), {}
    if count:
        TALLY.sent(status, f"{method} {urllib.parse.urlsplit(url).path}")
    return status, out, hdrs


def metric(text: str, name: str, **labels) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name) or line[len(name):len(name) + 1] not in "{ ":
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def sample_point(u: uuid.UUID) -> float:
    """The gateway's judge sampling hash (src/eval/sampling.rs)."""
    h = 0xCBF29CE484222325
    for b in u.bytes:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    z = (h + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    z ^= z >> 31
    return (z >> 11) / float(1 << 53)


class PgProxy:
    """TCP proxy in front of PostgreSQL: up (forward), refuse (close at once) or blackhole
    (accept, never answer). Changing the mode cuts what it forwards."""

    def __init__(self, target: tuple[str, int], mode: str) -> None:
        self.target, self.mode, self.gen = target, mode, 0
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.port = self.sock.getsockname()[1]
        self.stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def set(self, mode: str) -> None:
        self.mode, self.gen = mode, self.gen + 1

    def _accept(self) -> None:
        while not self.stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c, self.mode, self.gen), daemon=True).start()

    def _serve(self, c: socket.socket, mode: str, gen: int) -> None:
        try:
            if mode == "refuse":
                return
            if mode == "blackhole":
                c.settimeout(0.2)
                while gen == self.gen and not self.stop:
                    try:
                        if not c.recv(4096):
                            return
                    except socket.timeout:
                        pass
                return
            s = socket.create_connection(self.target, timeout=5)
            s.settimeout(0.2)
            c.settimeout(0.2)
            while gen == self.gen and not self.stop:
                for a, b in ((c, s), (s, c)):
                    try:
                        d = a.recv(65536)
                        if not d:
                            return
                        b.sendall(d)
                    except socket.timeout:
                        pass
        except OSError:
            pass
        finally:
            c.close()

    def close(self) -> None:
        self.stop = True
        self.sock.close()


class Db:
    """The gateway's database, read back for the records-lost count."""

    def __init__(self, backend: str, tmp: str, pg_base: str) -> None:
        self.backend = backend
        if backend == "sqlite":
            self.path = os.path.join(tmp, "probe.db")
            self.url = f"sqlite://{self.path}"
            self.name = None
        else:
            self.name = f"lqo_probe_{uuid.uuid4().hex[:12]}"
            self.admin = pg_base.rstrip("/") + "/postgres"
            self.url = pg_base.rstrip("/") + "/" + self.name
            self.psql(self.admin, f'CREATE DATABASE "{self.name}"')

    @staticmethod
    def psql(url: str, sql: str) -> str:
        out = subprocess.run(["psql", url, "-At", "-v", "ON_ERROR_STOP=1", "-c", sql],
                             capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise RuntimeError(out.stderr.strip())
        return out.stdout.strip()

    def scalar(self, sql: str) -> int:
        if self.backend == "sqlite":
            with sqlite3.connect(self.path, timeout=30) as c:
                return int(c.execute(sql).fetchone()[0])
        return int(self.psql(self.url, sql) or 0)

    def client_ids(self, prefix: str) -> set[str]:
        sql = f"SELECT client_request_id FROM llm_logs WHERE client_request_id LIKE '{prefix}%'"
        if self.backend == "sqlite":
            with sqlite3.connect(self.path, timeout=30) as c:
                return {r[0] for r in c.execute(sql)}
        return set(filter(None, self.psql(self.url, sql).split("\n")))

    def drop(self) -> None:
        if self.name:
            try:
                self.psql(self.admin, f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                print(f"could not drop {self.name}: {e}", file=sys.stderr)


class Gateway:
    def __init__(self, lqo: str, tmp: str, db_url: str, upstream_port: int, name: str,
                 spool: str | None = None, extra: str = "") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.spool = spool or os.path.join(tmp, f"spool-{name}")
        cfg = os.path.join(tmp, f"{name}.yaml")
        with open(cfg, "w") as f:
            f.write(f"""
server: {{ host: 127.0.0.1, port: {self.port}, header_read_timeout_secs: 2, idle_timeout_secs: 20,
          max_connections: 2000, request_timeout_secs: 30, max_body_bytes: 4194304 }}
database: {{ url: "{db_url}", max_connections: 5 }}
writer: {{ spool_dir: "{self.spool}", flush_interval_ms: 20 }}
providers:
  local: {{ kind: mock }}
  up: {{ kind: openai_chat, base_url: "http://127.0.0.1:{upstream_port}/v1", api_key_env: PROBE_UPSTREAM_KEY,
         max_retries: 0 }}
models:
  mock-1: {{ provider: local, pricing: {{ input_per_1m: 1.0, output_per_1m: 2.0 }} }}
  mock-2: {{ provider: local, pricing: {{ input_per_1m: 1.0, output_per_1m: 2.0 }} }}
  up-1: {{ provider: up, upstream_model: gpt-5-mini, pricing: {{ input_per_1m: 0.25, output_per_1m: 2.0 }} }}
default_model: mock-1
judge: {{ enabled: true, model: mock-1, sample_rate: 0.1, per_model_sample_rate: {{ mock-2: 1.0 }},
         poll_interval_ms: 50 }}
limits: {{ max_prompt_chars: 400000 }}
logging: {{ level: warn }}
{extra}
""")
        self.log_path = os.path.join(tmp, f"{name}.log")
        self.log = open(self.log_path, "w")
        env = dict(os.environ, PROBE_UPSTREAM_KEY="sk-probe", LQO_CONFIG=cfg)
        for var in ("DATABASE_URL", "LLM_API_KEY", "PORT", "OPENAI_MODEL_MAIN", "LLM_API_BASE_URL"):
            env.pop(var, None)
        self.proc = subprocess.Popen([lqo, "serve"], env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT, cwd=tmp)

    def wait_up(self, timeout: float = 30) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                return False
            if http("GET", self.url + "/health", timeout=2, count=False)[0] == 200:
                return True
            time.sleep(0.1)
        return False

    def rss_kb(self, field: str = "VmRSS") -> int:
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith(field + ":"):
                        return int(line.split()[1])
        except OSError:
            pass
        return 0

    def metrics(self) -> str:
        return http("GET", self.url + "/metrics", count=False)[1].decode()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def panics(self) -> int:
        with open(self.log_path, errors="replace") as f:
            return f.read().count("panicked")


class Run:
    """One backend's probes against one gateway; records owed are tracked by client id."""

    def __init__(self, args, backend: str, tmp: str, upstream_port: int) -> None:
        self.args, self.backend, self.tmp, self.upstream_port = args, backend, tmp, upstream_port
        self.db = Db(backend, tmp, args.pg_url)
        self.gw = Gateway(args.lqo, tmp, self.db.url, upstream_port, f"gw-{backend}")
        self.owed: set[str] = set()
        self.lock = threading.Lock()
        self.panics = 0

    def n(self, full: int, short: int) -> int:
        return short if self.args.short else full

    def call(self, path: str, body, client_id: str | None = None, owed: bool = True,
             timeout: float = 60, headers: dict | None = None) -> tuple[int, bytes, dict]:
        client_id = client_id or f"probe-{uuid.uuid4().hex}"
        h = dict(headers or {})
        h["x-request-id"] = client_id
        status, out, hdrs = http("POST", self.gw.url + path, body, h, timeout=timeout)
        if owed and status == 200:
            with self.lock:
                self.owed.add(client_id)
        return status, out, hdrs

    def row(self, probe: str, expected: str, observed: str, ok: bool, lost: str = "0") -> None:
        TALLY.row(self.backend, probe, expected, observed, lost, ok)

    def lost_of(self, ids: set[str], wait: float = 20) -> int:
        end = time.monotonic() + wait
        while True:
            missing = ids - self.db.client_ids("probe-")
            if not missing or time.monotonic() > end:
                return len(missing)
            time.sleep(0.2)

    # -------------------------------------------------------------------------------- probes

    def logs_memory(self) -> None:
        n, size = self.n(40, 12), 380_000
        with cf.ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda i: self.call("/chat", {"prompt": f"{i} " + "lorem ipsum " * (size // 12),
                                                        "user_id": "big", "model_version": "mock-2"}),
                          range(n)))
        self.lost_of(set(self.owed), 30)
        before = self.gw.rss_kb()

        def walk(_: int) -> tuple[int, int, int]:
            cursor, count, top, sizes = None, 0, 0, 0
            while True:
                q = "/v1/logs?limit=500&user_id=big" + (f"&cursor={cursor}" if cursor else "")
                s, body, _ = http("GET", self.gw.url + q)
                if s != 200:
                    return -1, 0, 0
                page = json.loads(body)
                count += 1
                top = max(top, len(body))
                sizes += len(page["data"])
                cursor = page.get("next_cursor")
                if not cursor:
                    return count, top, sizes

        with cf.ThreadPoolExecutor(5) as pool:
            results = list(pool.map(walk, range(5)))
        peak = self.gw.rss_kb("VmHWM")
        pages = [r[0] for r in results]
        biggest = max(r[1] for r in results)
        walked = min(r[2] for r in results)
        ok = all(p > 1 for p in pages) and walked == n and biggest < 8 * 1024 * 1024
        self.row("1 /v1/logs: 5 concurrent walks of limit=500 pages over large records",
                 "pages cut at 4 MiB, every record once, memory bounded",
                 f"{n} records of {size // 1000} KB: {pages[0]} pages per walk, largest page "
                 f"{biggest / 1e6:.1f} MB, RSS {before // 1024} MiB -> peak {peak // 1024} MiB",
                 ok)

    def reused_id(self) -> None:
        cid = f"probe-reused-{uuid.uuid4().hex[:8]}"
        gateway_ids = []
        for i in range(20):
            s, _, h = http("POST", self.gw.url + "/chat", {"prompt": f"call {i}", "user_id": "u"},
                           {"x-request-id": cid})
            if s == 200:
                gateway_ids.append(h.get("x-lqo-request-id") or h.get("X-Lqo-Request-Id"))
        time.sleep(0.3)
        end = time.monotonic() + 20
        stored = 0
        while time.monotonic() < end:
            stored = self.db.scalar(f"SELECT COUNT(*) FROM llm_logs WHERE client_request_id = '{cid}'")
            if stored >= len(gateway_ids):
                break
            time.sleep(0.2)
        by_client = http("GET", self.gw.url + f"/v1/logs/{cid}")[0]
        by_gateway = http("GET", self.gw.url + f"/v1/logs/{gateway_ids[0]}")[0] if gateway_ids else 0
        ok = len(gateway_ids) == 20 and stored == 20 and by_client == 200 and by_gateway == 200
        self.row("2 one x-request-id reused by 20 calls", "20 answered, 20 stored, found by either id",
                 f"{len(gateway_ids)} answered, {stored} stored; GET by client id {by_client}, "
                 f"by gateway id {by_gateway}", ok, str(len(gateway_ids) - stored))

    def judge_sampling(self) -> None:
        chosen = []
        while len(chosen) < 100:
            u = uuid.uuid4()
            if sample_point(u) < 0.1:
                chosen.append(f"probe-judge-{u}")
        # The client ids are what the client chose; the gateway's own ids decide the sample.
        for cid in chosen:
            self.call("/chat", {"prompt": "judge me", "user_id": "u"}, client_id=cid)
        time.sleep(1.5)
        jobs = self.db.scalar("SELECT COUNT(*) FROM judge_jobs WHERE request_id IN (SELECT request_id "
                              "FROM llm_logs WHERE client_request_id LIKE 'probe-judge-%')")
        self.row("2 100 x-request-ids chosen to fall in a 0.1 judge sample", "about 10 judged, not 100",
                 f"{jobs} judged", jobs < 30)

    def hang_ups(self) -> None:
        n = self.n(53, 10)
        ids = []
        for i in range(n):
            stream = i % 2 == 1
            cid = f"probe-hangup-{uuid.uuid4().hex}"
            ids.append(cid)
            body = ({"model": "mock-1", "stream": True,
                     "messages": [{"role": "user", "content": "[mock:delay_ms=2000] slow"}]}
                    if stream else {"prompt": "[mock:delay_ms=2000] slow", "user_id": "u"})
            path = "/v1/chat/completions" if stream else "/chat"
            payload = json.dumps(body).encode()
            with socket.create_connection(("127.0.0.1", self.gw.port)) as s:
                s.sendall(f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                          f"x-request-id: {cid}\r\ncontent-length: {len(payload)}\r\n\r\n".encode()
                          + payload)
                time.sleep(0.2)
            TALLY.sent(499, path)
        lost = 0
        end = time.monotonic() + 20
        while time.monotonic() < end:
            lost = len(set(ids) - self.db.client_ids("probe-hangup-"))
            if lost == 0:
                break
            time.sleep(0.2)
        cancelled = metric(self.gw.metrics(), "lqo_requests_total", status="cancelled")
        ok = lost == 0 and cancelled >= n
        self.row("3 clients hang up before the first byte (plain and stream)",
                 "each recorded once as cancelled (499) and counted",
                 f"{n} hang-ups: {n - lost} recorded, lqo_requests_total{{status=cancelled}} "
                 f"{cancelled:.0f}", ok, str(lost))

    def heavy_prompts(self) -> None:
        n = 8
        prompt = "a" * 390_000
        lat, stop = [], threading.Event()

        def health() -> None:
            while not stop.is_set():
                t = time.monotonic()
                http("GET", self.gw.url + "/health", timeout=10)
                lat.append(time.monotonic() - t)
                time.sleep(0.01)

        t = threading.Thread(target=health)
        t.start()
        started = time.monotonic()
        with cf.ThreadPoolExecutor(n) as pool:
            codes = list(pool.map(lambda _: self.call("/chat", {"prompt": prompt, "user_id": "u"})[0],
                                  range(n)))
        took = time.monotonic() - started
        stop.set()
        t.join()
        lat.sort()
        worst = lat[-1] * 1000 if lat else 0
        p50 = lat[len(lat) // 2] * 1000 if lat else 0
        ok = codes.count(200) == n and worst < 500
        self.row("4 eight 390,000-character prompts of one letter at once",
                 "/health stays fast (off the request workers)",
                 f"all 8 answered in {took:.2f} s; /health p50 {p50:.1f} ms, max {worst:.1f} ms "
                 f"over {len(lat)} calls", ok)

    def half_sent(self) -> None:
        n = self.n(1200, 300)
        hogs = []
        for _ in range(n):
            try:
                s = socket.create_connection(("127.0.0.1", self.gw.port), timeout=5)
                s.sendall(b"POST /chat HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n")
                hogs.append(s)
            except OSError:
                break
            TALLY.sent(0, "half-sent headers")
        served, lat = 0, []
        for _ in range(20):
            t = time.monotonic()
            if self.call("/chat", {"prompt": "hi", "user_id": "u"}, timeout=15)[0] == 200:
                served += 1
            lat.append(time.monotonic() - t)
        closed = 0
        for s in hogs:
            s.settimeout(10)
            try:
                closed += s.recv(1) == b""
            except OSError:
                pass
            s.close()
        ok = served == 20 and closed == len(hogs)
        self.row(f"5 {n} connections that never finish their headers",
                 "closed after the header timeout; new clients served",
                 f"{len(hogs)} opened, {closed} closed by the gateway; 20 new clients: {served} "
                 f"served, slowest {max(lat) * 1000:.0f} ms", ok)

    def edge_values(self) -> None:
        cases = [
            ("/chat", {"prompt": "hi", "user_id": "u" * 3000}, "user_id"),
            ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "user": "u" * 3000}, "user"),
            ("/chat", {"prompt": "hi", "user_id": "a\u0000b"}, "user_id"),
            ("/chat", {"prompt": "hi", "user_id": "u", "tags": ["a\u0000"]}, "tags"),
            ("/chat", {"prompt": "hi", "user_id": "u", "metadata": {"k": "v\u0000"}}, "metadata"),
        ]
        got = []
        for path, body, param in cases:
            s, out, _ = self.call(path, body)
            got.append(s == 400 and json.loads(out)["error"]["param"] == param)
        s, _, _ = self.call("/chat", {"prompt": "edge", "user_id": "é" * 256})
        ok = all(got) and s == 200
        rejected = metric(self.gw.metrics(), "lqo_writer_dropped_total", reason="rejected")
        self.row("8 a 3,000-character user id, NUL in user id, tags, metadata",
                 "400 naming the field; a 256-character id answered and stored",
                 f"{sum(got)}/{len(got)} refused with their field named; 256 chars -> {s}; "
                 f"records the database rejected: {rejected:.0f}", ok and rejected == 0)

    def bad_queries(self) -> None:
        import base64
        old = base64.urlsafe_b64encode(f"-210000000000000000:{uuid.UUID(int=0)}".encode()).decode().rstrip("=")
        queries = ["/v1/logs?user_id=%00", "/v1/logs?model_version=%00", "/v1/logs?tag=%00",
                   f"/v1/logs?cursor={old}", "/v1/logs?since=7000000000000s",
                   "/v1/logs?until=9999-12-31T23:00:00-02:00",
                   "/v1/feedback/agreement?since=7000000000000s",
                   "/v1/logs/" + "x" * 200, "/v1/logs?limit=99999999999999999999",
                   "/v1/logs?status=%00", "/v1/logs?client_request_id=%00"]
        codes = [http("GET", self.gw.url + q)[0] for q in queries]
        ok = all(c == 400 for c in codes)
        self.row("10 NUL, a cursor before 4713 BC, since=7000000000000s, year 10000",
                 "400 naming the parameter", f"{codes.count(400)}/{len(codes)} answered 400, "
                 f"others {[c for c in codes if c != 400]}", ok)

    def feedback(self) -> None:
        ids = []
        for _ in range(2):
            s, out, _ = self.call("/chat", {"prompt": "[mock:judge_score=5] rate me", "user_id": "u",
                                            "model_version": "mock-2"})
            ids.append(json.loads(out)["request_id"])
        end = time.monotonic() + 20
        while time.monotonic() < end:
            done = self.db.scalar("SELECT COUNT(*) FROM judge_scores WHERE criterion = 'overall' AND "
                                  "request_id IN ('" + "','".join(ids) + "')") if self.backend == "sqlite" else \
                self.db.scalar("SELECT COUNT(*) FROM judge_scores WHERE criterion = 'overall' AND "
                               "request_id::text IN ('" + "','".join(ids) + "')")
            if done == 2:
                break
            time.sleep(0.2)
        for i in ids:
            http("POST", self.gw.url + "/v1/feedback", {"request_id": i, "score": 1, "user_id": "alice"})
        n = self.n(500, 100)
        with cf.ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(lambda _: http("POST", self.gw.url + "/v1/feedback",
                                                 {"request_id": ids[0], "score": -1,
                                                  "user_id": "mallory"})[0], range(n)))
        _, out, _ = http("GET", self.gw.url + "/v1/feedback/agreement?since=1h&model_version=mock-2")
        row = json.loads(out)["data"][0] if json.loads(out)["data"] else {}
        _, detail, _ = http("GET", self.gw.url + f"/v1/logs/{ids[0]}")
        ratings = len(json.loads(detail).get("feedback", []))
        ok = codes.count(201) == n and ratings == 2 and row.get("agreement_rate") == 1.0
        self.row(f"11 {n} thumbs-down from one user on one judged answer",
                 "one rating per user and answer; agreement counts the answer once",
                 f"{ratings} ratings stored on it; agreement rate {row.get('agreement_rate')} "
                 f"({row.get('compared')} compared)", ok)

    def smaller(self) -> None:
        results = []
        s, out, _ = self.call("/chat", {"prompt": f"[mock:usage_tokens={2**64 - 1}] tokens?",
                                        "user_id": "u", "model_version": "up-1"})
        m = self.gw.metrics()
        cost = metric(m, "lqo_cost_usd_total", model_version="up-1")
        invalid = metric(m, "lqo_upstream_invalid_usage_total", model_version="up-1")
        results.append(("usage 2^64-1", s == 200 and cost < 1 and invalid >= 1,
                        f"cost counter {cost:.6f} USD, invalid usage counted {invalid:.0f}"))
        s, _, _ = http("POST", self.gw.url + "/chat", raw=b'{"prompt": "hi", "user_id": "u"} trailing')
        results.append(("trailing JSON", s == 400, f"{s}"))
        s, out, h = http("GET", self.gw.url + "/chat")
        msg = json.loads(out)["error"]["message"] if s == 405 else ""
        results.append(("405 message", s == 405 and "allowed: ." not in msg and "Allow" in msg,
                        f"{s} Allow={h.get('allow') or h.get('Allow')}"))
        # A second gateway on the same spool directory: one clear line, said once.
        other = Gateway(self.args.lqo, self.tmp, self.db.url, self.upstream_port,
                        f"lock-{self.backend}", spool=self.gw.spool)
        other.proc.wait(30)
        other.stop()
        with open(other.log_path, errors="replace") as f:
            text = f.read()
        said = text.count("is used by another gateway process")
        results.append(("spool lock message", other.proc.returncode != 0 and said == 1,
                        f"exit {other.proc.returncode}, said {said}x"))
        ok = all(r[1] for r in results)
        self.row("12 usage 2^64-1, trailing JSON, 405 message, spool lock error",
                 "refused/counted, 400, message matches Allow, one line",
                 "; ".join(f"{name}: {obs}" for name, _, obs in results), ok)

    def malformed(self) -> None:
        n = self.n(1000, 200)
        rng = random.Random(14)
        bodies = [b"", b"{", b"[]", b"null", b'{"prompt": 5}', b'{"prompt": "x", "user_id": []}',
                  b'{"messages": "x"}', b'{"messages": [{"role": "god", "content": "x"}]}',
                  b'{"messages": [{"role": "user", "content": {"a": 1}}]}', b'{"model": 1e999}',
                  b'{"temperature": "hot", "messages": []}', b'{"prompt": "\\ud800", "user_id": "u"}',
                  b'{"a":' * 200, b'\xff\xfe\x00', b'{"stream": "yes", "messages": [{"role":"user","content":"x"}]}',
                  b'{"n": -1, "messages": [{"role":"user","content":"x"}]}',
                  b'{"request_id": "", "score": 1}', b'{"request_id": "x", "score": 99}']
        paths = ["/chat", "/v1/chat/completions", "/v1/responses", "/v1/embeddings", "/v1/feedback"]
        fivexx_before = len(TALLY.fivexx)
        codes = {}
        for i in range(n):
            body = rng.choice(bodies)
            if rng.random() < 0.3:
                body = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 64)))
            elif rng.random() < 0.3 and body:
                body = body[: rng.randint(0, len(body))]
            headers = {}
            if rng.random() < 0.2:
                headers["x-lqo-tags"] = "".join(rng.choice("a,b \t;") for _ in range(rng.randint(0, 80)))
            if rng.random() < 0.1:
                headers["x-request-id"] = "x" * rng.randint(100, 300)
            s = http("POST", self.gw.url + rng.choice(paths), raw=body, headers=headers)[0]
            codes[s] = codes.get(s, 0) + 1
        five = len(TALLY.fivexx) - fivexx_before
        self.row(f"   {n} malformed requests", "a clear 4xx, never a 5xx",
                 f"statuses {dict(sorted(codes.items()))}", five == 0)

    def records_lost(self) -> int:
        return self.lost_of(set(self.owed), 30)


def outage_probes(args, tmp: str, upstream_port: int) -> None:
    """6 and 7, PostgreSQL: start with the database down; /ready while it does not answer."""
    target_url = urllib.parse.urlsplit(args.pg_url)
    target = (target_url.hostname or "127.0.0.1", target_url.port or 5432)
    db = Db("postgres", tmp, args.pg_url)
    proxy = PgProxy(target, "refuse")
    url = db.url.replace(f"{target[0]}:{target[1]}", f"127.0.0.1:{proxy.port}")
    gw = Gateway(args.lqo, tmp, url, upstream_port, "gw-outage")
    try:
        up = gw.wait_up(30)
        ready = json.loads(http("GET", gw.url + "/ready")[1] or b"{}") if up else {}
        ids = set()
        for _ in range(20):
            cid = f"probe-outage-{uuid.uuid4().hex}"
            if http("POST", gw.url + "/chat", {"prompt": "outage", "user_id": "u"},
                    {"x-request-id": cid})[0] == 200:
                ids.add(cid)
        proxy.set("up")
        end = time.monotonic() + 60
        while time.monotonic() < end:
            if json.loads(http("GET", gw.url + "/ready", count=False)[1] or b"{}").get("status") == "ready":
                break
            time.sleep(0.2)
        stored = set()
        while time.monotonic() < end:
            stored = set(filter(None, Db.psql(db.url, "SELECT client_request_id FROM llm_logs").split("\n")))
            if ids <= stored:
                break
            time.sleep(0.2)
        lost = len(ids - stored)
        TALLY.row("postgres", "6 the database down at start", "starts, serves into the spool, migrates "
                  "and replays when it answers",
                  f"started: {up}; /ready {ready.get('status')}; 20 calls -> {len(ids)} answered, "
                  f"{len(ids) - lost} stored after the database came back", str(lost),
                  up and ready.get("status") == "degraded" and len(ids) == 20 and lost == 0)
        # 7: the database accepts and never answers.
        proxy.set("blackhole")
        end = time.monotonic() + 30
        while time.monotonic() < end:
            if json.loads(http("GET", gw.url + "/ready", count=False)[1] or b"{}").get("status") == "degraded":
                break
            time.sleep(0.2)
        lat = []
        for _ in range(20):
            t = time.monotonic()
            s = http("GET", gw.url + "/ready", timeout=5)[0]
            lat.append((time.monotonic() - t, s))
        worst = max(x for x, _ in lat) * 1000
        status = json.loads(http("GET", gw.url + "/ready")[1] or b"{}").get("status")
        TALLY.row("postgres", "7 /ready while the database does not answer",
                  "answers in milliseconds (from the background probe), degraded",
                  f"20 calls: slowest {worst:.1f} ms, status {status}", "0",
                  worst < 250 and status == "degraded")
        proxy.set("up")
    finally:
        gw.stop()
        if gw.panics():
            print(f"PANIC in {gw.log_path}", file=sys.stderr)
        proxy.close()
        db.drop()


def secrets_probe(args, tmp: str) -> None:
    """9: secrets in DATABASE_URL query parameters never printed."""
    port = free_port()
    results = []
    for cmd, url in ((["check-config"], "postgres://app@db:5432/lqo?sslmode=require&password=hunter2-a"),
                     (["migrate"], f"postgres://127.0.0.1:{port}/lqo?pass%77ord=hunter2-b"),
                     (["serve"], f"postgres://127.0.0.1:{port}/lqo?password=hunter2-c&x=1")):
        env = {k: v for k, v in os.environ.items() if k not in ("LQO_CONFIG",)}
        env["DATABASE_URL"] = url
        env["PORT"] = str(free_port())
        try:
            out = subprocess.run([args.lqo, *cmd], env=env, capture_output=True, text=True,
                                 timeout=8, cwd=tmp)
            text = out.stdout + out.stderr
        except subprocess.TimeoutExpired as e:
            text = (e.stdout or b"").decode() + (e.stderr or b"").decode()
        TALLY.sent(0, " ".join(cmd))
        results.append("hunter2" not in text)
    TALLY.row("-", "9 passwords in DATABASE_URL query parameters", "never printed",
              f"{sum(results)}/{len(results)} commands kept them hidden", "0", all(results))


def main() -> int:
    global DEADLINE
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lqo", default=os.path.join(ROOT, "target", "debug", "lqo"))
    ap.add_argument("--short", action="store_true", help="the CI run: same probes, smaller numbers")
    ap.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    ap.add_argument("--deadline", type=float, default=None, help="seconds for the whole run")
    ap.add_argument("--pg-url", default=os.environ.get("PROBE_PG_URL", "postgres://postgres@127.0.0.1:5432"))
    args = ap.parse_args()
    DEADLINE = time.monotonic() + (args.deadline or (300 if args.short else 900))
    if not os.access(args.lqo, os.X_OK):
        print(f"no lqo binary at {args.lqo}; run cargo build first", file=sys.stderr)
        return 2
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    if "postgres" in backends and not shutil.which("psql"):
        print("psql not found: skipping PostgreSQL", file=sys.stderr)
        backends.remove("postgres")
    tmp = tempfile.mkdtemp(prefix="lqo-probe-")
    upstream_port = free_port()
    upstream = subprocess.Popen([args.lqo, "mock-upstream", "--port", str(upstream_port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    watchdog = threading.Timer(max(1.0, DEADLINE - time.monotonic()), lambda: os._exit(3))
    watchdog.daemon = True
    watchdog.start()
    panics, lost_total = 0, 0
    try:
        for backend in backends:
            print(f"== {backend}", flush=True)
            run = Run(args, backend, tmp, upstream_port)
            try:
                if not run.gw.wait_up():
                    TALLY.row(backend, "gateway start", "starts", "did not start", "-", False)
                    continue
                for probe in (run.logs_memory, run.reused_id, run.judge_sampling, run.hang_ups,
                              run.heavy_prompts, run.half_sent, run.edge_values, run.bad_queries,
                              run.feedback, run.smaller, run.malformed):
                    if time.monotonic() > DEADLINE - 30:
                        TALLY.row(backend, probe.__name__, "-", "skipped: out of time", "-", False)
                        continue
                    try:
                        probe()
                    except Exception as e:  # noqa: BLE001 (a probe that breaks is a failed probe)
                        TALLY.row(backend, probe.__name__, "-", f"probe failed: {e!r}", "-", False)
                lost = run.records_lost()
                dropped = metric(run.gw.metrics(), "lqo_writer_dropped_total")
                lost_total += lost + int(dropped)
                TALLY.row(backend, "every answered call", "stored exactly once",
                          f"{len(run.owed)} answered calls owed a record, {len(run.owed) - lost} "
                          f"stored; lqo_writer_dropped_total {dropped:.0f}", str(lost + int(dropped)),
                          lost == 0 and dropped == 0)
            finally:
                run.gw.stop()
                panics += run.gw.panics()
                run.db.drop()
        if "postgres" in backends:
            print("== postgres: outage", flush=True)
            outage_probes(args, tmp, upstream_port)
        secrets_probe(args, tmp)
    finally:
        upstream.terminate()
        upstream.wait()
        if not os.environ.get("KEEP_TMP"):
            shutil.rmtree(tmp, ignore_errors=True)
    width = max(len(r[1]) for r in TALLY.rows)
    print()
    print(f"{'backend':9} {'probe':{width}}  {'expected':60}  {'lost':5}  observed")
    for backend, probe, expected, observed, lost, ok in TALLY.rows:
        mark = "" if ok else "  <-- FAILED"
        print(f"{backend:9} {probe:{width}}  {expected[:60]:60}  {lost:5}  {observed}{mark}")
    print()
    print(f"inputs tried: {TALLY.inputs}; 5xx seen: {len(TALLY.fivexx)}; panics: {panics}; "
          f"records lost: {lost_total}")
    if TALLY.fivexx:
        print("5xx:", ", ".join(sorted(set(TALLY.fivexx))[:20]))
    failed = [r for r in TALLY.rows if not r[5]]
    return 1 if failed or TALLY.fivexx or panics or lost_total else 0


if __name__ == "__main__":
    sys.exit(main())
