"""Shared fixtures: real databases with a unique name per test run, so parallel and repeated runs
never collide, and a clean skip (with the reason) only when a server is really absent."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from tests.sources.dbs import Db, TcpProxy

PG_HOST = os.environ.get("SENTINEL_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("SENTINEL_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("SENTINEL_TEST_PG_USER", "postgres")
MY_HOST = os.environ.get("SENTINEL_TEST_MYSQL_HOST", "127.0.0.1")
MY_PORT = int(os.environ.get("SENTINEL_TEST_MYSQL_PORT", "3306"))


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def unique_name(prefix: str = "sentinel_t") -> str:
    return f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database (dropped afterwards); yields a SQLAlchemy URL."""
    if not _reachable(PG_HOST, PG_PORT):
        pytest.skip(f"PostgreSQL is not reachable on {PG_HOST}:{PG_PORT}")
    import psycopg

    name = unique_name()
    admin = f"host={PG_HOST} port={PG_PORT} user={PG_USER} dbname=test"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def mariadb_url() -> Iterator[str]:
    """A fresh MariaDB database (dropped afterwards); yields a SQLAlchemy URL."""
    if not _reachable(MY_HOST, MY_PORT):
        pytest.skip(f"MariaDB is not reachable on {MY_HOST}:{MY_PORT}")
    import pymysql

    name = unique_name()
    conn = pymysql.connect(host=MY_HOST, port=MY_PORT, user="root", password="", database="test")
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
    finally:
        conn.close()
    try:
        yield f"mysql+pymysql://root@{MY_HOST}:{MY_PORT}/{name}?charset=utf8mb4"
    finally:
        conn = pymysql.connect(host=MY_HOST, port=MY_PORT, user="root", password="", database="test")
        try:
            with conn.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        finally:
            conn.close()


@pytest.fixture
def sqlite_url(tmp_path: object) -> str:
    return f"sqlite:///{tmp_path}/source.db"


# --- source databases (helpers in tests/sources/dbs.py) ---------------------------------------


@pytest.fixture(params=["sqlite", "postgres", "mariadb"])
def db(request: pytest.FixtureRequest) -> Iterator[Db]:
    fixture = {"sqlite": "sqlite_url", "postgres": "pg_url", "mariadb": "mariadb_url"}[request.param]
    url = request.getfixturevalue(fixture)
    engine = sa.create_engine(url)
    yield Db(request.param, url, engine)
    engine.dispose()


@pytest.fixture
def pg(pg_url: str) -> Iterator[Db]:
    engine = sa.create_engine(pg_url)
    yield Db("postgres", pg_url, engine)
    engine.dispose()


@pytest.fixture
def maria(mariadb_url: str) -> Iterator[Db]:
    engine = sa.create_engine(mariadb_url)
    yield Db("mariadb", mariadb_url, engine)
    engine.dispose()


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    host = os.environ.get("SENTINEL_TEST_PG_HOST", "127.0.0.1")  # as in tests/conftest.py
    p = TcpProxy((host, int(os.environ.get("SENTINEL_TEST_PG_PORT", "5432"))))
    p.start()
    yield p
    p.stop()
