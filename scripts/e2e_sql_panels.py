#!/usr/bin/env python3
"""Runs every SQL query (rawSql) of the Grafana dashboards' PostgreSQL panels against a live
database through psql and asserts that each runs and returns rows (stdlib only; used by
scripts/e2e-alerts.sh). The rendering half (render_sql) is also used by scripts/check_dashboards.py.

  e2e_sql_panels.py --db-url postgres://postgres@127.0.0.1:5432/lqo_e2e_x
                    [--prom http://127.0.0.1:9090] [--var NAME=VALUE ...]
                    [--from now-1h] [--to now+5m] [--interval 1m] [--ds-uid postgres]
                    [--allow-empty REGEX] [--label TEXT] [dashboards...]

Every target whose datasource (the target's, else the panel's) has the PostgreSQL uid (--ds-uid)
or type is run, in every dashboard, rendered the way Grafana renders it:
  * template variables first (Grafana's frontend): $name, ${name}, ${name:format}, [[name]] with
    formats sqlstring, csv, raw, singlequote, doublequote, pipe, and the SQL datasource default
    (no format): each value quoted for a multi-value/"All" variable ('a','b'), the bare value
    (quotes doubled) otherwise. Values: --var NAME=VALUE (repeat for several values; VALUE $__all
    or All selects All), else the variable's saved current value. "All" is the variable's allValue
    (inserted unescaped) when set, else every option: the `query` of a custom variable, the
    label_values(metric, label) of a Prometheus query variable read from --prom.
    $__interval / $__interval_ms come from --interval; $__from / $__to are epoch milliseconds.
  * then the PostgreSQL backend macros, as grafana-postgresql-datasource writes them:
    $__timeFilter(c) -> c BETWEEN '<from>' AND '<to>' (RFC 3339, UTC), $__timeFrom(), $__timeTo(),
    $__time(c), $__timeEpoch(c), $__timeGroup(c, '1m'[, fill]) -> floor(extract(epoch from c)/60)*60,
    $__timeGroupAlias(...) -> ... AS "time", $__unixEpochFilter(c), $__unixEpochFrom()/To(),
    $__unixEpochNanoFilter(c), $__unixEpochNanoFrom()/To(), $__unixEpochGroup(Alias)(c, '1m').
Anything still looking like a variable or macro afterwards ($name, ${...}, [[...]]) fails the
query (a form this script does not know is a failure, not a silent pass).

A query passes when psql runs it without error (read-only transaction, statement timeout) and it
returns at least one row; a time_series query must also return a column named "time" (Grafana
refuses the frame otherwise). Panels whose title matches --allow-empty may return no rows.
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import glob
import io
import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request

ALL = "$__all"
UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
# Grafana frontend built-ins replaced before the query reaches the backend.
FRONTEND_BUILTINS = ("__interval_ms", "__interval", "__from", "__to", "__range_ms", "__range_s",
                     "__range")
MACRO_RE = re.compile(r"\$([_a-zA-Z0-9]+)\(([^)]*)\)")  # as in Grafana's postgres macros.go
VAR_RE = re.compile(r"\$\{([a-zA-Z0-9_]+)(?::([^}]*))?\}|\$([a-zA-Z_][a-zA-Z0-9_]*)"
                    r"|\[\[([a-zA-Z0-9_]+)(?::([^\]]*))?\]\]")
LEFTOVER_RE = re.compile(r"\$\{[^}]*\}|\$[a-zA-Z_][a-zA-Z0-9_]*|\[\[[^\]]*\]\]")


class RenderError(Exception):
    pass


def parse_duration(d: str) -> float:
    d = d.strip().strip("'")
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)", d)
    if not parts or "".join(n + u for n, u in parts) != d:
        raise RenderError(f"cannot parse interval {d!r}")
    return sum(float(n) * UNIT_S[u] for n, u in parts)


def parse_time(s: str, now: dt.datetime) -> dt.datetime:
    """now, now-1h, now+5m, or an RFC 3339 timestamp."""
    m = re.fullmatch(r"now(?:([+-])(\w+))?", s.strip())
    if m:
        if not m.group(1):
            return now
        secs = parse_duration(m.group(2))
        return now + dt.timedelta(seconds=secs if m.group(1) == "+" else -secs)
    t = dt.datetime.fromisoformat(s.replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)


def rfc3339(t: dt.datetime) -> str:
    """Go's time.RFC3339Nano for a UTC time: trailing zero fractions dropped, Z suffix."""
    t = t.astimezone(dt.timezone.utc)
    s = t.strftime("%Y-%m-%dT%H:%M:%S")
    if t.microsecond:
        s += ("." + f"{t.microsecond:06d}").rstrip("0")
    return s + "Z"


