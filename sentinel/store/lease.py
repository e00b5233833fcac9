"""The leader lease: which of several instances sharing one PostgreSQL store leads, and the epoch that
fences every write, with PostgreSQL itself as the coordinator (no consensus of our own, no other service).

Leading means two things at once: holding the store's session advisory lock (`sentinel.store.lock`, on a
watched connection of its own) and having written one's epoch into the `leader_lease` row.

- **Taking over.** Right after `pg_try_advisory_lock` succeeds, on the lock's connection: take the
  *fence key* exclusively (`pg_advisory_xact_lock`), which waits for the writes of the former leader that
  are still open, then add 1 to the epoch and write the holder, its lock session, the lease's TTL and the
  times (the server's clock, so the hosts' clocks never matter), and commit. A former leader's write still
  open after `FENCE_WAIT_S` belongs to an instance that lost the lock, paused or cut off: its session is
  ended, which rolls the write back.
- **Fencing.** Every write transaction of the leader begins with `pg_try_advisory_xact_lock_shared` of the
  fence key and a comparison of the row's epoch with its own: refused (`LockLost`) while a takeover runs
  or once another epoch is written. The shared key is held until COMMIT, so a takeover cannot complete
  while such a write is open, and a write that begins after it sees the new epoch: a leader that was paused
  (SIGSTOP) or partitioned between its checks and its COMMIT can never commit after a takeover. Advisory
  locks cost no WAL, so the fence adds no disk write to a transaction.
- **Renewing.** The leader's heartbeat writes `renewed_us` every `renew_s` (the lock's session still
  holding the lock and the epoch still its own, in the same statement).
- **Expiry.** A leader whose lease was not renewed for its TTL (paused, hung, its connection stalled
  without an error) is taken over: a standby ends its lock session (`pg_terminate_backend`, allowed to the
  same database role) and takes the lock. A leader that dies or whose connection ends frees the lock at
  once, so a standby takes over at its next attempt, well within the TTL.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, text
from sqlalchemy.exc import OperationalError

from sentinel.model import US

NAME = "leader"
FENCE_KEY = 0x53454E54494E46  # "SENTINF": shared by every fenced write, exclusive during a takeover
FENCE_WAIT_S = 1.0  # a takeover waits this long for the former leader's open writes, then ends them
SERVER_NOW_US = "(extract(epoch from clock_timestamp()) * 1000000)::bigint"


@dataclass(frozen=True, slots=True)
class LeaseRow:
    """The lease as the store holds it, with the server's clock at the moment it was read."""

    epoch: int
    holder: str
    backend_pid: int
    acquired_us: int
    renewed_us: int
    ttl_us: int
    now_us: int

    @property
    def age_s(self) -> float:
        """Seconds since the leader last renewed the lease (the server's clock)."""
        return max(0.0, (self.now_us - self.renewed_us) / US)

    @property
    def expired(self) -> bool:
        return self.now_us - self.renewed_us > self.ttl_us

    def describe(self) -> str:
        return f"{self.holder} (epoch {self.epoch}, lease renewed {self.age_s:.1f} s ago)"


def read(conn: Connection) -> LeaseRow | None:
    """The lease row, or None on a store where no instance ever led."""
    row = conn.execute(
        text(
            f"SELECT epoch, holder, backend_pid, acquired_us, renewed_us, ttl_us, {SERVER_NOW_US} "
            "FROM leader_lease WHERE name = :n"
        ),
        {"n": NAME},
    ).first()
    if row is None:
        return None
    epoch, holder, pid, acquired, renewed, ttl, now = row
    return LeaseRow(int(epoch), str(holder), int(pid), int(acquired), int(renewed), int(ttl), int(now))


