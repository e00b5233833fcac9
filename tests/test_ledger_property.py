"""Property: whatever order and delay rows are committed in (later than `lateness`, before their own
time, spelled "T" or " ", without a usable time), the daemon polling with a moved clock counts every
valid row exactly once, in its own hour, and rejects every invalid one exactly once. Real SQLite and
PostgreSQL sources with a TEXT created_at, where the database's order and the parsed order disagree."""

from __future__ import annotations

import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from sentinel.clock import ManualClock
from sentinel.days import Calendar
from sentinel.model import from_datetime
from sentinel.store.schema import hourly_buckets
from tests.sources.dbs import Db
from tests.test_ledger import add, config, daemon, drain, rejected, spelled, text_table

T0 = datetime(2025, 7, 8, 10, 0, tzinfo=UTC)
STEP = timedelta(seconds=60)
INVALID = {"null": None, "empty": "", "garbage": "not a time", "year1": "0001-01-01 00:00:00"}


@dataclass(frozen=True)
class Planned:
    created: datetime | None  # None: one of INVALID
    spelling: str  # " " or "T", or the INVALID key
    commit: datetime


@st.composite
def plans(draw: st.DrawFn) -> list[Planned]:
    rows = []
    for _ in range(draw(st.integers(3, 18))):
        commit = T0 + timedelta(seconds=draw(st.integers(0, 40 * 60)))
        if draw(st.integers(0, 5)) == 0:
            rows.append(Planned(None, draw(st.sampled_from(sorted(INVALID))), commit))
            continue
        # committed up to 40 min after its created_at (8 x lateness), or up to 30 min before it
        delay = timedelta(seconds=draw(st.integers(-30 * 60, 40 * 60)))
        rows.append(Planned(commit - delay, draw(st.sampled_from([" ", "T"])), commit))
    return rows


def run(db: Db, plan: list[Planned], work: Path) -> None:
    text_table(db)
    add(db, 1, spelled(T0 - timedelta(days=1), " "))
    clock = ManualClock(T0)
    cal = Calendar("Asia/Shanghai")
    pending = sorted(enumerate(plan), key=lambda x: x[1].commit)
    with daemon(config(work, db.url), clock) as d:
        drain(d)
        at = T0
        end = max(p.commit for p in plan) + timedelta(minutes=12)  # two reconciliations after the last commit
        while at <= end:
            while pending and pending[0][1].commit <= at:
                i, p = pending.pop(0)
                value: Any = INVALID[p.spelling] if p.created is None else spelled(p.created, p.spelling)
                add(db, 100 + i, value)
            clock.set(at)
            drain(d)
            at += STEP
        valid = [p for p in plan if p.created is not None]
        want = Counter(cal.hour_start(from_datetime(p.created)) for p in valid if p.created is not None)
        want[cal.hour_start(from_datetime(T0 - timedelta(days=1)))] += 1
        with d.store.reading() as conn:
            got = Counter({int(h): int(n) for h, n in conn.execute(
                select(hourly_buckets.c.hour_us, sa.func.sum(hourly_buckets.c.count)).group_by(
                    hourly_buckets.c.hour_us))})
        assert got == want
        assert rejected(d, "bad_time") == len(plan) - len(valid)
        for reason in ("duplicate_id", "future_time", "bad_id", "missing_id"):
            assert rejected(d, reason) == 0, reason


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                HealthCheck.too_slow])
@given(plan=plans())
def test_every_row_counted_once_sqlite(plan: list[Planned]) -> None:
    work = Path(tempfile.mkdtemp(prefix="ledger_prop_"))
    url = f"sqlite:///{work}/source.db"
    engine = sa.create_engine(url)
    try:
        run(Db("sqlite", url, engine), plan, work)
    finally:
        engine.dispose()
        shutil.rmtree(work, ignore_errors=True)


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                HealthCheck.too_slow])
@given(plan=plans())
def test_every_row_counted_once_postgres(pg_url: str, plan: list[Planned]) -> None:
    work = Path(tempfile.mkdtemp(prefix="ledger_prop_"))
    engine = sa.create_engine(pg_url)
    db = Db("postgres", pg_url, engine)
    try:
        db.run("DROP TABLE IF EXISTS complaints")
        run(db, plan, work)
    finally:
        engine.dispose()
        shutil.rmtree(work, ignore_errors=True)
