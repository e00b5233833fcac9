"""SqlSource against real SQLite, PostgreSQL and MariaDB: keyset paging, time binding per column kind,
ids, query mode, the index check and plans, bad rows, and outages (a real TCP proxy in front of
PostgreSQL)."""

from __future__ import annotations

import json
import logging
import random
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from sentinel.config import SourceConfig
from sentinel.model import US, Vocab, from_datetime
from sentinel.sources import SourceUnavailable
from sentinel.sources.rows import RawRow, RowNormaliser
from sentinel.sources.sql import SqlSource
from tests.sources.dbs import TYPES, Db, TcpProxy, complaints_table, row

SHANGHAI = ZoneInfo("Asia/Shanghai")
UTCZ = ZoneInfo("UTC")
BASE = datetime(2025, 7, 8, 10, 0, 0)  # naive: the source's own wall clock
SECRET = "Sup3r-s3cret-pw"


@pytest.fixture
def sources() -> Iterator[Callable[..., SqlSource]]:
    made: list[SqlSource] = []

    def make(url: str, naive_tz: ZoneInfo = UTCZ, **cfg: Any) -> SqlSource:
        cfg.setdefault("table", None if "query" in cfg else "complaints")
        source = SqlSource(SourceConfig(url=url, **cfg), naive_tz)
        made.append(source)
        return source

    yield make
    for s in made:
        s.close()


def us(dt: datetime, tz: Any = UTC) -> int:
    return from_datetime(dt if dt.tzinfo else dt.replace(tzinfo=tz))


def read_all(source: SqlSource, since_us: int, limit: int) -> tuple[list[RawRow], list[int]]:
    """Every row after since_us, page by page as ingest would; also the page sizes."""
    rows: list[RawRow] = []
    sizes: list[int] = []
    page = source.read(since_us, None, limit)
    while True:
        rows += page.rows
        sizes.append(len(page.rows))
        assert len(page.rows) <= limit
        if page.next is None:
            assert len(page.rows) < limit
            return rows, sizes
        page = source.read(since_us, page.next, limit)


# --- paging ------------------------------------------------------------------------------------------


def test_first_page_is_strictly_after_since_and_ties_survive_page_boundaries(db: Db, sources: Any) -> None:
    complaints_table(db)
    t0, t1, t2 = BASE, BASE + timedelta(seconds=1), BASE + timedelta(seconds=2)
    rows = (
        [row(db, i, t0) for i in range(1, 6)]
        + [row(db, i, t1) for i in range(6, 31)]
        + [row(db, i, t2) for i in range(31, 36)]
    )
    random.Random(7).shuffle(rows)
    db.insert("complaints", rows)
    source = sources(db.url)

    got, sizes = read_all(source, us(t0), 10)
    assert [r[0] for r in got] == list(range(6, 36))  # 25 ties at t1 across three pages, none lost or repeated
    assert sizes == [10, 10, 10, 0]
    assert got[0][2:] == ("物流配送延误", "电话热线", None)

    half = us(t0) + US // 2  # a fractional since: everything at t1 and later
    assert [r[0] for r in read_all(source, half, 100)[0]] == list(range(6, 36))
    assert [r[0] for r in read_all(source, us(t1) - 1, 7)[0]] == list(range(6, 36))
    assert read_all(source, us(t2), 10)[0] == []


def test_a_row_committed_between_pages_is_read_once(db: Db, sources: Any) -> None:
    complaints_table(db)
    db.insert("complaints", [row(db, i, BASE) for i in range(1, 11)])
    source = sources(db.url)
    page = source.read(us(BASE) - 1, None, 5)
    db.insert("complaints", [row(db, 11, BASE), row(db, 3_000, BASE - timedelta(seconds=1))])
    second = source.read(us(BASE) - 1, page.next, 5)
    third = source.read(us(BASE) - 1, second.next, 5)
    assert [r[0] for r in page.rows + second.rows + third.rows] == list(range(1, 12))
    assert third.next is None


# --- time representations ----------------------------------------------------------------------------


