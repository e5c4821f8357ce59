#!/usr/bin/env python3
"""Checks docs/RUNBOOK.md against the alerts of prometheus/rules/*.yml (stdlib only).

  check_runbook.py [--rules 'prometheus/rules/*.yml'] [--runbook docs/RUNBOOK.md]
                   [--db-url postgres://... --model gpt-5-mini]

Fails (exit 1) unless
  * every alert has a section `## <AlertName>` (its runbook_url anchor, docs/RUNBOOK.md#<lower
    case name>, must match) and no section names an alert that does not exist;
  * every section has the parts **Verify.**, **Silence.**, **Escalate.** and **Affected
    records.**, a `amtool silence add alertname=<AlertName>` command (LqoWatchdog says why it is
    never silenced in Alertmanager instead) and at least one ```sql block;
  * with --db-url: every SQL block runs (read-only transaction, statement timeout) against that
    database, with its placeholders filled in: '<version>' -> --model, request ids -> a zero
    UUID, <retention_days> -> 30, any other '<...>' -> a timestamp an hour ago.
"""
from __future__ import annotations

import argparse
import datetime as dt
import glob
import os
import re
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_sql_panels  # noqa: E402 (same directory; run_psql)

PARTS = ("**Verify.**", "**Silence.**", "**Escalate.**", "**Affected records.**")
NEVER_SILENCED = {"LqoWatchdog"}


def alerts(paths: list[str]) -> dict[str, str]:
    """alert name -> its runbook_url annotation."""
    out: dict[str, str] = {}
    for path in paths:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        for block in re.split(r"\n\s*- (?=alert:|record:)", text):
            m = re.match(r"alert:\s*(\S+)", block)
            if m:
                u = re.search(r"^\s*runbook_url:\s*(\S+)", block, re.M)
                out[m.group(1)] = u.group(1).strip("'\"") if u else ""
    return out


def sections(text: str) -> dict[str, str]:
    parts = re.split(r"^## ", text, flags=re.M)
    out = {}
    for p in parts[1:]:
        title, _, body = p.partition("\n")
        out[title.strip()] = body
    return out


def fill(sql: str, model: str, hour_ago: str) -> str:
    sql = sql.replace("'<version>'", "'" + model.replace("'", "''") + "'")
    sql = re.sub(r"'<(?:request id[^>]*|\.\.\.)>'", "'00000000-0000-0000-0000-000000000000'", sql)
    sql = sql.replace("<retention_days>", "30")
    return re.sub(r"'<[^>]*>'", f"'{hour_ago}'", sql)


def main(argv: list[str]) -> int:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rules", default=os.path.join(root, "prometheus/rules/*.yml"))
    ap.add_argument("--runbook", default=os.path.join(root, "docs/RUNBOOK.md"))
    ap.add_argument("--db-url", help="run every SQL block against this database")
    ap.add_argument("--model", default="gpt-5-mini", help="model version for '<version>'")
    args = ap.parse_args(argv)

    rule_alerts = alerts(sorted(glob.glob(args.rules)))
    if not rule_alerts:
        print(f"check_runbook: no alerts in {args.rules}")
        return 1
    with open(args.runbook, encoding="utf-8") as f:
        secs = sections(f.read())
    errors: list[str] = []
    for name, url in sorted(rule_alerts.items()):
        if url != f"docs/RUNBOOK.md#{name.lower()}":
            errors.append(f"{name}: runbook_url is {url!r}, not docs/RUNBOOK.md#{name.lower()}")
        body = secs.get(name)
        if body is None:
            errors.append(f"{name}: no section '## {name}' in the runbook")
            continue
        for part in PARTS:
            if part not in body:
                errors.append(f"{name}: its section has no {part}")
        if name not in NEVER_SILENCED and f"amtool silence add alertname={name}" not in body:
            errors.append(f"{name}: its section has no `amtool silence add alertname={name} ...`")
        if "```sql" not in body:
            errors.append(f"{name}: its section has no ```sql block for the affected records")
    for title in secs:
        if re.match(r"^Lqo\w+$", title) and title not in rule_alerts:
            errors.append(f"section '## {title}' names no alert of the rules")

    n_sql = 0
    if args.db_url and not errors:
        hour_ago = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)).isoformat()
        for name, body in secs.items():
            for block in re.findall(r"```sql\n(.*?)```", body, re.S):
                for stmt in [s for s in block.split(";") if s.strip()]:
                    n_sql += 1
                    sql = fill(stmt, args.model, hour_ago)
                    good, err, _, _ = e2e_sql_panels.run_psql(args.db_url, sql, 20)
                    if not good:
                        errors.append(f"{name}: SQL fails: {err}\n{sql.strip()}")

    for e in errors:
        print(f"ERROR: {e}")
    if errors:
        print(f"check_runbook: FAILED ({len(errors)} problem(s))")
        return 1
    ran = f", {n_sql} SQL statements ran against the database" if args.db_url else ""
    print(f"check_runbook: OK ({len(rule_alerts)} alerts, each with verify, silence, escalate and "
          f"affected-records SQL{ran})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
