"""Every committed row counted exactly once, or rejected once with a reason (issue 11, defects 2 and 3):
the daemon with a moved clock over real SQLite and PostgreSQL sources whose rows the database orders
unlike their parsed time, rows committed after the look-back, future rows, rows without a usable time,
a DST fall-back in naive local time, a reused id, and a store upgraded from revision 0003."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from sqlalchemy import func, select

from sentinel.clock import ManualClock
from sentinel.config import load_config
from sentinel.daemon import Daemon
from sentinel.model import from_datetime
from sentinel.service import build
from sentinel.store.schema import alert_events, hourly_buckets
from tests.sources.dbs import Db, complaints_table, row

NOW = datetime(2025, 7, 8, 10, 0, tzinfo=UTC)  # 18:00 in Shanghai
T = "物流配送延误"
REPO = Path(__file__).resolve().parents[1]


def config(
    tmp_path: Path,
    url: str,
    *,
    source_tz: str = "UTC",
    tz: str = "Asia/Shanghai",
    name: str = "state",
    rules: str = "",
    reconcile: str | None = "5m",
    query: str | None = None,
) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(
        f"""
timezone = "{tz}"
state_url = "sqlite:///{tmp_path}/{name}.db"
listen = "127.0.0.1:0"
[source]
url = "{url}"
{f'query = "{query}"' if query else 'table = "complaints"'}
timezone = "{source_tz}"
lateness = "5m"
{f'reconcile_interval = "{reconcile}"' if reconcile else ""}
batch_size = 10
{
            rules
            or '''
[[rules]]
name = "type-surge"
kind = "threshold"
'''
        }""",
        encoding="utf-8",
    )
    return path


@contextmanager
def daemon(cfg: Path, clock: ManualClock) -> Iterator[Daemon]:
    d = build(load_config(cfg), config_path=str(cfg), clock=clock)
    d.open()
    try:
        yield d
    finally:
        d.stop()


def drain(d: Daemon) -> None:
    while d.cycle():
        pass


def counted(d: Daemon) -> int:
    with d.store.reading() as conn:
        return int(conn.execute(select(func.coalesce(func.sum(hourly_buckets.c.count), 0))).scalar_one())


def metric(d: Daemon, name: str) -> float:
    for line in d.metrics.render().decode().splitlines():
        if line.rsplit(" ", 1)[0] == name:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def rejected(d: Daemon, reason: str) -> float:
    return metric(d, f'sentinel_records_rejected_total{{reason="{reason}"}}')


def text_table(db: Db) -> None:
    """created_at as TEXT whatever the database: the place where spellings and storage classes mix."""
    db.create("complaints", {"id": "id", "created_at": "text", "type": "text", "channel": "text"}, ("created_at", "id"))


def add(db: Db, i: int, created: Any, typ: str = T, channel: str = "电话热线") -> None:
    db.insert("complaints", [{"id": i, "created_at": created, "type": typ, "channel": channel}])


def spelled(at: datetime, sep: str) -> str:
    return at.astimezone(UTC).replace(tzinfo=None).isoformat(sep=sep)


def poll_for(d: Daemon, clock: ManualClock, start: datetime, minutes: int, step_s: int = 20) -> list[int]:
    """Poll every `step_s` for `minutes` from `start`; the counts after each poll."""
    seen = []
    for k in range(minutes * 60 // step_s + 1):
        clock.set(start + timedelta(seconds=k * step_s))
        drain(d)
        seen.append(counted(d))
    return seen


@pytest.fixture(params=["sqlite", "postgres"])
def src(request: pytest.FixtureRequest) -> Iterator[Db]:
    fixture = {"sqlite": "sqlite_url", "postgres": "pg_url"}[request.param]
    url = request.getfixturevalue(fixture)
    engine = sa.create_engine(url)
    yield Db(request.param, url, engine)
    engine.dispose()


# --- (a) mixed "T" / " " spellings ----------------------------------------------------------------


@pytest.mark.parametrize("first", [" ", "T"])
def test_mixed_t_and_space_spellings_are_each_counted_once(src: Db, tmp_path: Path, first: str) -> None:
    """Old code: 15 rows became 147 counted (re-read and re-counted) or 5 of them were lost."""
    text_table(src)
    add(src, 1, spelled(NOW - timedelta(days=1), first))  # the sample that sets the layout
    clock = ManualClock(NOW)
    with daemon(config(tmp_path, src.url), clock) as d:
        drain(d)
        assert counted(d) == 1
        for i in range(15):  # one a minute: the watermark moves past the lateness of the first ones
            at = NOW + timedelta(seconds=60 * i)
            sep = first if i % 2 == 0 else ("T" if first == " " else " ")
            add(src, 100 + i, spelled(at, sep))
            clock.set(at + timedelta(seconds=1))
            drain(d)
            assert counted(d) <= 1 + i + 1  # never more than the rows committed
        seen = poll_for(d, clock, NOW + timedelta(minutes=15), 12)
        assert max(seen) == 16 and seen[-1] == 16
        assert rejected(d, "duplicate_id") == 0


def test_a_late_row_hidden_by_equal_counts_of_a_day_with_mixed_spellings_is_found(
    sqlite_url: str, tmp_path: Path
) -> None:
    """Found by tests/test_ledger_property.py: a "T" row sorts after the reconciled range's end (the look-back),
    so the source's count of its day lacks it while the ledger has it; a row committed 10 minutes late makes
    the two counts equal again. Old code trusted equal counts and never counted that row."""
    engine = sa.create_engine(sqlite_url)
    db = Db("sqlite", sqlite_url, engine)
    text_table(db)
    add(db, 1, spelled(NOW - timedelta(days=7), " "))
    at = NOW + timedelta(milliseconds=500)
    clock = ManualClock(NOW)
    with daemon(config(tmp_path, sqlite_url), clock) as d:
        drain(d)
        add(db, 100, spelled(at, " "))
        add(db, 102, spelled(at, " "))
        add(db, 103, spelled(at, "T"))
        poll_for(d, clock, NOW, 5, step_s=60)
        add(db, 101, spelled(at - timedelta(minutes=5, seconds=1), " "))  # committed 10 minutes late
        add(db, 104, spelled(at + timedelta(minutes=5, seconds=1), " "))
        seen = poll_for(d, clock, NOW + timedelta(minutes=6), 12, step_s=60)
        assert seen[-1] == 6 and max(seen) == 6
        assert metric(d, "sentinel_records_reconciled_total") == 1
        assert metric(d, "sentinel_records_late_total") == 1
    engine.dispose()


# --- (b) a BLOB created_at -------------------------------------------------------------------------


def test_a_blob_created_at_holding_iso_bytes_is_counted_once(sqlite_url: str, tmp_path: Path) -> None:
    """SQLite sorts a BLOB after every TEXT, so every poll reads it again; old code counted it 25 times."""
    engine = sa.create_engine(sqlite_url)
    db = Db("sqlite", sqlite_url, engine)
    text_table(db)
    add(db, 1, spelled(NOW - timedelta(hours=1), " "))
    add(db, 2, spelled(NOW - timedelta(minutes=1), " ").encode("ascii"))
    clock = ManualClock(NOW)
    with daemon(config(tmp_path, sqlite_url), clock) as d:
        drain(d)
        assert counted(d) == 2
        for i in range(30):  # rows keep coming, so the watermark moves on
            at = NOW + timedelta(minutes=i)
            add(db, 10 + i, spelled(at, " "))
            clock.set(at + timedelta(seconds=1))
            drain(d)
            assert counted(d) == 3 + i
    engine.dispose()


def test_a_blob_created_at_before_a_full_page_of_later_text_rows_ends_the_poll(sqlite_url: str, tmp_path: Path) -> None:
    """A cursor on the BLOB, compared as TEXT, re-reads the text rows after its text and the BLOB again: with
    a page (10 rows) of them the read never ends. Seen by the duplicate ledger branch; each row counts once."""
    engine = sa.create_engine(sqlite_url)
    db = Db("sqlite", sqlite_url, engine)
    text_table(db)
    add(db, 1, spelled(NOW - timedelta(minutes=2), " ").encode("ascii"))
    for i in range(12):
        add(db, 10 + i, spelled(NOW - timedelta(seconds=60 - i), " "))
    clock = ManualClock(NOW)
    with daemon(config(tmp_path, sqlite_url), clock) as d:
        for _ in range(50):
            if not d.cycle():
                break
        else:
            pytest.fail("the poll never reached the end of the table")
        assert counted(d) == 13
    engine.dispose()


# --- (c) rows without a usable created_at ----------------------------------------------------------


def test_rows_without_a_usable_time_are_rejected_once(
    sqlite_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Old code: 'not a time' rejected again every lateness window (bad_time 1 -> 7); NULL, '' and year 0001
    never read and never counted as rejected."""
    engine = sa.create_engine(sqlite_url)
    db = Db("sqlite", sqlite_url, engine)
    text_table(db)
    add(db, 1, spelled(NOW - timedelta(hours=1), " "))
    clock = ManualClock(NOW)
    caplog.set_level(logging.WARNING, logger="sentinel.ingest")
    with daemon(config(tmp_path, sqlite_url), clock) as d:
        drain(d)
        add(db, 2, "not a time")
        add(db, 3, None)
        add(db, 4, "")
        add(db, 5, "0001-01-01 00:00:00")
        add(db, 6, spelled(NOW + timedelta(seconds=5), " "))
        poll_for(d, clock, NOW + timedelta(seconds=10), 40, step_s=30)  # 8 lateness windows, 8 reconciliations
        assert rejected(d, "bad_time") == 4
        assert counted(d) == 2
        logged = [r for r in caplog.records if r.getMessage() == "record rejected"]
        assert sorted(str(r.__dict__["fields"]["id"]) for r in logged) == ["2", "3", "4", "5"]
    # and after a restart too: the ledger remembers them
    with daemon(config(tmp_path, sqlite_url), clock) as d:
        poll_for(d, clock, NOW + timedelta(minutes=41), 10, step_s=60)
        assert rejected(d, "bad_time") == 0 and counted(d) == 2
    engine.dispose()


