#!/usr/bin/env python3
"""Structure check of the provisioned Grafana dashboards (stdlib only).

  python3 scripts/check_dashboards.py [--dashboards 'grafana/dashboards/*.json']
                                      [--datasources 'grafana/provisioning/datasources/*.yml']

Fails (exit 1) unless, for every dashboard JSON:
  * it parses, has a non-empty uid (<= 40 chars, unique across the files) and a unique title;
  * every datasource reference (panels, targets, template variables, annotations) is an object
    with a uid that a provisioned datasource declares, with the same type when a type is given —
    no datasource names, no ${DS_...} import placeholders, no __inputs;
  * every panel except rows has at least one target with a query (expr / rawSql / query) and
    unique refIds; panel ids are unique within the dashboard;
  * the `model_version` template variable exists, multi-value with "All": on a dashboard of
    Prometheus panels a Prometheus query variable on label_values(lqo_requests_total,
    model_version); on a dashboard of PostgreSQL panels a PostgreSQL query variable that reads
    model_version from the database (the versions that have records). A dashboard mixes no
    Prometheus and PostgreSQL panels: the two variables would disagree;
  * every $variable used in a query is defined (or is a Grafana built-in);
  * every SQL query of a PostgreSQL panel (and of a PostgreSQL variable), rendered as Grafana
    would (scripts/e2e_sql_panels.py: variables, then $__timeFilter & co.; any macro or variable
    left over is an error), reads only the tables of SQL_TABLES and only columns that
    migrations/postgres/*.sql create for them (--migrations); a qualified column (s.score) must
    belong to the table its alias names. A lexical check, not a SQL parser: names followed by
    "(" are functions, names after AS, after ")" or after another name are aliases, SQL keywords
    and type names are skipped (a new keyword a query needs goes into SQL_WORDS); the e2e test
    runs the queries against a real database;
  * SQL time buckets follow the time range: $__timeGroup / $__timeGroupAlias take $__interval,
    never a fixed interval (a fixed 1m is 43,200 buckets over 30 days).
"""
from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import re
import sys

sys.dont_write_bytecode = True  # no scripts/__pycache__ from the import below
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_sql_panels  # noqa: E402 (same directory; stdlib only)

BUILTIN_VARS = {"__interval", "__interval_ms", "__rate_interval", "__rate_interval_ms", "__range",
                "__range_s", "__range_ms", "__from", "__to", "__timeFilter", "__timeFrom",
                "__timeTo", "__timeGroup", "__timeGroupAlias", "__unixEpochFilter",
                "__unixEpochGroup", "__unixEpochGroupAlias", "__unixEpochFrom", "__unixEpochTo",
                "__timeEpoch", "__unixEpochNanoFilter", "__schema", "__table", "__column",
                "__dashboard", "__org", "__user", "__name", "__value", "__field", "__series",
                "__all", "timeFilter", "__timezone"}
