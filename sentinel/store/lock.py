"""One daemon per store: a lock that ends with the process, and on PostgreSQL one that is watched.

SQLite: `fcntl.flock` on a file next to the database, so `kill -9` never leaves a stale lock. The kernel
holds it for as long as the process lives; it cannot be lost.

PostgreSQL: a session-level advisory lock on a connection of its own (never one of the pool's). The
server drops it as soon as that session ends, which a network blip can do while the daemon runs, so
another daemon could then take the store. Hence the lock is watched:

- a heartbeat thread asks the server every `HEARTBEAT_S` (`lease_ttl / 6` when shorter) whether this
  session still holds the lock (`pg_locks`, which also sees an unlock or a terminated backend, not only a
  dead socket), and every `RENEW_S` (`lease_ttl / 5` when shorter) renews the lease in the same question;
- the connection has TCP keepalives and a TCP user timeout, so a peer that vanished without a word is an
  error within a few seconds instead of the kernel's two hours;
- a lock not confirmed for `STALE_S` (`lease_ttl / 2` when shorter, so a leader always stops before a
  standby may take over) counts as lost even when its query simply hangs (a stalled proxy
  that acknowledges packets but forwards nothing: no timeout of the network stack ever fires);
- every write transaction checks `held()` before it starts, begins with the lease's epoch fence
  (`begin_fence`) and, just before COMMIT, asks in the same transaction whether the lock's session still
  holds the lock (`fence`).

`retake()` takes the lock again after a loss, or tries to take it for a standby; our own former session,
if the server still has it (the stalled case), is terminated first, and so is the session of a leader
whose lease expired (`sentinel.store.lease`: it stopped renewing, paused or hung). Taking the lock writes
the next epoch into the lease row, and every write transaction also begins with the lease's epoch fence.
The daemon decides what a loss means (detection and delivery hold, it stands by and tries to lead again);
the lock only knows whether it is held, by whom otherwise, and why not.
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

from sqlalchemy import Connection, create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from sentinel.logs import error_line, fields
from sentinel.store import lease
from sentinel.store.lease import LeaseRow

log = logging.getLogger("sentinel.store")


class StoreLocked(Exception):
    """Another daemon owns this store (`lease`: the leader's lease, on PostgreSQL, when there is one)."""

    def __init__(self, message: str, lease: LeaseRow | None = None) -> None:
        super().__init__(message)
        self.lease = lease


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
                "stop it first, or give this one its own state_url"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd

    def held(self) -> bool:
        """The kernel keeps a flock for the life of the descriptor: held once acquired."""
        return self._fd is not None

    @property
    def lost_reason(self) -> str | None:
        return None

    def begin_fence(self, conn: Connection) -> None:
        """Nothing to ask the database: the file lock cannot be lost while the process lives."""

    def fence(self, conn: Connection) -> None:
        """Nothing to ask the database: the file lock cannot be lost while the process lives."""

    @property
    def epoch(self) -> int | None:
        return None

    def retake(self) -> None:
        self.acquire()

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


_PG_LOCK_KEY = 0x53454E54494E4C  # "SENTINL"
DEFAULT_LEASE_TTL_S = 15.0
HEARTBEAT_S = 1.0  # how often the lock's session is asked whether it still holds the lock (at most)
STALE_S = 4.0  # not confirmed for this long: lost, even when the heartbeat's query just hangs (at most)
RENEW_S = 3.0  # how often the leader writes its lease's renewal (at most)
CONNECT_TIMEOUT_S = 5  # libpq's connect_timeout for the lock's connection (whole seconds)
RELEASE_WAIT_S = 2.0  # at shutdown, how long the heartbeat gets to close the session before we give up

# libpq settings of the lock's connection: keepalive probes after 2 s idle, every 1 s, dead after 2 missed
# ones; unacknowledged data for 4 s is an error too. The server gets the same keepalive settings for this
# session, so it also notices a vanished daemon in seconds and frees the lock for the next one.
_LOCK_CONNECT_ARGS: dict[str, int | str] = {
    "connect_timeout": CONNECT_TIMEOUT_S,
    "keepalives": 1,
    "keepalives_idle": 2,
    "keepalives_interval": 1,
    "keepalives_count": 2,
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
_HELD_BY_ME = f"EXISTS ({_HOLDERS} AND l.pid = pg_backend_pid())"


@dataclass(frozen=True, slots=True)
class Holder:
    """The session holding the lock, as far as this role may see it."""

    pid: int
    application_name: str

    def describe(self) -> str:
        prefix = "sentinel lock "
        if self.application_name.startswith(prefix):  # host and pid, as `_application_name` wrote them
            return f"another sentinel ({self.application_name[len(prefix) :]}, PostgreSQL backend pid {self.pid})"
        return f"another session (PostgreSQL backend pid {self.pid})"


def instance_name() -> str:
    """This instance as the lease, the logs, `sentinel status` and pg_stat_activity name it: host and pid."""
    return f"{socket.gethostname()[:32]} pid {os.getpid()}"


def _application_name() -> str:
    """Shown in pg_stat_activity and in the refusal of another daemon: which host and process hold the lock."""
    return f"sentinel lock {instance_name()}"


class AdvisoryLock:
    """`pg_try_advisory_lock` on a dedicated connection, confirmed by a heartbeat, plus the leader lease's epoch
    (see the module docstring and `sentinel.store.lease`).

    Thread-safe: `held()` and the fences are called by the poll, dispatch and delivery threads; the lock's
    connection itself is only ever used by the thread that owns it (the heartbeat; a standby's attempts run on
    the lock watch's thread, on a connection kept between them)."""

    def __init__(
        self,
        url: URL,
        *,
        lease_ttl_s: float = DEFAULT_LEASE_TTL_S,
        heartbeat_s: float | None = None,
        stale_s: float | None = None,
    ) -> None:
        self.lease_ttl_s = lease_ttl_s
        self.heartbeat_s = min(HEARTBEAT_S, lease_ttl_s / 6) if heartbeat_s is None else heartbeat_s
        self.stale_s = min(STALE_S, lease_ttl_s / 2) if stale_s is None else stale_s
        self.renew_s = min(RENEW_S, lease_ttl_s / 5)
        self.engine = create_engine(
            url, poolclass=NullPool, connect_args={**_LOCK_CONNECT_ARGS, "application_name": _application_name()}
        )
        self.identity = instance_name()
        self._mu = threading.Lock()
        self._gen = 0  # one per session that held the lock; a heartbeat of an older one stops
        self._holding = False
        self._epoch: int | None = None  # the epoch this instance leads with (or last led with)
        self._confirmed = 0.0  # time.monotonic() at which the last confirming query was sent
        self._backend_pid: int | None = None  # the session holding (or, after a loss, last holding) the lock
        self._lost: str | None = None
        self.lost_monotonic: float | None = None  # when the loss was noticed
        self._closing = threading.Event()
        self._beat: threading.Thread | None = None
        self._spare: Connection | None = None  # a standby's connection, kept between its attempts
        self._unleased: tuple[int, float] | None = None  # (pid, first seen) of a holder without a lease

    # --- taking and releasing ------------------------------------------------------------------------
    def acquire(self) -> None:
        """Take the lock at start; raises `StoreLocked` when another session holds it."""
        self._take()

    def retake(self) -> None:
        """Take the lock after a loss, or for a standby. Raises `StoreLocked` when another instance leads now,
        and the driver's error when the server cannot be reached (the caller retries with backoff)."""
        self._take()

    def _connect(self) -> Connection:
        return self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")

    def _take(self) -> None:
        conn, self._spare = self._spare or self._connect(), None
        try:
            pid = int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())
            if not (self._try(conn) or self._take_from_holder(conn)):
                row = lease.read(conn)
                holder = self._holder(conn)
                who = "another sentinel" if holder is None else holder.describe()
                led = (
                    ""
                    if row is None or holder is None or row.backend_pid != holder.pid
                    else f", epoch {row.epoch}, lease renewed {row.age_s:.1f} s ago"
                )
                self._spare = conn
                raise StoreLocked(
                    f"{who} holds the advisory lock of this PostgreSQL state store{led}", row if led else None
                )
            epoch = lease.claim(conn, self.identity, self.lease_ttl_s)
        except StoreLocked:
            raise
        except BaseException:
            conn.close()
            raise
        with self._mu:
            self._gen += 1
            gen = self._gen
            self._holding, self._lost, self.lost_monotonic = True, None, None
            self._backend_pid, self._epoch = pid, epoch
            self._confirmed = time.monotonic()
        self._unleased = None
        self._closing.clear()
        self._beat = threading.Thread(target=self._heartbeat, args=(conn, gen), name="store-lock", daemon=True)
        self._beat.start()

    def _take_from_holder(self, conn: Connection) -> bool:
        """The lock is held: end the holder's session when it is our own former one, or a leader whose lease
        expired, or a holder that wrote no lease within a lease's TTL; then take the lock."""
        holder = self._holder(conn)
        if holder is None:  # released between the two queries
            return self._try(conn)
        if holder.pid == self._backend_pid:
            log.warning(
                "ending this daemon's former lock session, which the server still holds",
                extra=fields(backend_pid=holder.pid),
            )
            return self._end_session(conn, holder.pid)
        row = lease.read(conn)
        if row is not None and row.backend_pid == holder.pid:
            self._unleased = None
            if not row.expired:
                return False
            log.warning(
                "the leader's lease expired: ending its lock session to take over",
                extra=fields(
                    leader=row.holder, epoch=row.epoch, renewed_s_ago=round(row.age_s, 1), ttl_s=row.ttl_us / 1e6
                ),
            )
            return self._end_session(conn, holder.pid)
        # the holder has not written its epoch yet (it is taking over right now) or never will (it hangs)
        now = time.monotonic()
        if self._unleased is None or self._unleased[0] != holder.pid:
            self._unleased = (holder.pid, now)
            return False
        if now - self._unleased[1] <= self.lease_ttl_s:
            return False
        log.warning(
            "the lock's holder wrote no lease within lease_ttl: ending its session to take over",
            extra=fields(backend_pid=holder.pid),
        )
        return self._end_session(conn, holder.pid)

    @staticmethod
    def _try(conn: Connection) -> bool:
        return bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": _PG_LOCK_KEY}).scalar())

    @staticmethod
    def _holder(conn: Connection) -> Holder | None:
        row = conn.execute(
            text(
                f"SELECT h.pid, coalesce(a.application_name, '') FROM ({_HOLDERS}) h "
                "LEFT JOIN pg_stat_activity a ON a.pid = h.pid"
            )
        ).first()
        return None if row is None else Holder(int(row[0]), str(row[1]))

    def _end_session(self, conn: Connection, pid: int) -> bool:
        """End the session `pid` (it holds the lock and may no longer) and take the lock on ours."""
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
        spare, self._spare = self._spare, None
        if spare is not None:
            with contextlib.suppress(Exception):
                spare.close()
        self.engine.dispose()

    # --- watching ----------------------------------------------------------------------------------------
    def _heartbeat(self, conn: Connection, gen: int) -> None:
        renewed = time.monotonic()
        try:
            while not self._closing.wait(self.heartbeat_s):
                with self._mu:
                    if gen != self._gen:
                        return
                    pid, epoch = self._backend_pid, self._epoch
                sent = time.monotonic()
                try:
                    if sent - renewed >= self.renew_s and epoch is not None:
                        ok = lease.renew(conn, epoch, _HELD_BY_ME)
                        renewed = sent if ok else renewed
                    else:
                        ok = bool(conn.execute(_HELD_BY, {"pid": pid}).scalar())
                except Exception as exc:  # noqa: BLE001 - any failure of the session loses the lock
                    self._lose(gen, f"its connection failed: {error_line(exc)}")
                    return
                if not ok:
                    self._lose(gen, self._why_not_held(conn, epoch))
                    return
                with self._mu:
                    if gen == self._gen:
                        self._confirmed = sent
        finally:
            with contextlib.suppress(Exception):
                conn.close()  # ends the session (if it still exists): the server frees the lock

    @staticmethod
    def _why_not_held(conn: Connection, epoch: int | None) -> str:
        try:
            row = lease.read(conn)
        except Exception:  # noqa: BLE001 - the reason is only for the log
            row = None
        if row is not None and row.epoch != epoch:
            return f"{row.holder} took over (epoch {row.epoch})"
        return "the server no longer lists it for this daemon's session"

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

    @property
    def epoch(self) -> int | None:
        """The epoch this instance leads with, or last led with (None before it ever led)."""
        with self._mu:
            return self._epoch

    def begin_fence(self, conn: Connection) -> None:
        """First thing in a write transaction: raise `LockLost` unless the lease still carries this leader's
        epoch and no takeover runs; the fence key then stays held until COMMIT (`sentinel.store.lease`)."""
        with self._mu:
            epoch = self._epoch if self._holding else None
        if epoch is None:
            raise LockLost("this daemon no longer holds the state store's lock")
        refused = lease.fence(conn, epoch)
        if refused is not None:
            raise LockLost(refused)

    def fence(self, conn: Connection) -> None:
        """Inside a write transaction, right before its COMMIT: raise `LockLost` unless the lock's session
        still holds the lock at this moment (the heartbeat may not have run since it was lost)."""
        with self._mu:
            pid = self._backend_pid if self._holding else None
        if pid is None or not conn.execute(_HELD_BY, {"pid": pid}).scalar():
            raise LockLost("this daemon no longer holds the state store's lock")