# --- (d) a future row ------------------------------------------------------------------------------


def test_a_future_row_does_not_hide_the_rows_dated_now(src: Db, tmp_path: Path) -> None:
    """Old code: the row dated now + 30 min moved the watermark ahead; the next 20 rows were never read."""
    text_table(src)
    add(src, 1, spelled(NOW - timedelta(hours=1), " "))
    clock = ManualClock(NOW)
    with daemon(config(tmp_path, src.url), clock) as d:
        drain(d)
        add(src, 2, spelled(NOW + timedelta(minutes=30), " "))  # inside the 1 h future allowance
        clock.set(NOW + timedelta(seconds=1))
        drain(d)
        assert counted(d) == 2 and d.state is not None and d.state.watermark_us is not None
        assert d.state.watermark_us <= from_datetime(NOW + timedelta(seconds=1))  # never past now
        for i in range(20):
            at = NOW + timedelta(seconds=10 + 10 * i)
            add(src, 10 + i, spelled(at, " "))
            clock.set(at + timedelta(seconds=1))
            drain(d)
            assert counted(d) == 3 + i  # each read in the poll after its commit, not by reconciliation
        seen = poll_for(d, clock, NOW + timedelta(minutes=4), 40, step_s=60)  # now passes the future row
        assert max(seen) == 22 == seen[-1]
        assert metric(d, "sentinel_records_reconciled_total") == 0