GRAFANA_BUILTIN_DS = {"-- Grafana --", "grafana", "-- Dashboard --", "-- Mixed --"}
QUERY_KEYS = ("expr", "rawSql", "query", "expression")
# The tables SQL panels may read (the grafana_reader role may read more; dashboards stay on these).
SQL_TABLES = ("llm_logs", "judge_scores", "judge_jobs", "feedback")
SQL_TABLE = "llm_logs"
# Words of the SQL the dashboards use that are not column names: keywords, type names, date parts.
SQL_WORDS = set("""
all and any array as asc at between both by case cast collate cross current default desc distinct else
end escape except exists false fetch filter first following for from full group having ilike in
inner intersect interval into is join last lateral leading left like limit natural next not
nothing null nulls offset on only or order outer over partition preceding range recursive right
row rows select similar some symmetric then ties to trailing true unbounded union unknown using
values when where window with within without zone
bigint bool boolean char character date decimal double float float4 float8 int int2 int4 int8
integer json jsonb numeric precision real smallint text time timestamp timestamptz timetz uuid
varchar varying
century day decade dow doy epoch hour isodow isoyear microseconds millennium milliseconds minute
month quarter second timezone week year
current_date current_time current_timestamp localtime localtimestamp
""".split())
# Functions whose argument list may contain FROM (not a table).
FROM_IN_ARGS = {"extract", "substring", "trim", "overlay", "position", "date_part"}
SQL_TOKEN_RE = re.compile(r"""(?P<comment>--[^\n]*|/\*.*?\*/)
  |(?P<string>[eE]?'(?:[^']|'')*')
  |(?P<dollar>\$(?P<tag>[a-zA-Z_]*)\$.*?\$(?P=tag)\$)
  |(?P<qident>"(?:[^"]|"")*")
  |(?P<number>\d+(?:\.\d*)?(?:[eE][+-]?\d+)?)
  |(?P<ident>[a-zA-Z_][a-zA-Z0-9_$]*)
  |(?P<cast>::)
  |(?P<op>[(),.;*])
  |(?P<other>\S)""", re.S | re.X)


def strip_sql_comments(sql: str) -> str:
    out = []
    for m in SQL_TOKEN_RE.finditer(sql):
        if not m.group("comment"):
            out.append(m.group(0))
    return " ".join(out)


def split_top(body: str, sep: str = ",") -> list[str]:
    """Splits on sep outside parentheses, strings and quoted identifiers."""
    parts, depth, cur = [], 0, []
    for m in SQL_TOKEN_RE.finditer(body):
        tok = m.group(0)
        if m.group("comment"):
            continue
        if tok == "(":
            depth += 1
        elif tok == ")":
            depth -= 1
        if tok == sep and depth == 0:
            parts.append(" ".join(cur))
            cur = []
        else:
            cur.append(tok)
    if cur:
        parts.append(" ".join(cur))
    return [p.strip() for p in parts if p.strip()]


def migration_columns(paths: list[str], table: str = SQL_TABLE) -> set[str]:
    """Columns of `table` after applying the migrations in order: CREATE TABLE, then ALTER TABLE
    ADD / DROP / RENAME COLUMN. DO $$ ... $$ blocks are ignored."""
    cols: list[str] = []
    ident = r'(?:"(?:[^"]|"")*"|[a-zA-Z_][a-zA-Z0-9_$]*)'

    def name(tok: str) -> str:
        return tok[1:-1].replace('""', '"') if tok.startswith('"') else tok.lower()

    def is_table(tok: str) -> bool:
        return name(tok.split(".")[-1]) == table

    for path in paths:
        with open(path, encoding="utf-8") as f:
            sql = f.read()
        tokens = [m for m in SQL_TOKEN_RE.finditer(sql) if not (m.group("comment") or m.group("dollar"))]
        text = " ".join(m.group(0) for m in tokens)
        for stmt in split_top(text, ";"):
            m = re.match(rf"(?is)^create\s+(?:unlogged\s+)?table\s+(?:if\s+not\s+exists\s+)?"
                         rf"({ident}(?:\s*\.\s*{ident})?)\s*\((.*)\)", stmt)
            if m and is_table(m.group(1).replace(" ", "")):
                for el in split_top(m.group(2)):
                    first = re.match(ident, el)
                    if first and first.group(0).lower() not in (
                            "constraint", "primary", "unique", "check", "foreign", "exclude", "like"):
                        c = name(first.group(0))
                        if c not in cols:
                            cols.append(c)
                continue
            m = re.match(rf"(?is)^alter\s+table\s+(?:if\s+exists\s+)?(?:only\s+)?"
                         rf"({ident}(?:\s*\.\s*{ident})?)\s+(.*)$", stmt)
            if not m or not is_table(m.group(1).replace(" ", "")):
                continue
            actions = m.group(2)
            r = re.match(rf"(?is)^rename\s+(?:column\s+)?({ident})\s+to\s+({ident})\s*$", actions)
            if r:
                if r.group(1).lower() == "to":
                    continue
                old, new = name(r.group(1)), name(r.group(2))
                cols = [new if c == old else c for c in cols]
                continue
            for act in split_top(actions):
                a = re.match(rf"(?is)^add\s+(?:column\s+)?(?:if\s+not\s+exists\s+)?({ident})", act)
                if a and a.group(1).lower() not in ("constraint", "primary", "unique", "check",
                                                    "foreign", "exclude"):
                    c = name(a.group(1))
                    if c not in cols:
                        cols.append(c)
                    continue
                dr = re.match(rf"(?is)^drop\s+(?:column\s+)?(?:if\s+exists\s+)?({ident})", act)
                if dr and dr.group(1).lower() not in ("constraint", "default", "not", "expression",
                                                      "identity"):
                    cols = [c for c in cols if c != name(dr.group(1))]
    return set(cols)