def test_naive_utc_column_read_with_source_timezone_utc(db: Db, sources: Any) -> None:
    """Sentinel's zone is Asia/Shanghai, the CRM stores naive UTC: Shanghai midnight is 16:00 there."""
    complaints_table(db)
    stamps = {
        1: datetime(2025, 7, 7, 15, 59, 59),
        2: datetime(2025, 7, 7, 16, 0, 0),
        3: datetime(2025, 7, 7, 16, 0, 0, 500_000),
        4: datetime(2025, 7, 8, 1, 30),
    }
    db.insert("complaints", [row(db, i, at) for i, at in stamps.items()])
    midnight_shanghai = us(datetime(2025, 7, 8, tzinfo=SHANGHAI))

    source = sources(db.url, naive_tz=UTCZ, timezone="UTC")
    got, _ = read_all(source, midnight_shanghai, 10)
    assert [r[0] for r in got] == [3, 4]
    batch = RowNormaliser(Vocab(), naive_tz=UTCZ).normalise(got).batch
    assert batch.ts.tolist() == [midnight_shanghai + US // 2, us(stamps[4], UTC)]
    assert source.first_record_time() == us(stamps[1], UTC)

    # The same column read as Shanghai wall-clock time: only the 01:30 row is after that midnight.
    assert [r[0] for r in read_all(sources(db.url, naive_tz=SHANGHAI), midnight_shanghai, 10)[0]] == [4]


def test_timestamptz_on_postgres_whatever_the_session_zone(pg: Db, sources: Any) -> None:
    complaints_table(pg, time_type="TIMESTAMPTZ")
    pg.insert(
        "complaints",
        [
            {"id": 1, "created_at": datetime(2025, 7, 8, 0, 0, tzinfo=SHANGHAI), "type": "a", "channel": "c"},
            {"id": 2, "created_at": datetime(2025, 7, 7, 16, 0, 1, tzinfo=UTC), "type": "a", "channel": "c"},
            {
                "id": 3,
                "created_at": datetime(2025, 7, 7, 12, 0, 2, tzinfo=ZoneInfo("America/New_York")),
                "type": "a",
                "channel": "c",
            },
        ],
    )
    url = pg.url + "?options=-c%20TimeZone%3DAmerica/Los_Angeles"
    source = sources(url, naive_tz=SHANGHAI)  # naive_tz must not matter for aware values
    midnight = us(datetime(2025, 7, 8, tzinfo=SHANGHAI))
    got, _ = read_all(source, midnight, 1)
    assert [r[0] for r in got] == [2, 3]
    batch = RowNormaliser(Vocab(), naive_tz=SHANGHAI).normalise(got).batch
    assert batch.ts.tolist() == [midnight + US, midnight + 2 * US]
    assert source.first_record_time() == midnight


def test_mariadb_timestamp_is_exact_whatever_the_inserting_session_zone(maria: Db, sources: Any) -> None:
    complaints_table(maria, time_type="TIMESTAMP(6) NULL")
    with maria.engine.begin() as conn:
        conn.execute(sa.text("SET time_zone = '+08:00'"))
        conn.execute(
            sa.text(
                "INSERT INTO complaints (id, created_at, type, channel) VALUES "
                "(1, '2025-07-08 00:00:00', 'a', 'c'), (2, '2025-07-08 00:00:01', 'a', 'c')"
            )
        )
    source = sources(maria.url, naive_tz=SHANGHAI)
    midnight = us(datetime(2025, 7, 8, tzinfo=SHANGHAI))
    got, _ = read_all(source, midnight, 10)
    assert [r[0] for r in got] == [2]
    assert RowNormaliser(Vocab(), naive_tz=SHANGHAI).normalise(got).batch.ts.tolist() == [midnight + US]
    assert source.first_record_time() == midnight


LAYOUTS: dict[str, Callable[[datetime], Any]] = {
    "iso-T-micro": lambda d: d.strftime("%Y-%m-%dT%H:%M:%S.%f"),
    "iso-space-seconds": lambda d: d.strftime("%Y-%m-%d %H:%M:%S"),
    "iso-space-millis": lambda d: d.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
    "python-isoformat": lambda d: d.isoformat(" "),  # fraction only when non-zero
    "iso-Z": lambda d: d.strftime("%Y-%m-%dT%H:%M:%SZ"),
    "iso-offset": lambda d: d.replace(tzinfo=UTC).astimezone(SHANGHAI).isoformat(),
    "epoch-s": lambda d: int(d.replace(tzinfo=UTC).timestamp()),
    "epoch-ms": lambda d: int(d.replace(tzinfo=UTC).timestamp() * 1000),
    "epoch-us": us,
    "epoch-float-s": lambda d: d.replace(tzinfo=UTC).timestamp(),
}
WHOLE_SECONDS = {"iso-space-seconds", "iso-Z", "epoch-s"}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_sqlite_text_and_epoch_times_bind_in_the_stored_layout(sqlite_url: str, sources: Any, layout: str) -> None:
    fmt = LAYOUTS[layout]
    step = timedelta(seconds=1) if layout in WHOLE_SECONDS else timedelta(milliseconds=250)
    stamps = [BASE + k * step for k in range(12)]
    conn = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"))
    conn.execute("CREATE TABLE complaints (id INTEGER PRIMARY KEY, created_at DATETIME, type TEXT, channel TEXT)")
    conn.execute("CREATE INDEX complaints_ix ON complaints (created_at, id)")
    conn.executemany("INSERT INTO complaints VALUES (?, ?, 'a', 'c')", [(k, fmt(s)) for k, s in enumerate(stamps)])
    conn.commit()
    conn.close()
    source = sources(sqlite_url, naive_tz=UTCZ)
    for since_index in (0, 4, 11):
        got, _ = read_all(source, us(stamps[since_index]), 3)
        assert [r[0] for r in got] == list(range(since_index + 1, 12)), since_index
    got, _ = read_all(source, us(stamps[4]) - 1, 5)  # one µs earlier takes the row itself
    assert [r[0] for r in got] == list(range(4, 12))
    assert RowNormaliser(Vocab(), naive_tz=UTCZ).normalise(got).batch.ts.tolist() == [us(s) for s in stamps[4:]]
    assert source.first_record_time() == us(stamps[0])
    assert source.check() == []


@pytest.mark.parametrize("representation", ["epoch-ms", "iso-text"])
def test_epoch_and_text_columns_on_every_database(db: Db, sources: Any, representation: str) -> None:
    stamps = [BASE + timedelta(seconds=k) for k in range(8)]
    fmt = LAYOUTS["epoch-ms" if representation == "epoch-ms" else "iso-T-micro"]
    complaints_table(db, time_type="big" if representation == "epoch-ms" else "sid")
    db.insert(
        "complaints", [{"id": k, "created_at": fmt(s), "type": "a", "channel": "c"} for k, s in enumerate(stamps)]
    )
    source = sources(db.url)
    got, _ = read_all(source, us(stamps[2]), 2)
    assert [r[0] for r in got] == [3, 4, 5, 6, 7]
    assert RowNormaliser(Vocab(), naive_tz=UTCZ).normalise(got).batch.ts.tolist() == [us(s) for s in stamps[3:]]
    assert source.first_record_time() == us(stamps[0])


# --- ids and column mapping --------------------------------------------------------------------------


def test_integer_ids_compare_as_numbers_and_text_ids_as_text(db: Db, sources: Any) -> None:
    db.create("num", {"id": "id", "created_at": "time", "type": "text", "channel": "text"}, ("created_at", "id"))
    db.create("txt", {"id": "sid", "created_at": "time", "type": "text", "channel": "text"}, ("created_at", "id"))
    db.insert("num", [{"id": i, "created_at": db.time(BASE), "type": "a", "channel": "c"} for i in (100, 9, 10)])
    db.insert("txt", [{"id": str(i), "created_at": db.time(BASE), "type": "a", "channel": "c"} for i in (100, 9, 10)])
    num = sources(db.url, table="num")
    txt = sources(db.url, table="txt")
    since = us(BASE) - 1
    assert [r[0] for r in read_all(num, since, 1)[0]] == [9, 10, 100]
    assert [r[0] for r in read_all(txt, since, 1)[0]] == ["10", "100", "9"]
    assert (num.id_type, txt.id_type) == ("int", "str")
    assert sources(db.url, table="num", id_type="str").id_type == "str"
    batch = RowNormaliser(Vocab(), naive_tz=UTCZ, id_type=txt.id_type).normalise(read_all(txt, since, 10)[0]).batch
    assert batch.ids.tolist() == ["10", "100", "9"]


@pytest.mark.parametrize("with_customer", [True, False])
def test_custom_column_mapping_with_quoted_names(db: Db, sources: Any, with_customer: bool) -> None:
    cols = {"TicketId": "id", "Opened At": "time", "category": "text", "from": "text", "customer_id": "text"}
    db.create("CrmTickets", cols, ("Opened At", "TicketId"))
    db.insert(
        "CrmTickets",
        [
            {
                "TicketId": 1,
                "Opened At": db.time(BASE),
                "category": "服务态度",
                "from": "官网客服",
                "customer_id": "c-42",
            }
        ],
    )
    mapping = {"id": "TicketId", "created_at": "Opened At", "type": "category", "channel": "from"}
    if with_customer:
        mapping["customer"] = "customer_id"
    source = sources(db.url, table="CrmTickets", columns=mapping)
    assert source.check() == []
    got, _ = read_all(source, us(BASE) - 1, 10)
    assert got == [(1, got[0][1], "服务态度", "官网客服", "c-42" if with_customer else None)]
    batch = RowNormaliser(Vocab(), naive_tz=UTCZ).normalise(got).batch
    assert batch.customer_of(0) == ("c-42" if with_customer else None)


def test_names_match_case_insensitively_when_the_database_folded_them(db: Db, sources: Any) -> None:
    db.run(
        "CREATE TABLE complaint_log (id INTEGER, created_at "
        + TYPES[db.kind]["time"]
        + ", category "
        + TYPES[db.kind]["text"]
        + ", channel "
        + TYPES[db.kind]["text"]
        + ")"
    )
    db.insert("complaint_log", [{"id": 1, "created_at": db.time(BASE), "category": "a", "channel": "c"}])
    source = sources(db.url, table="Complaint_Log", columns={"created_at": "Created_At", "type": "Category"})
    assert [r[0] for r in read_all(source, us(BASE) - 1, 10)[0]] == [1]


def test_missing_table_or_column_is_named(db: Db, sources: Any) -> None:
    complaints_table(db)
    with pytest.raises(SourceUnavailable, match="table 'nowhere' does not exist"):
        sources(db.url, table="nowhere").check()
    with pytest.raises(SourceUnavailable, match="no column 'category'"):
        sources(db.url, columns={"type": "category"}).read(0, None, 10)


# --- query mode --------------------------------------------------------------------------------------

QUERIES = {
    "range-form": "SELECT ticket AS id, opened AS created_at, kind AS type, via AS channel, who AS customer "
    "FROM tickets WHERE opened >= :since_ts AND (opened > :since_ts OR ticket > :since_id) "
    "ORDER BY opened, ticket LIMIT :limit",
    "or-form": "SELECT ticket AS id, opened AS created_at, kind AS type, via AS channel, who AS customer "
    "FROM tickets WHERE opened > :since_ts OR (opened = :since_ts AND ticket > :since_id) "
    "ORDER BY opened, ticket LIMIT :limit",
}


@pytest.mark.parametrize("form", list(QUERIES))
def test_query_mode_pages_with_ties_and_null_since_id_on_the_first_page(db: Db, sources: Any, form: str) -> None:
    db.create(
        "tickets",
        {"ticket": "id", "opened": "time", "kind": "text", "via": "text", "who": "text"},
        ("opened", "ticket"),
    )
    t0, t1 = BASE, BASE + timedelta(seconds=1)
    db.insert(
        "tickets",
        [
            {"ticket": i, "opened": db.time(t0 if i <= 5 else t1), "kind": "a", "via": "c", "who": f"u{i % 3}"}
            for i in range(1, 31)
        ],
    )
    source = sources(db.url, query=QUERIES[form], columns={"customer": "customer"})
    assert source.check() == []
    got, sizes = read_all(source, us(t0), 10)  # since_id is NULL on the first page: t0 itself is excluded
    assert [r[0] for r in got] == list(range(6, 31))
    assert sizes == [10, 10, 5]
    assert got[0][2:] == ("a", "c", "u0")
    assert source.id_type == "int"
    assert source.first_record_time() == us(t0)


def test_query_missing_an_alias_is_named(db: Db, sources: Any) -> None:
    db.create("tickets", {"ticket": "id", "opened": "time", "kind": "text", "via": "text"})
    query = (
        "SELECT ticket AS id, opened AS created_at, kind, via AS channel FROM tickets "
        "WHERE opened > :since_ts OR (opened = :since_ts AND ticket > :since_id) "
        "ORDER BY opened, ticket LIMIT :limit"
    )
    with pytest.raises(SourceUnavailable, match=r"no column 'type'.*name them with AS"):
        sources(db.url, query=query).check()


# --- the index ---------------------------------------------------------------------------------------


def test_index_warning_names_the_statement_that_fixes_it(db: Db, sources: Any) -> None:
    complaints_table(db, index=False)
    warnings = sources(db.url).check()
    assert len(warnings) == 1
    assert "no index starts with 'created_at'" in warnings[0]
    statement = warnings[0].split("create one: ")[1]
    expected = {
        "postgres": "CREATE INDEX CONCURRENTLY complaints_created_at_id_idx ON complaints (created_at, id);",
        "sqlite": "CREATE INDEX complaints_created_at_id_idx ON complaints (created_at, id);",
        "mariadb": "CREATE INDEX complaints_created_at_id_idx ON complaints (created_at, id);",
    }
    assert statement == expected[db.kind]
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(statement.rstrip(";"))
    assert sources(db.url).check() == []


def test_an_index_led_by_created_at_is_enough_but_one_led_by_id_is_not(db: Db, sources: Any) -> None:
    db.create("by_time", {"id": "id", "created_at": "time", "type": "text", "channel": "text"}, ("created_at",))
    db.create("by_id", {"id": "id", "created_at": "time", "type": "text", "channel": "text"}, ("id", "created_at"))
    assert sources(db.url, table="by_time").check() == []
    assert len(sources(db.url, table="by_id").check()) == 1


def _capture(source: SqlSource) -> list[tuple[str, Any]]:
    seen: list[tuple[str, Any]] = []
    sa.event.listen(
        source.engine,
        "before_cursor_execute",
        lambda _c, _cur, statement, params, _ctx, _many: seen.append((statement, params)),
    )
    return seen


def _many_rows(db: Db, n: int) -> None:
    complaints_table(db)
    if db.kind == "postgres":
        db.run(
            f"INSERT INTO complaints SELECT g, TIMESTAMP '2025-01-01' + (g / 3) * INTERVAL '1 second', "
            f"'t' || (g % 5), 'c', NULL FROM generate_series(1, {n}) g"
        )
        db.run("ANALYZE complaints")
    elif db.kind == "mariadb":
        db.run(
            f"INSERT INTO complaints SELECT seq, TIMESTAMP '2025-01-01 00:00:00' + INTERVAL (seq DIV 3) SECOND, "
            f"CONCAT('t', seq MOD 5), 'c', NULL FROM seq_1_to_{n}"
        )
        db.run("ANALYZE TABLE complaints")
    else:
        db.insert(
            "complaints",
            [
                {
                    "id": g,
                    "created_at": str(datetime(2025, 1, 1) + timedelta(seconds=g // 3)),
                    "type": f"t{g % 5}",
                    "channel": "c",
                    "customer": None,
                }
                for g in range(1, n + 1)
            ],
        )
        db.run("ANALYZE")


def _plan(db: Db, source: SqlSource, statement: str, params: Any) -> str:
    with source.engine.connect() as conn:
        if db.kind == "postgres":
            return json.dumps(conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + statement, params).scalar())
        if db.kind == "mariadb":
            return str(conn.exec_driver_sql("EXPLAIN FORMAT=JSON " + statement, params).scalar())
        return " | ".join(str(r[-1]) for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params))


def test_plans_read_through_the_index_from_the_watermark(db: Db, sources: Any) -> None:
    _many_rows(db, 30_000)
    source = sources(db.url)
    seen = _capture(source)
    since = us(datetime(2025, 1, 1) + timedelta(seconds=9_000))
    first = source.read(since, None, 100)
    second = source.read(since, first.next, 100)
    assert [r[0] for r in first.rows][:3] == [27_003, 27_004, 27_005]
    assert second.rows[0][0] == first.rows[-1][0] + 1
    reads = [(s, p) for s, p in seen if "LIMIT" in s.upper() and "ORDER BY" in s.upper()][-2:]
    for statement, params in reads:
        plan = _plan(db, source, statement, params)
        if db.kind == "postgres":
            assert '"Index Name": "complaints_ix"' in plan and '"Index Cond"' in plan, plan
            assert "Seq Scan" not in plan and '"Sort"' not in plan, plan
        elif db.kind == "mariadb":
            doc = json.loads(plan)["query_block"]
            table = doc.get("nested_loop", [{}])[0].get("table") or doc["table"]
            assert table["key"] == "complaints_ix" and table["access_type"] == "range", plan
            assert "created_at" in table["used_key_parts"] and "filesort" not in plan, plan
        else:
            assert "SEARCH complaints USING INDEX complaints_ix (created_at>" in plan, plan
            assert "TEMP B-TREE" not in plan, plan


# --- bad records -------------------------------------------------------------------------------------


def test_bad_records_reach_the_normaliser_with_their_reason(db: Db, sources: Any) -> None:
    complaints_table(db, time_type="sid")  # text times, so an unparsable one can exist
    at = BASE.isoformat(" ")
    db.insert(
        "complaints",
        [
            {"id": 1, "created_at": at, "type": "服务态度", "channel": "c"},
            {"id": 2, "created_at": at, "type": "   ", "channel": "c"},
            {"id": 3, "created_at": at, "type": None, "channel": "c"},
            {"id": 4, "created_at": at, "type": "x" * 300, "channel": "c"},
            {"id": 5, "created_at": "yesterday-ish", "type": "a", "channel": "c"},
            {"id": 6, "created_at": None, "type": "a", "channel": "c"},  # cannot be ordered: never read
            {"id": 7, "created_at": at, "type": "a", "channel": None},
        ],
    )
    source = sources(db.url)
    got, _ = read_all(source, us(BASE) - 1, 3)
    assert sorted(r[0] for r in got) == [1, 2, 3, 4, 5, 7]
    result = RowNormaliser(Vocab(), naive_tz=UTCZ).normalise(got)
    assert {r.id: r.reason for r in result.rejected} == {
        "2": "missing_type",
        "3": "missing_type",
        "4": "oversized_field",
        "5": "bad_time",
    }
    assert result.batch.ids.tolist() == [1, 7]


def test_null_time_from_a_query_reaches_the_normaliser(db: Db, sources: Any) -> None:
    db.create("tickets", {"ticket": "id", "opened": "time", "kind": "text", "via": "text"}, ("opened", "ticket"))
    db.insert(
        "tickets", [{"ticket": i, "opened": db.time(BASE), "kind": k, "via": "c"} for i, k in ((1, "a"), (2, "void"))]
    )
    query = (
        "SELECT ticket AS id, CASE WHEN kind = 'void' THEN NULL ELSE opened END AS created_at, kind AS type, "
        "via AS channel FROM tickets WHERE opened >= :since_ts AND (opened > :since_ts OR ticket > :since_id) "
        "ORDER BY opened, ticket LIMIT :limit"
    )
    got, _ = read_all(sources(db.url, query=query), us(BASE) - 1, 10)
    rejected = RowNormaliser(Vocab(), naive_tz=UTCZ).normalise(got).rejected
    assert [(r.id, r.reason, r.detail) for r in rejected] == [("2", "bad_time", "created_at is missing")]


@pytest.mark.parametrize("mode", ["table", "query"])
def test_invalid_utf8_on_sqlite_rejects_one_row_and_paging_goes_on(sqlite_url: str, sources: Any, mode: str) -> None:
    conn = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"))
    conn.execute("CREATE TABLE complaints (id TEXT, created_at TEXT, type TEXT, channel TEXT)")
    conn.execute("CREATE INDEX complaints_ix ON complaints (created_at, id)")
    at = BASE.isoformat(" ")
    text = "CAST(? AS TEXT)"  # stores the bytes as TEXT, as a broken writer would
    conn.executemany(
        f"INSERT INTO complaints VALUES ({text}, ?, {text}, 'c')",
        [
            (b"a1", at, "服务态度".encode()),
            (b"a2", at, b"\xe6\x9c\x8d\xff bad"),
            (b"a3", at, b"ok"),
            (b"a\xff", at, b"ok"),
            (b"b1", at, b"ok"),
            (b"b2", at, b"ok"),
        ],
    )
    conn.commit()
    conn.close()
    query = (
        "SELECT id, created_at, type, channel FROM complaints WHERE created_at >= :since_ts "
        "AND (created_at > :since_ts OR id > :since_id) ORDER BY created_at, id LIMIT :limit"
    )
    source = sources(sqlite_url, **({"query": query} if mode == "query" else {}))
    first = source.read(us(BASE) - 1, None, 4)
    assert [r[0] for r in first.rows] == ["a1", "a2", "a3", b"a\xff"]  # the cursor now holds bytes
    second = source.read(us(BASE) - 1, first.next, 4)
    assert [r[0] for r in second.rows] == ["b1", "b2"]
    result = RowNormaliser(Vocab(), naive_tz=UTCZ).normalise(first.rows + second.rows)
    assert {r.id: r.reason for r in result.rejected} == {"a2": "bad_encoding", "a\ufffd": "bad_encoding"}
    assert result.batch.ids.tolist() == ["a1", "a3", "b1", "b2"]


# --- first record, describe ----------------------------------------------------------------------------


def test_first_record_time_and_empty_tables(db: Db, sources: Any) -> None:
    complaints_table(db)
    source = sources(db.url)
    assert source.first_record_time() is None
    assert source.read(0, None, 10).rows == []
    db.insert("complaints", [row(db, 2, BASE + timedelta(hours=1)), row(db, 1, BASE)])
    assert source.first_record_time() == us(BASE)
    assert [r[0] for r in source.read(0, None, 10).rows] == [1, 2]


def test_an_empty_text_table_learns_its_layout_once_rows_arrive(sqlite_url: str, sources: Any) -> None:
    conn = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"))
    conn.execute("CREATE TABLE complaints (id INTEGER, created_at TEXT, type TEXT, channel TEXT)")
    conn.commit()
    source = sources(sqlite_url)
    assert source.read(0, None, 10).rows == []
    conn.execute(
        "INSERT INTO complaints VALUES (1, '2025-07-08T10:00:00Z', 'a', 'c'), (2, '2025-07-08T10:00:01Z', 'a', 'c')"
    )
    conn.commit()
    conn.close()
    assert [r[0] for r in source.read(us(BASE), None, 10).rows] == [2]


def test_describe_names_the_place_but_no_password(pg_url: str, sources: Any) -> None:
    url = pg_url.replace("postgres@", f"postgres:{SECRET}@")
    text = sources(url, table="complaints").describe()
    assert text.startswith("postgresql 127.0.0.1:5432/") and text.endswith(" table complaints")
    assert SECRET not in text and "postgres:" not in text


# --- outages -----------------------------------------------------------------------------------------


def _through(pg_url: str, port: int) -> str:
    head, _, tail = pg_url.partition("@")
    return f"{head}:{SECRET}@127.0.0.1:{port}/{tail.split('/', 1)[1]}"


def verbose_logs(caplog: pytest.LogCaptureFixture) -> None:
    """Everything at DEBUG, SQLAlchemy's engine and pool too (it pins its own loggers to WARN)."""
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="sqlalchemy")