def _num(x: float) -> str:
    """Go's %v of a float64 (interval seconds): 60 -> 60, 0.5 -> 0.5."""
    return str(int(x)) if float(x).is_integer() else repr(x)


# ------------------------------------------------------------------ template variables
def quote_literal(v: str) -> str:
    return "'" + v.replace("'", "''") + "'"


def format_value(values: list[str], fmt: str | None, multi: bool, where: str) -> str:
    """Grafana's formatting of a variable's value(s) for an SQL datasource."""
    if fmt is None:  # the SQL datasource's interpolateVariable
        if multi or len(values) != 1:
            return ",".join(quote_literal(v) for v in values)
        return values[0].replace("'", "''")
    if fmt == "sqlstring":
        return ",".join(quote_literal(v) for v in values)
    if fmt in ("csv", "raw"):
        return ",".join(values)
    if fmt == "pipe":
        return "|".join(values)
    if fmt == "singlequote":
        return ",".join("'" + v.replace("'", "\\'") + "'" for v in values)
    if fmt == "doublequote":
        return ",".join('"' + v.replace('"', '\\"') + '"' for v in values)
    raise RenderError(f"{where}: unsupported variable format :{fmt}")


def custom_options(query: str) -> list[str]:
    """Values of a custom variable's query: "a,b" or "text : value, ..." (Grafana's syntax)."""
    out = []
    for part in re.split(r"(?<!\\),", query or ""):
        part = part.strip().replace("\\,", ",")
        if not part:
            continue
        m = re.match(r"^(.*?)\s+:\s+(.*)$", part)
        out.append(m.group(2).strip() if m else part)
    return out


def prom_label_values(prom: str, query: str) -> list[str] | None:
    m = re.match(r"^\s*label_values\(\s*(.*?)\s*,\s*([a-zA-Z_]\w*)\s*\)\s*$", query or "")
    if not m:
        return None
    url = f"{prom}/api/v1/label/{m.group(2)}/values?" + urllib.parse.urlencode({"match[]": m.group(1)})
    with urllib.request.urlopen(url, timeout=15) as r:  # noqa: S310 (local test Prometheus)
        return list(json.load(r).get("data") or [])


def is_pg(ds, ds_uid: str = "postgres", ds_type: str = "grafana-postgresql-datasource") -> bool:
    return isinstance(ds, dict) and (ds.get("uid") == ds_uid or ds.get("type") in
                                     (ds_type, "postgres"))