def test_a_row_created_exactly_at_the_look_back_bound_and_committed_late_is_counted(src: Db, tmp_path: Path) -> None:
    """Old code (found by the property test): the poll reads rows after its bound, reconciliation the
    ranges before it, so a row created exactly `lateness` before the newest row, committed after that
    row, fell between the two reads and was never counted."""
    text_table(src)
    add(src, 1, spelled(NOW - timedelta(days=1), " "))
    clock = ManualClock(NOW)
    with daemon(config(tmp_path, src.url), clock) as d:
        drain(d)
        add(src, 2, spelled(NOW, " "))
        drain(d)
        add(src, 3, spelled(NOW - timedelta(minutes=5), " "))  # lateness before the newest, committed after it
        seen = poll_for(d, clock, NOW + timedelta(minutes=1), 12, step_s=60)  # two reconciliations
        assert seen[-1] == 3
        assert metric(d, "sentinel_records_reconciled_total") == 1


# --- (e) a row committed hours after its created_at ------------------------------------------------


def test_rows_committed_hours_late_count_into_their_closed_day_and_alert_nothing(src: Db, tmp_path: Path) -> None:
    """Old code: committed 2 h after their created_at, they were never read, not counted late, not rejected."""
    text_table(src)
    now = datetime(2025, 7, 8, 17, 0, tzinfo=UTC)  # 01:00 on 07-09 in Shanghai: 07-08 is closed
    nid = 1
    for day in range(1, 8):  # 5 a day of T on the days before 07-09: a surge of 60 would fire
        for k in range(5):
            add(src, nid, spelled(now - timedelta(days=day, hours=3) + timedelta(minutes=k), " "))
            nid += 1
    add(src, nid, spelled(now - timedelta(minutes=30), " "))
    clock = ManualClock(now)
    with daemon(config(tmp_path, src.url), clock) as d:
        drain(d)
        before = counted(d)
        assert before == 36
        late_day = datetime(2025, 7, 8, 14, 50, tzinfo=UTC)  # 22:50 on 07-08 in Shanghai
        for k in range(60):  # committed now, 2 h 10 min after their created_at
            add(src, 1000 + k, spelled(late_day + timedelta(seconds=10 * k), " "))
        seen = poll_for(d, clock, now + timedelta(seconds=5), 6, step_s=30)
        assert seen[-1] == before + 60 and max(seen) == before + 60
        day_start = from_datetime(datetime(2025, 7, 8, 14, 0, tzinfo=UTC))  # the local hour 22:00 of 07-08
        with d.store.reading() as conn:
            hour = conn.execute(
                select(func.sum(hourly_buckets.c.count)).where(hourly_buckets.c.hour_us == day_start)
            ).scalar_one()
            events = conn.execute(select(alert_events)).all()
        assert hour == 60
        assert metric(d, "sentinel_records_late_total") == 60
        assert metric(d, "sentinel_records_reconciled_total") == 60
        assert events == []  # 60 against a baseline of 5 would fire, but 07-08 is closed


