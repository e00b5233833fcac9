"""deploy/prometheus: the scrape config and alert rules pass promtool, the rules' unit tests pass, and
Sentinel's own exposition passes `promtool check metrics`."""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from tests.deploy.helpers import DEPLOY

PROM = DEPLOY / "prometheus"
ALERTS = {
    "SentinelDown",
    "SentinelSourceDown",
    "SentinelSourceStale",
    "SentinelOutboxBacklogGrowing",
    "SentinelDeliveriesFailing",
    "SentinelReceiverFailing",
    "SentinelConfigReloadFailed",
    "SentinelStoreLockLost",
}


def run(promtool: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, *args], cwd=PROM, input=stdin, check=False, capture_output=True, text=True, timeout=120
    )


def output(proc: subprocess.CompletedProcess[str]) -> str:
    return f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"


def test_check_config(promtool: str) -> None:
    proc = run(promtool, "check", "config", "prometheus.yml")
    assert proc.returncode == 0, output(proc)
    assert "SUCCESS: 1 rule files found" in proc.stdout, output(proc)


def test_check_rules(promtool: str) -> None:
    proc = run(promtool, "check", "rules", "sentinel-rules.yml")
    assert proc.returncode == 0, output(proc)
    assert f"SUCCESS: {len(ALERTS)} rules found" in proc.stdout, output(proc)


def test_rule_unit_tests(promtool: str) -> None:
    proc = run(promtool, "test", "rules", "sentinel-rules.test.yml")
    assert proc.returncode == 0, output(proc)
    assert "SUCCESS" in proc.stdout, output(proc)


def test_check_metrics(promtool: str, rendered_metrics: str) -> None:
    proc = run(promtool, "check", "metrics", stdin=rendered_metrics)
    assert proc.returncode == 0, output(proc)
    assert proc.stdout.strip() == "" and proc.stderr.strip() == "", output(proc)


def test_check_metrics_is_not_blind(promtool: str) -> None:
    """promtool does lint what it is given: a counter without _total is reported."""
    bad = "# HELP sentinel_bad Bad.\n# TYPE sentinel_bad counter\nsentinel_bad 1\n"
    proc = run(promtool, "check", "metrics", stdin=bad)
    assert proc.returncode != 0 and "sentinel_bad" in proc.stdout + proc.stderr, output(proc)


# --- structure, independent of promtool ------------------------------------------------------------


def _rules() -> list[dict[str, object]]:
    doc = yaml.safe_load((PROM / "sentinel-rules.yml").read_text(encoding="utf-8"))
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_each_alert_is_defined_once_with_severity_and_annotations() -> None:
    rules = _rules()
    names = [str(r["alert"]) for r in rules]
    assert sorted(names) == sorted(ALERTS)
    for rule in rules:
        labels = rule["labels"]
        annotations = rule["annotations"]
        assert isinstance(labels, dict) and labels.get("severity") in {"critical", "warning"}, rule["alert"]
        assert isinstance(annotations, dict), rule["alert"]
        assert annotations.get("summary") and annotations.get("description"), rule["alert"]


def test_each_alert_has_firing_and_quiet_cases() -> None:
    doc = yaml.safe_load((PROM / "sentinel-rules.test.yml").read_text(encoding="utf-8"))
    firing: set[str] = set()
    quiet: set[str] = set()
    for test in doc["tests"]:
        for case in test["alert_rule_test"]:
            (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    assert firing == ALERTS, f"no firing case for {ALERTS - firing}"
    assert quiet == ALERTS, f"no quiet case for {ALERTS - quiet}"


def test_scrape_config() -> None:
    doc = yaml.safe_load((PROM / "prometheus.yml").read_text(encoding="utf-8"))
    assert doc["rule_files"] == ["sentinel-rules.yml"]
    (job,) = [j for j in doc["scrape_configs"] if j["job_name"] == "sentinel"]
    targets = [t for sc in job["static_configs"] for t in sc["targets"]]
    assert targets == ["127.0.0.1:9732"]
    assert job.get("metrics_path", "/metrics") == "/metrics"


@pytest.mark.parametrize("rule", _rules(), ids=lambda r: str(r["alert"]))
def test_alerts_select_the_sentinel_job(rule: dict[str, object]) -> None:
    """Every selector in the alert rules is pinned to job="sentinel" (other jobs' `up` must not page)."""
    expr = str(rule["expr"])
    selectors = re.findall(r"\b(up|sentinel_[a-z_]+)(\{[^}]*\})?", expr)
    assert selectors
    for name, matchers in selectors:
        assert 'job="sentinel"' in matchers, f'{name} in {rule["alert"]} is not limited to job="sentinel"'