def resolve_variables(dashboard: dict, overrides: dict[str, list[str]], prom: str | None,
                      placeholder: str | None = None, db_url: str | None = None,
                      timeout_s: int = 20) -> dict[str, tuple[list[str] | str, bool]]:
    """name -> (values, multi) as Grafana would send them; values is a str for an unescaped
    custom allValue. "All" of a Prometheus query variable comes from --prom, of a PostgreSQL
    query variable from running its SQL (first column) on db_url. `placeholder` stands in for
    options that would need a live Prometheus or database (static checks)."""
    out: dict[str, tuple[list[str] | str, bool]] = {}
    for v in (dashboard.get("templating") or {}).get("list") or []:
        name, typ = v.get("name"), v.get("type")
        multi = bool(v.get("multi") or v.get("includeAll"))
        if name in overrides:
            sel = overrides[name]
        else:
            cur = (v.get("current") or {}).get("value")
            if cur is None:
                cur = v.get("query") if typ in ("textbox", "constant") else []
            sel = cur if isinstance(cur, list) else [cur]
        if sel and all(s in (ALL, "All") for s in sel) and (v.get("includeAll") or name in overrides):
            if v.get("allValue"):
                out[name] = (v["allValue"], multi)
                continue
            if typ == "custom":
                sel = custom_options(v.get("query"))
            elif typ == "query":
                q = v.get("query")
                q = q.get("query") if isinstance(q, dict) else q
                if placeholder is not None:
                    sel = [placeholder]
                elif is_pg(v.get("datasource")):
                    if not db_url:
                        raise RenderError(f"variable {name}: All needs the database (--db-url)")
                    good, err, _, rows = run_psql(db_url, q or "", timeout_s)
                    if not good:
                        raise RenderError(f"variable {name}: its query failed: {err}")
                    sel = [r[0] for r in rows if r]
                elif prom:
                    vals = prom_label_values(prom, q)
                    if vals is None:
                        raise RenderError(f"variable {name}: cannot resolve All of query {q!r}")
                    sel = vals
                else:
                    raise RenderError(f"variable {name}: All needs --prom (or use --var {name}=...)")
            else:
                sel = [o.get("value") for o in v.get("options") or [] if o.get("value") != ALL]
            if not sel:
                raise RenderError(f"variable {name}: All has no values")
        out[name] = ([str(s) for s in sel], multi)
    return out


def render_sql(sql: str, variables: dict[str, tuple[list[str] | str, bool]], t_from: dt.datetime,
               t_to: dt.datetime, interval: str = "1m") -> str:
    iv = parse_duration(interval)
    builtins = {
        "__interval": interval, "__interval_ms": str(int(iv * 1000)),
        "__from": str(int(t_from.timestamp() * 1000)), "__to": str(int(t_to.timestamp() * 1000)),
        "__range_s": str(int((t_to - t_from).total_seconds())),
        "__range_ms": str(int((t_to - t_from).total_seconds() * 1000)),
        "__range": f"{int((t_to - t_from).total_seconds())}s",
    }

    # 1. frontend: template variables and interval/range built-ins.
    def var(m: re.Match) -> str:
        name = m.group(1) or m.group(3) or m.group(4)
        fmt = m.group(2) if m.group(1) else m.group(5)
        if name in builtins:
            if fmt:
                raise RenderError(f"${{{name}:{fmt}}}: formats of built-ins are not supported")
            return builtins[name]
        if name.startswith("__"):
            return m.group(0)  # a backend macro or an unknown built-in: left for step 2
        if name not in variables:
            raise RenderError(f"undefined variable ${name}")
        values, multi = variables[name]
        if isinstance(values, str):  # custom allValue: inserted as is
            return values
        return format_value(values, fmt, multi, f"${name}")

    sql = VAR_RE.sub(var, sql)

    # 2. backend: the PostgreSQL datasource's macros.
    frm, to = rfc3339(t_from), rfc3339(t_to)

    def group(args: list[str], name: str) -> tuple[str, float]:
        if len(args) < 2:
            raise RenderError(f"${name} needs a column and an interval")
        return args[0], parse_duration(args[1])

    def macro(m: re.Match) -> str:
        name = m.group(1)
        args = [a.strip() for a in m.group(2).split(",")]
        if name == "__timeGroup":
            after = sql[m.end():m.end() + 1]
            if after == ",":  # pre-5.3 compatibility in Grafana: treated as the Alias form
                name = "__timeGroupAlias"
        col = args[0] if args and args[0] else None
        needs_col = {"__time", "__timeEpoch", "__timeFilter", "__unixEpochFilter",
                     "__unixEpochNanoFilter"}
        if name in needs_col and not col:
            raise RenderError(f"${name}() needs a column argument")
        if name == "__time":
            return f'{col} AS "time"'
        if name == "__timeEpoch":
            return f'extract(epoch from {col}) as "time"'
        if name == "__timeFilter":
            return f"{col} BETWEEN '{frm}' AND '{to}'"
        if name == "__timeFrom":
            return f"'{frm}'"
        if name == "__timeTo":
            return f"'{to}'"
        if name in ("__timeGroup", "__timeGroupAlias"):
            c, secs = group(args, name)
            expr = f"floor(extract(epoch from {c})/{_num(secs)})*{_num(secs)}"
            return expr + (' AS "time"' if name == "__timeGroupAlias" else "")
        if name in ("__unixEpochGroup", "__unixEpochGroupAlias"):
            c, secs = group(args, name)
            expr = f"floor(({c})/{_num(secs)})*{_num(secs)}"
            return expr + (' AS "time"' if name == "__unixEpochGroupAlias" else "")
        if name == "__unixEpochFilter":
            return f"{col} >= {int(t_from.timestamp())} AND {col} <= {int(t_to.timestamp())}"
        if name == "__unixEpochNanoFilter":
            return (f"{col} >= {int(t_from.timestamp()) * 10**9} AND "
                    f"{col} <= {int(t_to.timestamp()) * 10**9}")
        if name == "__unixEpochFrom":
            return str(int(t_from.timestamp()))
        if name == "__unixEpochTo":
            return str(int(t_to.timestamp()))
        if name == "__unixEpochNanoFrom":
            return str(int(t_from.timestamp()) * 10**9)
        if name == "__unixEpochNanoTo":
            return str(int(t_to.timestamp()) * 10**9)
        raise RenderError(f"unknown macro ${name}(...)")

    sql = MACRO_RE.sub(macro, sql)
    left = LEFTOVER_RE.findall(sql)
    if left:
        raise RenderError(f"not substituted: {', '.join(dict.fromkeys(left))}")
    return sql


