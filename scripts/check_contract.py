#!/usr/bin/env python3
"""Metrics contract check: every metric name and label that the Prometheus rules and the Grafana
dashboards use must be exposed by the gateway.

Sources of truth, any combination:
  --metrics FILE|URL   a /metrics text exposition of the real binary (repeatable), e.g.
                       http://127.0.0.1:18000/metrics after some traffic. Note: the prometheus crate
                       leaves out metric families that have no series yet, so scrape after traffic
                       that touched every family (scripts/e2e-alerts.sh does).
  --catalog FILE       src/metrics.rs: the `catalog!` table of names, types and labels.

What is checked (stdlib only, a small PromQL lexer, no PromQL parser):
  * every metric name in rule `expr`s, dashboard target `expr`s and `label_values(...)` variable
    queries, after removing _bucket/_sum/_count of histograms, is exposed; names with a colon must
    be recording rules defined in the rule files; `up` and `ALERTS` are Prometheus' own;
  * every label in a selector `metric{label=...}` is a label of that metric; every label in
    by/without/on/ignoring/group_left/group_right is a label of some metric of the expression;
    job, instance (target labels) and le (buckets) are always allowed where they apply;
  * literal label values (`label="x"`) never seen in the exposition are reported as warnings only;
  * every metric family the source exposes is used by some rule or dashboard (panel, variable or
    annotation): a family on no dashboard and in no rule is an error (--allow-unused turns this
    off, for checks of a partial set of rules or dashboards).
Metrics of Alertmanager's own /metrics (EXTERNAL_METRICS, scraped as job "alertmanager") may be
used by rules without being exposed by the gateway.

--pending-file FILE lists metrics that are not exposed yet ("coming" in a later issue), one per
line, optionally followed by their labels: `lqo_judge_score model_version criterion`. A pending
metric that is missing is accepted (and its labels are checked against the listed ones); a pending
metric that is exposed is checked like any other and reported so it can leave the file.
--skip-pending-sources ignores rule files and dashboards that use pending metrics entirely.

Exit status: 0 all good, 1 contract violations, 2 usage or input errors.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import sys
import urllib.request
from dataclasses import dataclass, field

HIST_SUFFIXES = ("_bucket", "_sum", "_count")
TARGET_LABELS = {"job", "instance"}
BUILTIN_METRICS = {
    "up": {"job", "instance"},
    "scrape_duration_seconds": {"job", "instance"},
    "scrape_samples_scraped": {"job", "instance"},
    "ALERTS": None,  # None = any label (alert labels)
    "ALERTS_FOR_STATE": None,
}
# Metrics other programs expose that the rules use, with their labels (Alertmanager's /metrics;
# receiver_name and reason exist from Alertmanager 0.27 on). None = any label.
EXTERNAL_METRICS = {
    "alertmanager_notifications_total": {"job", "instance", "integration", "receiver_name"},
    "alertmanager_notifications_failed_total": {"job", "instance", "integration", "receiver_name",
                                                "reason"},
}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
            "unless", "offset", "inf", "nan", "atan2", "start", "end"}
AGGREGATORS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
               "bottomk", "topk", "quantile", "limitk", "limit_ratio"}
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}


# ------------------------------------------------------------------------------------ exposition
@dataclass
class Exposed:
    labels: dict[str, set[str]] = field(default_factory=dict)   # sample name -> label names
    values: dict[str, dict[str, set[str]]] = field(default_factory=dict)  # name -> label -> values
    families: dict[str, str] = field(default_factory=dict)      # family name -> type
    sources: list[str] = field(default_factory=list)

    def add(self, name: str, labels: dict[str, str | None]) -> None:
        self.labels.setdefault(name, set()).update(labels)
        vals = self.values.setdefault(name, {})
        for k, v in labels.items():
            s = vals.setdefault(k, set())
            if v is not None:
                s.add(v)

    def has(self, name: str) -> bool:
        return name in self.labels or name in self.families

    def base(self, name: str) -> str:
        """The family a sample name belongs to (histograms: without _bucket/_sum/_count)."""
        for suf in HIST_SUFFIXES:
            if name.endswith(suf) and self.families.get(name[: -len(suf)]) in ("histogram",
                                                                               "summary"):
                return name[: -len(suf)]
        return name


SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+\S+')
LABEL_PAIR_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:\\.|[^"\\])*)"')


def load_exposition(src: str, exp: Exposed) -> None:
    if re.match(r"^https?://", src):
        with urllib.request.urlopen(src, timeout=10) as r:  # noqa: S310 (operator-given URL)
            text = r.read().decode("utf-8", "replace")
    else:
        with open(src, encoding="utf-8") as f:
            text = f.read()
    n = 0
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("#"):
            parts = line.split()
            if len(parts) >= 4 and parts[1] == "TYPE":
                exp.families[parts[2]] = parts[3]
            continue
        m = SAMPLE_RE.match(line)
        if not m:
            continue
        labels = {k: v for k, v in LABEL_PAIR_RE.findall(m.group(3) or "")}
        exp.add(m.group(1), labels)
        n += 1
    if n == 0 and not exp.families:
        raise ValueError(f"{src}: no metrics found (is it a Prometheus text exposition?)")
    exp.sources.append(f"{src} ({n} samples)")


CATALOG_RE = re.compile(
    r'\(\s*"([a-zA-Z_:][a-zA-Z0-9_:]*)"\s*,\s*"(counter|gauge|histogram|summary)"\s*,'
    r'\s*\[([^\]]*)\]')


def load_catalog(path: str, exp: Exposed) -> None:
    with open(path, encoding="utf-8") as f:
        text = f.read()
    found = CATALOG_RE.findall(text)
    if not found:
        raise ValueError(f"{path}: no catalog entries like (\"name\", \"kind\", [labels], ...) found")
    for name, kind, labels in found:
        names = [x.strip().strip('"') for x in labels.split(",") if x.strip()]
        lab = {k: None for k in names}
        exp.families[name] = kind
        if kind == "histogram":
            exp.add(name + "_bucket", {**lab, "le": None})
            exp.add(name + "_sum", lab)
            exp.add(name + "_count", lab)
        else:
            exp.add(name, lab)
    exp.sources.append(f"{path} ({len(found)} catalog entries)")


def load_pending(path: str) -> dict[str, set[str] | None]:
    out: dict[str, set[str] | None] = {}
    with open(path, encoding="utf-8") as f:
        for raw in f:
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.replace(",", " ").split()
            out[parts[0]] = set(parts[1:]) if len(parts) > 1 else None
    return out


# ------------------------------------------------------------------------------------ PromQL lexing
TOKEN_RE = re.compile(r"""
    (?P<ws>\s+)
  | (?P<comment>\#[^\n]*)
  | (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
  | (?P<duration>\d+(?:ms|[smhdwy])(?:\d+(?:ms|[smhdwy]))*(?![a-zA-Z0-9_]))
  | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<op>=~|!~|!=|==|<=|>=|[-+*/%^<>=,(){}\[\]@:])
""", re.VERBOSE)

GRAFANA_DURATION_VARS = re.compile(
    r"\$__rate_interval|\$\{__rate_interval\}|\$__interval_ms|\$__interval|\$\{__interval\}"
    r"|\$__range_s|\$__range_ms|\$__range|\$\{__range\}")
GRAFANA_VARS = re.compile(r"\$\{[^}]*\}|\$[a-zA-Z_][a-zA-Z0-9_]*|\[\[[^\]]*\]\]")


def strip_grafana(expr: str) -> str:
    expr = GRAFANA_DURATION_VARS.sub("5m", expr)
    # Variables left outside strings become a number; inside strings they do not matter.
    return GRAFANA_VARS.sub("1", expr)


def tokens(expr: str):
    pos = 0
    out = []
    while pos < len(expr):
        m = TOKEN_RE.match(expr, pos)
        if not m:
            raise ValueError(f"cannot read PromQL at {expr[pos:pos + 30]!r}")
        pos = m.end()
        kind = m.lastgroup
        if kind in ("ws", "comment"):
            continue
        out.append((kind, m.group()))
    return out


@dataclass
class Usage:
    metrics: list[str] = field(default_factory=list)
    # (metric or None, label, op, value or None)
    matchers: list[tuple[str | None, str, str, str | None]] = field(default_factory=list)
    grouping: list[str] = field(default_factory=list)


def unquote(s: str) -> str:
    if s[0] == "`":
        return s[1:-1]
    try:
        return bytes(s[1:-1], "utf-8").decode("unicode_escape")
    except UnicodeDecodeError:
        return s[1:-1]


def analyse(expr: str) -> Usage:
    u = Usage()
    toks = tokens(strip_grafana(expr))
    i = 0
    n = len(toks)
    while i < n:
        kind, text = toks[i]
        nxt = toks[i + 1] if i + 1 < n else (None, None)
        if kind == "ident" and text in GROUPING:
            if nxt[1] == "(":
                j = i + 2
                while j < n and toks[j][1] != ")":
                    if toks[j][0] == "ident":
                        u.grouping.append(toks[j][1])
                    j += 1
                i = j + 1
                continue
            i += 1
            continue
        if kind == "ident" and (text.lower() in KEYWORDS or text in AGGREGATORS):
            i += 1
            continue
        if kind == "ident" and nxt[1] == "(":
            i += 1          # function or aggregation
            continue
        metric = None
        if kind == "ident":
            metric = text
            u.metrics.append(metric)
            i += 1
            if i < n and toks[i][1] == "{":
                i = _matchers(toks, i, metric, u)
            continue
        if text == "{":      # {__name__="x", ...}
            i = _matchers(toks, i, None, u)
            continue
        if text == "[":      # range or subquery: skip to ]
            while i < n and toks[i][1] != "]":
                i += 1
            i += 1
            continue
        i += 1
    # {__name__="..."} selectors name a metric too.
    for m, label, op, value in list(u.matchers):
        if label == "__name__" and op == "=" and value:
            u.metrics.append(value)
    return u


def _matchers(toks, i, metric, u: Usage) -> int:
    i += 1  # past {
    n = len(toks)
    while i < n and toks[i][1] != "}":
        kind, text = toks[i]
        if kind == "ident" and i + 2 < n and toks[i + 1][1] in ("=", "!=", "=~", "!~"):
            value = toks[i + 2][1]
            u.matchers.append((metric, text, toks[i + 1][1],
                               unquote(value) if toks[i + 2][0] == "string" else None))
            i += 3
            continue
        i += 1
    return i + 1


# ------------------------------------------------------------------------------------ sources
@dataclass
class Expr:
    where: str
    expr: str
    label_values: tuple[str, str] | None = None  # Grafana label_values(selector, label)


def read_rules(paths: list[str]) -> tuple[list[Expr], dict[str, str]]:
    """Exprs of every rule and the expression of every recording rule (by its name).
    A line-based reader of the rule files (stdlib has no YAML): handles `expr: ...` on one line
    and `expr: |` / `expr: >-` blocks."""
    exprs: list[Expr] = []
    records: dict[str, str] = {}
    for path in paths:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
        name = None
        i = 0
        while i < len(lines):
            line = lines[i]
            m = re.match(r"^\s*-?\s*(record|alert):\s*(\S+)", line)
            if m:
                name = (m.group(1), m.group(2).strip("'\""))
            m = re.match(r"^(\s*)-?\s*expr:\s*(.*)$", line)
            if m:
                indent = len(m.group(1))
                rest = m.group(2).strip()
                if rest[:1] in ("|", ">"):
                    block = []
                    i += 1
                    while i < len(lines) and (not lines[i].strip() or
                                              len(lines[i]) - len(lines[i].lstrip()) > indent):
                        block.append(lines[i])
                        i += 1
                    text = "\n".join(block)
                    if rest[:1] == ">":
                        text = " ".join(x.strip() for x in block)
                else:
                    if rest[:1] in ("'", '"'):
                        rest = rest[1:-1] if rest[0] == '"' else rest[1:-1].replace("''", "'")
                    text = rest
                    i += 1
                if name is None:
                    raise ValueError(f"{path}: expr before record/alert")
                kind, rname = name
                # `record:` may come after `expr:` in YAML; handled by looking back/forward.
                if kind == "record":
                    records[rname] = text
                exprs.append(Expr(f"{os.path.relpath(path)}: {kind} {rname}", text))
                continue
            i += 1
    return exprs, records


def read_dashboards(paths: list[str]) -> list[Expr]:
    out: list[Expr] = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
        rel = os.path.relpath(path)

        def walk(panels):
            for p in panels or []:
                for t in p.get("targets") or []:
                    ds = (t.get("datasource") or p.get("datasource") or {})
                    dstype = ds.get("type", "prometheus") if isinstance(ds, dict) else "prometheus"
                    if dstype == "prometheus" and t.get("expr"):
                        out.append(Expr(f"{rel}: panel {p.get('title')!r} {t.get('refId', '')}",
                                        t["expr"]))
                walk(p.get("panels"))

        walk(d.get("panels"))
        for a in (d.get("annotations") or {}).get("list") or []:
            ds = a.get("datasource") or {}
            if not isinstance(ds, dict) or ds.get("type") != "prometheus":
                continue
            expr = a.get("expr") or (a.get("target") or {}).get("expr")
            if expr:
                out.append(Expr(f"{rel}: annotation {a.get('name')!r}", expr))
        for v in (d.get("templating") or {}).get("list") or []:
            if v.get("type") != "query":
                continue
            ds = v.get("datasource") or {}
            if isinstance(ds, dict) and ds.get("type") not in (None, "prometheus"):
                continue
            q = v.get("query")
            if isinstance(q, dict):
                q = q.get("query")
            if not q:
                continue
            m = re.match(r"^\s*label_values\(\s*(?:(.*?)\s*,\s*)?([a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*$",
                         q, re.S)
            if m:
                sel = m.group(1) or "up"
                out.append(Expr(f"{rel}: variable {v.get('name')}", sel, (sel, m.group(2))))
            else:
                m = re.match(r"^\s*(?:query_result|metrics)\((.*)\)\s*$", q, re.S)
                if m:
                    out.append(Expr(f"{rel}: variable {v.get('name')}", m.group(1)))
    return out


# ------------------------------------------------------------------------------------ the check
def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--metrics", action="append", default=[],
                    help="/metrics exposition file or URL (repeatable)")
    ap.add_argument("--catalog", help="src/metrics.rs (its catalog! table)")
    ap.add_argument("--rules", action="append", default=[],
                    help="rule file glob (default prometheus/rules/*.yml)")
    ap.add_argument("--dashboards", action="append", default=[],
                    help="dashboard JSON glob (default grafana/dashboards/*.json)")
    ap.add_argument("--pending-file", help="metrics not exposed yet (name [labels...] per line)")
    ap.add_argument("--skip-pending-sources", action="store_true",
                    help="ignore rule files / dashboards that use a pending metric")
    ap.add_argument("--strict-values", action="store_true",
                    help="unknown literal label values are errors, not warnings")
    ap.add_argument("--allow-unused", action="store_true",
                    help="do not require every exposed family to be on a dashboard or in a rule")
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args(argv)

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    rule_globs = args.rules or [os.path.join(root, "prometheus/rules/*.yml")]
    dash_globs = args.dashboards or [os.path.join(root, "grafana/dashboards/*.json")]
    if not args.metrics and not args.catalog:
        ap.error("give --metrics FILE|URL and/or --catalog src/metrics.rs")

    exp = Exposed()
    try:
        for src in args.metrics:
            load_exposition(src, exp)
        if args.catalog:
            load_catalog(args.catalog, exp)
        pending = load_pending(args.pending_file) if args.pending_file else {}
        rule_files = sorted({p for g in rule_globs for p in glob.glob(g)})
        dash_files = sorted({p for g in dash_globs for p in glob.glob(g)})
        if not rule_files and not dash_files:
            raise ValueError("no rule files and no dashboards found")
        exprs, records = read_rules(rule_files)
        exprs += read_dashboards(dash_files)
    except (OSError, ValueError, json.JSONDecodeError) as e:
        print(f"check_contract: {e}", file=sys.stderr)
        return 2

    errors: list[str] = []
    warnings: list[str] = []
    notes: list[str] = []

    def family(name: str) -> str:
        b = exp.base(name)
        if b != name:
            return b
        for suf in HIST_SUFFIXES:     # pending histograms have no TYPE line to go by
            if name.endswith(suf) and name[: -len(suf)] in pending:
                return name[: -len(suf)]
        return name

    def is_pending_missing(name: str) -> bool:
        f = family(name)
        return (f in pending or name in pending) and not exp.has(name)

    # Labels a recording rule's output can carry: everything its expression can see (over-approx).
    rec_labels: dict[str, set[str] | None] = {}

    def labels_of(name: str, seen: frozenset = frozenset()) -> set[str] | None:
        """Known labels of a name; None = unknown (any)."""
        if name in BUILTIN_METRICS:
            return BUILTIN_METRICS[name]
        if name in EXTERNAL_METRICS:
            return EXTERNAL_METRICS[name]
        if name in records:
            if name in rec_labels:
                return rec_labels[name]
            if name in seen:
                return None
            u = analyse(records[name])
            labs: set[str] | None = set(u.grouping) | {m[1] for m in u.matchers}
            for m in u.metrics:
                sub = labels_of(m, seen | {name})
                if sub is None:
                    labs = None
                    break
                labs |= sub  # type: ignore[operator]
            rec_labels[name] = labs
            return labs
        if exp.has(name):
            labs = set(exp.labels.get(name, set()))
            if not labs and name not in exp.labels:
                return None  # TYPE line only: labels unknown
            return labs | TARGET_LABELS
        f = family(name)
        spec = pending.get(f, pending.get(name))
        if spec is not None:
            extra = {"le"} if name.endswith("_bucket") else set()
            return spec | TARGET_LABELS | extra
        return None

    pending_sources: set[str] = set()
    checked = 0
    used_names: set[str] = set()
    watched: set[str] = set()  # every name any rule or dashboard uses, skipped sources included
    for e in exprs:
        try:
            u = analyse(e.expr)
        except ValueError as err:
            errors.append(f"{e.where}: {err}")
            continue
        watched.update(u.metrics)
        if args.skip_pending_sources and any(is_pending_missing(m) for m in u.metrics):
            pending_sources.add(e.where.split(":")[0])
    for e in exprs:
        if args.skip_pending_sources and e.where.split(":")[0] in pending_sources:
            continue
        u = analyse(e.expr)
        if e.label_values:
            u.grouping.append(e.label_values[1])
        checked += 1
        expr_labels: set[str] | None = set(TARGET_LABELS)
        for m in u.metrics:
            used_names.add(m)
            if ":" in m:
                if m not in records:
                    errors.append(f"{e.where}: recording rule {m} is not defined in the rule files")
                    expr_labels = None
                    continue
            elif m in BUILTIN_METRICS or m in EXTERNAL_METRICS:
                pass
            elif exp.has(m) or exp.has(family(m)):
                f = family(m)
                if f in pending or m in pending:
                    notes.append(f"{f if f in pending else m}: listed as pending but exposed now; "
                                 f"remove it from the pending file")
            elif is_pending_missing(m):
                pass
            else:
                errors.append(f"{e.where}: metric {m} is not exposed"
                              + (f" (family {family(m)})" if family(m) != m else ""))
            labs = labels_of(m)
            if labs is None or expr_labels is None:
                expr_labels = None
            else:
                expr_labels |= labs
        # Selector labels, per metric.
        for metric, label, op, value in u.matchers:
            if label == "__name__":
                continue
            if metric is None:
                continue
            labs = labels_of(metric)
            if labs is None:
                continue
            if label not in labs:
                errors.append(f"{e.where}: label {label!r} is not a label of {metric}")
                continue
            if value is not None and op == "=" and exp.has(metric) and metric not in records:
                seen = exp.values.get(metric, {}).get(label)
                if seen and value not in seen:
                    msg = (f"{e.where}: {metric}{{{label}=\"{value}\"}}: value not in the "
                           f"exposition (seen: {', '.join(sorted(seen))})")
                    (errors if args.strict_values else warnings).append(msg)
        # Grouping labels, per expression.
        if expr_labels is not None:
            if any(m.endswith("_bucket") for m in u.metrics):
                expr_labels.add("le")
            for label in u.grouping:
                if label not in expr_labels:
                    errors.append(f"{e.where}: label {label!r} (by/on/without) is not a label of "
                                  f"any metric in the expression ({', '.join(sorted(set(u.metrics)))})")

    # Every exposed family must be watched somewhere: on a dashboard or in a rule.
    used_families = {family(n) for n in watched if ":" not in n}
    unused = sorted(f for f in exp.families if f not in used_families)
    if not args.allow_unused:
        for f in unused:
            errors.append(f"metric family {f} is exposed but on no dashboard and in no rule "
                          f"(add a panel or a rule that uses it)")

    if not args.quiet:
        print(f"check_contract: exposed metrics from {'; '.join(exp.sources)}")
        if pending:
            print(f"check_contract: {len(pending)} pending metric(s), accepted while missing: "
                  f"{', '.join(sorted(pending))}")
        if pending_sources:
            print(f"check_contract: skipped (use pending metrics): {', '.join(sorted(pending_sources))}")
        print(f"check_contract: {checked} expressions checked, {len(used_names)} distinct names used, "
              f"{len(exp.families) - len(unused)} of {len(exp.families)} exposed families used")
    for n in sorted(set(notes)):
        print(f"NOTE: {n}")
    for w in sorted(set(warnings)):
        print(f"WARNING: {w}")
    for err in sorted(set(errors)):
        print(f"ERROR: {err}")
    if errors:
        print(f"check_contract: FAILED ({len(set(errors))} problem(s))")
        return 1
    if not args.quiet:
        print("check_contract: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