def test_a_run_of_rows_of_a_closed_day_committed_late_fires_no_streak(tmp_path: Path, sqlite_url: str) -> None:
    """Ten complaints of one type from yesterday evening, committed two hours late: they count into their
    day, but a run of them is yesterday's, and a streak alert now would warn of nothing a person can act on."""
    engine = sa.create_engine(sqlite_url)
    src = Db("sqlite", sqlite_url, engine)
    text_table(src)
    now = datetime(2025, 7, 8, 17, 0, tzinfo=UTC)  # 01:00 on 07-09 in Shanghai: 07-08 is closed
    for day in range(1, 8):
        for k, typ in enumerate(("其他", "服务态度", "其他")):
            add(src, 100 * day + k, spelled(now - timedelta(days=day, hours=3) + timedelta(minutes=k), " "), typ)
    rules = """
[[rules]]
name = "streak"
kind = "streak"
length = 5
"""
    clock = ManualClock(now)
    with daemon(config(tmp_path, sqlite_url, rules=rules), clock) as d:
        drain(d)
        before = counted(d)
        late_day = datetime(2025, 7, 8, 14, 50, tzinfo=UTC)  # 22:50 on 07-08 in Shanghai
        for k in range(10):
            add(src, 1000 + k, spelled(late_day + timedelta(seconds=10 * k), " "))
        poll_for(d, clock, now + timedelta(seconds=5), 6, step_s=30)
        with d.store.reading() as conn:
            events = conn.execute(select(alert_events)).all()
        assert counted(d) == before + 10
        assert metric(d, "sentinel_records_late_total") == 10
        assert events == []
    engine.dispose()