def sql_unknown_names(sql: str, columns: dict[str, set[str]] | set[str],
                      table: str = SQL_TABLE) -> list[str]:
    """Problems with the names a rendered query reads: tables not in `columns` (table -> its
    columns; a plain set means just `table`), columns that none of the query's tables has, and
    qualified columns (alias.column) that the alias's table lacks. Aliases (AS x, or a name right
    after ")" or after another name) and WITH names are allowed wherever they appear (ORDER BY an
    alias); a column qualified by a WITH name or subquery alias must exist in some known table."""
    if not isinstance(columns, dict):
        columns = {table: set(columns)}
    known = {t.lower(): cols for t, cols in columns.items()}
    toks = []
    for m in SQL_TOKEN_RE.finditer(sql):
        if m.group("comment"):
            continue
        kind = next(k for k in ("string", "dollar", "qident", "number", "ident", "cast", "op",
                                "other") if m.group(k) is not None)
        toks.append((kind, m.group(0)))
    aliases: set[str] = set()
    alias_table: dict[str, str] = {}   # alias (or table name) -> known table
    tables: set[str] = set()           # known tables the query reads
    ctes: set[str] = set()
    refs: list[tuple[str | None, str]] = []
    problems: list[str] = []
    stack: list[str | None] = []  # per open parenthesis: the function name before it, if any
    prev = (None, None)
    i = 0
    while i < len(toks):
        kind, tok = toks[i]
        low = tok.lower()
        nxt = toks[i + 1] if i + 1 < len(toks) else (None, None)
        if tok == "(":
            stack.append(prev[1].lower() if prev[0] == "ident" else None)
        elif tok == ")":
            if stack:
                stack.pop()
        elif kind == "ident":
            if nxt[1] == "(":
                pass  # a function (or IN / ANY / FILTER / OVER / WITHIN GROUP)
            elif (nxt[1] or "").lower() == "as" and i + 2 < len(toks) and toks[i + 2][1] == "(":
                aliases.add(low)  # WITH name AS (...)
                ctes.add(low)
            elif prev[0] == "cast":
                pass  # a type name
            elif low in SQL_WORDS:
                if low == "from" and not (stack and stack[-1] in FROM_IN_ARGS) or low == "join":
                    # the table (or a subquery) and its alias
                    j = i + 1
                    if j < len(toks) and toks[j][0] in ("ident", "qident") and \
                            toks[j][1].lower() not in SQL_WORDS:
                        t = toks[j][1]
                        if j + 2 < len(toks) and toks[j + 1][1] == ".":
                            j += 2
                            t = toks[j][1]
                        t = t.strip('"').lower()
                        if t in known:
                            tables.add(t)
                            alias_table[t] = t
                            # FROM t [AS] x
                            k = j + 1
                            if k < len(toks) and toks[k][1].lower() == "as":
                                k += 1
                            if k < len(toks) and toks[k][0] == "ident" and \
                                    toks[k][1].lower() not in SQL_WORDS:
                                alias_table[toks[k][1].lower()] = t
                        elif t not in aliases:
                            problems.append(f"reads table {t!r} (known: {', '.join(sorted(known))})")
                        prev = toks[j]
                        i = j + 1
                        continue
            elif prev[0] == "ident" and prev[1].lower() == "as":
                aliases.add(low)
            elif (prev[0] in ("ident", "qident", "string", "number") and
                  prev[1].lower() not in SQL_WORDS) or prev[1] == ")":
                aliases.add(low)
            elif nxt[1] == "." and i + 2 < len(toks):
                refs.append((low, toks[i + 2][1].strip('"').lower()))
                prev = toks[i + 2]
                i += 3
                continue
            else:
                refs.append((None, low))
        elif kind == "qident" and prev[0] == "ident" and prev[1].lower() == "as":
            aliases.add(tok.strip('"').lower())
        prev = (kind, tok)
        i += 1
    read = tables or {table} & set(known)
    every = set().union(*known.values()) if known else set()
    for qual, col in refs:
        if qual is not None:
            if qual in alias_table:
                t = alias_table[qual]
                if col not in known[t]:
                    problems.append(f"column {col!r} is not in {t} (as {qual})")
            elif qual in aliases:
                if col not in every and col not in aliases:
                    problems.append(f"column {qual}.{col} is in none of the known tables")
            else:
                problems.append(f"qualifier {qual!r} is not a table of the query or an alias")
            continue
        if col in aliases:
            continue
        if not any(col in known[t] for t in read):
            problems.append(f"column {col!r} is not in {' or '.join(sorted(read))}")
    return list(dict.fromkeys(problems))


