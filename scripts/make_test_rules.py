#!/usr/bin/env python3
"""Writes a throw-away TEST copy of prometheus/rules/*.yml with shorter `for:` durations and
lower thresholds, so that alerts fire within a minute or two against the mock upstream
(scripts/e2e-alerts.sh). Never use the output in production.

Every tunable number in the rule files sits on a line ending in `# THRESHOLD <name>`; the number
right before that comment is replaced by --set <name>=<value>. Every `for:` becomes --for.

  python3 scripts/make_test_rules.py --out /tmp/rules            # with the e2e defaults
  python3 scripts/make_test_rules.py --out DIR --for 10s --set latency_p95_seconds=0.2
  python3 scripts/make_test_rules.py --check                      # the defaults still apply?
"""
from __future__ import annotations

import argparse
import glob
import os
import re
import sys
import tempfile

# Overrides for the end-to-end test: the mock upstream answers in ~300 ms and fails ~50 % of the
# calls (fewer after the gateway's retries), so these make the error-budget, latency and TTFT
# alerts fire in seconds. Names are the `# THRESHOLD <name>` markers of the rule files.
E2E_DEFAULTS = {
    "error_budget": "0.001",        # SLO 99.9 %: fast burn at 1.44 % errors, slow at 0.6 %
    "latency_p95_seconds": "0.1",
    "ttft_p95_seconds": "0.1",
    "min_request_rate": "0.01",
    "min_calls_1h": "10",           # the guards against a handful of calls: the test runs minutes
    "min_calls_6h": "10",
    "min_calls_3d": "10",
}
THRESHOLD_RE = re.compile(
    r"(?P<num>(?<![\w.])[0-9][0-9.]*(?:[eE][+-]?[0-9]+)?)(?P<rest>[ \t]*#[ \t]*THRESHOLD[ \t]+(?P<name>[A-Za-z0-9_]+))")
THRESHOLD_ANNOTATION_RE = re.compile(r'^(?P<lead>\s*threshold:\s*)"(?P<text>.*)"\s*$', re.M)
FOR_RE = re.compile(r"^(?P<lead>\s*for:\s*)(?P<value>\S+)\s*$", re.M)


def rewrite(text: str, sets: dict[str, str], for_: str | None, used: set[str]) -> str:
    def sub(m: re.Match) -> str:
        name = m.group("name")
        if name in sets:
            used.add(name)
            return sets[name] + m.group("rest")
        return m.group(0)

    text = THRESHOLD_RE.sub(sub, text)
    # Notifications from the test copy must not pass for production ones.
    text = THRESHOLD_ANNOTATION_RE.sub(r'\g<lead>"[TEST COPY, thresholds lowered] \g<text>"', text)
    if for_:
        text = FOR_RE.sub(lambda m: m.group("lead") + for_, text)
    header = ("# GENERATED TEST COPY by scripts/make_test_rules.py: thresholds "
              f"{', '.join(f'{k}={v}' for k, v in sorted(sets.items())) or 'unchanged'}, "
              f"for: {for_ or 'unchanged'}. NOT FOR PRODUCTION.\n")
    return header + text


def main(argv: list[str]) -> int:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rules", default=os.path.join(root, "prometheus/rules/*.yml"))
    ap.add_argument("--out", help="output directory (created)")
    ap.add_argument("--for", dest="for_", default="5s", help="every `for:` becomes this ('' keeps)")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="threshold override (repeatable); replaces the E2E defaults given")
    ap.add_argument("--no-defaults", action="store_true", help="do not apply the E2E defaults")
    ap.add_argument("--check", action="store_true",
                    help="verify that every override matches a THRESHOLD marker, write nothing")
    args = ap.parse_args(argv)

    sets = {} if args.no_defaults else dict(E2E_DEFAULTS)
    for s in args.set:
        if "=" not in s:
            ap.error(f"--set wants NAME=VALUE, got {s!r}")
        k, v = s.split("=", 1)
        if not re.match(r"^[0-9][0-9.]*(?:[eE][+-]?[0-9]+)?$", v):
            ap.error(f"--set {k}: {v!r} is not a number")
        sets[k] = v
    files = sorted(glob.glob(args.rules))
    if not files:
        print(f"make_test_rules: no rule files match {args.rules}", file=sys.stderr)
        return 2
    if not args.out and not args.check:
        ap.error("give --out DIR or --check")

    used: set[str] = set()
    markers: set[str] = set()
    out_dir = args.out or tempfile.mkdtemp(prefix="lqo-test-rules-")
    os.makedirs(out_dir, exist_ok=True)
    for path in files:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        markers |= {m.group("name") for m in THRESHOLD_RE.finditer(text)}
        new = rewrite(text, sets, args.for_ or None, used)
        if not args.check:
            with open(os.path.join(out_dir, os.path.basename(path)), "w", encoding="utf-8") as f:
                f.write(new)
    unused = sorted(set(sets) - used)
    if unused:
        print(f"make_test_rules: no `# THRESHOLD <name>` marker for: {', '.join(unused)} "
              f"(markers found: {', '.join(sorted(markers))})", file=sys.stderr)
        return 1
    if args.check:
        print(f"make_test_rules: OK ({len(files)} rule files, markers: {', '.join(sorted(markers))})")
    else:
        print(f"make_test_rules: wrote {len(files)} test rule files to {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
