"""The daemon end to end over a real SQLite source and store: first-start backfill, live detection,
events persisted with the watermark, restarts that neither lose nor repeat anything."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from sentinel.clock import ManualClock
from sentinel.config import load_config
from sentinel.daemon import Daemon
from sentinel.service import build
from sentinel.store.schema import alert_events, alerts
from sentinel.store.schema import outbox as outbox_table
from tests.crm import NOW, OTHER, Crm, T, write_config


@pytest.fixture
def crm(tmp_path: Path) -> Crm:
    return Crm(tmp_path / "crm.db")


def config(tmp_path: Path, crm: Crm, extra: str = "") -> Path:
    return write_config(
        tmp_path,
        crm,
        f"""
[[rules]]
name = "type-surge"
kind = "threshold"
min_count = 10

[[rules]]
name = "streak"
kind = "streak"
length = 5
{extra}
""",
    )


def start(cfg_path: Path, clock: ManualClock) -> Daemon:
    daemon = build(load_config(cfg_path), config_path=str(cfg_path), clock=clock)
    daemon.open()
    return daemon


def surge_after_backfill(daemon: Daemon, crm: Crm, clock: ManualClock) -> None:
    """Finish the first start's backfill, then 61 complaints in ten minutes (against 40 a day) and a poll."""
    while daemon.cycle():
        pass
    crm.add(NOW - timedelta(minutes=20), n=61, spacing=timedelta(seconds=10))
    clock.set(NOW + timedelta(seconds=2))
    daemon.cycle()


def events(daemon: Daemon) -> list[dict[str, Any]]:
    with daemon.store.reading() as conn:
        rows = conn.execute(select(alert_events).order_by(alert_events.c.seq)).mappings().all()
    return [
        {"state": r["state"], "rule": r["rule"], "tier": r["tier"], "notify": r["notify"], **json.loads(r["payload"])}
        for r in rows
    ]


def history(crm: Crm, days: int = 8, per_day: int = 40) -> None:
    crm.history(days, per_day)


@contextmanager
def backfilled(tmp_path: Path, crm: Crm, extra: str = "") -> Iterator[tuple[Daemon, ManualClock]]:
    """A daemon over `history(crm)` at NOW, its first start's backfill done; stopped afterwards."""
    history(crm)
    clock = ManualClock(NOW)
    daemon = start(config(tmp_path, crm, extra), clock)
    try:
        while daemon.cycle():
            pass
        yield daemon, clock
    finally:
        daemon.stop()


def test_backfill_then_live_alert(tmp_path: Path, crm: Crm) -> None:
    with backfilled(tmp_path, crm) as (daemon, clock):
        daemon.cycle()
        assert daemon.state is not None and daemon.state.backfill_done
        before = events(daemon)
        assert all(not e["notify"] for e in before)  # backfill events are recorded, never sent
        # a surge now: 61 in ten minutes against a baseline of 40 a day
        crm.add(NOW - timedelta(minutes=20), n=61, spacing=timedelta(seconds=10))
        clock.set(NOW + timedelta(seconds=2))
        daemon.cycle()
        new = [e for e in events(daemon) if e["notify"] and e["rule"] == "type-surge"]
        assert [(e["state"], e["tier"]) for e in new] == [("firing", "light")]
        assert new[0]["value"] == 61 and new[0]["labels"] == {"type": T}


