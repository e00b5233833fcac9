"""Opening the state store: engine settings per backend, migrations, and the one-daemon lock.

SQLite runs in WAL mode with `BEGIN IMMEDIATE` for writes (a transaction takes the write lock at
its start, so two writers queue on the busy timeout instead of failing at commit), `synchronous=FULL`
(an acknowledged alert survives a power cut), and one writer at a time inside the process.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DatabaseError, OperationalError

from sentinel.store import lease, migrate
from sentinel.store.lock import DEFAULT_LEASE_TTL_S, AdvisoryLock, FileLock, LockLost, StoreLocked, instance_name

if TYPE_CHECKING:
    import sqlite3

    from sqlalchemy.pool import ConnectionPoolEntry

SUPPORTED = ("sqlite", "postgresql")


class StoreError(Exception):
    pass


class StoreMissing(StoreError):
    """The PostgreSQL database `state_url` names does not exist: a typo or a step of the install not done,
    so a person must create it (Sentinel creates tables, never databases)."""


class StoreUnreachable(StoreError):
    """The state store's server did not answer or refused us (down, wrong host, password): a runtime
    failure, said in one line with the driver's words and no password."""


class StoreCorrupt(StoreError):
    """The SQLite file is not a database or is damaged: no retry helps, a person must restore or replace it."""


# SQLite's result codes for a file that is not a database or whose pages do not add up (extended codes
# such as SQLITE_CORRUPT_INDEX included); every other error (locked, full, read-only) is not corruption.
_CORRUPT_CODES = ("SQLITE_CORRUPT", "SQLITE_NOTADB")


def _is_corrupt(exc: BaseException | None) -> bool:
    return str(getattr(exc, "sqlite_errorname", "")).startswith(_CORRUPT_CODES)


