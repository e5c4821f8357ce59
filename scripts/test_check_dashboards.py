#!/usr/bin/env python3
"""Tests of scripts/check_dashboards.py: the SQL name check over several tables, the $__interval
rule for time buckets, the model_version variable rules, and the repo's dashboards passing
(stdlib unittest; run: python3 scripts/test_check_dashboards.py)."""
import contextlib
import copy
import glob
import io
import json
import os
import sys
import tempfile
import unittest

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import check_dashboards  # noqa: E402

MIGRATIONS = sorted(glob.glob(os.path.join(ROOT, "migrations", "postgres", "*.sql")))
COLUMNS = {t: check_dashboards.migration_columns(MIGRATIONS, t) for t in check_dashboards.SQL_TABLES}
RECORDS = os.path.join(ROOT, "grafana", "dashboards", "lqo-logs.json")


def problems(sql):
    return check_dashboards.sql_unknown_names(sql, COLUMNS)


def run(*args):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        rc = check_dashboards.main(list(args))
    return rc, out.getvalue()


class SqlNames(unittest.TestCase):
    def test_migrations_give_every_table_its_columns(self):
        self.assertIn("user_id", COLUMNS["llm_logs"])
        self.assertIn("rationale", COLUMNS["judge_scores"])
        self.assertIn("agreement", COLUMNS["feedback"])
        self.assertIn("cost_usd", COLUMNS["judge_jobs"])
        self.assertNotIn("score", COLUMNS["llm_logs"])

    def test_join_with_aliases_passes(self):
        self.assertEqual(problems(
            "SELECT s.model_version, avg(s.score) AS mean FROM judge_scores s "
            "JOIN llm_logs l ON l.request_id = s.request_id WHERE l.user_id = 'u' "
            "AND 'x' = ANY(l.tags) GROUP BY s.model_version ORDER BY mean"), [])

    def test_qualified_column_of_the_wrong_table_fails(self):
        self.assertIn("column 'score' is not in llm_logs (as l)", problems(
            "SELECT l.score FROM judge_scores s JOIN llm_logs l ON l.request_id = s.request_id"))

    def test_unqualified_column_of_no_table_fails(self):
        self.assertEqual(problems("SELECT ratingz FROM feedback"),
                         ["column 'ratingz' is not in feedback"])
        # llm_logs columns are not feedback columns.
        self.assertEqual(problems("SELECT latency_ms FROM feedback"),
                         ["column 'latency_ms' is not in feedback"])

    def test_unknown_table_fails(self):
        self.assertTrue(any("reads table 'api_keys'" in p
                            for p in problems("SELECT name FROM api_keys")))

    def test_with_names_and_recursive_scan(self):
        self.assertEqual(problems(
            "WITH RECURSIVE v AS ((SELECT model_version FROM llm_logs ORDER BY model_version "
            "LIMIT 1) UNION ALL SELECT (SELECT l.model_version FROM llm_logs l WHERE "
            "l.model_version > v.model_version ORDER BY l.model_version LIMIT 1) FROM v WHERE "
            "v.model_version IS NOT NULL) SELECT model_version FROM v"), [])


class TimeBuckets(unittest.TestCase):
    def test_fixed_intervals_are_reported(self):
        f = check_dashboards.fixed_time_groups
        self.assertEqual(f("SELECT $__timeGroupAlias(created_at, $__interval), 1"), [])
        self.assertEqual(f("SELECT $__timeGroup(created_at, '$__interval')"), [])
        self.assertEqual(f("SELECT $__timeGroupAlias(created_at, '1m')"),
                         ["$__timeGroupAlias(created_at, '1m')"])


class Dashboards(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)
        with open(RECORDS, encoding="utf-8") as f:
            self.records = json.load(f)

    def check(self, dashboard):
        path = os.path.join(self.tmp.name, "d.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(dashboard, f)
        return run("--dashboards", path)

    def test_repo_dashboards_pass(self):
        rc, out = run()
        self.assertEqual(rc, 0, out)

    def test_a_fixed_sql_bucket_fails(self):
        d = copy.deepcopy(self.records)
        t = next(p for p in d["panels"] if p.get("type") == "timeseries")["targets"][0]
        t["rawSql"] = t["rawSql"].replace("$__interval", "'1m'")
        rc, out = self.check(d)
        self.assertEqual(rc, 1, out)
        self.assertIn("uses a fixed bucket; use $__interval", out)

    def test_sql_dashboard_needs_the_database_variable(self):
        d = copy.deepcopy(self.records)
        mv = d["templating"]["list"][0]
        mv["datasource"] = {"type": "prometheus", "uid": "prometheus"}
        mv["query"] = "label_values(lqo_requests_total, model_version)"
        rc, out = self.check(d)
        self.assertEqual(rc, 1, out)
        self.assertIn("must be a PostgreSQL query variable", out)

    def test_mixing_prometheus_and_sql_panels_fails(self):
        d = copy.deepcopy(self.records)
        d["panels"].append({"id": 999, "type": "stat", "title": "p", "gridPos": {},
                            "datasource": {"type": "prometheus", "uid": "prometheus"},
                            "targets": [{"refId": "A", "expr": "up"}]})
        rc, out = self.check(d)
        self.assertEqual(rc, 1, out)
        self.assertIn("mixes Prometheus and PostgreSQL panels", out)


if __name__ == "__main__":
    unittest.main(verbosity=1)
