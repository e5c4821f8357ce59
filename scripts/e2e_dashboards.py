#!/usr/bin/env python3
"""Runs every Prometheus query of the Grafana dashboards against a live Prometheus and asserts
that each returns data (stdlib only; used by scripts/e2e-alerts.sh).

  e2e_dashboards.py --prom http://127.0.0.1:9090 [--var model_version=gpt-5-mini]
                    [--skip-uid lqo-quality] [--allow-empty REGEX] [dashboards...]

Grafana variables are substituted the way Grafana would for one selected value:
$model_version / ${model_version} / ${model_version:regex} -> the --var value,
$__rate_interval -> --rate-interval (default 30s), $__interval -> 15s, $__range -> --range (5m),
$__range_s -> its seconds. Variable queries (label_values(metric, label)) are checked through
/api/v1/label/<label>/values?match[]=metric. Prometheus annotation queries (deploy marks) run like
panel queries. PostgreSQL targets and variables are skipped (scripts/e2e_sql_panels.py runs them).
A query "returns data" when Prometheus answers success with at least one series (a NaN value,
e.g. 0/0 before any error, counts: the series exists). Panels whose title matches --allow-empty
may be empty (reported, not failed).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import sys
import urllib.parse
import urllib.request


def duration_seconds(d: str) -> int:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    total = 0.0
    for n, u in re.findall(r"(\d+)(ms|s|m|h|d|w)", d):
        total += int(n) * units[u]
    return int(total)


def substitute(expr: str, variables: dict[str, str], rate_interval: str, rng: str) -> str:
    rs = str(duration_seconds(rng))
    repl = [
        (r"\$\{__rate_interval\}|\$__rate_interval", rate_interval),
        (r"\$\{__interval\}|\$__interval", "15s"),
        (r"\$\{__range_s\}|\$__range_s", rs),
        (r"\$\{__range\}|\$__range", rng),
    ]
    for pat, val in repl:
        expr = re.sub(pat + r"(?![a-zA-Z0-9_])", val, expr)

    def var(m: re.Match) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        if name not in variables:
            raise KeyError(name)
        return variables[name]

    return re.sub(r"\$\{([a-zA-Z0-9_]+)(?::[a-z]+)?\}|\$([a-zA-Z_][a-zA-Z0-9_]*)|\[\[([a-zA-Z0-9_]+)\]\]",
                  var, expr)


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=15) as r:  # noqa: S310 (local test Prometheus)
        return json.load(r)


def query(prom: str, expr: str) -> tuple[bool, str, int]:
    url = f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        body = get(url)
    except urllib.error.HTTPError as e:
        try:
            err = json.load(e).get("error", str(e))
        except ValueError:
            err = str(e)
        return False, f"HTTP {e.code}: {err}", 0
    except (urllib.error.URLError, TimeoutError) as e:
        return False, str(e), 0
    if body.get("status") != "success":
        return False, body.get("error", "no success"), 0
    res = body["data"]["result"]
    n = len(res) if isinstance(res, list) else 1
    return True, "", n


def main(argv: list[str]) -> int:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dashboards", nargs="*")
    ap.add_argument("--prom", required=True)
    ap.add_argument("--var", action="append", default=[], metavar="NAME=VALUE")
    ap.add_argument("--skip-uid", action="append", default=[])
    ap.add_argument("--allow-empty", default="", help="regex of panel titles that may be empty")
    ap.add_argument("--rate-interval", default="30s")
    ap.add_argument("--range", default="5m")
    args = ap.parse_args(argv)
    variables = dict(v.split("=", 1) for v in args.var)
    variables.setdefault("model_version", "gpt-5-mini")
    files = args.dashboards or sorted(glob.glob(os.path.join(root, "grafana/dashboards/*.json")))
    allow = re.compile(args.allow_empty) if args.allow_empty else None

    failures, empties, ok = [], [], 0
    for path in files:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
        uid = d.get("uid")
        if uid in args.skip_uid:
            print(f"e2e_dashboards: skip {uid} ({os.path.basename(path)})")
            continue
        for v in (d.get("templating") or {}).get("list") or []:
            q = v.get("query")
            q = q.get("query") if isinstance(q, dict) else q
            m = re.match(r"^\s*label_values\(\s*(.*?)\s*,\s*([a-zA-Z_]\w*)\s*\)\s*$", q or "")
            vds = v.get("datasource") or {}
            if v.get("type") != "query" or not m or (isinstance(vds, dict) and
                                                     vds.get("type") not in (None, "prometheus")):
                continue
            url = (f"{args.prom}/api/v1/label/{m.group(2)}/values?"
                   + urllib.parse.urlencode({"match[]": m.group(1)}))
            try:
                vals = get(url).get("data") or []
            except (urllib.error.URLError, ValueError) as e:
                vals, err = [], str(e)
            where = f"{uid}: variable {v.get('name')}"
            if variables.get(v.get("name")) and variables[v["name"]] not in vals:
                failures.append(f"{where}: {q} has no {variables[v['name']]!r} (got {vals})")
            elif not vals:
                failures.append(f"{where}: {q} returned no values")
            else:
                ok += 1

        def walk(panels):
            nonlocal ok
            for p in panels or []:
                if p.get("type") == "row":
                    walk(p.get("panels"))
                    continue
                for t in p.get("targets") or []:
                    ds = t.get("datasource") or p.get("datasource") or {}
                    if isinstance(ds, dict) and ds.get("type") not in (None, "prometheus"):
                        continue
                    expr = t.get("expr")
                    if not expr:
                        continue
                    where = f"{uid}: {p.get('title')!r} {t.get('refId')}"
                    try:
                        e = substitute(expr, variables, args.rate_interval, args.range)
                    except KeyError as k:
                        failures.append(f"{where}: no value for variable ${k.args[0]} (use --var)")
                        continue
                    good, err, n = query(args.prom, e)
                    if not good:
                        failures.append(f"{where}: query error: {err}\n      {e}")
                    elif n == 0:
                        if allow and allow.search(p.get("title") or ""):
                            empties.append(f"{where} (allowed)")
                        else:
                            failures.append(f"{where}: no data\n      {e}")
                    else:
                        ok += 1

        walk(d.get("panels"))

        for a in (d.get("annotations") or {}).get("list") or []:
            ds = a.get("datasource") or {}
            expr = a.get("expr") or (a.get("target") or {}).get("expr")
            if not isinstance(ds, dict) or ds.get("type") != "prometheus" or not expr:
                continue
            where = f"{uid}: annotation {a.get('name')!r}"
            try:
                e = substitute(expr, variables, args.rate_interval, args.range)
            except KeyError as k:
                failures.append(f"{where}: no value for variable ${k.args[0]} (use --var)")
                continue
            good, err, n = query(args.prom, e)
            if not good:
                failures.append(f"{where}: query error: {err}\n      {e}")
            elif n == 0:
                if allow and allow.search(a.get("name") or ""):
                    empties.append(f"{where} (allowed)")
                else:
                    failures.append(f"{where}: no data\n      {e}")
            else:
                ok += 1

    for e in empties:
        print(f"e2e_dashboards: empty but allowed: {e}")
    for f in failures:
        print(f"e2e_dashboards: FAIL {f}")
    print(f"e2e_dashboards: {ok} queries returned data, {len(empties)} allowed empty, "
          f"{len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