def test_records_are_evaluated_in_the_poll_that_reads_them(tmp_path: Path, crm: Crm) -> None:
    """Fire on sight: with `lateness = 5m`, a surge and a five-in-a-row created seconds ago are recorded
    (to be sent) by the very poll that reads them, not five minutes later."""
    with backfilled(tmp_path, crm) as (daemon, clock):
        count = len(events(daemon))
        crm.add(NOW + timedelta(seconds=1), type_="新类型", n=5)  # five in a row of a new type
        crm.add(NOW + timedelta(seconds=6), n=61, spacing=timedelta(milliseconds=100))  # 61 today vs 40 a day
        clock.set(NOW + timedelta(seconds=14))
        daemon.cycle()
        new = [e for e in events(daemon)[count:] if e["notify"]]
        assert [(e["rule"], e["state"], e["tier"], e["labels"]) for e in new] == [
            ("streak", "firing", "light", {"type": "新类型"}),
            ("streak", "firing", "light", {"type": T}),
            ("streak", "upgraded", "moderate", {"type": T}),
            ("streak", "upgraded", "severe", {"type": T}),
            ("type-surge", "firing", "light", {"type": T}),
        ]
        assert new[0]["value"] == 5
        surge = new[4]
        assert surge["value"] == 61 and surge["at"] == "2025-07-08T18:00:11.200000+08:00"  # the 61st of today


def test_a_late_row_that_breaks_a_told_streak_retracts_it_to_everyone_told(tmp_path: Path, crm: Crm) -> None:
    """A five-in-a-row told on sight; then a row created inside the run is committed late (within
    lateness). Once the settled order passes the run, the alert is closed as retracted, the people told
    of it hear so, and the retraction is counted."""
    with backfilled(
        tmp_path,
        crm,
        """
[[receivers]]
name = "ops"
kind = "webhook"
url = "http://127.0.0.1:9/hook"

[[routes]]
receivers = ["ops"]
group_wait = "0s"
""",
    ) as (daemon, clock):
        dispatch = daemon.pipeline.dispatch
        count = len(events(daemon))
        crm.add(NOW + timedelta(seconds=1), type_="新类型", n=5, spacing=timedelta(seconds=2))
        clock.set(NOW + timedelta(seconds=12))
        daemon.cycle()
        dispatch.dispatch()
        fired = [e for e in events(daemon)[count:] if e["rule"] == "streak"]
        assert [(e["state"], e["labels"]) for e in fired] == [("firing", {"type": "新类型"})]
        crm.add(NOW + timedelta(seconds=4), type_=OTHER)  # created inside the run, committed late
        clock.set(NOW + timedelta(seconds=20))
        daemon.cycle()  # read, but not settled yet: nothing changes
        assert [e["state"] for e in events(daemon)[count:] if e["rule"] == "streak"] == ["firing"]
        clock.set(NOW + timedelta(minutes=5, seconds=30))  # the settled order passes the run
        daemon.cycle()
        streak = [e for e in events(daemon)[count:] if e["rule"] == "streak"]
        assert [e["state"] for e in streak] == ["firing", "resolved"]
        assert streak[1]["instance"] == streak[0]["instance"]
        assert streak[1]["reason"].startswith("retracted:") and streak[1]["notify"]
        dispatch.dispatch()
        with daemon.store.reading() as conn:
            msgs = [
                (r.receiver, json.loads(r.payload)["status"], json.loads(r.instances))
                for r in conn.execute(select(outbox_table).order_by(outbox_table.c.id))
            ]
        told = [m for m in msgs if streak[0]["instance"] in m[2]]
        assert [(r, status) for r, status, _ in told] == [("ops", "firing"), ("ops", "resolved")]
        exposition = daemon.metrics.render().decode()
        assert 'sentinel_alert_retractions_total{rule="streak",what="firing"} 1.0' in exposition


def test_restart_continues_without_repeating(tmp_path: Path, crm: Crm) -> None:
    history(crm)
    clock = ManualClock(NOW)
    cfg = config(tmp_path, crm)
    daemon = start(cfg, clock)
    surge_after_backfill(daemon, crm, clock)
    first = events(daemon)
    daemon.stop()

    daemon = start(cfg, clock)  # restored from the store
    try:
        clock.set(NOW + timedelta(seconds=4))
        daemon.cycle()
        assert events(daemon) == first  # the re-read look-back window counted nothing twice
        crm.add(NOW - timedelta(minutes=1), n=20, spacing=timedelta(seconds=1))  # 81 >= 2 x 40
        clock.set(NOW + timedelta(minutes=5))  # records are evaluated once `lateness` (5 min) old
        daemon.cycle()
        new = events(daemon)[len(first) :]
        assert [(e["state"], e["tier"], e["value"]) for e in new if e["rule"] == "type-surge"] == [
            ("upgraded", "moderate", 80)
        ]
        assert new[0]["instance"] == [e for e in first if e["rule"] == "type-surge"][-1]["instance"]
    finally:
        daemon.stop()