class Store:
    """The state store. `transaction()` is the only way to write."""

    def __init__(self, url: str, *, lease_ttl_s: float = DEFAULT_LEASE_TTL_S) -> None:
        try:
            parsed = make_url(url)
        except ArgumentError:
            raise StoreError("state_url is not a database URL (e.g. sqlite:////var/lib/sentinel/state.db)") from None
        self.dialect = parsed.get_backend_name()
        if self.dialect not in SUPPORTED:
            raise StoreError(f"state_url: {self.dialect} is not supported as a state store (use sqlite or postgresql)")
        self.description = parsed.render_as_string(hide_password=True)
        self.lease_ttl_s = lease_ttl_s
        self._write_lock = threading.RLock()
        self.sqlite_path: Path | None = None
        if self.dialect == "sqlite":
            db = parsed.database
            if not db or db == ":memory:":
                raise StoreError("state_url: an SQLite store needs a file path (sqlite:////abs/path/state.db)")
            self.sqlite_path = Path(db)
            try:
                self.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"state_url: cannot create {self.sqlite_path.parent}: {exc.strerror}") from None
            self.engine = create_engine(parsed, connect_args={"timeout": 30, "check_same_thread": False})
            event.listen(self.engine, "connect", _sqlite_connect)
            event.listen(self.engine, "begin", _sqlite_begin_immediate)
            self.read_engine = create_engine(parsed, connect_args={"timeout": 30, "check_same_thread": False})
            event.listen(self.read_engine, "connect", _sqlite_connect)
            event.listen(self.read_engine, "begin", _sqlite_begin)
        else:
            # every delivery thread, the poll and the HTTP API may hold a connection at once; keepalives
            # and a TCP user timeout make a vanished server an error in seconds, not after the kernel's 2 h
            self.engine = create_engine(
                parsed,
                pool_pre_ping=True,
                pool_size=10,
                max_overflow=20,
                connect_args={
                    "connect_timeout": 10,
                    "keepalives": 1,
                    "keepalives_idle": 5,
                    "keepalives_interval": 2,
                    "keepalives_count": 3,
                    "tcp_user_timeout": 15000,
                    # which instance a session belongs to (pg_stat_activity)
                    "application_name": f"sentinel {instance_name()}",
                },
            )
            self.read_engine = self.engine
        self._url = parsed
        self._lock: FileLock | AdvisoryLock | None = None

    def __repr__(self) -> str:
        return f"Store({self.description!r})"

    def lock(self) -> None:
        """Claim the store for this daemon; raises `StoreLocked` when another one has it. On PostgreSQL the
        lock stays set up after that refusal, so `retake_lock` can try again (a standby); the store must be
        migrated first (the lease row's table)."""
        if self.sqlite_path is not None:
            from sentinel.store.netfs import refuse_network_filesystem

            refuse_network_filesystem(self.sqlite_path)
            self._lock = FileLock(self.sqlite_path.with_name(self.sqlite_path.name + ".lock"))
        else:
            self._lock = AdvisoryLock(self._url, lease_ttl_s=self.lease_ttl_s)
        try:
            with self._connecting():
                self._lock.acquire()
        except StoreLocked:
            if isinstance(self._lock, FileLock):
                self._lock.release()
                self._lock = None
            raise
        except BaseException:
            self._lock.release()
            self._lock = None
            raise

    @contextmanager
    def _connecting(self) -> Iterator[None]:
        """The first connection to a PostgreSQL store: a database that does not exist becomes `StoreMissing`
        naming it and the `createdb` that makes it; any other connection failure `StoreUnreachable`, one
        line each instead of SQLAlchemy's traceback."""
        try:
            yield
        except OperationalError as exc:
            if self.sqlite_path is not None:
                raise
            from sentinel.sources.sql_connect import driver_message, url_secrets

            u = self._url
            where = f"{u.host or 'localhost'}:{u.port or 5432}"
            if re.search(r'database "[^"]*" does not exist', str(exc.orig)):
                create = " ".join(
                    [
                        "createdb",
                        f"-h {u.host}" if u.host else "",
                        f"-p {u.port}" if u.port else "",
                        f"-U {u.username}" if u.username else "",
                        str(u.database),
                    ]
                )
                raise StoreMissing(
                    f"state_url: PostgreSQL database {u.database!r} does not exist on {where}; "
                    f"create it first: {' '.join(create.split())}"
                ) from None
            raise StoreUnreachable(
                f"state_url: cannot connect to the PostgreSQL state store on {where}: "
                f"{driver_message(exc, url_secrets(u))}"
            ) from None

    def lock_held(self) -> bool:
        """Whether this process may write: it holds the store's lock (or never took one: tools and tests)."""
        return self._lock is None or self._lock.held()

    @property
    def lock_lost_reason(self) -> str | None:
        """Why the lock is not held since it was lost; None while it is held."""
        return None if self._lock is None else self._lock.lost_reason

    @property
    def lock_kind(self) -> str:
        """How this store is claimed: `file` (SQLite's flock), `advisory` (PostgreSQL) or `none`."""
        return {FileLock: "file", AdvisoryLock: "advisory"}.get(type(self._lock), "none")

    @property
    def epoch(self) -> int | None:
        """The epoch this instance leads (or last led) with on PostgreSQL; None on SQLite or before it led."""
        return None if self._lock is None else self._lock.epoch

    def lease(self) -> lease.LeaseRow | None:
        """The leader's lease as the store holds it now (PostgreSQL; None on SQLite or before anyone led)."""
        if self.sqlite_path is not None:
            return None
        with self.reading() as conn:
            return lease.read(conn)

    def retake_lock(self) -> None:
        """After a loss, or on a standby: take the lock (again). `StoreLocked` when another daemon holds it
        now; the driver's error when the server is still unreachable."""
        if self._lock is None:
            self.lock()
            return
        self._lock.retake()

    def upgrade(self) -> tuple[str | None, str]:
        """Bring the store to the newest schema. On PostgreSQL several instances may start at once: a session
        advisory lock of its own makes them migrate one after the other (the later ones find it current)."""
        with self._write_lock, self.diagnosing(), self._connecting():
            self._check_sqlite_file()
            if self.sqlite_path is not None:
                return migrate.upgrade(self.engine)
            with self.engine.connect() as conn:
                conn.exec_driver_sql(f"SELECT pg_advisory_lock({migrate.PG_MIGRATION_KEY})")
                try:
                    return migrate.upgrade(self.engine)
                finally:
                    conn.exec_driver_sql(f"SELECT pg_advisory_unlock({migrate.PG_MIGRATION_KEY})")
                    conn.rollback()

    def _check_sqlite_file(self) -> None:
        """`PRAGMA quick_check` before anything else reads or migrates the file (a migration would build on the
        damage, and a damaged page found later fails each poll instead of the start). About 0.25 s for 170 MB,
        on a connection of its own that is closed again, so its page cache does not stay in the daemon."""
        if self.sqlite_path is None or not self.sqlite_path.exists():
            return
        import sqlite3

        conn = sqlite3.connect(self.sqlite_path, timeout=30)
        try:
            found = [str(row[0]) for row in conn.execute("PRAGMA quick_check(1)")]
        except sqlite3.DatabaseError as exc:
            if not _is_corrupt(exc):
                raise
            found = [str(exc)]
        finally:
            conn.close()
        if found != ["ok"]:
            raise self._corrupt(" ".join(" ".join(found).split())[:200])

    def _corrupt(self, detail: str) -> StoreCorrupt:
        return StoreCorrupt(
            f"state store {self.sqlite_path} is damaged (SQLite: {detail}); restore it from a backup, or move it and "
            f"its -wal and -shm files aside to start an empty store (history is read again from the source; "
            f"silences, acknowledgements and undelivered messages are lost)"
        )

    @contextmanager
    def diagnosing(self) -> Iterator[None]:
        """Turn SQLite's "file is not a database" / "disk image is malformed" into one `StoreCorrupt` that names
        the file and what to do, instead of a traceback from deep in the driver."""
        try:
            yield
        except DatabaseError as exc:
            if self.sqlite_path is None or not _is_corrupt(exc.orig):
                raise
            raise self._corrupt(str(exc.orig)) from None

    @contextmanager
    def transaction(self, *, fenced: bool = True) -> Iterator[Connection]:
        """One atomic write: everything inside commits together or not at all.

        Fenced by the store's lock: refused (`LockLost`) before it starts when the lock is known to be lost;
        on PostgreSQL it begins with the lease's epoch fence (refused once another instance took over, and
        no takeover completes while it is open: `sentinel.store.lease`) and checks right before COMMIT that
        the lock's session still holds the lock. `fenced=False` is for what any instance may write to a
        shared store, leader or standby: silences and acknowledgements, which the leader reads each time it
        dispatches."""
        with self._write_lock:
            lock = self._lock if fenced else None
            if lock is not None and not lock.held():
                raise LockLost(f"this daemon no longer holds the state store's lock ({self.lock_lost_reason})")
            with self.engine.begin() as conn:
                if lock is not None:
                    lock.begin_fence(conn)
                yield conn
                if lock is not None:
                    lock.fence(conn)

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        with self.read_engine.connect() as conn:
            yield conn

    def close(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        self.engine.dispose()
        if self.read_engine is not self.engine:
            self.read_engine.dispose()


def _sqlite_connect(dbapi_conn: sqlite3.Connection, _record: ConnectionPoolEntry) -> None:
    """Listens to `connect` of a SQLite engine only, so the DBAPI connection is the stdlib's."""
    dbapi_conn.isolation_level = None  # SQLAlchemy's `begin` event issues BEGIN itself
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _sqlite_begin_immediate(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def _sqlite_begin(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN")


def open_store(url: str, *, lock: bool = False, upgrade: bool = True) -> Store:
    """Open (and by default migrate) a store; `lock=True` claims it too, after the migration on PostgreSQL
    (the lease needs its table) and before it on SQLite (no second daemon migrates under a running one)."""
    store = Store(url)
    try:
        first = store.sqlite_path is None
        if upgrade and first:
            store.upgrade()
        if lock:
            store.lock()
        if upgrade and not first:
            store.upgrade()
    except Exception:
        store.close()
        raise
    return store
