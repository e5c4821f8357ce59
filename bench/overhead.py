#!/usr/bin/env python3
"""Gateway overhead benchmark: direct to `lqo mock-upstream` vs through the gateway, side by side.

One run starts two mock upstreams (0 ms and 50 ms latency), the gateway in release mode with
PostgreSQL logging on (a throwaway database on 127.0.0.1:5432), and drives both with `oha`
(cargo install oha) at fixed rates and at saturation, non-streaming and streaming. It prints the
added latency (gateway minus direct) at p50/p90/p99/p99.9 — the first two rows are one connection in a
closed loop, the tail a single caller sees — the gateway's own share of it (from its overhead
histogram), the throughput ratio, the gateway's CPU time per request against the upstream's and its
peak RSS, then checks that every request answered by the gateway is in
PostgreSQL exactly once. `--soak SECONDS` adds a soak at 500 req/s that samples the RSS.

A second table splits the CPU time of every call between the load generator, the upstream, the
gateway and PostgreSQL, direct and through the gateway. The "isolated" saturation runs put the load
generator and the upstreams on one half of the CPUs and a second gateway (started there, so its
runtime sizes itself to them) with its PostgreSQL backends on the other half — the layout of
separate machines; every other run shares all CPUs between everything. `--only REGEX` runs the
scenarios whose name matches; `--config YAML` appends settings to both gateways' configuration
(e.g. `--config 'writer: { flush_interval_ms: 10 }'`) to compare them side by side.

Each run also prints the VM's steal time during each direct and gateway run (a tail that moves with
it is the host's); `--sched` records `perf sched` during the one-connection runs and prints what
held the CPU while a call's threads waited for one (`bench/sched_blame.py`).

`--floor` also runs every scenario through `examples/floor_proxy.rs`, a proxy that only forwards
(no parsing, record, metrics or heuristics) on the gateway's stack, once with reqwest as its client
and once with hyper-util's: the latency and CPU any proxy built this way adds on this machine, so
what of the gateway's overhead is its own work.

    python3 bench/overhead.py                       # ~3.5 minutes
    python3 bench/overhead.py --only '1 conn' --duration 10   # the one-connection tail
    python3 bench/overhead.py --duration 20 --soak 600
    python3 bench/overhead.py --floor --only saturated        # against the forward-only floor
    python3 bench/overhead.py --env TOKIO_WORKER_THREADS=1     # a setting of the gateways' environment
    python3 bench/overhead.py --only '1 conn' --sched          # the tail's off-CPU side (linux-perf)

Numbers from one run on one machine: the load generator, both upstreams, PostgreSQL and the
gateway all share its cores, so read the ratios, not the absolute values.
"""

import argparse
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

import sched_blame

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PG_ADMIN = os.environ.get("LQO_BENCH_PG", "postgres://postgres@127.0.0.1:5432/postgres")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, deadline_s=30):
    end = time.time() + deadline_s
    while time.time() < end:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"bench: {url} did not come up")