def test_outage_through_a_proxy_then_recovery(
    pg: Db, proxy: TcpProxy, sources: Any, caplog: pytest.LogCaptureFixture
) -> None:
    verbose_logs(caplog)
    complaints_table(pg)
    pg.insert("complaints", [row(pg, 1, BASE)])
    source = sources(_through(pg.url, proxy.port))
    assert SECRET in _through(pg.url, proxy.port)
    assert [r[0] for r in source.read(0, None, 10).rows] == [1]

    proxy.drop_connections()  # the server side went away between polls: the ping reconnects
    assert [r[0] for r in source.read(0, None, 10).rows] == [1]

    proxy.stop()
    with pytest.raises(SourceUnavailable) as err:
        source.read(0, None, 10)
    assert "Connection refused" in str(err.value) and f"127.0.0.1:{proxy.port}" in str(err.value)
    assert err.value.__cause__ is None and err.value.__suppress_context__
    with pytest.raises(SourceUnavailable):
        source.check()

    proxy.start()
    pg.insert("complaints", [row(pg, 2, BASE)])
    assert [r[0] for r in source.read(0, None, 10).rows] == [1, 2]
    assert SECRET not in caplog.text and SECRET not in repr(err.value)
    assert "Invalidate connection" in caplog.text  # the pool's reconnect path really was logged


