"""Commit delay on a real daemon over a real SQLite source, with a moved clock: each accepted record's
delay (first read minus created_at) lands in `sentinel_source_commit_delay_seconds` once; more than 1 %
of records later than `lateness` gives a warning naming the value to set, in the log (at most once an
hour) and in /api/v1/status; under 1 % gives none."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from sentinel.clock import ManualClock
from sentinel.commit_delay import percent, suggest
from sentinel.config import load_config
from sentinel.daemon import Daemon
from sentinel.http import Request
from sentinel.service import build
from tests.crm import NOW, Crm, write_config

METRIC = "sentinel_source_commit_delay_seconds"
T0 = NOW + timedelta(minutes=1)  # after the backfill, which is read at NOW


@pytest.fixture
def scene(tmp_path: Path) -> Iterator[tuple[Daemon, Crm, ManualClock]]:
    """A daemon whose first start's backfill (8 days x 80 records) is done at NOW; lateness is 5m."""
    crm = Crm(tmp_path / "crm.db")
    crm.history(days=8, per_day=40)
    cfg = write_config(tmp_path, crm, '[[rules]]\nname = "type-surge"\nkind = "threshold"\n')
    clock = ManualClock(NOW)
    daemon = build(load_config(cfg), config_path=str(cfg), clock=clock)
    daemon.open()
    try:
        while daemon.cycle():
            pass
        yield daemon, crm, clock
    finally:
        daemon.stop()


def poll_at(daemon: Daemon, clock: ManualClock, at: Any) -> None:
    clock.set(at)
    while daemon.cycle():
        pass


def polling(daemon: Daemon, clock: ManualClock, start: Any, end: Any) -> None:
    """Poll every minute from `start` to `end`, as a running daemon does (finding nothing new): a gap longer
    than lateness between polls means the daemon did not look, and what it then reads is not the CRM's delay."""
    at = start
    while at <= end:
        poll_at(daemon, clock, at)
        at += timedelta(minutes=1)


def sample(daemon: Daemon, suffix: str, **labels: str) -> float:
    value = daemon.metrics.registry.get_sample_value(METRIC + suffix, labels)
    return 0.0 if value is None else value


def status(daemon: Daemon) -> dict[str, Any]:
    resp = daemon.app.dispatch(Request("GET", "/api/v1/status", {}, {}, b""))
    assert resp.status == 200
    data: dict[str, Any] = json.loads(resp.body)
    return data


def delay_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "after their created_at" in r.getMessage()]


def test_each_record_is_observed_once_with_its_delay(scene: tuple[Daemon, Crm, ManualClock]) -> None:
    daemon, crm, clock = scene
    assert sample(daemon, "_count") == 0  # the backfill is history, not commit delay
    crm.add(T0, n=3, spacing=timedelta(seconds=1))  # created T0, T0+1s, T0+2s
    poll_at(daemon, clock, T0 + timedelta(seconds=12))  # read 12, 11 and 10 s after creation
    assert sample(daemon, "_count") == 3
    assert sample(daemon, "_sum") == pytest.approx(33.0)
    assert sample(daemon, "_bucket", le="5.0") == 0
    assert sample(daemon, "_bucket", le="10.0") == 1
    assert sample(daemon, "_bucket", le="30.0") == 3
    poll_at(daemon, clock, T0 + timedelta(seconds=40))  # the look-back reads them again: not new
    assert sample(daemon, "_count") == 3
    text = daemon.metrics.render().decode()
    assert f"# TYPE {METRIC} histogram" in text