def test_surge_under_way_at_first_start_is_handed_on_once(tmp_path: Path, crm: Crm) -> None:
    history(crm)
    crm.add(NOW - timedelta(hours=2), n=90, spacing=timedelta(seconds=30))  # already above 2 x 40
    clock = ManualClock(NOW)
    daemon = start(config(tmp_path, crm), clock)
    try:
        while daemon.cycle():
            pass
        evs = [e for e in events(daemon) if e["rule"] == "type-surge"]
        replayed = [e for e in evs if not e["notify"]]
        handed = [e for e in evs if e["notify"]]
        assert [e["state"] for e in replayed] == ["firing", "upgraded"]
        assert len(handed) == 1 and handed[0]["state"] == "firing" and handed[0]["handover"] is True
        assert handed[0]["tier"] == "moderate" and handed[0]["instance"] == replayed[0]["instance"]
        assert handed[0]["at"] == replayed[0]["at"]  # as open since it started
        count = len(events(daemon))
        clock.set(NOW + timedelta(seconds=2))
        daemon.cycle()
        assert len(events(daemon)) == count  # no second handover
        sent = [e for e in events(daemon) if e["notify"]]
        assert sorted(e["rule"] for e in sent) == ["streak", "type-surge"]  # the 90-long run too
    finally:
        daemon.stop()


def test_removed_rule_resolves_its_open_alerts(tmp_path: Path, crm: Crm) -> None:
    history(crm)
    clock = ManualClock(NOW)
    cfg = config(tmp_path, crm)
    daemon = start(cfg, clock)
    surge_after_backfill(daemon, crm, clock)
    daemon.stop()
    text = cfg.read_text(encoding="utf-8")
    cfg.write_text(text.split("[[rules]]")[0] + "[[rules]]" + text.split("[[rules]]")[2], encoding="utf-8")
    daemon = start(cfg, clock)
    try:
        last = events(daemon)[-1]
        assert last["state"] == "resolved" and last["rule"] == "type-surge" and last["reason"] == "rule removed"
        with daemon.store.reading() as conn:
            status = conn.execute(select(alerts.c.status).where(alerts.c.rule == "type-surge")).scalars().all()
        assert status == ["resolved"]
    finally:
        daemon.stop()


def test_reload_rejects_a_bad_config_and_keeps_running(tmp_path: Path, crm: Crm) -> None:
    history(crm)
    clock = ManualClock(NOW)
    cfg = config(tmp_path, crm)
    daemon = start(cfg, clock)
    try:
        good = cfg.read_text(encoding="utf-8")
        cfg.write_text(good + "\nbogus = 1\n", encoding="utf-8")
        assert daemon.reload() is False
        assert b"sentinel_config_last_reload_successful 0.0" in daemon.metrics.render()
        cfg.write_text(good.replace("min_count = 10", "min_count = 12"), encoding="utf-8")
        assert daemon.reload() is True
        assert b"sentinel_config_last_reload_successful 1.0" in daemon.metrics.render()
    finally:
        daemon.stop()


