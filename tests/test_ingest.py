"""Ingest through the daemon against real SQLite, PostgreSQL and MariaDB sources: incremental reads,
rows committed late inside the look-back, no duplicates across a restart, naive-UTC columns, ties,
the first-start backfill, bad records counted once, and a source outage with recovery."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from sentinel.clock import ManualClock
from sentinel.config import load_config
from sentinel.daemon import Daemon
from sentinel.model import from_datetime
from sentinel.service import build
from sentinel.store.schema import hourly_buckets
from tests.sources.dbs import Db, TcpProxy, complaints_table, row

NOW = datetime(2025, 7, 8, 10, 0, tzinfo=UTC)  # 18:00 in Shanghai
T = "物流配送延误"


def naive(dt: datetime) -> datetime:
    return dt.astimezone(UTC).replace(tzinfo=None)


def make_daemon(tmp_path: Path, url: str, clock: ManualClock, name: str = "state", **source: Any) -> Daemon:
    extra = "".join(f'{k} = "{v}"\n' for k, v in source.items())
    cfg = tmp_path / f"{name}.toml"
    cfg.write_text(
        f"""
timezone = "Asia/Shanghai"
state_url = "sqlite:///{tmp_path}/{name}.db"
listen = "127.0.0.1:0"
[source]
url = "{url}"
table = "complaints"
timezone = "UTC"
lateness = "5m"
batch_size = 10
{extra}
[[rules]]
name = "type-surge"
kind = "threshold"
""",
        encoding="utf-8",
    )
    d = build(load_config(cfg), config_path=str(cfg), clock=clock)
    d.open()
    return d


def counted(d: Daemon) -> int:
    """Complaints counted into the hourly buckets (what baselines are made of)."""
    with d.store.reading() as conn:
        return int(conn.execute(select(func.coalesce(func.sum(hourly_buckets.c.count), 0))).scalar_one())


def drain(d: Daemon) -> None:
    while d.cycle():
        pass


def insert(db: Db, start: int, times: list[datetime], **kw: Any) -> int:
    db.insert("complaints", [row(db, start + i, naive(t), **kw) for i, t in enumerate(times)])
    return start + len(times)


def test_incremental_reads_late_rows_and_restart(db: Db, tmp_path: Path) -> None:
    complaints_table(db)
    clock = ManualClock(NOW)
    nid = insert(db, 1, [NOW - timedelta(days=1, minutes=m) for m in range(30)])  # history
    d = make_daemon(tmp_path, db.url, clock)
    try:
        drain(d)
        assert counted(d) == 30 and d.state is not None and d.state.backfill_done
        nid = insert(db, nid, [NOW - timedelta(seconds=50 - s) for s in range(25)])  # 25 new, some ties below
        nid = insert(db, nid, [NOW - timedelta(seconds=10)] * 25)  # 25 sharing one timestamp (batch_size 10)
        clock.set(NOW + timedelta(seconds=2))
        drain(d)
        assert counted(d) == 80
        # committed late, but inside the 5-minute look-back behind the watermark: read, once
        nid = insert(db, nid, [NOW - timedelta(minutes=3)])
        clock.set(NOW + timedelta(seconds=4))
        drain(d)
        clock.set(NOW + timedelta(seconds=6))
        drain(d)
        assert counted(d) == 81
    finally:
        d.stop()
    # a restart re-reads the look-back window and counts nothing twice
    d = make_daemon(tmp_path, db.url, clock)
    try:
        clock.set(NOW + timedelta(seconds=8))
        drain(d)
        assert counted(d) == 81
        nid = insert(db, nid, [NOW + timedelta(seconds=7)])
        clock.set(NOW + timedelta(seconds=10))
        drain(d)
        assert counted(d) == 82
    finally:
        d.stop()


def test_naive_utc_columns_land_in_the_right_local_hour(db: Db, tmp_path: Path) -> None:
    complaints_table(db)
    at = datetime(2025, 7, 7, 16, 30, tzinfo=UTC)  # 00:30 on 07-08 in Shanghai
    insert(db, 1, [at])
    d = make_daemon(tmp_path, db.url, ManualClock(NOW))
    try:
        drain(d)
        with d.store.reading() as conn:
            hours = conn.execute(select(hourly_buckets.c.hour_us)).scalars().all()
        assert hours == [from_datetime(datetime(2025, 7, 7, 16, 0, tzinfo=UTC))]  # the local hour 00:00-01:00
    finally:
        d.stop()


def test_first_start_reads_back_only_the_baseline_window(db: Db, tmp_path: Path) -> None:
    complaints_table(db)
    insert(db, 1, [NOW - timedelta(days=d) for d in range(1, 41)])  # 40 days, one a day
    d = make_daemon(tmp_path, db.url, ManualClock(NOW))
    try:
        drain(d)
        # 8 full days before today plus today: days 1..8 back (and not the 32 older ones)
        assert counted(d) == 8
        assert d.state is not None and d.state.coverage_start_us == d.state.backfill_start_us
    finally:
        d.stop()


def test_bad_records_are_rejected_with_their_reason_once(db: Db, tmp_path: Path) -> None:
    complaints_table(db)
    insert(db, 1, [NOW - timedelta(minutes=1)])
    db.insert(
        "complaints",
        [
            row(db, 2, naive(NOW - timedelta(seconds=30)), typ=""),
            row(db, 3, naive(NOW - timedelta(seconds=20)), typ="x" * 201),
            row(db, 4, naive(NOW - timedelta(seconds=10)), typ="  "),
        ],
    )
    clock = ManualClock(NOW)
    d = make_daemon(tmp_path, db.url, clock)
    try:
        for k in range(4):  # the look-back re-reads them at every poll
            clock.set(NOW + timedelta(seconds=2 * k))
            drain(d)
        text = d.metrics.render().decode()
        assert 'sentinel_records_rejected_total{reason="missing_type"} 2.0' in text
        assert 'sentinel_records_rejected_total{reason="oversized_field"} 1.0' in text
        assert counted(d) == 1
    finally:
        d.stop()


def test_source_outage_is_retried_and_reported_then_recovers(pg_url: str, proxy: TcpProxy, tmp_path: Path) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(pg_url)
    db = Db("postgres", pg_url, engine)
    complaints_table(db)
    insert(db, 1, [NOW - timedelta(minutes=2)])
    head, _, tail = pg_url.partition("@")
    through = f"{head}@127.0.0.1:{proxy.port}/{tail.split('/', 1)[1]}"
    clock = ManualClock(NOW)
    d = make_daemon(tmp_path, through, clock)
    try:
        drain(d)
        assert counted(d) == 1 and d.health.up
        proxy.stop()
        insert(db, 2, [NOW + timedelta(seconds=1)])
        clock.set(NOW + timedelta(seconds=2))
        assert d.cycle() is False  # no crash: reported
        assert not d.health.up and d.health.failures == 1
        assert "sentinel_source_up 0.0" in d.metrics.render().decode()
        assert d.readiness() and "source unavailable" in d.readiness()[0]
        d.poll_job()  # backing off: does not even try
        assert d.health.failures == 1
        proxy.start()
        d.health.next_try_monotonic = 0  # the back-off has passed
        clock.set(NOW + timedelta(seconds=30))
        d.poll_job()
        assert d.health.up and counted(d) == 2
        assert "sentinel_source_up 1.0" in d.metrics.render().decode()
    finally:
        d.stop()
        engine.dispose()