# --- (f) naive local time across a DST fall-back ---------------------------------------------------


def test_naive_berlin_times_across_the_fall_back_are_each_counted_once(src: Db, tmp_path: Path) -> None:
    """Old code: 55 of 180 complaints of the repeated hour 02:00-03:00 were lost (the UTC control lost 0)."""
    berlin = ZoneInfo("Europe/Berlin")
    if src.kind == "postgres":
        src.create(
            "complaints", {"id": "id", "created_at": "time", "type": "text", "channel": "text"}, ("created_at", "id")
        )
    else:
        text_table(src)
    start = datetime(2025, 10, 25, 23, 30, tzinfo=UTC)  # 01:30 CEST; the fall-back is at 01:00 UTC

    def wall(at: datetime) -> Any:
        local = at.astimezone(berlin).replace(tzinfo=None)
        return local.isoformat(" ") if src.kind == "sqlite" else local

    add(src, 1, wall(start - timedelta(days=1)))
    clock = ManualClock(start)
    with daemon(config(tmp_path, src.url, source_tz="Europe/Berlin", tz="Europe/Berlin"), clock) as d:
        drain(d)
        for i in range(180):  # one a minute until 02:30 UTC (03:30 CET), each committed as it happens
            at = start + timedelta(minutes=i)
            add(src, 100 + i, wall(at))
            clock.set(at + timedelta(seconds=5))
            drain(d)
        seen = poll_for(d, clock, start + timedelta(minutes=181), 12, step_s=60)
        assert seen[-1] == 181 and max(seen) == 181


# --- (g) a reused id -------------------------------------------------------------------------------