def test_server_gone_mid_read_then_the_next_read_works(pg: Db, sources: Any) -> None:
    complaints_table(pg)
    pg.insert("complaints", [row(pg, 1, BASE)])
    slow = (
        "SELECT id, created_at, type, channel FROM complaints WHERE created_at > :since_ts "
        "AND (pg_sleep(CASE WHEN :limit = 7 THEN 30 ELSE 0 END) IS NOT NULL OR id > :since_id) "
        "ORDER BY created_at, id LIMIT :limit"
    )
    source = sources(pg.url.replace("postgres@", f"postgres:{SECRET}@"), query=slow)
    source.check()
    outcome: list[SourceUnavailable | None] = []

    def slow_read() -> None:
        try:
            source.read(0, None, 7)
            outcome.append(None)
        except SourceUnavailable as exc:  # anything else leaves `outcome` empty and fails below
            outcome.append(exc)

    reader = threading.Thread(target=slow_read)
    reader.start()
    deadline = time.monotonic() + 10
    killed = 0
    while not killed and time.monotonic() < deadline:  # the query must really be running on the server
        with pg.engine.begin() as conn:
            killed = len(
                conn.execute(
                    sa.text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'sentinel' "
                        "AND query LIKE '%pg_sleep%' AND state = 'active'"
                    )
                ).all()
            )
    reader.join(15)
    assert killed and len(outcome) == 1 and isinstance(outcome[0], SourceUnavailable), outcome
    assert SECRET not in str(outcome[0])
    assert [r[0] for r in source.read(0, None, 10).rows] == [1]


