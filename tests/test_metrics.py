"""Metrics from a running daemon: fixed label names with __all__, series gauges that match the rule's
view, label values capped per rule (the excess folded into __other__ and counted), no secret anywhere."""

from __future__ import annotations

import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest

from sentinel.clock import ManualClock
from sentinel.config import load_config
from sentinel.metrics import Metrics
from sentinel.service import build
from tests.test_daemon import NOW, Crm, config, history


def run_daemon(tmp_path: Path, crm: Crm, metrics: Metrics, extra: str = "") -> str:
    cfg = config(tmp_path, crm, extra)
    daemon = build(load_config(cfg), config_path=str(cfg), clock=ManualClock(NOW), metrics=metrics)
    daemon.open()
    try:
        while daemon.cycle():
            pass
        daemon.pipeline.detection.refresh()
        return metrics.render().decode()
    finally:
        daemon.stop()


def test_series_gauges_with_fixed_labels(tmp_path: Path) -> None:
    crm = Crm(tmp_path / "crm.db")
    history(crm)
    crm.add(NOW - timedelta(hours=1), n=61, spacing=timedelta(seconds=30))
    text = run_daemon(tmp_path, crm, Metrics())
    # 61 new plus the 8 of the last history day that fall into today's local (Shanghai) day
    assert 'sentinel_series_current{channel="__all__",rule="type-surge",type="物流配送延误"} 69.0' in text
    assert 'sentinel_series_ratio{channel="__all__",rule="type-surge",type="物流配送延误"} 1.725' in text
    assert 'sentinel_series_baseline{channel="__all__",rule="type-surge",type="物流配送延误"} 40.0' in text
    assert 'sentinel_series_threshold{channel="__all__",rule="type-surge",type="物流配送延误"} 61.0' in text
    assert 'sentinel_alerts_firing{rule="type-surge",tier="light"} 1.0' in text
    assert 'sentinel_alert_events_total{rule="type-surge",state="firing",tier="light"} 1.0' in text
    assert 'sentinel_streak_length{channel="__all__",rule="streak",type="物流配送延误"}' in text
    assert "_created" not in text


def test_label_values_are_capped_and_the_excess_counted(tmp_path: Path) -> None:
    crm = Crm(tmp_path / "crm.db")
    history(crm)
    for t in ("甲", "乙", "丙", "丁"):
        crm.add(NOW - timedelta(hours=2), type_=t, n=2)
    text = run_daemon(tmp_path, crm, Metrics(label_cap=3))
    series = [
        line
        for line in text.splitlines()
        if line.startswith("sentinel_series_current{") and 'rule="type-surge"' in line
    ]
    assert len(series) == 4  # three admitted label sets plus __other__
    assert any('type="__other__"' in line for line in series)
    assert 'sentinel_series_folded_total{rule="type-surge"} 3.0' in text


def test_max_series_folding_is_counted(tmp_path: Path) -> None:
    crm = Crm(tmp_path / "crm.db")
    history(crm)
    for t in ("甲", "乙", "丙", "丁"):
        crm.add(NOW - timedelta(hours=2), type_=t, n=2)
    extra = '[[rules]]\nname = "capped"\nkind = "threshold"\nmax_series = 2\n'
    text = run_daemon(tmp_path, crm, Metrics(), extra)
    capped = [
        line for line in text.splitlines() if line.startswith("sentinel_series_current{") and 'rule="capped"' in line
    ]
    assert len(capped) == 3 and any('type="__other__"' in line for line in capped)
    assert 'sentinel_series_folded_total{rule="capped"} 4.0' in text


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed (Debian package prometheus)")
def test_promtool_finds_nothing_in_a_real_daemons_exposition(tmp_path: Path) -> None:
    crm = Crm(tmp_path / "crm.db")
    history(crm)
    crm.add(NOW - timedelta(hours=1), n=61, spacing=timedelta(seconds=30))
    text = run_daemon(tmp_path, crm, Metrics())
    out = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, check=False)
    assert out.returncode == 0 and out.stdout.strip() == "" and out.stderr.strip() == "", out.stdout + out.stderr
