"""Connections to an SQL source database: URLs, engines, per-dialect session settings, error messages.

Guarantees:
- An SQLite source is opened read-only (`mode=ro`), and a missing file is reported before any connection
  (SQLite would otherwise create an empty file and the next message would blame the table).
- Every engine connects with a timeout, pings pooled connections before use (a restarted database is
  picked up by the next read) and runs in autocommit, so a read never holds a transaction open.
- PostgreSQL connections use TCP keepalives; MySQL/MariaDB sessions show TIMESTAMP columns in UTC; SQLite
  hands text that is not UTF-8 back as bytes instead of raising inside the driver. Settings given in the
  URL's query win over these defaults.
- `driver_message` states a failure in the driver's own words on one line, with the password and
  secret-looking query parameters masked.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from typing import Protocol, cast
from urllib.parse import quote, unquote, urlsplit

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.pool import ConnectionPoolEntry

CONNECT_TIMEOUT_S = 10
READ_TIMEOUT_S = 120

ConnectArg = int | str
"""A value of a DBAPI `connect()` keyword argument set here (timeouts, names, keepalive counts)."""


class _SqliteConnection(Protocol):
    """The part of a pysqlite connection that is set here (not in SQLAlchemy's `DBAPIConnection`)."""

    text_factory: Callable[[bytes], object]


def _sqlite_path(url: URL) -> str | None:
    """The file an SQLite URL names (`file:` URIs included), None for other databases and `:memory:`."""
    db = url.database
    if url.get_backend_name() != "sqlite" or not db or db == ":memory:":
        return None
    if db.startswith("file:"):
        return unquote(urlsplit(db).path) or None
    return db


def missing_sqlite_file(url: URL | str) -> str | None:
    """Why an SQLite source cannot be opened because its file is not there, or None. Said before any
    connection: SQLite would otherwise create an empty file and the next message would blame the table."""
    path = _sqlite_path(make_url(url) if isinstance(url, str) else url)
    if path is None:
        return None
    if os.path.isfile(path):
        return None
    if os.path.exists(path):
        return f"SQLite source {path} is not a file"
    return f"SQLite source file {path} does not exist (check source.url; sources are opened read-only, never created)"


def read_only(url: URL) -> URL:
    """An SQLite URL as a read-only `file:` URI (`mode=ro`): Sentinel only reads its source, so a typo in the
    path must not create an empty database, and no write can reach the CRM's file. A URL that already says
    `uri=true` is the user's own URI and is left alone, as are other databases."""
    path = _sqlite_path(url)
    if path is None or "uri" in url.query:
        return url
    return url.set(database="file:" + quote(path), query={**url.query, "mode": "ro", "uri": "true"})


def url_secrets(url: URL) -> tuple[str, ...]:
    """What no message may show: the password (as typed and as quoted in the URL) and the values of
    query parameters named like secrets."""
    found = [url.password, quote(str(url.password), safe="")] if url.password else []
    found += [
        v
        for k, vs in url.query.items()
        if re.search("pass|secret|token", k, re.I)
        for v in ([vs] if isinstance(vs, str) else vs)
    ]
    return tuple(str(v) for v in found if v)


def driver_message(exc: BaseException, secrets: Sequence[str]) -> str:
    """The driver's own words on one line (not SQLAlchemy's, which append the statement and a help
    link), secrets masked."""
    orig: BaseException = exc.orig if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None else exc
    text = str(orig).split("[SQL:")[0].split("(Background on this error")[0]
    detail = "; ".join(line.strip() for line in text.splitlines() if line.strip())[:400]
    message = f"{type(orig).__name__}: {detail}"
    for secret in secrets:
        message = message.replace(secret, "***")
    return message


def postgres_connect_args(application_name: str) -> dict[str, ConnectArg]:
    """libpq settings for every connection to a PostgreSQL source; keepalives: a server that vanished
    without a FIN is noticed in about a minute, not hours."""
    return {
        "connect_timeout": CONNECT_TIMEOUT_S,
        "application_name": application_name,
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
    }


def make_engine(url: URL) -> Engine:
    """The engine for a source URL (already made read-only by `read_only` where that applies)."""
    backend, driver = url.get_backend_name(), url.get_driver_name()
    args: dict[str, ConnectArg] = {}
    if backend == "postgresql" and driver in ("psycopg", "psycopg2"):
        args = postgres_connect_args("sentinel")
    elif backend in ("mysql", "mariadb") and driver in ("pymysql", "mysqldb"):
        args = {"connect_timeout": CONNECT_TIMEOUT_S, "read_timeout": READ_TIMEOUT_S, "write_timeout": READ_TIMEOUT_S}
    elif backend == "sqlite":
        args = {"timeout": CONNECT_TIMEOUT_S}
    args = {k: v for k, v in args.items() if k not in url.query}  # the URL wins
    engine = sa.create_engine(url, pool_pre_ping=True, connect_args=args, isolation_level="AUTOCOMMIT")
    if backend == "sqlite":
        sa.event.listen(engine, "connect", _on_sqlite_connect)
    elif backend in ("mysql", "mariadb"):
        sa.event.listen(engine, "connect", _on_mysql_connect)
    return engine


def _sqlite_text(raw: bytes) -> str | bytes:
    """Valid UTF-8 as str, anything else as bytes for RowNormaliser to reject ("bad_encoding")."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


def _on_sqlite_connect(dbapi_conn: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    cast(_SqliteConnection, dbapi_conn).text_factory = _sqlite_text


def _on_mysql_connect(dbapi_conn: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    # TIMESTAMP columns are then shown in UTC, exact whatever the server's zone (no DST ambiguity).
    cur = dbapi_conn.cursor()
    try:
        cur.execute("SET time_zone = '+00:00'")
    finally:
        cur.close()