TIME_GROUP_RE = re.compile(r"\$__(?:timeGroup|timeGroupAlias|unixEpochGroup|unixEpochGroupAlias)\(([^)]*)\)")


def fixed_time_groups(raw_sql: str) -> list[str]:
    """Time-group macros of a raw (unrendered) query whose interval is not $__interval."""
    out = []
    for m in TIME_GROUP_RE.finditer(raw_sql):
        args = [a.strip() for a in m.group(1).split(",")]
        if len(args) < 2 or args[1].strip("'\"") not in ("$__interval", "${__interval}"):
            out.append(m.group(0))
    return out


VAR_RE = re.compile(r"\$\{([a-zA-Z0-9_]+)(?::[^}]*)?\}|\$([a-zA-Z_][a-zA-Z0-9_]*)|\[\[([a-zA-Z0-9_]+)\]\]")


def target_kinds(d: dict, sql_uids: set[str]) -> set[str]:
    """Which kinds of datasource the dashboard's panel targets query: prometheus and/or sql."""
    kinds: set[str] = set()

    def walk(panels):
        for p in panels or []:
            walk(p.get("panels"))
            for t in p.get("targets") or []:
                ds = t.get("datasource") or p.get("datasource") or {}
                if not isinstance(ds, dict):
                    continue
                if ds.get("uid") in sql_uids or ds.get("type") in (
                        "grafana-postgresql-datasource", "postgres"):
                    kinds.add("sql")
                elif ds.get("type") == "prometheus":
                    kinds.add("prometheus")

    walk(d.get("panels"))
    return kinds


