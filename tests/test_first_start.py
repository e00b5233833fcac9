"""The first start hands on only what is live: a daemon with the README's quick-start rules over a real
SQLite CRM whose history one type dominates. Alerts open at the end of the backfill are told only when a
person can still act on them (a streak whose run is still going, a surge that meets its condition
today), each saying how long it has been open; the rest stay recorded (status page, API), untold."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from sentinel.clock import ManualClock
from sentinel.config import load_config
from sentinel.daemon import Daemon
from sentinel.service import build
from sentinel.store.schema import alert_events
from tests.crm import NOW, OTHER, Crm, T, write_config

SH = ZoneInfo("Asia/Shanghai")

QUICK_START = """
[[rules]]
name = "type-surge"
kind = "threshold"

[[rules]]
name = "same-type-streak"
kind = "streak"
"""


@pytest.fixture
def crm(tmp_path: Path) -> Crm:
    return Crm(tmp_path / "crm.db")


def dominated_history(crm: Crm, days: int = 8, until: datetime = NOW) -> None:
    """One type dominates: T every 5 minutes from 08:00 to 22:00 local time, another type every two
    hours in between, and nothing at night. Runs of T reach five long before the one-hour hold ends."""
    rows: list[tuple[datetime, str, str]] = []
    today = until.astimezone(SH).replace(hour=0, minute=0, second=0, microsecond=0)
    for d in range(days, -1, -1):
        day = today - timedelta(days=d)
        for k in range(14 * 12):
            when = day + timedelta(hours=8, minutes=5 * k)
            if when >= until:
                break
            rows.append((when.astimezone(UTC), T, "电话热线"))
            if k % 24 == 12:
                rows.append(((when + timedelta(seconds=30)).astimezone(UTC), OTHER, "微信公众号"))
    crm.add_rows(sorted(rows))


def first_start(tmp_path: Path, crm: Crm, rules: str = QUICK_START) -> tuple[Daemon, ManualClock]:
    cfg = write_config(tmp_path, crm, rules)
    clock = ManualClock(NOW)
    daemon = build(load_config(cfg), config_path=str(cfg), clock=clock)
    daemon.open()
    while daemon.cycle():
        pass
    return daemon, clock


def events(daemon: Daemon) -> list[dict[str, Any]]:
    with daemon.store.reading() as conn:
        rows = conn.execute(select(alert_events).order_by(alert_events.c.seq)).mappings().all()
    return [{"notify": r["notify"], **json.loads(r["payload"])} for r in rows]


def local_day(iso: str) -> str:
    return datetime.fromisoformat(iso).astimezone(SH).date().isoformat()


def test_a_dominant_type_hands_on_todays_run_not_a_streak_open_for_days(tmp_path: Path, crm: Crm) -> None:
    dominated_history(crm)
    daemon, _ = first_start(tmp_path, crm)
    try:
        handed = [e for e in events(daemon) if e["notify"] and e.get("handover")]
        streaks = [e for e in handed if e["rule"] == "same-type-streak"]
        # the run of T going on at 18:00 is handed on once, as the alert of today's run ...
        assert [(e["labels"], local_day(e["started"])) for e in streaks] == [({"type": T}, "2025-07-08")]
        # ... saying how long it has been open (today's first run reached five at 08:20)
        assert streaks[0]["open_s"] == int((NOW - datetime(2025, 7, 8, 8, 20, tzinfo=SH)).total_seconds())
        assert streaks[0]["run_length"] >= 5
        # every earlier day's streak ended with its quiet night: recorded, resolved, never told
        replayed = [e for e in events(daemon) if not e["notify"] and e["rule"] == "same-type-streak"]
        assert {local_day(e["started"]) for e in replayed if e["state"] == "firing"} >= {
            f"2025-07-0{d}" for d in range(1, 8)
        }
        assert all(local_day(e["started"]) == "2025-07-08" for e in handed)
    finally:
        daemon.stop()


def test_a_streak_whose_run_ended_before_the_start_is_not_handed_on(tmp_path: Path, crm: Crm) -> None:
    """The run ended at 17:00 (the type's complaints stopped): its alert waits out the hold, recorded but
    not told, since nothing is going on any more."""
    dominated_history(crm, until=NOW - timedelta(hours=1))
    crm.add(NOW - timedelta(minutes=50), type_=OTHER, channel="微信公众号")
    daemon, _ = first_start(tmp_path, crm)
    try:
        assert [e for e in events(daemon) if e["notify"] and e["rule"] == "same-type-streak"] == []
        opened = [e for e in events(daemon) if e["rule"] == "same-type-streak" and e["state"] == "firing"]
        assert opened and local_day(opened[-1]["started"]) == "2025-07-08"  # it was detected, only not told
    finally:
        daemon.stop()


def test_yesterdays_surge_is_not_handed_on_todays_is(tmp_path: Path, crm: Crm) -> None:
    """Day mode carries an alert over midnight until a full day below the threshold: yesterday's surge
    is still open at 18:00 but below it today (not told); a surge meeting its condition today is told,
    with how long it has been open."""
    crm.history(8, 40)
    crm.add(NOW - timedelta(days=1, hours=4), n=90, spacing=timedelta(seconds=30))  # yesterday 14:00
    crm.add(NOW - timedelta(hours=3), type_="新类型", n=12, spacing=timedelta(minutes=1))  # today 15:00
    daemon, _ = first_start(tmp_path, crm, QUICK_START.split('[[rules]]\nname = "same-type-streak"', 1)[0])
    try:
        surges = [e for e in events(daemon) if e["rule"] == "type-surge"]
        assert any(e["labels"] == {"type": T} and not e["notify"] for e in surges)  # detected in the replay
        handed = [e for e in surges if e["notify"]]
        assert [e["labels"] for e in handed] == [{"type": "新类型"}]
        assert handed[0]["handover"] is True
        # fired at its 10th complaint (min_count), 15:09; handed on at 18:00
        assert handed[0]["open_s"] == int((timedelta(hours=3) - timedelta(minutes=9)).total_seconds())
    finally:
        daemon.stop()


def test_a_channel_silent_at_the_start_is_handed_on_and_resolves_on_its_next_complaint(
    tmp_path: Path, crm: Crm
) -> None:
    """The quiet rule through the daemon: WeChat (every 30 minutes, day and night, for eight days) has
    sent nothing since 14:00 while the phone line flows on; at the first start (18:00) that silence is
    live, handed on with how long it has been silent; its next complaint resolves it, told at once."""
    rows = []
    for k in range(8 * 48 + 36):
        when = NOW - timedelta(days=8) + timedelta(minutes=30 * k)
        rows.append((when, T, "电话热线"))
        if when <= NOW - timedelta(hours=4):
            rows.append((when + timedelta(seconds=5), OTHER, "微信公众号"))
    crm.add_rows(rows)
    rule = '[[rules]]\nname = "channel-quiet"\nkind = "quiet"\nmax_p = 1e-3\n'
    daemon, clock = first_start(tmp_path, crm, rule)
    try:
        handed = [e for e in events(daemon) if e["notify"]]
        assert [(e["rule"], e["state"], e["labels"]) for e in handed] == [
            ("channel-quiet", "firing", {"channel": "微信公众号"})
        ]
        # two complaints an hour: -ln(1e-3) = 6.9 expected after 3 h 27 m of nothing (from 14:00:05)
        fired = datetime.fromisoformat(handed[0]["started"])
        assert timedelta(hours=3, minutes=20) < fired - (NOW - timedelta(hours=4)) < timedelta(hours=3, minutes=35)
        assert handed[0]["handover"] is True and handed[0]["open_s"] == int((NOW - fired).total_seconds())
        assert handed[0]["expected"] >= 6.9 and handed[0]["p"] <= 1e-3
        crm.add(NOW + timedelta(seconds=1), type_=OTHER, channel="微信公众号")
        clock.set(NOW + timedelta(minutes=6))  # the record is settled (lateness 5 m) and resolves it
        daemon.cycle()
        resolved = [e for e in events(daemon) if e["state"] == "resolved"]
        assert [(e["rule"], e["reason"], e["notify"]) for e in resolved] == [
            ("channel-quiet", "a complaint arrived", True)
        ]
        assert resolved[0]["instance"] == handed[0]["instance"]
    finally:
        daemon.stop()
