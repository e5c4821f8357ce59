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
  * the `model_version` template variable exists: a Prometheus query variable on
    label_values(lqo_requests_total, model_version), multi-value, with "All";
  * every $variable used in a query is defined (or is a Grafana built-in).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import sys

BUILTIN_VARS = {"__interval", "__interval_ms", "__rate_interval", "__rate_interval_ms", "__range",
                "__range_s", "__range_ms", "__from", "__to", "__timeFilter", "__timeFrom",
                "__timeTo", "__timeGroup", "__timeGroupAlias", "__unixEpochFilter",
                "__unixEpochGroup", "__unixEpochGroupAlias", "__unixEpochFrom", "__unixEpochTo",
                "__timeEpoch", "__unixEpochNanoFilter", "__schema", "__table", "__column",
                "__dashboard", "__org", "__user", "__name", "__value", "__field", "__series",
                "__all", "timeFilter", "__timezone"}
GRAFANA_BUILTIN_DS = {"-- Grafana --", "grafana", "-- Dashboard --", "-- Mixed --"}
QUERY_KEYS = ("expr", "rawSql", "query", "expression")
VAR_RE = re.compile(r"\$\{([a-zA-Z0-9_]+)(?::[^}]*)?\}|\$([a-zA-Z_][a-zA-Z0-9_]*)|\[\[([a-zA-Z0-9_]+)\]\]")


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

    uids: dict[str, str] = {}
    titles: dict[str, str] = {}
    n_panels = 0
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
        mv = [v for v in variables if v.get("name") == "model_version"]
        if not mv:
            errors.append(f"{rel}: no model_version template variable")
        else:
            v = mv[0]
            q = v.get("query")
            q = q.get("query") if isinstance(q, dict) else q
            if v.get("type") != "query" or not re.match(
                    r"^\s*label_values\(\s*lqo_requests_total\s*,\s*model_version\s*\)\s*$", q or ""):
                errors.append(f"{rel}: model_version variable must be a query variable on "
                              f"label_values(lqo_requests_total, model_version), got {q!r}")
            if not v.get("multi") or not v.get("includeAll"):
                errors.append(f"{rel}: model_version variable must be multi-value with All")
            ds = v.get("datasource") or {}
            if not isinstance(ds, dict) or ds.get("type") != "prometheus":
                errors.append(f"{rel}: model_version variable must query the Prometheus datasource")

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

    errors = list(dict.fromkeys(errors))  # once each, in order
    for e in errors:
        print(f"ERROR: {e}")
    if errors:
        print(f"check_dashboards: FAILED ({len(errors)} problem(s))")
        return 1
    print(f"check_dashboards: OK ({len(dash_files)} dashboards, {n_panels} panels, "
          f"datasources {', '.join(f'{u} ({t})' for u, t in sorted(datasources.items()))})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
