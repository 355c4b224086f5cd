"""deploy/: the Prometheus rules and the Grafana dashboard refer only to metrics (and labels) the
worker exports, and load as what they claim to be. promtool, when installed (make test installs
Debian's prometheus package for it), checks the rules and runs their unit tests too."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from streams.core.metrics import Metrics

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"
RULES = DEPLOY / "prometheus" / "crowdpulse-rules.yml"
RULE_TESTS = DEPLOY / "prometheus" / "crowdpulse-rules.test.yml"
DASHBOARD = DEPLOY / "grafana" / "crowdpulse-dashboard.json"
METRIC = re.compile(r"\b(crowdpulse_[a-z0-9_]+)\b")
SELECTOR = re.compile(r"\b(crowdpulse_[a-z0-9_]+)\{([^}]*)\}")
MATCHER_LABEL = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")


def exported() -> dict[str, set[str]]:
    """Every sample name the worker exposes, with its label names."""
    names: dict[str, set[str]] = {}
    for metric in vars(Metrics()).values():
        if not isinstance(metric, MetricWrapperBase):
            continue
        labels = set(metric._labelnames)
        suffixes = {"counter": ["_total", "_created"], "histogram": ["_bucket", "_sum", "_count", "_created"]}.get(metric._type, [""])
        for suffix in suffixes:
            names[metric._name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return names


def check_expr(expr: str, names: dict[str, set[str]]) -> None:
    used = METRIC.findall(expr)
    assert used, f"no crowdpulse metric in {expr!r}"
    for name in used:
        assert name in names, f"{name} is not exported by the worker ({expr!r})"
    for name, matchers in SELECTOR.findall(expr):
        for label in MATCHER_LABEL.findall(matchers):
            assert label in names[name], f"{name} has no label {label!r} ({expr!r})"
    available = set().union(*(names[n] for n in used))
    for group in GROUPING.findall(expr):
        for label in (part.strip() for part in group.split(",") if part.strip()):
            assert label in available, f"grouping by {label!r}, which none of {used} has ({expr!r})"


def test_the_exported_names_follow_the_style() -> None:
    names = exported()
    assert all(name.startswith("crowdpulse_") for name in names)
    for labels in names.values():
        assert not labels & {"device", "cell", "imsi", "msisdn"}, "labels must have low cardinality"


def test_prometheus_rules_refer_to_exported_metrics() -> None:
    doc = yaml.safe_load(RULES.read_text())
    names = exported()
    rules = [rule for group in doc["groups"] for rule in group["rules"]]
    assert len(rules) >= 10
    assert len({r["alert"] for r in rules}) == len(rules)
    for rule in rules:
        assert rule["labels"]["severity"] in {"critical", "warning"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        if "crowdpulse_" in rule["expr"]:
            check_expr(rule["expr"], names)
        else:
            assert rule["expr"].startswith("up{"), rule["expr"]
    # Every metric the issue asks for is watched by at least one rule or one panel.
    watched = " ".join(r["expr"] for r in rules) + DASHBOARD.read_text()
    for needed in (
        "crowdpulse_events_total", "crowdpulse_consumer_lag_messages", "crowdpulse_estimate_age_seconds",
        "crowdpulse_alerts_active", "crowdpulse_webhook_failures_total", "crowdpulse_area_people",
        "crowdpulse_area_capacity_ratio", "crowdpulse_batch_processing_seconds_bucket",
        "crowdpulse_batch_events_bucket", "crowdpulse_publisher_loop_seconds_bucket",
    ):
        assert needed in watched, needed


def test_grafana_dashboard_is_importable_and_refers_to_exported_metrics() -> None:
    dash = json.loads(DASHBOARD.read_text())
    names = exported()
    assert dash["uid"] and dash["title"] and dash["schemaVersion"] >= 36
    assert [i["name"] for i in dash["__inputs"]] == ["DS_PROMETHEUS"]
    variables = {v["name"] for v in dash["templating"]["list"]}
    panels = dash["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    expressions = 0
    for panel in panels:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["type"] in {"timeseries", "stat"} and panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}"
        for target in panel["targets"]:
            check_expr(target["expr"], names)
            for var in re.findall(r"\$(\w+)", target["expr"]):
                assert var in variables, f"panel {panel['title']!r} uses undefined ${var}"
            expressions += 1
    assert expressions >= 12


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing in CI: make test installs Debian's prometheus package")
        pytest.skip("promtool not installed (apt-get install prometheus); the structural checks above still ran")
    return path


def test_promtool_checks_the_rules_and_runs_their_unit_tests() -> None:
    tool = promtool()
    check = subprocess.run([tool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    tests = subprocess.run([tool, "test", "rules", RULE_TESTS.name], cwd=RULE_TESTS.parent, capture_output=True, text=True, timeout=60)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    config = subprocess.run([tool, "check", "config", "prometheus.yml"], cwd=RULES.parent, capture_output=True, text=True, timeout=60)
    assert config.returncode == 0, config.stdout + config.stderr
