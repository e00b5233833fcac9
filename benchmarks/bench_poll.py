"""Poll cost against table size: one incremental `SqlSource.read` of 1,000 new rows, small table vs large.

The claim under test (design.md, "Data path"): with the (created_at, id) index, a poll costs what the
new rows cost, not what the table holds. For each database this builds a table of each size (two rows per
second, so created_at has ties), indexes it, puts the watermark 1,000 rows before the end and times
`read(watermark, None, batch_size)` — exactly what a poll does. It prints the median of several warm runs
and the large/small ratio (goal: under 1.5), plus one read on the large table without the index, to show
what the index is worth.

    .venv/bin/python benchmarks/bench_poll.py                      # sqlite and postgresql, 100k vs 5M
    .venv/bin/python benchmarks/bench_poll.py --databases sqlite,postgresql,mariadb --sizes 100000,5000000

Databases and files are uniquely named and removed afterwards (PostgreSQL and MariaDB as in
tests/conftest.py: SENTINEL_TEST_PG_HOST/PORT/USER, SENTINEL_TEST_MYSQL_HOST/PORT).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sentinel.config import SourceConfig
from sentinel.model import US
from sentinel.sources.sql import SqlSource

START = datetime(2025, 1, 1)
START_US = int((START - datetime(1970, 1, 1)).total_seconds()) * US
NEW_ROWS = 1_000
BATCH_SIZE = 10_000
PG = (
    os.environ.get("SENTINEL_TEST_PG_HOST", "127.0.0.1"),
    os.environ.get("SENTINEL_TEST_PG_PORT", "5432"),
    os.environ.get("SENTINEL_TEST_PG_USER", "postgres"),
)
MY = (os.environ.get("SENTINEL_TEST_MYSQL_HOST", "127.0.0.1"), os.environ.get("SENTINEL_TEST_MYSQL_PORT", "3306"))
TYPES = ["系统操作错误", "服务态度", "物流配送延误", "产品相关", "其他"]
CHANNELS = ["官网客服", "微信公众号", "电话热线", "其他渠道"]


def watermark_us(n: int) -> int:
    """Row i is at START + (i - 1) // 2 s, so for an even n exactly NEW_ROWS rows are after this."""
    if n % 2 or n < 2 * NEW_ROWS:
        raise SystemExit(f"table sizes must be even and at least {2 * NEW_ROWS:,} (got {n:,})")
    return START_US + (n - NEW_ROWS - 2) // 2 * US


# --- building tables, one function per database ------------------------------------------------------