def parse_datasources(paths: list[str]) -> dict[str, str]:
    """uid -> type of every provisioned datasource. A line-based reader of the provisioning YAML
    (stdlib has no YAML): list items under `datasources:` with `uid:` and `type:` keys."""
    found: dict[str, str] = {}
    for path in paths:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
        in_list = False
        item: dict[str, str] | None = None
        item_indent = -1
        items: list[dict[str, str]] = []
        for raw in lines:
            line = raw.split(" #", 1)[0].rstrip()
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            indent = len(line) - len(line.lstrip())
            if re.match(r"^datasources:\s*$", line):
                in_list = True
                continue
            if in_list and indent == 0:
                in_list = False
            if not in_list:
                continue
            m = re.match(r"^(\s*)-\s+([a-zA-Z_]+):\s*(.*)$", line)
            if m and (item is None or len(m.group(1)) <= item_indent):
                item = {}
                items.append(item)
                item_indent = len(m.group(1))
                item[m.group(2)] = m.group(3).strip().strip("'\"")
                continue
            m = re.match(r"^(\s*)([a-zA-Z_]+):\s*(.*)$", line)
            if m and item is not None and len(m.group(1)) == item_indent + 2:
                item[m.group(2)] = m.group(3).strip().strip("'\"")
        for it in items:
            if not it.get("uid"):
                raise ValueError(f"{path}: datasource {it.get('name')!r} has no uid")
            found[it["uid"]] = it.get("type", "")
    return found