def test_a_different_row_reusing_a_counted_id_is_rejected_once(
    sqlite_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Old code dropped it silently."""
    engine = sa.create_engine(sqlite_url)
    db = Db("sqlite", sqlite_url, engine)
    db.create(
        "complaints", {"id": "id", "created_at": "text", "type": "text", "channel": "text"}, ("created_at", "id")
    )  # no primary key: a CRM export can hold an id twice
    add(db, 1, spelled(NOW - timedelta(hours=1), " "))
    clock = ManualClock(NOW)
    caplog.set_level(logging.WARNING, logger="sentinel.ingest")
    with daemon(config(tmp_path, sqlite_url), clock) as d:
        drain(d)
        add(db, 7, spelled(NOW + timedelta(seconds=1), " "))
        clock.set(NOW + timedelta(seconds=2))
        drain(d)
        add(db, 7, spelled(NOW + timedelta(seconds=3), " "), typ="服务态度")
        poll_for(d, clock, NOW + timedelta(seconds=4), 12, step_s=20)
        assert counted(d) == 2
        assert rejected(d, "duplicate_id") == 1
        dup = [r for r in caplog.records if r.getMessage() == "record rejected"]
        assert [r.__dict__["fields"]["reason"] for r in dup] == ["duplicate_id"]
    engine.dispose()


def test_auto_ids_that_are_numeric_refuse_a_text_id(sqlite_url: str, tmp_path: Path) -> None:
    """Old code accepted `abc` next to numeric ids with id_type = "auto"."""
    engine = sa.create_engine(sqlite_url)
    db = Db("sqlite", sqlite_url, engine)
    db.create(
        "complaints", {"id": "", "created_at": "text", "type": "text", "channel": "text"}, ("created_at", "id")
    )  # no declared type: SQLite keeps what it is given
    add(db, 1, spelled(NOW - timedelta(minutes=2), " "))
    db.insert(
        "complaints", [{"id": "abc", "created_at": spelled(NOW - timedelta(minutes=1), " "), "type": T, "channel": "x"}]
    )
    clock = ManualClock(NOW)
    with daemon(config(tmp_path, sqlite_url), clock) as d:
        poll_for(d, clock, NOW, 2)
        assert counted(d) == 1 and rejected(d, "bad_id") == 1
    engine.dispose()


# --- (h) a store upgraded from revision 0003 -------------------------------------------------------

OLD_DAEMON = """
import sys
from datetime import datetime, timedelta, UTC
from sentinel.clock import ManualClock
from sentinel.config import load_config
from sentinel.service import build
from sentinel.store.migrate import head_revision
assert head_revision() == "0003", head_revision()
now = datetime.fromisoformat(sys.argv[2])
clock = ManualClock(now)
d = build(load_config(sys.argv[1]), config_path=sys.argv[1], clock=clock)
d.open()
for k in range(3):
    clock.set(now + timedelta(seconds=k))
    while d.cycle():
        pass
d.stop()
"""


def main_tree(tmp_path: Path) -> Path:
    """The code of revision 0003 (the merge base's sentinel package), extracted from git."""
    out = tmp_path / "old"
    out.mkdir()
    base = subprocess.run(
        [
            "git",
            "-C",
            str(REPO),
            "log",
            "--format=%H",
            "-1",
            "--",
            "sentinel/store/migrations/versions/0003_delivery.py",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    commits = subprocess.run(
        ["git", "-C", str(REPO), "rev-list", "HEAD", "--", "sentinel/store/migrations/versions/0004_ledger.py"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    ref = f"{commits[-1]}~1" if commits else base
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref, "sentinel"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive.stdout, check=True)
    return out


def test_a_store_upgraded_from_0003_keeps_counting_exactly_once(sqlite_url: str, tmp_path: Path) -> None:
    engine = sa.create_engine(sqlite_url)
    db = Db("sqlite", sqlite_url, engine)
    text_table(db)
    for i in range(30):  # history, and 10 rows inside the old seen window (the last 5 minutes)
        add(
            db,
            i + 1,
            spelled(
                NOW - timedelta(hours=2) + timedelta(minutes=4 * i)
                if i < 20
                else NOW - timedelta(seconds=250 - 20 * (i - 20)),
                " ",
            ),
        )
    cfg = config(tmp_path, sqlite_url, reconcile=None)  # the old code knows no such key; 5m is the default
    old = main_tree(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(old)}
    run = subprocess.run(
        [sys.executable, "-c", OLD_DAEMON, str(cfg), NOW.isoformat()],
        env=env,
        cwd=old,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    state = sa.create_engine(f"sqlite:///{tmp_path}/state.db")
    with state.connect() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one() == "0003"
        assert conn.execute(sa.text("SELECT COUNT(*) FROM seen_ids")).scalar_one() == 10
    state.dispose()
    clock = ManualClock(NOW + timedelta(seconds=5))
    with daemon(cfg, clock) as d:
        assert counted(d) == 30
        drain(d)  # re-reads the look-back window: the old seen ids hold, nothing counted again
        assert counted(d) == 30
        assert d.state is not None and d.state.ledger_start_us is not None
        assert d.state.ledger_start_us < from_datetime(NOW - timedelta(seconds=240))
        add(db, 100, spelled(NOW + timedelta(seconds=6), " "))
        seen = poll_for(d, clock, NOW + timedelta(seconds=10), 12, step_s=60)
        add(db, 102, spelled(NOW + timedelta(minutes=12), " "))  # the watermark moves on
        seen += poll_for(d, clock, NOW + timedelta(minutes=12, seconds=30), 0)
        # committed 12 min after its created_at, which lies after where the upgraded ledger starts
        add(db, 101, spelled(NOW + timedelta(minutes=1), " "))
        seen += poll_for(d, clock, NOW + timedelta(minutes=13), 6, step_s=60)
        assert seen[-1] == 33 and max(seen) == 33
        assert metric(d, "sentinel_records_reconciled_total") == 1
    engine.dispose()


# --- every database, table and query mode ----------------------------------------------------------

QUERY = (
    "SELECT id, created_at, type, channel FROM complaints WHERE created_at > :since_ts "
    "OR (created_at = :since_ts AND id > :since_id) ORDER BY created_at, id LIMIT :limit"
)


@pytest.mark.parametrize("mode", ["table", "query"])
def test_a_late_commit_and_a_null_time_on_every_database(db: Db, tmp_path: Path, mode: str) -> None:
    """Reconciliation's SQL (counts by range, a range read, the strays) on SQLite, PostgreSQL and MariaDB,
    over a table and over a user's SELECT wrapped as a derived table."""
    complaints_table(db)

    def put(i: int, at: datetime | None) -> None:
        db.insert(
            "complaints",
            [
                {
                    **row(db, i, NOW),
                    "created_at": None if at is None else db.time(at.astimezone(UTC).replace(tzinfo=None)),
                }
            ],
        )

    put(1, NOW - timedelta(days=1))
    clock = ManualClock(NOW)
    with daemon(config(tmp_path, db.url, query=QUERY if mode == "query" else None), clock) as d:
        drain(d)
        put(2, NOW + timedelta(minutes=8))
        clock.set(NOW + timedelta(minutes=9))
        drain(d)
        assert counted(d) == 2
        put(3, NOW + timedelta(minutes=1))  # behind the look-back (since = 03:00) when committed
        put(4, None)
        seen = poll_for(d, clock, NOW + timedelta(minutes=10), 12, step_s=60)
        assert seen[-1] == 3 and max(seen) == 3
        nulls = 1 if mode == "table" else 0  # a query's created_at > :since_ts never returns a NULL
        assert rejected(d, "bad_time") == nulls
        assert metric(d, "sentinel_records_reconciled_total") == 1 + nulls
        assert metric(d, "sentinel_records_late_total") == 1


def test_days_whose_counts_differ_only_by_spelling_are_read_once(sqlite_url: str, tmp_path: Path) -> None:
    """ "T" rows sort after every " " row of their date, so a day's range in the database and in parsed time
    differ by them; once a reconciliation read such a day and found nothing missing, it is not read again
    while both counts stay the same, and a row committed late there later is still found."""
    engine = sa.create_engine(sqlite_url)
    db = Db("sqlite", sqlite_url, engine)
    text_table(db)
    for i in range(48):  # two days ago, every half hour, spellings alternating
        add(db, i + 1, spelled(NOW - timedelta(days=2) + timedelta(minutes=30 * i), " T"[i % 2]))
    clock = ManualClock(NOW)
    with daemon(config(tmp_path, sqlite_url), clock) as d:
        drain(d)
        assert counted(d) == 48
        reads: list[tuple[int, int]] = []
        original = d.source.read_range  # type: ignore[attr-defined]

        def spy(start: int, end: int, cursor: Any, limit: int) -> Any:
            if cursor is None:
                reads.append((start, end))
            return original(start, end, cursor, limit)

        d.source.read_range = spy  # type: ignore[attr-defined]
        poll_for(d, clock, NOW + timedelta(seconds=1), 1, step_s=60)
        first = len(reads)
        assert first >= 2  # the days the "T" rows move between
        poll_for(d, clock, NOW + timedelta(minutes=5), 11, step_s=60)  # two more reconciliations
        assert len(reads) == first and counted(d) == 48
        add(db, 500, spelled(NOW - timedelta(days=2, hours=-3), "T"))  # committed two days late
        poll_for(d, clock, NOW + timedelta(minutes=16), 6, step_s=60)
        assert counted(d) == 49 and metric(d, "sentinel_records_reconciled_total") == 1
    engine.dispose()