@contextmanager
def sqlite_db() -> Iterator[Callable[[int], str]]:
    tmp = tempfile.mkdtemp(prefix="sentinel_bench_")

    def build(n: int) -> str:
        path = os.path.join(tmp, f"poll_{n}.db")
        conn = sqlite3.connect(path)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(
            "CREATE TABLE complaints (id INTEGER PRIMARY KEY, created_at TEXT NOT NULL, type TEXT, "
            "channel TEXT, customer TEXT)"
        )
        chunk = 200_000
        with conn:  # one transaction
            for lo in range(1, n + 1, chunk):
                conn.executemany(
                    "INSERT INTO complaints VALUES (?, ?, ?, ?, ?)",
                    (
                        (
                            i,
                            (START + timedelta(seconds=(i - 1) // 2)).isoformat(" "),
                            TYPES[i % 5],
                            CHANNELS[i % 4],
                            f"c{i % 50_000}",
                        )
                        for i in range(lo, min(lo + chunk, n + 1))
                    ),
                )
        conn.execute("CREATE INDEX complaints_created_at_id_idx ON complaints (created_at, id)")
        conn.execute("ANALYZE")
        conn.close()
        return f"sqlite:///{path}"

    try:
        yield build
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def postgresql_db() -> Iterator[Callable[[int], str]]:
    import psycopg

    host, port, user = PG
    name = f"sentinel_bench_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = f"host={host} port={port} user={user} dbname=test"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def build(n: int) -> str:
        table = f"complaints_{n}"
        with psycopg.connect(f"host={host} port={port} user={user} dbname={name}", autocommit=True) as conn:
            conn.execute(
                f"CREATE TABLE {table} (id BIGINT PRIMARY KEY, created_at TIMESTAMP NOT NULL, "
                "type TEXT, channel TEXT, customer TEXT)"
            )
            conn.execute(
                f"INSERT INTO {table} SELECT g, TIMESTAMP '2025-01-01' + ((g - 1) / 2) * INTERVAL '1 second', "
                f"(ARRAY{TYPES})[g % 5 + 1], (ARRAY{CHANNELS})[g % 4 + 1], 'c' || (g % 50000) "
                f"FROM generate_series(1, {n}) g"
            )
            conn.execute(f"CREATE INDEX {table}_created_at_id_idx ON {table} (created_at, id)")
            conn.execute(f"VACUUM ANALYZE {table}")
        return f"postgresql+psycopg://{user}@{host}:{port}/{name}#{table}"

    try:
        yield build
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def mariadb_db() -> Iterator[Callable[[int], str]]:
    import pymysql

    host, port = MY
    name = f"sentinel_bench_{os.getpid()}_{uuid.uuid4().hex[:8]}"

    def connect(db: str) -> Any:  # a pymysql connection (no stubs needed to read this file)
        return pymysql.connect(host=host, port=int(port), user="root", password="", database=db, autocommit=True)

    with connect("test") as conn, conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")

    def build(n: int) -> str:
        table = f"complaints_{n}"
        types = "ELT(seq MOD 5 + 1, " + ", ".join(f"'{t}'" for t in TYPES) + ")"
        channels = "ELT(seq MOD 4 + 1, " + ", ".join(f"'{c}'" for c in CHANNELS) + ")"
        with connect(name) as conn, conn.cursor() as cur:
            cur.execute(
                f"CREATE TABLE {table} (id BIGINT PRIMARY KEY, created_at DATETIME NOT NULL, "
                "type VARCHAR(50), channel VARCHAR(50), customer VARCHAR(50))"
            )
            cur.execute(
                f"INSERT INTO {table} SELECT seq, TIMESTAMP '2025-01-01 00:00:00' + INTERVAL ((seq - 1) DIV 2) "
                f"SECOND, {types}, {channels}, CONCAT('c', seq MOD 50000) FROM seq_1_to_{n}"
            )
            cur.execute(f"CREATE INDEX {table}_created_at_id_idx ON {table} (created_at, id)")
            cur.execute(f"ANALYZE TABLE {table}")
        return f"mysql+pymysql://root@{host}:{port}/{name}?charset=utf8mb4#{table}"

    try:
        yield build
    finally:
        with connect("test") as conn, conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")


BUILDERS = {"sqlite": sqlite_db, "postgresql": postgresql_db, "mariadb": mariadb_db}


# --- measuring -----------------------------------------------------------------------------------------


def source_for(target: str) -> SqlSource:
    url, _, table = target.partition("#")
    return SqlSource(SourceConfig(url=url, table=table or "complaints", batch_size=BATCH_SIZE), ZoneInfo("UTC"))


def time_poll(source: SqlSource, since_us: int, runs: int) -> float:
    """Median seconds of one poll (query, fetch, raw rows); warm runs, as a daemon polling every 2 s is."""
    for _ in range(3):
        source.read(since_us, None, BATCH_SIZE)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        page = source.read(since_us, None, BATCH_SIZE)
        times.append(time.perf_counter() - started)
        assert len(page.rows) == NEW_ROWS and page.next is None, (len(page.rows), page.next)
    return statistics.median(times)


def drop_index(target: str, n: int) -> None:
    source = source_for(target)
    name = "complaints_created_at_id_idx" if target.startswith("sqlite") else f"complaints_{n}_created_at_id_idx"
    with source.engine.connect() as conn:
        conn.exec_driver_sql(f"DROP INDEX {name}" + (f" ON complaints_{n}" if "mysql" in target else ""))
    source.close()


def bench(database: str, sizes: list[int], runs: int) -> None:
    results: dict[int, float] = {}
    with BUILDERS[database]() as build:
        for n in sizes:
            started = time.perf_counter()
            target = build(n)
            built = time.perf_counter() - started
            source = source_for(target)
            assert source.check() == [], source.check()
            results[n] = time_poll(source, watermark_us(n), runs)
            source.close()
            print(
                f"{database:<11} {n:>10,} rows  built in {built:6.1f} s  poll of {NEW_ROWS:,} new rows: "
                f"{results[n] * 1000:7.2f} ms (median of {runs})",
                flush=True,
            )
        small, large = min(sizes), max(sizes)
        print(f"{database:<11} ratio {large:,} / {small:,} rows: {results[large] / results[small]:.2f}", flush=True)
        drop_index(target, large)
        source = source_for(target)
        print(
            f"{database:<11} without the index, {large:,} rows: "
            f"{time_poll(source, watermark_us(large), 3) * 1000:9.2f} ms (median of 3)",
            flush=True,
        )
        source.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--databases", default="sqlite,postgresql", help="comma-separated: sqlite,postgresql,mariadb")
    parser.add_argument("--sizes", default="100000,5000000", help="comma-separated table sizes (rows)")
    parser.add_argument("--runs", type=int, default=21, help="timed reads per table (median reported)")
    args = parser.parse_args()
    print(
        f"{datetime.now().isoformat(timespec='seconds')}  {platform.node()}  {platform.platform()}  "
        f"Python {platform.python_version()}  CPUs {os.cpu_count()}"
    )
    sizes = [int(s) for s in args.sizes.split(",")]
    for n in sizes:
        watermark_us(n)
    for database in args.databases.split(","):
        bench(database.strip(), sizes, args.runs)


if __name__ == "__main__":
    main()
