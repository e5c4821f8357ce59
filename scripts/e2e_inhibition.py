#!/usr/bin/env python3
"""Checks the inhibit rules of alertmanager/alertmanager.yml on a running Alertmanager (stdlib
only; used by scripts/e2e-alerts.sh): probe alerts are posted through /api/v2/alerts and their
state (active, or suppressed with inhibitedBy) is read back.

  e2e_inhibition.py --am http://127.0.0.1:9093

1. One replica down (LqoGatewayDown, instance probe-a) silences that replica's LqoWriterRecordsLost,
   not the other replica's, and not a model version's LqoErrorBudgetBurnFast.
2. Every gateway down (LqoGatewayAllDown) silences the model version's alert and the other
   replica's too.
The probe alerts carry model_version=inhibition-probe and instances probe-a/probe-b and are
resolved at the end.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
import urllib.parse
import urllib.request

PROBE_MV = "inhibition-probe"


def now(offset_s: int = 0) -> str:
    t = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=offset_s)
    return t.isoformat().replace("+00:00", "Z")


def alert(labels: dict[str, str], ends_in_s: int = 600) -> dict:
    return {"labels": labels, "annotations": {"summary": "inhibition probe of scripts/e2e_inhibition.py"},
            "startsAt": now(-5), "endsAt": now(ends_in_s)}


DOWN_A = {"alertname": "LqoGatewayDown", "job": "lqo", "instance": "probe-a:18000", "severity": "ticket"}
ALL_DOWN = {"alertname": "LqoGatewayAllDown", "job": "lqo", "severity": "page"}
BURN = {"alertname": "LqoErrorBudgetBurnFast", "model_version": PROBE_MV, "severity": "page"}
LOST_A = {"alertname": "LqoWriterRecordsLost", "job": "lqo", "instance": "probe-a:18000",
          "reason": "rejected", "severity": "ticket"}
LOST_B = {"alertname": "LqoWriterRecordsLost", "job": "lqo", "instance": "probe-b:18000",
          "reason": "rejected", "severity": "ticket"}


def post(am: str, alerts: list[dict]) -> None:
    req = urllib.request.Request(f"{am}/api/v2/alerts", data=json.dumps(alerts).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:  # noqa: S310 (local test Alertmanager)
        r.read()


def states(am: str) -> dict[tuple, str]:
    with urllib.request.urlopen(f"{am}/api/v2/alerts", timeout=10) as r:  # noqa: S310
        out = {}
        for a in json.load(r):
            key = tuple(sorted(a["labels"].items()))
            st = a["status"]
            out[key] = "inhibited" if st.get("inhibitedBy") else st.get("state", "?")
        return out


def key(labels: dict) -> tuple:
    return tuple(sorted(labels.items()))


def expect(am: str, want: dict[str, tuple[dict, str]], timeout_s: float = 20) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while True:
        got = states(am)
        wrong = [f"{name}: {got.get(key(labels), 'missing')}, want {state}"
                 for name, (labels, state) in want.items() if got.get(key(labels)) != state]
        if not wrong or time.monotonic() > deadline:
            return wrong
        time.sleep(0.25)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--am", required=True)
    args = ap.parse_args(argv)
    failures: list[str] = []
    try:
        post(args.am, [alert(DOWN_A), alert(BURN), alert(LOST_A), alert(LOST_B)])
        wrong = expect(args.am, {
            "LqoGatewayDown probe-a": (DOWN_A, "active"),
            "LqoErrorBudgetBurnFast of a model version": (BURN, "active"),
            "LqoWriterRecordsLost of probe-a (the down replica)": (LOST_A, "inhibited"),
            "LqoWriterRecordsLost of probe-b (a healthy replica)": (LOST_B, "active"),
        })
        failures += [f"one replica down: {w}" for w in wrong]
        post(args.am, [alert(ALL_DOWN)])
        wrong = expect(args.am, {
            "LqoGatewayAllDown": (ALL_DOWN, "active"),
            "LqoGatewayDown probe-a": (DOWN_A, "inhibited"),
            "LqoErrorBudgetBurnFast of a model version": (BURN, "inhibited"),
            "LqoWriterRecordsLost of probe-b": (LOST_B, "inhibited"),
        })
        failures += [f"every gateway down: {w}" for w in wrong]
    finally:
        # Resolve the probes (endsAt in the past).
        try:
            post(args.am, [alert(x, ends_in_s=-1) for x in (DOWN_A, ALL_DOWN, BURN, LOST_A, LOST_B)])
        except OSError as e:
            print(f"e2e_inhibition: could not resolve the probe alerts: {e}", file=sys.stderr)
    for f in failures:
        print(f"e2e_inhibition: FAIL {f}")
    if failures:
        return 1
    print("e2e_inhibition: one replica down silences only its own alerts; every gateway down "
          "silences the model versions' alerts")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