# ------------------------------------------------------------------ dashboards
def sql_targets(dashboard: dict, ds_uid: str = "postgres",
                ds_type: str = "grafana-postgresql-datasource"):
    """(panel, target) of every target on the PostgreSQL datasource, rows included."""
    def walk(panels):
        for p in panels or []:
            yield from walk(p.get("panels"))
            if p.get("type") == "row":
                continue
            for t in p.get("targets") or []:
                ds = t.get("datasource") or p.get("datasource")
                if is_pg(ds, ds_uid, ds_type):
                    yield p, t

    yield from walk(dashboard.get("panels"))


def run_psql(db_url: str, sql: str, timeout_s: int) -> tuple[bool, str, list[str], list[list[str]]]:
    env = dict(os.environ)
    # Like Grafana's grafana_reader role: read only; and never hang the test.
    env["PGOPTIONS"] = (env.get("PGOPTIONS", "") + " -c default_transaction_read_only=on"
                        f" -c statement_timeout={timeout_s * 1000}").strip()
    env["PGCONNECT_TIMEOUT"] = "10"
    try:
        p = subprocess.run(["psql", "-X", "-q", "--csv", "-v", "ON_ERROR_STOP=1", "-d", db_url,
                            "-f", "-"], input=sql.rstrip().rstrip(";") + ";\n",
                           capture_output=True, text=True, timeout=timeout_s + 15, env=env)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, str(e), [], []
    if p.returncode != 0:
        return False, (p.stderr.strip() or f"psql exit {p.returncode}"), [], []
    rows = list(csv.reader(io.StringIO(p.stdout)))
    if not rows:
        return False, "psql printed no header", [], []
    return True, "", rows[0], rows[1:]


