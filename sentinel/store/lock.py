"""One daemon per store: a lock that ends with the process, and on PostgreSQL one that is watched.

SQLite: `fcntl.flock` on a file next to the database, so `kill -9` never leaves a stale lock. The kernel
holds it for as long as the process lives; it cannot be lost.

PostgreSQL: a session-level advisory lock on a connection of its own (never one of the pool's). The
server drops it as soon as that session ends, which a network blip can do while the daemon runs, so
another daemon could then take the store. Hence the lock is watched:

- a heartbeat thread asks the server every `HEARTBEAT_S` whether this session still holds the lock
  (`pg_locks`, which also sees an unlock or a terminated backend, not only a dead socket);
- the connection has TCP keepalives and a TCP user timeout, so a peer that vanished without a word is an
  error within a few seconds instead of the kernel's two hours;
- a lock not confirmed for `STALE_S` counts as lost even when its query simply hangs (a stalled proxy
  that acknowledges packets but forwards nothing: no timeout of the network stack ever fires);
- every write transaction checks `held()` before it starts and, on PostgreSQL, asks in the same
  transaction, just before COMMIT, whether the lock's session still holds the lock (`fence`).

`retake()` takes the lock again on a new connection after a loss; our own former session, if the server
still has it (the stalled case), is terminated first. The daemon decides what a loss means (detection and
delivery hold; re-taken or exit); the lock only knows whether it is held and why not. The high-availability
lease will build on the same pieces (a dedicated, watched connection and a fence in every transaction),
adding an epoch.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from sentinel.logs import error_line, fields

log = logging.getLogger("sentinel.store")


class StoreLocked(Exception):
    """Another daemon owns this store."""


class LockLost(Exception):
    """This daemon no longer holds the store's lock: it must not write (another one may own the store)."""


class FileLock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise StoreLocked(
                f"another sentinel (pid {holder}) is running on this state store ({self.path.with_suffix('')}); "
                "stop it first, or give this one its own state_url") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd

    def held(self) -> bool:
        """The kernel keeps a flock for the life of the descriptor: held once acquired."""
        return self._fd is not None

    @property
    def lost_reason(self) -> str | None:
        return None

    def fence(self, conn: Connection) -> None:
        """Nothing to ask the database: the file lock cannot be lost while the process lives."""

    def retake(self) -> None:
        self.acquire()

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


_PG_LOCK_KEY = 0x53454E54494E4C  # "SENTINL"
HEARTBEAT_S = 1.0  # how often the lock's session is asked whether it still holds the lock
STALE_S = 4.0  # not confirmed for this long: lost, even when the heartbeat's query just hangs
CONNECT_TIMEOUT_S = 5  # libpq's connect_timeout for the lock's connection (whole seconds)
RELEASE_WAIT_S = 2.0  # at shutdown, how long the heartbeat gets to close the session before we give up

# libpq settings of the lock's connection: keepalive probes after 2 s idle, every 1 s, dead after 2 missed
# ones; unacknowledged data for 4 s is an error too. The server gets the same keepalive settings for this
# session, so it also notices a vanished daemon in seconds and frees the lock for the next one.
_LOCK_CONNECT_ARGS: dict[str, Any] = {
    "connect_timeout": CONNECT_TIMEOUT_S,
    "keepalives": 1, "keepalives_idle": 2, "keepalives_interval": 1, "keepalives_count": 2,
    "tcp_user_timeout": 4000,
    "options": "-c tcp_keepalives_idle=2 -c tcp_keepalives_interval=1 -c tcp_keepalives_count=2 "
               "-c tcp_user_timeout=4000 -c statement_timeout=3000",
}

# (classid, objid, objsubid) of a bigint advisory lock in pg_locks: high 32 bits, low 32 bits, 1
_KEY_HI, _KEY_LO = _PG_LOCK_KEY >> 32, _PG_LOCK_KEY & 0xFFFFFFFF
_HOLDERS = f"""
    SELECT l.pid FROM pg_locks l
    WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
      AND l.classid::bigint = {_KEY_HI} AND l.objid::bigint = {_KEY_LO}
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"""
_HELD_BY = text(f"SELECT EXISTS ({_HOLDERS} AND l.pid = :pid)")


@dataclass(frozen=True, slots=True)
class Holder:
    """The session holding the lock, as far as this role may see it."""

    pid: int
    application_name: str

    def describe(self) -> str:
        prefix = "sentinel lock "
        if self.application_name.startswith(prefix):  # host and pid, as `_application_name` wrote them
            return f"another sentinel ({self.application_name[len(prefix):]}, PostgreSQL backend pid {self.pid})"
        return f"another session (PostgreSQL backend pid {self.pid})"


def _application_name() -> str:
    """Shown in pg_stat_activity and in the refusal of another daemon: which host and process hold the lock."""
    return f"sentinel lock {socket.gethostname()[:32]} pid {os.getpid()}"


