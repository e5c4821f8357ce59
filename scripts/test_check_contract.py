#!/usr/bin/env python3
"""Tests of scripts/check_contract.py against the hand-made exposition in scripts/testdata/
(stdlib unittest; run: python3 scripts/test_check_contract.py)."""
import contextlib
import io
import os
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import check_contract  # noqa: E402

SAMPLE = os.path.join(HERE, "testdata", "metrics-sample.prom")
PENDING = os.path.join(HERE, "testdata", "pending-sample.txt")
RULES = os.path.join(ROOT, "prometheus", "rules", "*.yml")
DASHBOARDS = os.path.join(ROOT, "grafana", "dashboards", "*.json")


def run(*args):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        rc = check_contract.main(list(args))
    return rc, out.getvalue()


class ContractTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)

    def write(self, name, text):
        path = os.path.join(self.tmp.name, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def rule_file(self, expr):
        return self.write("r.yml", "groups:\n  - name: t\n    rules:\n"
                                   "      - alert: T\n        expr: |\n          "
                                   + expr.replace("\n", "\n          ") + "\n")

    def test_repo_files_pass_with_pending_metrics(self):
        rc, out = run("--metrics", SAMPLE, "--pending-file", PENDING,
                      "--rules", RULES, "--dashboards", DASHBOARDS)
        self.assertEqual(rc, 0, out)
        self.assertIn("check_contract: OK", out)

    def test_repo_files_fail_without_pending_file(self):
        rc, out = run("--metrics", SAMPLE, "--rules", RULES, "--dashboards", DASHBOARDS)
        self.assertEqual(rc, 1, out)
        self.assertIn("metric lqo_judge_score_sum is not exposed", out)

    def test_skip_pending_sources(self):
        rc, out = run("--metrics", SAMPLE, "--pending-file", PENDING, "--skip-pending-sources",
                      "--rules", RULES, "--dashboards", DASHBOARDS)
        self.assertEqual(rc, 0, out)
        self.assertIn("lqo-quality.json", out)

    def test_catalog_of_the_source_passes(self):
        rc, out = run("--catalog", os.path.join(ROOT, "src", "metrics.rs"),
                      "--pending-file", PENDING, "--rules", RULES, "--dashboards", DASHBOARDS)
        self.assertEqual(rc, 0, out)

    def test_missing_metric_fails(self):
        with open(SAMPLE, encoding="utf-8") as f:
            text = "".join(l for l in f if "lqo_cost_usd_total" not in l)
        sample = self.write("m.prom", text)
        rc, out = run("--metrics", sample, "--pending-file", PENDING,
                      "--rules", RULES, "--dashboards", DASHBOARDS)
        self.assertEqual(rc, 1, out)
        self.assertIn("metric lqo_cost_usd_total is not exposed", out)

    def test_histogram_suffixes_and_le(self):
        r = self.rule_file('histogram_quantile(0.9, sum by (le, model_version) '
                           '(rate(lqo_request_duration_seconds_bucket{status="ok"}[5m])))\n'
                           '/ on (model_version) sum by (model_version) '
                           '(rate(lqo_request_duration_seconds_count[5m])) > 1 # THRESHOLD x')
        rc, out = run("--metrics", SAMPLE, "--allow-unused", "--rules", r, "--dashboards", "/nonexistent/*.json")
        self.assertEqual(rc, 0, out)

    def test_invented_metric_fails(self):
        r = self.rule_file("rate(lqo_made_up_total[5m]) > 0")
        rc, out = run("--metrics", SAMPLE, "--rules", r, "--dashboards", "/nonexistent/*.json")
        self.assertEqual(rc, 1, out)
        self.assertIn("metric lqo_made_up_total is not exposed", out)

    def test_unknown_selector_label_fails(self):
        r = self.rule_file('rate(lqo_cost_usd_total{endpoint="chat"}[5m]) > 0')
        rc, out = run("--metrics", SAMPLE, "--rules", r, "--dashboards", "/nonexistent/*.json")
        self.assertEqual(rc, 1, out)
        self.assertIn("label 'endpoint' is not a label of lqo_cost_usd_total", out)

    def test_unknown_grouping_label_fails(self):
        r = self.rule_file("sum by (model_version, provider) (rate(lqo_requests_total[5m]))")
        rc, out = run("--metrics", SAMPLE, "--rules", r, "--dashboards", "/nonexistent/*.json")
        self.assertEqual(rc, 1, out)
        self.assertIn("label 'provider' (by/on/without)", out)

    def test_target_labels_and_builtins_are_allowed(self):
        r = self.rule_file('max without (instance) (lqo_writer_queue_depth{job="lqo"}) > 1\n'
                           'or up{job="lqo"} == 0\nor absent(up{job="lqo"})\n'
                           'or count by (alertname) (ALERTS{alertstate="firing"})')
        rc, out = run("--metrics", SAMPLE, "--allow-unused", "--rules", r, "--dashboards", "/nonexistent/*.json")
        self.assertEqual(rc, 0, out)

    def test_undefined_recording_rule_fails(self):
        d = self.write("d.json", '{"uid": "x", "panels": [{"type": "timeseries", "title": "p", '
                                 '"targets": [{"refId": "A", "expr": '
                                 '"model_version:lqo_nothing:rate5m{model_version=~\\"$model_version\\"}"}]}]}')
        rc, out = run("--metrics", SAMPLE, "--rules", RULES, "--dashboards", d)
        self.assertEqual(rc, 1, out)
        self.assertIn("recording rule model_version:lqo_nothing:rate5m is not defined", out)

    def test_grafana_variables_are_stripped(self):
        d = self.write("d.json", '{"uid": "x", "templating": {"list": [{"name": "model_version", '
                                 '"type": "query", "query": {"query": '
                                 '"label_values(lqo_requests_total, model_version)"}}]}, '
                                 '"panels": [{"type": "timeseries", "title": "p", "targets": '
                                 '[{"refId": "A", "expr": "sum by (model_version) (increase('
                                 'lqo_tokens_total{model_version=~\\"${model_version:regex}\\"}'
                                 '[$__range])) / $__range_s + rate(lqo_cost_usd_total[$__rate_interval])"}]}]}')
        rc, out = run("--metrics", SAMPLE, "--allow-unused", "--rules", "/nonexistent/*.yml", "--dashboards", d)
        self.assertEqual(rc, 0, out)

    def test_label_values_variable_label_is_checked(self):
        d = self.write("d.json", '{"uid": "x", "templating": {"list": [{"name": "v", '
                                 '"type": "query", "query": "label_values(lqo_requests_total, route)"}]}, '
                                 '"panels": []}')
        rc, out = run("--metrics", SAMPLE, "--rules", "/nonexistent/*.yml", "--dashboards", d)
        self.assertEqual(rc, 1, out)
        self.assertIn("label 'route'", out)

    def test_unknown_label_value_is_a_warning(self):
        r = self.rule_file('rate(lqo_tokens_total{token_type="reasoning"}[5m]) > 0')
        rc, out = run("--metrics", SAMPLE, "--allow-unused", "--rules", r, "--dashboards", "/nonexistent/*.json")
        self.assertEqual(rc, 0, out)
        self.assertIn("WARNING", out)
        rc, out = run("--metrics", SAMPLE, "--allow-unused", "--rules", r, "--dashboards", "/nonexistent/*.json",
                      "--strict-values")
        self.assertEqual(rc, 1, out)

    def test_pending_metric_that_landed_is_reported(self):
        with open(SAMPLE, encoding="utf-8") as f:
            text = f.read()
        text += ("# TYPE lqo_judge_backlog gauge\nlqo_judge_backlog 3\n")
        sample = self.write("m.prom", text)
        rc, out = run("--metrics", sample, "--pending-file", PENDING,
                      "--rules", RULES, "--dashboards", DASHBOARDS)
        self.assertEqual(rc, 0, out)
        self.assertIn("NOTE: lqo_judge_backlog: listed as pending but exposed now", out)

    def test_pending_labels_are_checked(self):
        r = self.rule_file('sum by (model_version, grader) (rate(lqo_feedback_total{rating="negative"}[1h]))')
        rc, out = run("--metrics", SAMPLE, "--pending-file", PENDING, "--rules", r,
                      "--dashboards", "/nonexistent/*.json")
        self.assertEqual(rc, 1, out)
        self.assertIn("label 'grader'", out)

    def test_unused_family_fails(self):
        """A family the binary exposes that no rule and no dashboard uses is an error."""
        with open(SAMPLE, encoding="utf-8") as f:
            text = f.read()
        text += ("# HELP lqo_nobody_watches_total A family without a panel or rule.\n"
                 "# TYPE lqo_nobody_watches_total counter\nlqo_nobody_watches_total 1\n")
        sample = self.write("m.prom", text)
        rc, out = run("--metrics", sample, "--pending-file", PENDING,
                      "--rules", RULES, "--dashboards", DASHBOARDS)
        self.assertEqual(rc, 1, out)
        self.assertIn("metric family lqo_nobody_watches_total is exposed but on no dashboard and "
                      "in no rule", out)
        rc, out = run("--metrics", sample, "--pending-file", PENDING, "--allow-unused",
                      "--rules", RULES, "--dashboards", DASHBOARDS)
        self.assertEqual(rc, 0, out)

    def test_unused_family_of_the_catalog_fails(self):
        catalog = self.write("metrics.rs", 'catalog! {\n    X = ("lqo_requests_total", "counter", '
                             '["model_version", "endpoint", "status"], "x");\n'
                             '    Y = ("lqo_forgotten_seconds", "histogram", [], "y");\n}\n')
        r = self.rule_file("sum by (model_version) (rate(lqo_requests_total[5m])) > 1")
        rc, out = run("--catalog", catalog, "--rules", r, "--dashboards", "/nonexistent/*.json")
        self.assertEqual(rc, 1, out)
        self.assertIn("metric family lqo_forgotten_seconds is exposed but on no dashboard", out)
        self.assertNotIn("lqo_requests_total is exposed but", out)

    def test_alertmanager_metrics_are_external(self):
        r = self.rule_file("sum by (instance, integration) (rate(alertmanager_notifications_failed_total[15m]))\n"
                           "/ (sum by (instance, integration) (rate(alertmanager_notifications_total[15m])) > 0)\n"
                           "> 0.01")
        rc, out = run("--metrics", SAMPLE, "--allow-unused", "--rules", r,
                      "--dashboards", "/nonexistent/*.json")
        self.assertEqual(rc, 0, out)
        r = self.rule_file("sum by (route) (rate(alertmanager_notifications_total[15m])) > 0")
        rc, out = run("--metrics", SAMPLE, "--allow-unused", "--rules", r,
                      "--dashboards", "/nonexistent/*.json")
        self.assertEqual(rc, 1, out)
        self.assertIn("label 'route'", out)

    def test_annotation_queries_are_checked(self):
        d = self.write("d.json", '{"uid": "x", "annotations": {"list": [{"name": "Deploys", '
                                 '"datasource": {"type": "prometheus", "uid": "prometheus"}, '
                                 '"expr": "changes(lqo_build_release[5m]) > 0"}]}, "panels": []}')
        rc, out = run("--metrics", SAMPLE, "--allow-unused", "--rules", "/nonexistent/*.yml",
                      "--dashboards", d)
        self.assertEqual(rc, 1, out)
        self.assertIn("annotation 'Deploys'", out)
        self.assertIn("metric lqo_build_release is not exposed", out)

    def test_not_an_exposition(self):
        bad = self.write("bad.prom", "<html>nope</html>\n")
        rc, out = run("--metrics", bad, "--rules", RULES)
        self.assertEqual(rc, 2, out)


if __name__ == "__main__":
    unittest.main(verbosity=1)