def main(argv: list[str]) -> int:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dashboards", nargs="*")
    ap.add_argument("--db-url", required=True, help="postgres://user@host:port/database")
    ap.add_argument("--prom", help="Prometheus URL, to resolve All of label_values variables")
    ap.add_argument("--var", action="append", default=[], metavar="NAME=VALUE",
                    help="select VALUE for variable NAME (repeat for several; $__all = All)")
    ap.add_argument("--from", dest="t_from", default="now-1h")
    ap.add_argument("--to", dest="t_to", default="now+5m")
    ap.add_argument("--interval", default="1m", help="$__interval (default 1m)")
    ap.add_argument("--ds-uid", default="postgres")
    ap.add_argument("--allow-empty", default="", help="regex of panel titles that may be empty")
    ap.add_argument("--label", default="", help="shown in the summary (e.g. the selection)")
    ap.add_argument("--timeout", type=int, default=20, help="statement timeout, seconds")
    ap.add_argument("-v", "--verbose", action="store_true", help="print each rendered query")
    args = ap.parse_args(argv)

    overrides: dict[str, list[str]] = {}
    for item in args.var:
        if "=" not in item:
            ap.error(f"--var {item!r}: expected NAME=VALUE")
        k, val = item.split("=", 1)
        overrides.setdefault(k, []).append(val)
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    t_from, t_to = parse_time(args.t_from, now), parse_time(args.t_to, now)
    files = args.dashboards or sorted(glob.glob(os.path.join(root, "grafana/dashboards/*.json")))
    allow = re.compile(args.allow_empty) if args.allow_empty else None
    tag = f" [{args.label}]" if args.label else ""

    failures, empties, ok, total = [], [], 0, 0
    print(f"e2e_sql_panels{tag}: time range {rfc3339(t_from)} .. {rfc3339(t_to)}, "
          f"$__interval {args.interval}")
    for path in files:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
        uid = d.get("uid")
        targets = list(sql_targets(d, args.ds_uid))
        if not targets:
            continue
        try:
            variables = resolve_variables(d, overrides, args.prom, db_url=args.db_url,
                                          timeout_s=args.timeout)
        except (RenderError, urllib.error.URLError, OSError, ValueError) as e:
            failures.append(f"{uid}: variables: {e}")
            total += len(targets)
            continue
        for v in (d.get("templating") or {}).get("list") or []:
            if v.get("type") != "query" or not is_pg(v.get("datasource"), args.ds_uid):
                continue
            total += 1
            q = v.get("query")
            q = q.get("query") if isinstance(q, dict) else q
            where = f"{uid}: variable {v.get('name')}"
            good, err, cols, rows = run_psql(args.db_url, q or "", args.timeout)
            if not good:
                failures.append(f"{where}: SQL error: {err}\n{q}")
            elif not rows:
                failures.append(f"{where}: no values\n{q}")
            else:
                ok += 1
                print(f"e2e_sql_panels{tag}: ok    {where}: {', '.join(r[0] for r in rows)}")
        for p, t in targets:
            total += 1
            where = f"{uid}: {p.get('title')!r} {t.get('refId')}"
            raw = t.get("rawSql")
            if not isinstance(raw, str) or not raw.strip():
                failures.append(f"{where}: no rawSql (builder-mode queries are not supported)")
                continue
            try:
                sql = render_sql(raw, variables, t_from, t_to, args.interval)
            except RenderError as e:
                failures.append(f"{where}: {e}")
                continue
            if args.verbose:
                print(f"--- {where}\n{sql}")
            good, err, cols, rows = run_psql(args.db_url, sql, args.timeout)
            if not good:
                failures.append(f"{where}: SQL error: {err}\n{sql}")
                print(f"e2e_sql_panels{tag}: FAIL  {where}: SQL error")
                continue
            if t.get("format") == "time_series" and "time" not in cols:
                failures.append(f"{where}: time_series query returns no column \"time\" "
                                f"(columns {cols})")
                print(f"e2e_sql_panels{tag}: FAIL  {where}: no time column")
                continue
            if not rows:
                if allow and allow.search(p.get("title") or ""):
                    empties.append(f"{where} (allowed)")
                    print(f"e2e_sql_panels{tag}: empty {where} (allowed)")
                else:
                    failures.append(f"{where}: no rows\n{sql}")
                    print(f"e2e_sql_panels{tag}: FAIL  {where}: no rows")
                continue
            ok += 1
            print(f"e2e_sql_panels{tag}: ok    {where}: {len(rows)} row(s), "
                  f"{len(cols)} column(s)")

    for f in failures:
        print(f"e2e_sql_panels{tag}: FAIL {f}")
    if total == 0:
        print(f"e2e_sql_panels{tag}: FAIL no PostgreSQL targets found in {len(files)} dashboard(s)")
        return 1
    print(f"e2e_sql_panels{tag}: {ok} SQL queries returned rows, {len(empties)} allowed empty, "
          f"{len(failures)} failed (of {total})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
