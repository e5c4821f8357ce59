#!/usr/bin/env python3
"""Instructions per call, gateway against the mock upstream, counted by valgrind's callgrind.

CPU time per call (bench/overhead.py) moves by 15 % or more between runs on a shared VM; an
instruction count does not: the same binary, inputs and environment give the same total to well under
1 %, whatever else the machine is doing. This script starts `lqo mock-upstream` and the gateway (with
PostgreSQL logging on a throwaway database, as overhead.py does), runs one of them under
`valgrind --tool=callgrind`, sends sequential calls on one keep-alive connection to warm up, zeroes
the counters, sends the measured calls, waits for the writer's batch and reads the total:

    python3 bench/instructions.py                 # ~3 minutes: plain and streamed, both programs
    python3 bench/instructions.py --calls 500 --bin target/release/lqo
    python3 bench/instructions.py --floor         # also the forward-only proxy of examples/floor_proxy.rs
    python3 bench/instructions.py --keep /tmp/cg  # keep the profiles: callgrind_annotate /tmp/cg/cg.gateway.plain

`--floor` counts the same calls through `examples/floor_proxy.rs` (a proxy that only forwards, on the
gateway's stack; bench/README.md), once with reqwest as its client and once with hyper-util's: what
any proxy built this way runs per call, so what of the gateway's count is its own work.

Instructions are not time: the mock spends most of its in tight loops (tiktoken's regular
expressions counting tokens) and the gateway its in a long path through many crates, so a
gateway running fewer instructions than the mock can still cost more CPU. Use it to see what a
change does to the gateway's own work, not to compare the two programs' speed.
"""

import argparse
import glob
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from overhead import (  # noqa: E402
    PG_ADMIN, ROOT, body, cpu_seconds, free_port, psql, stop_processes, wait_http,
)


def calls(port, model, stream, n):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    payload = body(model, stream)
    for _ in range(n):
        conn.request("POST", "/v1/chat/completions", payload, {"content-type": "application/json"})
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise SystemExit(f"bench: call to port {port} answered {response.status}")
    conn.close()


def wait_idle(pid, interval=1.0, busy=0.05, deadline_s=300):
    """Waits until the process `pid` uses under `busy` of a CPU over `interval`: work it starts in
    the background (the gateway builds its tokenizer after it starts answering, ~10 s under
    valgrind) must not fall into a measured window."""
    end = time.time() + deadline_s
    last = cpu_seconds(pid)
    while time.time() < end:
        time.sleep(interval)
        now = cpu_seconds(pid)
        if now - last < busy * interval:
            return
        last = now
    raise SystemExit(f"bench: process {pid} still busy after {deadline_s} s")


