"""The latency benchmark's own arithmetic and configuration, without starting anything: the configs it
writes are ones Sentinel accepts, overrides land where they say, percentiles never hide a timeout, and the
peer's exporter fires at the same row as Sentinel's floor-decided threshold."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sentinel.bench.common import Row, to_toml
from sentinel.bench.latency import apply_override, parse_override, sentinel_config
from sentinel.bench.latency_figures import percentile, summarize
from sentinel.bench.latency_peer import Exporter
from sentinel.bench.latency_workload import BASELINE_DAYS, MIN_COUNT, TZ, Measurement, schedule
from sentinel.config import load_config


class FakeTable:
    url = "sqlite:////tmp/crm.db"
    name = "complaints"

    def insert(self, rows: object) -> float:
        raise AssertionError("not used")

    def close(self) -> None:
        pass


@pytest.mark.parametrize("setting", ["quickstart", "fastest"])
def test_written_configs_load_and_carry_their_settings(tmp_path: Path, setting: str) -> None:
    overrides = [parse_override("source.lateness=3s"), parse_override("quickstart:source.batch_size=500")]
    cfg = sentinel_config(setting, FakeTable(), "sqlite:////tmp/state.db", "http://127.0.0.1:1/x", overrides)
    path = tmp_path / "sentinel.toml"
    path.write_text(to_toml(cfg), encoding="utf-8")
    loaded = load_config(path, environ={})
    assert loaded.source is not None
    assert loaded.source.lateness == timedelta(seconds=3)
    assert [r.name for r in loaded.rules] == ["type-surge", "same-type-streak"]
    assert loaded.receivers[0].kind == "webhook"
    assert loaded.routes[0].group_by == ["rule", "type"]
    if setting == "fastest":
        assert loaded.routes[0].group_wait == timedelta(0)
        assert loaded.source.poll_interval == timedelta(seconds=1)
        assert loaded.source.batch_size == 10_000
    else:
        assert loaded.source.batch_size == 500


def test_overrides_parse_toml_values_and_reach_into_lists() -> None:
    assert parse_override("fastest:source.listen=true") == ("fastest", "source.listen", True)
    assert parse_override("routes=[]") == (None, "routes", [])
    assert parse_override("source.url=sqlite:////x.db") == (None, "source.url", "sqlite:////x.db")
    cfg: dict[str, object] = {"routes": [{"receivers": ["a"]}]}
    apply_override(cfg, "routes.0.group_wait", "0s")
    apply_override(cfg, "source.poll_interval", "1s")
    assert cfg == {"routes": [{"receivers": ["a"], "group_wait": "0s"}], "source": {"poll_interval": "1s"}}


def test_percentiles_interpolate_and_a_timeout_is_never_hidden() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert percentile([1.0, 2.0, 3.0, math.inf], 0.99) == math.inf
    ms = [Measurement("s", "r", "t", 0.0, 1.0), Measurement("s", "r", "t", 0.0, None)]
    s = summarize(ms)
    assert s["timeouts"] == 1 and s["max"] is None and s["p50"] is None


def test_schedule_pairs_surges_and_spreads_streaks() -> None:
    events = schedule(8, 8)
    assert events.count("pair") == 4 and events.count("streak") == 8
    assert events[:3] == ["pair", "streak", "streak"]


def test_exporter_fires_at_the_tenth_row_of_a_new_type_and_knows_the_baseline() -> None:
    exporter = Exporter()
    today = datetime.now(TZ).replace(hour=12, minute=0, second=0, microsecond=0)
    history = [
        Row(i, (today - timedelta(days=1 + i % 8)).astimezone(UTC).replace(tzinfo=None), "known", "c")
        for i in range(80)
    ]
    exporter.add(history)
    new = [Row(100 + i, datetime.now(UTC).replace(tzinfo=None), "surge-1", "c") for i in range(MIN_COUNT)]
    exporter.add(new)
    text = exporter.render()
    # 10 a day on each of the previous 8 days: the mean over the 7 before today is 10
    assert f'complaints_baseline_daily_mean{{type="known"}} {70 / BASELINE_DAYS}' in text
    assert 'complaints_today{type="known"} 0' in text
    assert f'complaints_today{{type="surge-1"}} {MIN_COUNT}' in text
    assert 'complaints_baseline_daily_mean{type="surge-1"} 0.0' in text
    assert 'complaints_total{type="known"} 80' in text