def claim(conn: Connection, holder: str, ttl_s: float) -> int:
    """Make this session's holder the leader with the next epoch; returns it. `conn` holds the store's advisory
    lock, in autocommit mode. Waits for the former leader's open writes (ending those still open after
    `FENCE_WAIT_S`: see the module docstring)."""
    conn.execute(
        text(
            f"INSERT INTO leader_lease (name, epoch, holder, backend_pid, acquired_us, renewed_us, ttl_us) "
            f"VALUES (:n, 0, '', 0, {SERVER_NOW_US}, {SERVER_NOW_US}, 0) ON CONFLICT (name) DO NOTHING"
        ),
        {"n": NAME},
    )
    for _ in range(5):
        conn.exec_driver_sql("BEGIN")
        try:
            if _wait_for_fenced_writes(conn):
                epoch = int(
                    conn.execute(
                        text(
                            f"UPDATE leader_lease SET epoch = epoch + 1, holder = :h, backend_pid = pg_backend_pid(), "
                            f"acquired_us = {SERVER_NOW_US}, renewed_us = {SERVER_NOW_US}, ttl_us = :ttl "
                            "WHERE name = :n "
                            "RETURNING epoch"
                        ),
                        {"h": holder[:128], "ttl": int(ttl_s * US), "n": NAME},
                    ).scalar_one()
                )
                conn.exec_driver_sql("COMMIT")
                return epoch
        except BaseException:
            conn.exec_driver_sql("ROLLBACK")
            raise
        conn.exec_driver_sql("ROLLBACK")
        _end_fenced_writers(conn)
    raise RuntimeError("the former leader's writes could not be ended; the takeover is tried again")


def _wait_for_fenced_writes(conn: Connection) -> bool:
    """Inside the takeover's transaction: take the fence key exclusively, waiting up to `FENCE_WAIT_S` (False
    then). While this request waits, every new fenced write is refused at once (a lock request queued behind
    a conflicting waiter is not granted), so the former leader cannot start writes that hold the takeover off."""
    conn.exec_driver_sql(f"SET LOCAL lock_timeout = {int(FENCE_WAIT_S * 1000)}")
    try:
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": FENCE_KEY})
    except OperationalError as exc:
        if getattr(exc.orig, "sqlstate", None) != "55P03":  # lock_not_available: the lock_timeout ran out
            raise
        conn.rollback()  # SQLAlchemy's view of the connection; the caller ends the server's transaction
        return False
    return True


_HI, _LO = FENCE_KEY >> 32, FENCE_KEY & 0xFFFFFFFF


def _end_fenced_writers(conn: Connection) -> None:
    """End the sessions whose transactions hold the fence key: the writes of a leader that no longer holds the
    store's lock (it paused, or lost its connection while they were open). Their rollback is the point."""
    conn.execute(
        text(
            "SELECT pg_terminate_backend(l.pid, 2000) FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted "
            "AND l.objsubid = 1 AND l.classid::bigint = :hi AND l.objid::bigint = :lo AND l.pid <> pg_backend_pid() "
            "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ),
        {"hi": _HI, "lo": _LO},
    )


def renew(conn: Connection, epoch: int, held_by_me: str) -> bool:
    """The leader's renewal: True when the row still carries its epoch and its lock session, and that session
    still holds the lock (`held_by_me`: an SQL condition on pg_locks, from `sentinel.store.lock`)."""
    result = conn.execute(
        text(
            f"UPDATE leader_lease SET renewed_us = {SERVER_NOW_US} WHERE name = :n AND epoch = :e "
            f"AND backend_pid = pg_backend_pid() AND {held_by_me}"
        ),
        {"n": NAME, "e": epoch},
    )
    return bool(result.rowcount == 1)


def fence(conn: Connection, epoch: int) -> str | None:
    """At the start of a write transaction: None when this leader's epoch is still the store's (the shared fence
    key then stays held until COMMIT), else why the write is refused."""
    if not conn.execute(text("SELECT pg_try_advisory_xact_lock_shared(:k)"), {"k": FENCE_KEY}).scalar():
        return "another instance is taking over the state store"
    now = conn.execute(text("SELECT epoch, holder FROM leader_lease WHERE name = :n"), {"n": NAME}).first()
    if now is None or int(now[0]) != epoch:
        who = "" if now is None else f": {now[1]} leads with epoch {int(now[0])}"
        return f"this instance is no longer the leader (its epoch {epoch}){who}"
    return None