def psql(sql, db_url=PG_ADMIN):
    out = subprocess.run(
        ["psql", db_url, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


def cpu_seconds(pid):
    """utime + stime of a process, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def proc_status(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])  # kB
    return 0


def children_cpu():
    """CPU seconds of the waited-for children (the load generator runs)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def postgres_cpu():
    """CPU seconds of every live PostgreSQL process (backends, WAL writer, checkpointer...)."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as f:
                if f.read().strip() != "postgres":
                    continue
            total += cpu_seconds(int(entry))
        except (OSError, ValueError, IndexError):
            pass  # the process ended meanwhile
    return total


def stop_processes(procs, timeout=30):
    """Terminates every process of `procs` still running, waits for each, kills what will not stop."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()


def scrape_metrics(port):
    """The text of a gateway's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return r.read().decode()


def overhead_buckets(port):
    """The gateway's own `lqo_gateway_overhead_seconds` histogram for Chat Completions, summed
    over model versions: {upper bound: cumulative count}."""
    buckets = {}
    for m in re.finditer(r'^lqo_gateway_overhead_seconds_bucket\{([^}]*)\} (\S+)$', scrape_metrics(port), re.M):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        if labels.get("endpoint") == "chat_completions":
            le = float(labels["le"])
            buckets[le] = buckets.get(le, 0) + float(m.group(2))
    return buckets


def bucket_quantile(before, after, q):
    """The upper bound of the bucket holding quantile `q` of the observations between two scrapes."""
    total = after.get(float("inf"), 0) - before.get(float("inf"), 0)
    if total <= 0:
        return None
    for le in sorted(after):
        if after[le] - before.get(le, 0) >= q * total:
            return le
    return None


def steal_ms():
    """Milliseconds of CPU time the hypervisor gave to others while this VM's vCPUs wanted to run
    (the `steal` column of /proc/stat's `cpu` line, summed over CPUs; 0 on bare metal)."""
    with open("/proc/stat") as f:
        fields = f.readline().split()
    return int(fields[8]) * 1000 / os.sysconf("SC_CLK_TCK") if len(fields) > 8 else 0.0


def pin(pid, cpus):
    """Moves every thread of a running process onto `cpus` (a taskset list like "0" or "0-1")."""
    subprocess.run(["taskset", "-a", "-p", "-c", cpus, str(pid)], check=True, capture_output=True)


def oha(url, body, duration, rate, connections, cpus=None):
    cmd = [
        "oha", "--no-tui", "--output-format", "json", "-z", f"{duration}s",
        "-c", str(connections), "-m", "POST", "-T", "application/json", "-d", body,
    ]
    if rate:
        cmd += ["-q", str(rate), "--latency-correction"]
    cmd.append(url)
    if cpus:
        cmd = ["taskset", "-c", cpus] + cmd
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def sched_recorded(tmp, tag, seconds, run):
    """Runs `run()` under `perf sched record -a` for its first `seconds`; returns run()'s result and
    the path of the `perf sched timehist` text."""
    data, text = os.path.join(tmp, f"sched-{tag}.data"), os.path.join(tmp, f"sched-{tag}.txt")
    rec = subprocess.Popen(["perf", "sched", "record", "-a", "-o", data, "--", "sleep", str(seconds)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    result = run()
    if rec.wait() != 0:
        raise SystemExit("bench: perf sched record failed (apt-get install linux-perf; root or "
                         "kernel.perf_event_paranoid <= -1)")
    with open(text, "w") as out:
        subprocess.run(["perf", "sched", "timehist", "-i", data], stdout=out, stderr=subprocess.DEVNULL, check=True)
    os.unlink(data)
    return result, text


def body(model, stream):
    b = {"model": model, "messages": [{"role": "user", "content": "Benchmark prompt: say hi."}]}
    if stream:
        b["stream"] = True
        b["stream_options"] = {"include_usage": True}
    return json.dumps(b)


def ms(x):
    return x * 1000.0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=8, help="seconds per measurement (default 8)")
    ap.add_argument("--soak", type=int, default=0, help="seconds of soak at 500 req/s (0 = none)")
    ap.add_argument("--skip-build", action="store_true", help="use the existing target/release/lqo")
    ap.add_argument("--bin", help="gateway binary to use instead of target/release/lqo (implies --skip-build)")
    ap.add_argument("--log-level", default="info", help="gateway LOG_LEVEL (default info, as deployed)")
    ap.add_argument("--config", default="",
                    help="YAML appended to the gateways' configuration, e.g. 'writer: { flush_interval_ms: 20 }'")
    ap.add_argument("--only", help="run only the scenarios whose name matches this regular expression")
    ap.add_argument("--floor", action="store_true",
                    help="also run each scenario through the forward-only proxy of examples/floor_proxy.rs "
                         "(reqwest and hyper-util clients): the floor under any proxy's overhead")
    ap.add_argument("--judge", type=float, default=0.0,
                    help="LLM-judge sample rate (default 0: the judge's own upstream calls and database "
                         "work would be measured as gateway overhead)")
    ap.add_argument("--sched", action="store_true",
                    help="record `perf sched` (linux-perf) during the one-connection runs, direct and through "
                         "the gateway, and print which processes held the CPU while a call's threads waited "
                         "for one (bench/sched_blame.py); perf's own recording perturbs those runs a little")
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                    help="set an environment variable for the gateways only (repeatable), e.g. "
                         "TOKIO_WORKER_THREADS=1")
    args = ap.parse_args()
    gateway_env = dict(e.split("=", 1) for e in args.env)

    if not shutil.which("oha"):
        print("bench: installing oha (cargo install oha --locked)", flush=True)
        subprocess.run(["cargo", "install", "oha", "--locked"], check=True)
    if not (args.skip_build or args.bin):
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    # Absolute: the programs are started in a temporary directory.
    lqo = os.path.abspath(args.bin) if args.bin else os.path.join(ROOT, "target", "release", "lqo")
    floor_bin = os.path.join(ROOT, "target", "release", "examples", "floor_proxy")
    if args.floor and not (args.skip_build and os.path.exists(floor_bin)):
        subprocess.run(["cargo", "build", "--release", "--quiet", "--example", "floor_proxy"], cwd=ROOT, check=True)

    tmp = tempfile.mkdtemp(prefix="lqo-bench.")
    db = "lqo_bench_" + uuid.uuid4().hex[:12]
    procs = []

    def cleanup(*_):
        stop_processes(procs)
        try:
            psql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        except subprocess.CalledProcessError as e:
            print(f"bench: could not drop {db}: {e.stderr}", file=sys.stderr)
        shutil.rmtree(tmp, ignore_errors=True)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))
    try:
        psql(f'CREATE DATABASE "{db}"')
        db_url = PG_ADMIN.rsplit("/", 1)[0] + "/" + db
        ports = {"up0": free_port(), "up50": free_port(), "gw": free_port()}
        devnull = subprocess.DEVNULL
        for name, latency in (("up0", 0), ("up50", 50)):
            procs.append(subprocess.Popen(
                [lqo, "mock-upstream", "--port", str(ports[name]), "--latency-ms", str(latency)],
                stdout=devnull, stderr=devnull))
        cfg = os.path.join(tmp, "lqo.yaml")
        with open(cfg, "w") as f:
            f.write(f"""
providers:
  up0: {{ kind: openai_chat, base_url: "http://127.0.0.1:{ports['up0']}/v1" }}
  up50: {{ kind: openai_chat, base_url: "http://127.0.0.1:{ports['up50']}/v1" }}
models:
  bench-0ms: {{ provider: up0, upstream_model: bench-upstream, pricing: {{ input_per_1m: 0.25, output_per_1m: 2.0 }} }}
  bench-50ms: {{ provider: up50, upstream_model: bench-upstream, pricing: {{ input_per_1m: 0.25, output_per_1m: 2.0 }} }}
default_model: bench-0ms
judge: {{ enabled: {"true" if args.judge > 0 else "false"}, sample_rate: {args.judge if args.judge > 0 else 0.1} }}
{args.config}
""")
        # Isolated runs give the load generator and the upstreams half of the CPUs and a second
        # gateway, started on the other half (so its runtime sizes itself to them, as on a machine
        # of that size), with its PostgreSQL backends, the other half: how much traffic one
        # gateway core carries next to one core of client and upstream. The other runs share
        # every CPU between all of them.
        ncpu = os.cpu_count() or 1
        cpu_list = lambda lo, hi: str(lo) if lo == hi else f"{lo}-{hi}"  # taskset syntax
        half = max(ncpu // 2, 1)
        all_cpus, load_cpus = cpu_list(0, ncpu - 1), cpu_list(0, half - 1)
        gw_cpus = cpu_list(half, ncpu - 1) if ncpu >= 2 else all_cpus  # isolated runs need 2 CPUs
        env = dict(os.environ, LQO_CONFIG=cfg, DATABASE_URL=db_url, LLM_API_KEY="bench-dummy-key",
                   LOG_LEVEL=args.log_level, PORT=str(ports["gw"]))
        env.update(gateway_env)
        gw_log = open(os.path.join(tmp, "gateway.log"), "w")
        gw = subprocess.Popen([lqo, "serve"], env=env, stdout=gw_log, stderr=subprocess.STDOUT, cwd=tmp)
        procs.append(gw)
        gateways = [(gw, ports["gw"])]
        if ncpu >= 2:
            ports["gw_iso"] = free_port()
            iso_dir = os.path.join(tmp, "isolated")  # its own spool directory
            os.mkdir(iso_dir)
            gw_iso = subprocess.Popen(["taskset", "-c", gw_cpus, lqo, "serve"],
                                      env=dict(env, PORT=str(ports["gw_iso"]),
                                               DATABASE_URL=db_url + "?application_name=lqo-bench-isolated"),
                                      stdout=gw_log,
                                      stderr=subprocess.STDOUT, cwd=iso_dir)
            procs.append(gw_iso)
            gateways.append((gw_iso, ports["gw_iso"]))
        # The forward-only floor (--floor): one proxy per client kind and upstream, and for the
        # isolated rows one per client kind on the gateway's half of the CPUs.
        floor_kinds = ("reqwest", "hyper") if args.floor else ()
        floors = {}  # (kind, upstream, isolated) -> (process, port)
        for kind in floor_kinds:
            for up, isolated in (("0ms", False), ("50ms", False), ("0ms", True)):
                if isolated and ncpu < 2:
                    continue
                port = free_port()
                up_port = ports["up0" if up == "0ms" else "up50"]
                cmd = [floor_bin, "--port", str(port), "--upstream", f"http://127.0.0.1:{up_port}",
                       "--client", kind]
                if isolated:
                    cmd = ["taskset", "-c", gw_cpus] + cmd
                proc = subprocess.Popen(cmd, stdout=devnull, stderr=gw_log)
                procs.append(proc)
                floors[(kind, up, isolated)] = (proc, port)
                ports[f"floor-{kind}-{up}{'-iso' if isolated else ''}"] = port
        for name in ports:
            wait_http(f"http://127.0.0.1:{ports[name]}/health")

        # Warm both paths (connection pools, tokenizer, allocator).
        answered = 0
        for up in ("up0", "up50"):
            oha(f"http://127.0.0.1:{ports[up]}/v1/chat/completions", body("bench-upstream", False), 2, 200, 8)
        for _, port in gateways:
            for model in ("bench-0ms", "bench-50ms"):
                warm = oha(f"http://127.0.0.1:{port}/v1/chat/completions", body(model, False), 2, 200, 8)
                answered += warm["statusCodeDistribution"].get("200", 0)
        for _, port in floors.values():
            oha(f"http://127.0.0.1:{port}/v1/chat/completions", body("bench-upstream", False), 2, 200, 8)

        scenarios = [
            # name, upstream, stream, rate (None = saturation), connections, isolated
            # One connection, closed loop: the tail a single caller sees (p99.9 below).
            ("0ms  1 conn", "0ms", False, None, 1, False),
            ("0ms  1 conn stream", "0ms", True, None, 1, False),
            ("0ms    500 rps", "0ms", False, 500, 16, False),
            ("0ms   1000 rps", "0ms", False, 1000, 32, False),
            ("0ms   2000 rps", "0ms", False, 2000, 64, False),
            ("0ms  saturated", "0ms", False, None, 64, False),
            ("0ms  saturated isolated", "0ms", False, None, 64, True),
            ("0ms   1000 rps stream", "0ms", True, 1000, 32, False),
            ("0ms  saturated stream", "0ms", True, None, 64, False),
            ("0ms  sat. stream isolated", "0ms", True, None, 64, True),
            ("50ms  500 rps", "50ms", False, 500, 64, False),
            ("50ms 2000 rps", "50ms", False, 2000, 256, False),
            ("50ms 1000 rps stream", "50ms", True, 1000, 128, False),
        ]
        if ncpu < 2:
            scenarios = [sc for sc in scenarios if not sc[5]]
        if args.only:
            scenarios = [sc for sc in scenarios if re.search(args.only, sc[0])]
        upstream_pid = {"0ms": procs[0].pid, "50ms": procs[1].pid}

        def place(isolated):
            for pid in upstream_pid.values():
                pin(pid, load_cpus if isolated else all_cpus)
            if isolated:
                # The isolated gateway's database work counts on its side of the machine.
                backends = psql("SELECT pid FROM pg_stat_activity "
                                "WHERE application_name = 'lqo-bench-isolated'").split()
                for pid in backends:
                    pin(pid, gw_cpus)
                print(f"bench: {len(backends)} PostgreSQL backends of the isolated gateway on CPUs {gw_cpus}",
                      flush=True)

        def role(name, pid):
            """The chain of a call, for --sched: the load generator, the gateway, the upstream."""
            if name.startswith("oha"):
                return "load generator"
            return {gw.pid: "gateway", procs[0].pid: "upstream 0ms", procs[1].pid: "upstream 50ms"}.get(pid)

        rows = []
        for name, up, stream, rate, conns, isolated in scenarios:
            up_port = ports["up0" if up == "0ms" else "up50"]
            if isolated:
                place(True)
            cpus = load_cpus if isolated else None
            g, g_port = gateways[1] if isolated else gateways[0]
            c0 = (children_cpu(), cpu_seconds(upstream_pid[up]))
            s0 = steal_ms()
            # A tail needs enough calls: the one-connection rows run at least 10 s.
            duration = max(args.duration, 10) if conns == 1 else args.duration
            sched = args.sched and conns == 1
            recorded = (lambda tag, run: sched_recorded(tmp, f"{len(rows)}-{tag}", duration - 1, run)) if sched \
                else (lambda tag, run: (run(), None))
            direct, sched_direct = recorded("direct", lambda: oha(
                f"http://127.0.0.1:{up_port}/v1/chat/completions", body("bench-upstream", stream), duration, rate,
                conns, cpus))
            c1 = (children_cpu(), cpu_seconds(upstream_pid[up]), cpu_seconds(g.pid), postgres_cpu())
            s1 = steal_ms()
            h1 = overhead_buckets(g_port)
            via, sched_via = recorded("gateway", lambda: oha(
                f"http://127.0.0.1:{g_port}/v1/chat/completions", body(f"bench-{up}", stream), duration, rate,
                conns, cpus))
            c2 = (children_cpu(), cpu_seconds(upstream_pid[up]), cpu_seconds(g.pid), postgres_cpu())
            s2 = steal_ms()
            h2 = overhead_buckets(g_port)
            pcts = ("p50", "p90", "p99", "p99.9")
            per = lambda a, b, n: (b - a) / max(n, 1) * 1e6
            non_200 = lambda res: {k: v for k, v in res["statusCodeDistribution"].items() if k != "200"}
            floor = {}
            for kind in floor_kinds:
                fproc, fport = floors[(kind, up, isolated)]
                f1 = cpu_seconds(fproc.pid)
                res = oha(f"http://127.0.0.1:{fport}/v1/chat/completions",
                          body("bench-upstream", stream), duration, rate, conns, cpus)
                f2 = cpu_seconds(fproc.pid)
                n = res["statusCodeDistribution"].get("200", 0)
                floor[kind] = {
                    "latency": [ms(res["latencyPercentiles"][p]) for p in pcts],
                    "cpu": per(f1, f2, n),
                    "errors": non_200(res),
                }
            if isolated:
                place(False)
            n_direct = max(direct["statusCodeDistribution"].get("200", 0), 1)
            ok = via["statusCodeDistribution"].get("200", 0)
            answered += ok
            bad = non_200(via)
            dp, gp = direct["latencyPercentiles"], via["latencyPercentiles"]
            rows.append({
                "name": name,
                "direct": [ms(dp[p]) for p in pcts],
                "gateway": [ms(gp[p]) for p in pcts],
                "saturated": rate is None and conns > 1,
                "rps_direct": direct["summary"]["requestsPerSec"],
                "rps_gateway": via["summary"]["requestsPerSec"],
                # µs of CPU per call of each process: direct run, then the run through the gateway
                "cpu_direct": [per(c0[0], c1[0], n_direct), per(c0[1], c1[1], n_direct)],
                "cpu_via": [per(c1[0], c2[0], ok), per(c1[1], c2[1], ok), per(c1[2], c2[2], ok),
                            per(c1[3], c2[3], ok)],
                "errors": bad or via.get("errorDistribution") or {},
                # the gateway's own share of each call, from its histogram (bucket upper bounds)
                "inside": [bucket_quantile(h1, h2, q) for q in (0.5, 0.9, 0.99, 0.999)],
                "floor": floor,
                # the VM's steal time during each run (ms, all CPUs): the host running something
                # else while a vCPU had work, which the run's tail absorbs
                "steal": [s1 - s0, s2 - s1],
                "sched": None if not sched else [
                    sched_blame.report(sched_blame.blame(sched_blame.parse(path), role))
                    for path in (sched_direct, sched_via)],
            })
            print(f"bench: {name}: done", flush=True)

        print()
        print("Gateway vs direct to the mock upstream (latency in ms; added = gateway - direct)")
        hdr = f"{'scenario':26} {'direct p50/p90/p99/p99.9':>28} {'gateway p50/p90/p99/p99.9':>28} {'added p50/p90/p99/p99.9':>28} {'rps direct':>10} {'rps gw':>8} {'ratio':>6} {'gw CPU/req':>10}"
        print(hdr)
        print("-" * len(hdr))
        for r in rows:
            added = [g - d for g, d in zip(r["gateway"], r["direct"])]
            fmt = lambda v: "/".join(f"{x:.3f}" for x in v)
            ratio = r["rps_gateway"] / r["rps_direct"] if r["rps_direct"] else 0
            print(f"{r['name']:26} {fmt(r['direct']):>28} {fmt(r['gateway']):>28} {fmt(added):>28} "
                  f"{r['rps_direct']:>10.0f} {r['rps_gateway']:>8.0f} {ratio:>6.2f} {r['cpu_via'][2]:>8.0f}µs"
                  + (f"  non-200: {r['errors']}" if r["errors"] else ""))

        print()
        print("The gateway's own time per call (its lqo_gateway_overhead_seconds: from the request's arrival in the"
              " router to the upstream call, and from the answer to the record; the upper bound of the bucket"
              " holding each quantile, ms) against the added latency. What is added beyond it lies in the upstream"
              " call (the HTTP client's send and read, the second pair of loopback hops, the wake-ups of each"
              " process and thread on the way) or in hyper's server before the router")
        hdr1 = (f"{'scenario':26} {'inside p50/p90/p99/p99.9':>28} {'added p50/p90/p99/p99.9':>28}"
                f" {'steal ms direct/gateway':>24}")
        print(hdr1)
        print("-" * len(hdr1))
        for r in rows:
            inside = "/".join("?" if v is None else ("inf" if v == float("inf") else f"{v * 1000:g}")
                              for v in r["inside"])
            added = "/".join(f"{g - d:.3f}" for g, d in zip(r["gateway"], r["direct"]))
            print(f"{r['name']:26} {inside:>28} {added:>28} {r['steal'][0]:>12.0f}/{r['steal'][1]:<11.0f}")

        print()
        print("CPU time per call by process (µs; from /proc and getrusage). Direct: load generator + upstream."
              " Through the gateway: the same two, plus the gateway and PostgreSQL.")
        hdr2 = f"{'scenario':26} {'direct load/upstream':>21} {'total':>6} {'gateway run load/upstream/gateway/postgres':>44} {'total':>6}"
        print(hdr2)
        print("-" * len(hdr2))
        for r in rows:
            d, v = r["cpu_direct"], r["cpu_via"]
            print(f"{r['name']:26} {'/'.join(f'{x:.0f}' for x in d):>21} {sum(d):>6.0f} "
                  f"{'/'.join(f'{x:.0f}' for x in v):>44} {sum(v):>6.0f}")
        print(f"(isolated: load generator and upstreams on CPUs {load_cpus}, gateway and its PostgreSQL "
              f"backends on CPUs {gw_cpus}; other rows share all {ncpu} CPUs)")

        print()
        print("Gateway CPU per call against the mock upstream's, which parses the same JSON and answers it"
              " (µs; targets at saturation: <= 1.2x, streamed <= 1.5x). \"upstream\" is the upstream as measured"
              " in the direct run; \"same run\" divides by the upstream's CPU per call in the gateway's own run,"
              " where both programs ran at the same moment on the same machine: on a shared VM whose speed drifts"
              " between runs, that ratio is the steadier one")
        hdr3 = (f"{'scenario':26} {'upstream':>9} {'gateway':>9} {'ratio':>6} {'upstream':>9} {'same run':>9}"
                f" {'postgres':>9}")
        print(hdr3)
        print("-" * len(hdr3))
        for r in rows:
            up, gateway_cpu, pg = r["cpu_direct"][1], r["cpu_via"][2], r["cpu_via"][3]
            up_same = r["cpu_via"][1]
            print(f"{r['name']:26} {up:>9.0f} {gateway_cpu:>9.0f} {gateway_cpu / up if up else 0:>5.2f}x"
                  f" {up_same:>9.0f} {gateway_cpu / up_same if up_same else 0:>8.2f}x {pg:>9.0f}"
                  + ("  (saturated)" if r["saturated"] else ""))

        if any(r["sched"] for r in rows):
            print()
            print("Off-CPU (--sched, `perf sched record -a` during the first seconds of each run): the wake-ups of the"
                  " call's threads that waited for a CPU, what ran on that CPU meanwhile, and how much of the wait"
                  " another CPU sat idle")
            for r in rows:
                if r["sched"]:
                    for side, text in zip(("direct", "gateway"), r["sched"]):
                        print(f"{r['name']}, {side}: {text}")

        if floor_kinds:
            print()
            print("Against the floor: the same calls through examples/floor_proxy.rs, a proxy that only forwards"
                  " (no parsing, record, metrics or heuristics) on the gateway's stack, with reqwest (the"
                  " gateway's client) and with hyper-util's client. Added latency p50/p99/p99.9 (ms, minus"
                  " direct); CPU per call (µs) and its ratio to the upstream's in the direct run")
            hdr4 = (f"{'scenario':26} {'added: floor hyper':>20} {'floor reqwest':>20} {'gateway':>20} "
                    f"{'CPU: hyper':>15} {'reqwest':>15} {'gateway':>15} {'gw - reqwest':>12}")
            print(hdr4)
            print("-" * len(hdr4))
            for r in rows:
                up = r["cpu_direct"][1]
                added = lambda lat: "/".join(f"{lat[i] - r['direct'][i]:.2f}" for i in (0, 2, 3))
                cpu = lambda c: f"{c:.0f} ({c / up if up else 0:.2f}x)"
                fh, fr = r["floor"]["hyper"], r["floor"]["reqwest"]
                errors = {k: f["errors"] for k, f in r["floor"].items() if f["errors"]}
                print(f"{r['name']:26} {added(fh['latency']):>20} {added(fr['latency']):>20} "
                      f"{added(r['gateway']):>20} {cpu(fh['cpu']):>15} {cpu(fr['cpu']):>15} "
                      f"{cpu(r['cpu_via'][2]):>15} {r['cpu_via'][2] - fr['cpu']:>10.0f}µs"
                      + (f"  floor non-200: {errors}" if errors else ""))

        if args.soak:
            print(f"\nbench: soak {args.soak}s at 500 req/s, RSS sampled every 10 s", flush=True)
            soak = subprocess.Popen(
                ["oha", "--no-tui", "--output-format", "json", "-z", f"{args.soak}s", "-c", "16",
                 "-q", "500", "-m", "POST", "-T", "application/json", "-d", body("bench-0ms", False),
                 f"http://127.0.0.1:{ports['gw']}/v1/chat/completions"],
                stdout=subprocess.PIPE, text=True)
            samples = []
            start = time.time()
            while soak.poll() is None:
                time.sleep(10)
                samples.append((time.time() - start, proc_status(gw.pid, "VmRSS")))
            result = json.loads(soak.stdout.read())
            answered += result["statusCodeDistribution"].get("200", 0)
            steady = [kb for t, kb in samples if t >= 60] or [kb for _, kb in samples]
            lo, hi = min(steady), max(steady)
            mid = (lo + hi) / 2
            print("bench: soak RSS (MiB) after warm-up: first %.1f last %.1f min %.1f max %.1f → ±%.1f%%"
                  % (steady[0] / 1024, steady[-1] / 1024, lo / 1024, hi / 1024, (hi - lo) / 2 / mid * 100))
            print("bench: soak latency p50/p99 %.3f/%.3f ms, %d requests"
                  % (ms(result["latencyPercentiles"]["p50"]), ms(result["latencyPercentiles"]["p99"]),
                     result["statusCodeDistribution"].get("200", 0)))

        print(f"\ngateway peak RSS: {proc_status(gw.pid, 'VmHWM') / 1024:.1f} MiB"
              + (f" (isolated gateway: {proc_status(gateways[1][0].pid, 'VmHWM') / 1024:.1f} MiB)"
                 if len(gateways) > 1 else ""))
        # Every call the gateways handled must be in PostgreSQL exactly once. Their own
        # lqo_requests_total is the reference: oha stops waiting at its deadline, so a few calls
        # it gave up on were still answered and logged.
        handled = 0.0
        for _, port in gateways:
            handled += sum(float(line.rsplit(" ", 1)[1]) for line in scrape_metrics(port).splitlines()
                           if line.startswith("lqo_requests_total{"))
        handled = int(handled)
        deadline = time.time() + 60
        while True:
            count, distinct = map(int, psql(
                "SELECT count(*), count(DISTINCT request_id) FROM llm_logs", db_url).split("|"))
            if count >= handled or time.time() > deadline:
                break
            time.sleep(0.2)
        status = "OK" if count == handled == distinct else "MISMATCH"
        print(f"records: {handled} calls handled by the gateway ({answered} 200s seen by oha), "
              f"{count} rows in PostgreSQL, {distinct} distinct request_ids → {status}")
        if status != "OK":
            sys.exit(1)
    finally:
        cleanup()


if __name__ == "__main__":
    main()