def test_sighup_adds_a_rule_with_full_history_and_removes_one(tmp_path: Path, crm: Crm) -> None:
    """A reloaded rule set: a new threshold rule is rebuilt from the raw buckets (it fires at once on
    today's surge against its real baseline, no false zero baseline); a removed rule's alerts resolve."""
    history(crm)
    clock = ManualClock(NOW)
    cfg = config(tmp_path, crm)
    daemon = start(cfg, clock)
    try:
        surge_after_backfill(daemon, crm, clock)
        assert [e["rule"] for e in events(daemon) if e["notify"] and e["rule"] != "streak"] == ["type-surge"]
        text = cfg.read_text(encoding="utf-8")
        new_rule = '[[rules]]\nname = "per-channel"\nkind = "threshold"\ngroup_by = ["type", "channel"]\n'
        cfg.write_text(
            text.replace('[[rules]]\nname = "type-surge"\nkind = "threshold"\nmin_count = 10\n', new_rule),
            encoding="utf-8",
        )
        assert daemon.reload() is True
        crm.add(NOW + timedelta(seconds=3))
        clock.set(NOW + timedelta(minutes=5, seconds=4))
        daemon.cycle()
        evs = [e for e in events(daemon) if e["notify"]]
        resolved = [e for e in evs if e["rule"] == "type-surge"]
        assert [e["state"] for e in resolved] == ["firing", "resolved"] and resolved[-1]["reason"] == "rule removed"
        fresh = [e for e in evs if e["rule"] == "per-channel"]
        # the new rule knows the 40-a-day history of (type, 电话热线): 62 today is a surge against 40
        assert fresh and fresh[0]["state"] == "firing" and fresh[0]["baseline"] == 40.0
    finally:
        daemon.stop()


def test_a_failed_cycle_commits_nothing_and_the_next_one_catches_up(
    tmp_path: Path, crm: Crm, monkeypatch: pytest.MonkeyPatch
) -> None:
    with backfilled(tmp_path, crm) as (daemon, clock):
        before = events(daemon)
        crm.add(NOW - timedelta(minutes=20), n=61, spacing=timedelta(seconds=10))
        detection = daemon.pipeline.detection
        real = detection.on_cycle

        def broken(conn: Any, cycle: Any) -> None:
            real(conn, cycle)  # the engine moves in memory ...
            raise RuntimeError("disk full")  # ... and then the transaction fails

        monkeypatch.setattr(detection, "on_cycle", broken)
        clock.set(NOW + timedelta(seconds=2))
        assert daemon.cycle() is False
        assert events(daemon) == before  # nothing committed
        assert any("state store write failed" in p for p in daemon.readiness())
        monkeypatch.setattr(detection, "on_cycle", real)
        clock.set(NOW + timedelta(seconds=4))
        daemon.cycle()
        new = [e for e in events(daemon)[len(before) :] if e["rule"] == "type-surge"]
        assert [(e["state"], e["value"]) for e in new] == [("firing", 61)]  # exactly once, from the reloaded state
        assert not any("state store" in p for p in daemon.readiness())