def main(argv: list[str]) -> int:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dashboards", default=os.path.join(root, "grafana/dashboards/*.json"))
    ap.add_argument("--datasources",
                    default=os.path.join(root, "grafana/provisioning/datasources/*.yml"))
    ap.add_argument("--migrations", default=os.path.join(root, "migrations/postgres/*.sql"),
                    help="PostgreSQL migrations defining the tables and columns SQL panels may read")
    args = ap.parse_args(argv)

    errors: list[str] = []
    ds_files = sorted(glob.glob(args.datasources))
    dash_files = sorted(glob.glob(args.dashboards))
    if not ds_files:
        print(f"check_dashboards: no datasource provisioning files match {args.datasources}")
        return 1
    if not dash_files:
        print(f"check_dashboards: no dashboards match {args.dashboards}")
        return 1
    try:
        datasources = parse_datasources(ds_files)
    except (OSError, ValueError) as e:
        print(f"check_dashboards: {e}")
        return 1

    mig_files = sorted(glob.glob(args.migrations))
    try:
        columns = {t: migration_columns(mig_files, t) for t in SQL_TABLES} if mig_files else {}
        columns = {t: c for t, c in columns.items() if c}
    except OSError as e:
        print(f"check_dashboards: {e}")
        return 1
    sql_ds_uids = {u for u, t in datasources.items()
                   if t in ("grafana-postgresql-datasource", "postgres")}
    # Fixed render time: the check is about names, not data.
    t_to = datetime.datetime(2025, 1, 1, 12, 0, 0, tzinfo=datetime.timezone.utc)
    t_from = t_to - datetime.timedelta(hours=1)

    uids: dict[str, str] = {}
    titles: dict[str, str] = {}
    n_panels = 0
    n_sql = 0
    for path in dash_files:
        rel = os.path.relpath(path)
        try:
            with open(path, encoding="utf-8") as f:
                d = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            errors.append(f"{rel}: not valid JSON: {e}")
            continue
        if not isinstance(d, dict):
            errors.append(f"{rel}: top level is not an object")
            continue
        if "dashboard" in d and "panels" not in d:
            errors.append(f"{rel}: wrapped in {{\"dashboard\": ...}} (API export); provision the "
                          f"dashboard object itself")
            continue
        uid = d.get("uid")
        if not uid or not isinstance(uid, str):
            errors.append(f"{rel}: no uid")
        elif len(uid) > 40 or not re.match(r"^[a-zA-Z0-9_-]+$", uid):
            errors.append(f"{rel}: uid {uid!r} must be <= 40 chars of [a-zA-Z0-9_-]")
        elif uid in uids:
            errors.append(f"{rel}: uid {uid!r} also used by {uids[uid]}")
        else:
            uids[uid] = rel
        title = d.get("title")
        if not title:
            errors.append(f"{rel}: no title")
        elif title in titles:
            errors.append(f"{rel}: title {title!r} also used by {titles[title]}")
        else:
            titles[title] = rel
        if "__inputs" in d:
            errors.append(f"{rel}: has __inputs (an export for sharing); use datasource uids")
        if "${DS_" in json.dumps(d):
            errors.append(f"{rel}: contains a ${{DS_...}} import placeholder")

        def check_ds(ds, where):
            if ds is None:
                return False
            if isinstance(ds, str):
                if ds in GRAFANA_BUILTIN_DS:
                    return True
                errors.append(f"{rel}: {where}: datasource {ds!r} is a name, not {{type, uid}}")
                return True
            if not isinstance(ds, dict):
                errors.append(f"{rel}: {where}: datasource {ds!r} is not an object")
                return True
            u = ds.get("uid")
            if u in GRAFANA_BUILTIN_DS or ds.get("type") in ("grafana", "datasource"):
                return True
            if not u:
                errors.append(f"{rel}: {where}: datasource without uid: {ds}")
            elif isinstance(u, str) and u.startswith("$"):
                errors.append(f"{rel}: {where}: datasource uid {u!r} is a variable; "
                              f"reference a provisioned uid")
            elif u not in datasources:
                errors.append(f"{rel}: {where}: datasource uid {u!r} is not provisioned "
                              f"(known: {', '.join(sorted(datasources))})")
            elif ds.get("type") and datasources[u] and ds["type"] != datasources[u]:
                errors.append(f"{rel}: {where}: datasource {u!r} has type {ds['type']!r} here "
                              f"but {datasources[u]!r} in provisioning")
            return True

        # Template variables.
        variables = (d.get("templating") or {}).get("list") or []
        var_names = set()
        for v in variables:
            var_names.add(v.get("name"))
            if v.get("type") == "query":
                check_ds(v.get("datasource"), f"variable {v.get('name')}")
        kinds = target_kinds(d, sql_ds_uids)
        if {"prometheus", "sql"} <= kinds:
            errors.append(f"{rel}: mixes Prometheus and PostgreSQL panels; keep them on separate "
                          f"dashboards (their model_version variables come from different sources)")
        mv = [v for v in variables if v.get("name") == "model_version"]
        if not mv:
            errors.append(f"{rel}: no model_version template variable")
        else:
            v = mv[0]
            q = v.get("query")
            q = q.get("query") if isinstance(q, dict) else q
            ds = v.get("datasource") or {}
            if not v.get("multi") or not v.get("includeAll"):
                errors.append(f"{rel}: model_version variable must be multi-value with All")
            if "sql" in kinds:
                if v.get("type") != "query" or not isinstance(ds, dict) or \
                        ds.get("uid") not in sql_ds_uids or \
                        not re.search(r"\bmodel_version\b", q or ""):
                    errors.append(f"{rel}: model_version variable of a dashboard with PostgreSQL "
                                  f"panels must be a PostgreSQL query variable that reads "
                                  f"model_version from the database, got {q!r}")
                elif columns:
                    try:
                        rendered = e2e_sql_panels.render_sql(q, {}, t_from, t_to)
                    except e2e_sql_panels.RenderError as e:
                        errors.append(f"{rel}: variable model_version: {e}")
                    else:
                        n_sql += 1
                        for prob in sql_unknown_names(rendered, columns):
                            errors.append(f"{rel}: variable model_version: {prob}")
            else:
                if v.get("type") != "query" or not re.match(
                        r"^\s*label_values\(\s*lqo_requests_total\s*,\s*model_version\s*\)\s*$", q or ""):
                    errors.append(f"{rel}: model_version variable must be a query variable on "
                                  f"label_values(lqo_requests_total, model_version), got {q!r}")
                if not isinstance(ds, dict) or ds.get("type") != "prometheus":
                    errors.append(f"{rel}: model_version variable must query the Prometheus "
                                  f"datasource")

        # Annotations.
        for a in (d.get("annotations") or {}).get("list") or []:
            check_ds(a.get("datasource"), f"annotation {a.get('name')}")

        # Panels (rows may nest panels when collapsed).
        ids = set()

        def walk(panels):
            nonlocal n_panels
            for p in panels or []:
                title_ = p.get("title") or f"panel id {p.get('id')}"
                pid = p.get("id")
                if pid is None:
                    errors.append(f"{rel}: panel {title_!r} has no id")
                elif pid in ids:
                    errors.append(f"{rel}: panel id {pid} used twice")
                ids.add(pid)
                if p.get("type") == "row":
                    walk(p.get("panels"))
                    continue
                n_panels += 1
                if "gridPos" not in p:
                    errors.append(f"{rel}: panel {title_!r} has no gridPos")
                has_panel_ds = check_ds(p.get("datasource"), f"panel {title_!r}")
                targets = p.get("targets") or []
                queries = [t for t in targets
                           if any(isinstance(t.get(k), str) and t.get(k).strip() for k in QUERY_KEYS)]
                if not queries:
                    errors.append(f"{rel}: panel {title_!r} has no target with a query")
                refids = [t.get("refId") for t in targets]
                if len(set(refids)) != len(refids) or None in refids:
                    errors.append(f"{rel}: panel {title_!r}: refIds missing or repeated: {refids}")
                for t in targets:
                    has_t_ds = check_ds(t.get("datasource"), f"panel {title_!r} target {t.get('refId')}")
                    if not has_t_ds and not has_panel_ds:
                        errors.append(f"{rel}: panel {title_!r} target {t.get('refId')}: no "
                                      f"datasource on target or panel (would use the default)")
                    for k in QUERY_KEYS:
                        q = t.get(k)
                        if not isinstance(q, str):
                            continue
                        for m in VAR_RE.finditer(q):
                            name = m.group(1) or m.group(2) or m.group(3)
                            if name not in var_names and name not in BUILTIN_VARS:
                                errors.append(f"{rel}: panel {title_!r} target {t.get('refId')}: "
                                              f"undefined variable ${name}")
                walk(p.get("panels"))

        walk(d.get("panels"))

        # SQL panels: rendered like Grafana, then only the known tables and their columns.
        sql_targets = [pt for uid_ in sql_ds_uids for pt in e2e_sql_panels.sql_targets(d, uid_)]
        if sql_targets and not columns:
            errors.append(f"{rel}: has SQL panels but no columns of {', '.join(SQL_TABLES)} were "
                          f"found in {args.migrations}")
            sql_targets = []
        if sql_targets:
            try:
                sql_vars = e2e_sql_panels.resolve_variables(d, {}, None, placeholder="x")
            except e2e_sql_panels.RenderError as e:
                errors.append(f"{rel}: SQL variables: {e}")
                sql_targets = []
        for p, t in sql_targets:
            where = f"panel {p.get('title')!r} target {t.get('refId')}"
            raw = t.get("rawSql")
            if not isinstance(raw, str) or not raw.strip():
                errors.append(f"{rel}: {where}: PostgreSQL target without rawSql")
                continue
            n_sql += 1
            for fixed in fixed_time_groups(raw):
                errors.append(f"{rel}: {where}: {fixed} uses a fixed bucket; use $__interval so "
                              f"the buckets follow the time range")
            try:
                rendered = e2e_sql_panels.render_sql(raw, sql_vars, t_from, t_to)
            except e2e_sql_panels.RenderError as e:
                errors.append(f"{rel}: {where}: {e}")
                continue
            for prob in sql_unknown_names(rendered, columns):
                errors.append(f"{rel}: {where}: {prob}")

    errors = list(dict.fromkeys(errors))  # once each, in order
    for e in errors:
        print(f"ERROR: {e}")
    if errors:
        print(f"check_dashboards: FAILED ({len(errors)} problem(s))")
        return 1
    print(f"check_dashboards: OK ({len(dash_files)} dashboards, {n_panels} panels, "
          f"{n_sql} SQL queries on {', '.join(f'{t} ({len(c)} columns)' for t, c in sorted(columns.items()))}, datasources {', '.join(f'{u} ({t})' for u, t in sorted(datasources.items()))})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