class AdvisoryLock:
    """`pg_try_advisory_lock` on a dedicated connection, confirmed by a heartbeat (see the module docstring).

    Thread-safe: `held()` and `fence()` are called by the poll, dispatch and delivery threads; the lock's
    connection itself is only ever used by the thread that owns it (the heartbeat)."""

    def __init__(self, url: URL, *, heartbeat_s: float | None = None, stale_s: float | None = None) -> None:
        self.heartbeat_s = HEARTBEAT_S if heartbeat_s is None else heartbeat_s
        self.stale_s = STALE_S if stale_s is None else stale_s
        self.engine = create_engine(url, poolclass=NullPool,
                                    connect_args={**_LOCK_CONNECT_ARGS, "application_name": _application_name()})
        self._mu = threading.Lock()
        self._gen = 0  # one per session that held the lock; a heartbeat of an older one stops
        self._holding = False
        self._confirmed = 0.0  # time.monotonic() at which the last confirming query was sent
        self._backend_pid: int | None = None  # the session holding (or, after a loss, last holding) the lock
        self._lost: str | None = None
        self.lost_monotonic: float | None = None  # when the loss was noticed
        self._closing = threading.Event()
        self._beat: threading.Thread | None = None

    # --- taking and releasing ------------------------------------------------------------------------
    def acquire(self) -> None:
        """Take the lock at start; raises `StoreLocked` when another session holds it."""
        self._take()

    def retake(self) -> None:
        """Take the lock again after a loss. Raises `StoreLocked` when another session holds it now, and the
        driver's error when the server cannot be reached (the caller retries with backoff)."""
        self._take()

    def _take(self) -> None:
        conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            pid = int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())
            got = self._try(conn)
            if not got:
                holder = self._holder(conn)
                if holder is None:  # released between the two queries
                    got = self._try(conn)
                elif holder.pid == self._backend_pid:
                    got = self._end_former_session(conn, holder.pid)
                if not got:
                    holder = self._holder(conn)
                    who = "another sentinel" if holder is None else holder.describe()
                    raise StoreLocked(f"{who} holds the advisory lock of this PostgreSQL state store; stop it "
                                      "first, or give this one its own database")
        except BaseException:
            conn.close()
            raise
        with self._mu:
            self._gen += 1
            gen = self._gen
            self._holding, self._lost, self.lost_monotonic = True, None, None
            self._backend_pid = pid
            self._confirmed = time.monotonic()
        self._closing.clear()
        self._beat = threading.Thread(target=self._heartbeat, args=(conn, gen), name="store-lock", daemon=True)
        self._beat.start()

    @staticmethod
    def _try(conn: Connection) -> bool:
        return bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": _PG_LOCK_KEY}).scalar())

    @staticmethod
    def _holder(conn: Connection) -> Holder | None:
        row = conn.execute(text(f"SELECT h.pid, coalesce(a.application_name, '') FROM ({_HOLDERS}) h "
                                "LEFT JOIN pg_stat_activity a ON a.pid = h.pid")).first()
        return None if row is None else Holder(int(row[0]), str(row[1]))

    def _end_former_session(self, conn: Connection, pid: int) -> bool:
        """The server still has the session this daemon lost touch with (it stalled rather than failed):
        it is ours, so end it and take the lock on the new one."""
        log.warning("ending this daemon's former lock session, which the server still holds",
                    extra=fields(backend_pid=pid))
        conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            if self._try(conn):
                return True
            time.sleep(0.05)
        return False

    def release(self) -> None:
        """Best effort, never raises: ending the session releases the lock on the server. A heartbeat stuck
        on a dead connection is left behind (the process exit closes its socket)."""
        self._closing.set()
        with self._mu:
            self._gen += 1
            self._holding = False
        beat = self._beat
        if beat is not None and beat is not threading.current_thread():
            beat.join(RELEASE_WAIT_S)
        self._beat = None
        self.engine.dispose()

    # --- watching ----------------------------------------------------------------------------------------
    def _heartbeat(self, conn: Connection, gen: int) -> None:
        try:
            while not self._closing.wait(self.heartbeat_s):
                with self._mu:
                    if gen != self._gen:
                        return
                    pid = self._backend_pid
                sent = time.monotonic()
                try:
                    ok = bool(conn.execute(_HELD_BY, {"pid": pid}).scalar())
                except Exception as exc:  # noqa: BLE001 - any failure of the session loses the lock
                    self._lose(gen, f"its connection failed: {error_line(exc)}")
                    return
                if not ok:
                    self._lose(gen, "the server no longer lists it for this daemon's session")
                    return
                with self._mu:
                    if gen == self._gen:
                        self._confirmed = sent
        finally:
            with contextlib.suppress(Exception):
                conn.close()  # ends the session (if it still exists): the server frees the lock

    def _lose(self, gen: int, reason: str) -> None:
        with self._mu:
            if gen == self._gen and self._holding:
                self._lose_locked(reason)

    def _lose_locked(self, reason: str) -> None:
        self._holding, self._lost, self.lost_monotonic = False, reason, time.monotonic()
        self._gen += 1  # a heartbeat still waiting on the old session stops when its query returns

    def held(self) -> bool:
        """Whether this daemon holds the lock now, as far as the heartbeat confirmed it within `stale_s`."""
        with self._mu:
            if self._holding and time.monotonic() - self._confirmed > self.stale_s:
                self._lose_locked(f"not confirmed for {self.stale_s:g} s (its connection hangs)")
            return self._holding

    @property
    def lost_reason(self) -> str | None:
        """Why the lock is not held since it was lost (None while held, or before it was ever taken)."""
        with self._mu:
            return self._lost

    def fence(self, conn: Connection) -> None:
        """Inside a write transaction, right before its COMMIT: raise `LockLost` unless the lock's session
        still holds the lock at this moment (the heartbeat may not have run since it was lost)."""
        with self._mu:
            pid = self._backend_pid if self._holding else None
        if pid is None or not conn.execute(_HELD_BY, {"pid": pid}).scalar():
            raise LockLost("this daemon no longer holds the state store's lock")