def measure(pid, out_dir, port, model, stream, warmup, n, settle, keep_as=None):
    """Instructions the process `pid` (running under callgrind) spends on `n` calls; the profile
    is copied to `keep_as` when given."""
    calls(port, model, stream, warmup)
    wait_idle(pid)
    time.sleep(settle)  # the warm-up's records reach the database before the counters are zeroed
    subprocess.run(["callgrind_control", "-z", str(pid)], check=True, capture_output=True)
    calls(port, model, stream, n)
    time.sleep(settle)  # and the measured calls' records are written inside the window
    before = set(glob.glob(os.path.join(out_dir, f"cg.{pid}.*")))
    subprocess.run(["callgrind_control", "-d", str(pid)], check=True, capture_output=True)
    for _ in range(100):
        dumps = set(glob.glob(os.path.join(out_dir, f"cg.{pid}.*"))) - before
        if dumps:
            break
        time.sleep(0.1)
    (dump,) = dumps
    if keep_as:
        shutil.copy(dump, keep_as)
    with open(dump) as f:
        for line in f:
            if line.startswith("summary:"):
                return int(line.split()[1]) / n
    raise SystemExit(f"bench: no summary line in {dump}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=300, help="measured calls per row (default 300)")
    ap.add_argument("--warmup", type=int, default=50, help="calls before the counters are zeroed")
    ap.add_argument("--bin", help="lqo binary to use instead of building target/release/lqo")
    ap.add_argument("--log-level", default="info", help="gateway LOG_LEVEL (default info)")
    ap.add_argument("--floor", action="store_true",
                    help="also count the forward-only proxy of examples/floor_proxy.rs (reqwest and hyper-util clients)")
    ap.add_argument("--keep", metavar="DIR",
                    help="copy callgrind's profiles (one per program and row) to DIR, for callgrind_annotate")
    args = ap.parse_args()
    for tool in ("valgrind", "callgrind_control"):
        if not shutil.which(tool):
            raise SystemExit(f"bench: {tool} not found (apt-get install -y valgrind)")
    if not args.bin:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    # Absolute: the programs are started in a temporary directory.
    lqo = os.path.abspath(args.bin) if args.bin else os.path.join(ROOT, "target", "release", "lqo")
    floor_bin = os.path.join(ROOT, "target", "release", "examples", "floor_proxy")
    if args.floor and not (args.bin and os.path.exists(floor_bin)):
        subprocess.run(["cargo", "build", "--release", "--quiet", "--example", "floor_proxy"], cwd=ROOT, check=True)

    tmp = tempfile.mkdtemp(prefix="lqo-instructions.")
    db = "lqo_bench_" + uuid.uuid4().hex[:12]
    psql(f'CREATE DATABASE "{db}"')
    db_url = PG_ADMIN.rsplit("/", 1)[0] + "/" + db
    valgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/cg.%p"]
    procs = []

    def start(cmd, env=None, under_valgrind=False):
        p = subprocess.Popen((valgrind if under_valgrind else []) + cmd, env=env, cwd=tmp,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(p)
        return p

    def stop_all():
        stop_processes(procs, timeout=60)  # a process under valgrind takes longer to exit
        procs.clear()

    def run(who):
        """Starts the mock and the program `who` in front of it ("gateway", "floor-reqwest" or
        "floor-hyper"), with `who` (or, for "upstream", the mock) under callgrind; returns the port
        to call, the model to ask for and the pid to count."""
        up, gw = free_port(), free_port()
        mock = start([lqo, "mock-upstream", "--port", str(up), "--latency-ms", "0"],
                     under_valgrind=who == "upstream")
        if who.startswith("floor-"):
            floor = start([floor_bin, "--port", str(gw), "--upstream", f"http://127.0.0.1:{up}",
                           "--client", who.split("-", 1)[1]], under_valgrind=True)
            wait_http(f"http://127.0.0.1:{up}/health", 120)
            wait_http(f"http://127.0.0.1:{gw}/health", 120)
            return gw, "bench-upstream", floor.pid
        cfg = os.path.join(tmp, "lqo.yaml")
        with open(cfg, "w") as f:
            f.write(f"""
providers:
  up0: {{ kind: openai_chat, base_url: "http://127.0.0.1:{up}/v1" }}
models:
  bench-0ms: {{ provider: up0, upstream_model: bench-upstream, pricing: {{ input_per_1m: 0.25, output_per_1m: 2.0 }} }}
default_model: bench-0ms
judge: {{ enabled: false, sample_rate: 0.1 }}
""")
        env = dict(os.environ, LQO_CONFIG=cfg, DATABASE_URL=db_url, LLM_API_KEY="bench-dummy-key",
                   LOG_LEVEL=args.log_level, PORT=str(gw))
        gateway = start([lqo, "serve"], env=env, under_valgrind=who == "gateway")
        wait_http(f"http://127.0.0.1:{up}/health", 120)
        wait_http(f"http://127.0.0.1:{gw}/health", 120)
        if who == "gateway":
            return gw, "bench-0ms", gateway.pid
        return up, "bench-upstream", mock.pid

    results = {}
    programs = ["upstream", "gateway"] + (["floor-hyper", "floor-reqwest"] if args.floor else [])
    try:
        if args.keep:
            os.makedirs(args.keep, exist_ok=True)
        for who in programs:
            port, model, pid = run(who)
            for stream in (False, True):
                keep_as = os.path.join(args.keep, f"cg.{who}.{'streamed' if stream else 'plain'}") if args.keep else None
                results[(who, stream)] = measure(pid, tmp, port, model, stream, args.warmup, args.calls, 2.0,
                                                 keep_as)
                print(f"bench: {who} {'streamed' if stream else 'plain'}: done", flush=True)
            stop_all()
        rows = int(psql("SELECT count(*) FROM llm_logs", db_url))
    finally:
        stop_all()
        try:
            psql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        except subprocess.CalledProcessError as e:
            print(f"bench: could not drop {db}: {e.stderr}", file=sys.stderr)
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"\nInstructions per call (callgrind; {args.calls} sequential calls on one connection after "
          f"{args.warmup} to warm up; PostgreSQL logging, judge off)")
    floors = ("floor-hyper", "floor-reqwest") if args.floor else ()
    print(f"{'':10} {'upstream':>10} {'gateway':>10} {'ratio':>7}"
          + "".join(f" {f:>14}" for f in floors) + (f" {'gw - reqwest floor':>19}" if floors else ""))
    for stream in (False, True):
        u, g = results[("upstream", stream)], results[("gateway", stream)]
        print(f"{'streamed' if stream else 'plain':10} {u / 1000:>9.1f}k {g / 1000:>9.1f}k {g / u:>6.2f}x"
              + "".join(f" {results[(f, stream)] / 1000:>13.1f}k" for f in floors)
              + (f" {(g - results[('floor-reqwest', stream)]) / 1000:>18.1f}k" if floors else ""))
    expected = 2 * (args.warmup + args.calls)
    print(f"records: {rows} rows in PostgreSQL for {expected} gateway calls → {'OK' if rows == expected else 'MISMATCH'}")
    return 0 if rows == expected else 1


if __name__ == "__main__":
    sys.exit(main())