def test_a_batch_import_later_than_lateness_warns_once_an_hour(
    scene: tuple[Daemon, Crm, ManualClock], caplog: pytest.LogCaptureFixture
) -> None:
    daemon, crm, clock = scene
    # the CRM commits every 8 minutes what was created since: 100 rows over 480 s, read 1 s after the last
    polling(daemon, clock, T0, T0 + timedelta(seconds=475.2))
    crm.add(T0, n=100, spacing=timedelta(seconds=4.8))
    with caplog.at_level(logging.WARNING, "sentinel"):
        poll_at(daemon, clock, T0 + timedelta(seconds=476.2))
    expected = (
        "37 % of records were committed more than 5m after their created_at (p99 7m51s): "
        "set [source] lateness to at least 8m"
    )
    assert delay_warnings(caplog) == [expected]
    report = status(daemon)["source"]["commit_delay"]
    assert report["warning"] == expected
    assert report["records"] == 100 and report["late"] == 37 and report["lateness_seconds"] == 300.0

    caplog.clear()
    start = T0 + timedelta(seconds=480)
    polling(daemon, clock, start, start + timedelta(seconds=475.2))
    crm.add(start, n=100, spacing=timedelta(seconds=4.8))  # the next batch, as late
    with caplog.at_level(logging.WARNING, "sentinel"):
        poll_at(daemon, clock, start + timedelta(seconds=476.2))
    assert delay_warnings(caplog) == []  # logged at most once an hour ...
    assert status(daemon)["source"]["commit_delay"]["warning"] is not None  # ... shown while it lasts

    start = T0 + timedelta(hours=1)
    polling(daemon, clock, T0 + timedelta(seconds=1020), start + timedelta(seconds=475.2))
    crm.add(start, n=100, spacing=timedelta(seconds=4.8))
    with caplog.at_level(logging.WARNING, "sentinel"):
        poll_at(daemon, clock, start + timedelta(seconds=476.2))
    assert len(delay_warnings(caplog)) == 1  # an hour later it is said again


def test_under_one_percent_late_gives_no_warning(
    scene: tuple[Daemon, Crm, ManualClock], caplog: pytest.LogCaptureFixture
) -> None:
    daemon, crm, clock = scene
    polling(daemon, clock, T0, T0 + timedelta(seconds=298))
    crm.add(T0, n=298, spacing=timedelta(seconds=1))  # T0 .. T0+297 s
    with caplog.at_level(logging.WARNING, "sentinel"):
        poll_at(daemon, clock, T0 + timedelta(seconds=299))  # delays 2 .. 299 s: all within lateness
        polling(daemon, clock, T0 + timedelta(seconds=359), T0 + timedelta(seconds=697))
        crm.add(T0 + timedelta(seconds=298), n=2, spacing=timedelta(seconds=1))  # committed 400 s late
        poll_at(daemon, clock, T0 + timedelta(seconds=698))
    assert sample(daemon, "_count") == 300
    report = status(daemon)["source"]["commit_delay"]
    assert report["late"] == 2 and report["records"] == 300  # 0.67 %
    assert report["warning"] is None
    assert delay_warnings(caplog) == []


def test_what_waited_for_an_outage_is_not_commit_delay(scene: tuple[Daemon, Crm, ManualClock]) -> None:
    daemon, crm, clock = scene
    crm.add(T0, n=150, spacing=timedelta(seconds=1))
    daemon.health.mark(False, "connection refused")  # the source was down while these were created
    daemon.health.next_try_monotonic = 0.0
    poll_at(daemon, clock, T0 + timedelta(minutes=4))
    assert sample(daemon, "_count") == 0
    assert status(daemon)["source"]["commit_delay"]["warning"] is None


def test_rows_that_waited_for_a_daemon_that_did_not_poll_are_not_commit_delay(
    scene: tuple[Daemon, Crm, ManualClock], caplog: pytest.LogCaptureFixture
) -> None:
    """Found by the crash soak: a poll that waited 30 s for a SQLite store another process had locked, then
    committed; the next poll read 30 s of rows the CRM had committed in time and warned "79 % of records were
    committed more than 3s after their created_at: set lateness to at least 40s". A gap between polls longer
    than lateness is the daemon's, not the CRM's."""
    daemon, crm, clock = scene
    polling(daemon, clock, T0, T0 + timedelta(minutes=2))
    crm.add(T0 + timedelta(minutes=2, seconds=1), n=200, spacing=timedelta(seconds=2))  # committed as created
    with caplog.at_level(logging.WARNING, "sentinel"):
        poll_at(daemon, clock, T0 + timedelta(minutes=9, seconds=2))  # the next poll, 7 minutes on
    assert sample(daemon, "_count") == 0
    assert status(daemon)["source"]["commit_delay"]["warning"] is None
    assert delay_warnings(caplog) == []
    crm.add(T0 + timedelta(minutes=9, seconds=3), n=3, spacing=timedelta(seconds=1))
    poll_at(daemon, clock, T0 + timedelta(minutes=9, seconds=10))  # polling again: measured again
    assert sample(daemon, "_count") == 3


def test_advice_is_a_round_figure() -> None:
    assert [suggest(s) for s in (0.4, 11, 59, 60, 460, 3599, 3601)] == [10, 20, 60, 60, 480, 3600, 7200]
    assert [percent(s) for s in (0.12, 0.015, 0.38)] == ["12 %", "1.5 %", "38 %"]
