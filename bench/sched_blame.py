#!/usr/bin/env python3
"""Who held the CPU while a call waited: the off-CPU side of the one-connection tail.

At one connection a call is a chain of wake-ups — the load generator writes, the gateway wakes,
writes to the upstream, the upstream wakes, and back. A wake-up that waits for a CPU stalls the whole
chain, so a few long waits are the p99. This reads `perf sched timehist` output (recorded with
`perf sched record -a`), finds every wake-up of the chain's threads that waited longer than a
threshold before it ran (timehist's "sch delay"), and charges each wait to whatever ran on that CPU
meanwhile, and notes how much of it another CPU sat idle — time the kernel could have run the
waiting thread elsewhere but did not.

    perf sched record -a -o sched.data -- sleep 5      # during a one-connection run
    perf sched timehist -i sched.data > sched.txt
    python3 bench/sched_blame.py sched.txt --chain oha --chain lqo --chain 'tokio-rt-worker'

`bench/overhead.py --sched` records and prints this for its one-connection runs (the chain there is
the load generator's, the gateway's and the upstream's processes, matched by pid).
"""

import argparse
import bisect
import collections
import re

LINE = re.compile(r"\s*([\d.]+)\s+\[(\d+)\]\s+(.+?)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s*$")
TASK = re.compile(r"^(.*)\[(\d+)(?:/(\d+))?\]$")


def parse(path):
    """[(start s, end s, cpu, name, pid, sch delay ms)] from `perf sched timehist` text: one line
    per time a task left a CPU, with the run's end time, its run time and its wait before it."""
    runs = []
    with open(path) as f:
        for line in f:
            m = LINE.match(line)
            if not m:
                continue
            end, cpu, task, delay, run = float(m[1]), int(m[2]), m[3].strip(), float(m[5]), float(m[6])
            t = TASK.match(task)
            name, pid = (t[1], int(t[3] or t[2])) if t else (task, 0)
            runs.append((end - run / 1000, end, cpu, name, pid, delay))
    return runs


def blame(runs, role, threshold_ms=0.5):
    """Every wait > threshold of a chain thread's run (`role(name, pid)` names its part of the
    chain, or None for a thread outside it), charged to the other runs on its CPU during the wait.
    Returns a dict of counters (see `report`)."""
    by_cpu = collections.defaultdict(list)
    for r in runs:
        by_cpu[r[2]].append(r)
    for cpu_runs in by_cpu.values():
        cpu_runs.sort(key=lambda r: r[1])
    ends = {cpu: [r[1] for r in cpu_runs] for cpu, cpu_runs in by_cpu.items()}

    def overlapping(cpu, ws, we):
        cpu_runs = by_cpu[cpu]
        i = bisect.bisect_right(ends[cpu], ws)
        while i < len(cpu_runs) and cpu_runs[i][0] < we:
            s, e, _, name, _, _ = cpu_runs[i]
            yield name, min(e, we) - max(s, ws)
            i += 1

    waits = collections.Counter()  # role -> number of waits
    waited = collections.Counter()  # role -> ms waited
    holders = collections.Counter()  # name of what ran meanwhile -> ms
    idle_elsewhere = 0.0
    total = 0.0
    for start, _, cpu, name, pid, delay in runs:
        part = role(name, pid) if delay > threshold_ms else None
        if part is None:
            continue
        ws, we = start - delay / 1000, start
        waits[part] += 1
        waited[part] += delay
        total += delay
        for holder, sec in overlapping(cpu, ws, we):
            if holder != "<idle>" and sec > 0:
                holders[re.sub(r"[:/]\d+$", "", holder)] += sec * 1000
        # The longest idle stretch of any other CPU during the wait.
        idle_elsewhere += max((sum(sec for holder, sec in overlapping(other, ws, we) if holder == "<idle>")
                               for other in by_cpu if other != cpu), default=0.0) * 1000
    return {"waits": waits, "waited": waited, "holders": holders, "total_ms": total,
            "idle_elsewhere_ms": idle_elsewhere, "seconds": (max(r[1] for r in runs) - min(r[0] for r in runs))
            if runs else 0.0}


def report(result, threshold_ms=0.5):
    n = sum(result["waits"].values())
    lines = [f"{n} wake-ups of the chain waited > {threshold_ms} ms for a CPU in {result['seconds']:.1f} s "
             f"({result['total_ms']:.0f} ms in all): "
             + ", ".join(f"{k} {v} ({result['waited'][k]:.0f} ms)" for k, v in result["waits"].most_common())]
    if n:
        held = sum(result["holders"].values()) or 1
        lines.append("  the CPU was held meanwhile by: "
                     + ", ".join(f"{k} {v:.0f} ms ({v / held:.0%})" for k, v in result["holders"].most_common(6)))
        lines.append(f"  another CPU was idle for {result['idle_elsewhere_ms'] / result['total_ms']:.0%} of that waiting")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("timehist", help="output of `perf sched timehist`")
    ap.add_argument("--chain", action="append", default=[],
                    help="a regular expression for a chain thread's name (repeatable)")
    ap.add_argument("--pid", action="append", type=int, default=[], help="a chain process id (repeatable)")
    ap.add_argument("--threshold-ms", type=float, default=0.5)
    args = ap.parse_args()
    if not (args.chain or args.pid):
        ap.error("name the chain with --chain or --pid")
    pattern = re.compile("|".join(args.chain)) if args.chain else None

    def role(name, pid):
        if pid in args.pid:
            return f"pid {pid}"
        return name if pattern and pattern.search(name) else None

    print(report(blame(parse(args.timehist), role, args.threshold_ms), args.threshold_ms))


if __name__ == "__main__":
    main()