def test_detection_holds_until_the_state_is_reloaded(tmp_path: Path, crm: Crm, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cycle's transaction fails after the engine moved in memory, and the store stays unreachable for
    the reload too: no record is fed to that engine (no false streak or surge), /readyz says why, and
    once a reload succeeds the rows are counted exactly once."""
    with backfilled(tmp_path, crm) as (daemon, clock):
        before = events(daemon)
        detection = daemon.pipeline.detection
        real_cycle, real_recover = detection.on_cycle, detection.recover
        fed: list[int] = []

        def counting(conn: Any, cycle: Any) -> None:
            fed.append(len(cycle.batch))
            real_cycle(conn, cycle)

        def broken(conn: Any, cycle: Any) -> None:
            counting(conn, cycle)  # the engine moves in memory ...
            raise RuntimeError("connection lost at COMMIT")  # ... and the transaction fails

        def unreachable(store: Any, now: int) -> None:
            raise OSError("connection refused")

        monkeypatch.setattr(detection, "on_cycle", broken)
        monkeypatch.setattr(detection, "recover", unreachable)
        crm.add(NOW + timedelta(seconds=1), type_="新类型", n=3)
        clock.set(NOW + timedelta(seconds=5))
        assert daemon.cycle() is False
        assert fed == [3]
        monkeypatch.setattr(detection, "on_cycle", counting)
        for i in range(3):  # the store is still unreachable: held, whatever the backoff says
            daemon.poll.restore_retry_monotonic = 0.0
            clock.set(NOW + timedelta(seconds=10 + i))
            assert daemon.cycle() is False
        assert fed == [3]  # nothing fed to the half state
        problems = " ".join(daemon.readiness())
        assert "reloading state from the store failed" in problems and "detection holds" in problems
        monkeypatch.setattr(detection, "recover", real_recover)
        crm.add(NOW + timedelta(seconds=20), type_="新类型", n=2)  # 5 in a row in the committed order
        daemon.poll.restore_retry_monotonic = 0.0
        clock.set(NOW + timedelta(seconds=30))
        daemon.cycle()
        new = [e for e in events(daemon)[len(before) :] if e["rule"] == "streak" and e["labels"] == {"type": "新类型"}]
        assert [(e["state"], e["value"]) for e in new] == [("firing", 5)]  # once, from 5 rows, not 3 + 3 + 2
        assert daemon.restore_error is None and not any("holds" in p for p in daemon.readiness())


def _stream(seed: int, start: datetime, n: int) -> list[tuple[datetime, str, str]]:
    import random

    rng = random.Random(seed)
    t = start
    out = []
    for _ in range(n):
        t += timedelta(seconds=rng.choice([5, 60, 600, 1800, 3 * 3600]))
        out.append((t, rng.choice([T, T, T, "服务态度", "其他"]), rng.choice(["电话热线", "微信公众号"])))
    return out


def _replay_daemon(
    tmp_path: Path, rows: list[tuple[datetime, str, str]], polls: list[datetime], restarts: set[int]
) -> list[dict[str, Any]]:
    tmp_path.mkdir()
    crm = Crm(tmp_path / "crm.db")
    history(crm, days=8, per_day=12)
    extra = (
        '[[rules]]\nname = "pace"\nkind = "threshold"\nmode = "pace"\nmin_count = 3\n'
        '[[rules]]\nname = "roll"\nkind = "threshold"\nmode = "rolling"\nmin_count = 3\n'
        'resolve_after = "30m"\n'
    )
    cfg = config(tmp_path, crm, extra)
    clock = ManualClock(polls[0])
    daemon = start(cfg, clock)
    i = 0
    try:
        for k, p in enumerate(polls):
            while i < len(rows) and rows[i][0] <= p:
                crm.add(rows[i][0], type_=rows[i][1], channel=rows[i][2])
                i += 1
            clock.set(p)
            while daemon.cycle():
                pass
            if k in restarts:
                daemon.stop()
                daemon = start(cfg, clock)
        out = events(daemon)
    finally:
        daemon.stop()
    for e in out:
        if e["kind"] == "threshold":
            e.pop("samples", None)  # from the poll that made the event: an illustration only
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_restarting_the_real_daemon_anywhere_gives_one_runs_events(tmp_path: Path, seed: int) -> None:
    import random

    start_at = NOW - timedelta(hours=12)
    rows = _stream(seed, start_at, 160)
    steps = int((rows[-1][0] - start_at) / timedelta(minutes=20)) + 3
    polls = [start_at + timedelta(minutes=20 * k) for k in range(steps)]
    restarts = set(random.Random(seed).sample(range(len(polls)), k=min(12, len(polls))))
    one = _replay_daemon(tmp_path / "one", rows, polls, set())
    many = _replay_daemon(tmp_path / "many", rows, polls, restarts)
    assert len([e for e in one if e["notify"]]) > 5
    assert {e["rule"] for e in one} >= {"type-surge", "streak", "pace", "roll"}
    assert many == one