@pytest.mark.parametrize("kind", ["postgres", "mariadb"])
def test_a_restarted_server_connection_is_replaced_on_the_next_read(
    kind: str, request: pytest.FixtureRequest, sources: Any
) -> None:
    url = request.getfixturevalue("pg_url" if kind == "postgres" else "mariadb_url")
    db = Db(kind, url, sa.create_engine(url))
    complaints_table(db)
    db.insert("complaints", [row(db, 1, BASE)])
    source = sources(url)
    assert len(source.read(0, None, 10).rows) == 1
    with source.engine.connect() as conn:  # the pooled connection the next read would reuse
        pid = conn.exec_driver_sql(
            "SELECT pg_backend_pid()" if kind == "postgres" else "SELECT CONNECTION_ID()"
        ).scalar()
    db.run(f"SELECT pg_terminate_backend({pid})" if kind == "postgres" else f"KILL {pid}")
    assert len(source.read(0, None, 10).rows) == 1
    db.engine.dispose()


def test_refused_unauthorised_and_unknown_database_say_so_without_the_password(
    pg_url: str, mariadb_url: str, sources: Any, caplog: pytest.LogCaptureFixture
) -> None:
    verbose_logs(caplog)
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    cases = {
        f"postgresql+psycopg://postgres:{SECRET}@127.0.0.1:{port}/x": "Connection refused",
        mariadb_url.replace("root@", f"root:{SECRET}@"): "Access denied",
        pg_url.replace("postgres@", f"postgres:{SECRET}@").rsplit("/", 1)[0] + "/no_such_db": "does not exist",
    }
    for url, problem in cases.items():
        with pytest.raises(SourceUnavailable) as err:
            sources(url).check()
        assert problem in str(err.value)
        assert SECRET not in str(err.value) and SECRET not in repr(err.value.args)
    assert caplog.text.count("Error on connect()") == 3  # the pool logged each failure, password-free
    assert SECRET not in caplog.text


def test_connect_timeout_applies_to_a_server_that_never_answers(pg_url: str, sources: Any) -> None:
    silent = socket.socket()  # accepts at the kernel level, never speaks
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    port = silent.getsockname()[1]
    try:
        source = sources(f"postgresql+psycopg://postgres@127.0.0.1:{port}/x?connect_timeout=2")
        started = time.monotonic()
        with pytest.raises(SourceUnavailable, match="timeout"):
            source.read(0, None, 10)
        assert time.monotonic() - started < 8
    finally:
        silent.close()


def test_a_table_dropped_under_a_running_source_is_unavailable(db: Db, sources: Any) -> None:
    complaints_table(db)
    db.insert("complaints", [row(db, 1, BASE)])
    source = sources(db.url)
    assert len(source.read(0, None, 10).rows) == 1
    db.run("DROP TABLE complaints")
    with pytest.raises(SourceUnavailable, match="complaints"):
        source.read(0, None, 10)
