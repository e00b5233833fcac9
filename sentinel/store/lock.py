"""One daemon per store: an OS lock that the kernel releases when the process dies.

`fcntl.flock` on a file next to the SQLite database, so `kill -9` never leaves a stale lock; on
PostgreSQL a session-level advisory lock on a connection held open for the daemon's lifetime.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text


class StoreLocked(Exception):
    """Another daemon owns this store."""


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

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


_PG_LOCK_KEY = 0x53454E54494E4C  # "SENTINL"


class AdvisoryLock:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._conn: Any = None

    def acquire(self) -> None:
        conn = self.engine.connect()
        got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": _PG_LOCK_KEY}).scalar()
        conn.commit()
        if not got:
            conn.close()
            raise StoreLocked("another sentinel holds this PostgreSQL state store (advisory lock taken); "
                              "stop it first, or give this one its own database")
        self._conn = conn

    def release(self) -> None:
        if self._conn is not None:
            try:
                self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_LOCK_KEY})
                self._conn.commit()
            finally:
                self._conn.close()
                self._conn = None
