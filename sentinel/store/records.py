"""Persistence of the ingest stage: the source watermark, the ledger of rows read and raw hourly buckets.

The ledger (`seen_ids`) holds one entry per source row counted or rejected over the history window:
its key, a digest of its content, its time and when it was first read. It is what makes a row counted
exactly once however late it is committed or re-read; ingest looks keys up in it a page at a time
instead of holding it in memory.

The raw buckets (local hour x type x channel) are the history every rule's series derive from, so a
reloaded or new rule gets its full baseline at once instead of a false zero.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import Connection, and_, case, delete, func, insert, select, update

from sentinel.days import Calendar
from sentinel.model import Batch, IntArray, Vocab
from sentinel.store.schema import hourly_buckets, seen_ids, source_state

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy import Table
    from sqlalchemy.dialects.postgresql import Insert as PgInsert
    from sqlalchemy.dialects.sqlite import Insert as SqliteInsert

KEY = "source"


@dataclass(slots=True)
class SourceState:
    watermark_us: int | None
    coverage_start_us: int | None
    backfill_start_us: int | None
    backfill_done: bool
    started_us: int
    ledger_start_us: int | None = None  # the ledger knows every row created after this instant


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One source row counted or rejected: `created_us` is its time when `timed`, else when it was read."""

    key: str
    digest: str
    created_us: int
    timed: bool
    seen_us: int


LOOKUP_CHUNK = 900
"""Keys per `IN (...)` of an SQLite lookup: below the 999 bound parameters of old SQLite builds."""


def load_source_state(conn: Connection) -> SourceState | None:
    row = conn.execute(select(source_state).where(source_state.c.key == KEY)).mappings().first()
    if row is None:
        return None
    return SourceState(
        row["watermark_us"],
        row["coverage_start_us"],
        row["backfill_start_us"],
        bool(row["backfill_done"]),
        row["started_us"],
        row["ledger_start_us"],
    )


def save_source_state(conn: Connection, state: SourceState, now_us: int) -> None:
    values = {
        "watermark_us": state.watermark_us,
        "coverage_start_us": state.coverage_start_us,
        "backfill_start_us": state.backfill_start_us,
        "backfill_done": state.backfill_done,
        "ledger_start_us": state.ledger_start_us,
        "updated_us": now_us,
    }
    n = conn.execute(update(source_state).where(source_state.c.key == KEY).values(**values)).rowcount
    if n == 0:
        conn.execute(insert(source_state).values(key=KEY, started_us=state.started_us, **values))


def add_seen(conn: Connection, entries: Sequence[LedgerEntry]) -> None:
    if not entries:
        return
    if conn.dialect.name == "sqlite":  # the driver's executemany: a backfill writes 100,000 of them
        conn.exec_driver_sql(
            "INSERT INTO seen_ids (record_id, created_us, digest, timed, seen_us) VALUES (?, ?, ?, ?, ?)",
            [(e.key, e.created_us, e.digest, e.timed, e.seen_us) for e in entries],
        )
        return
    conn.execute(
        insert(seen_ids),
        [
            {"record_id": e.key, "created_us": e.created_us, "digest": e.digest, "timed": e.timed, "seen_us": e.seen_us}
            for e in entries
        ],
    )


def lookup_seen(conn: Connection, keys: Iterable[str]) -> dict[str, str | None]:
    """The ledger's digest for each of `keys` it holds (None for entries from before digests).

    Plain driver SQL: a page of 10,000 keys costs a few index probes, not SQLAlchemy compiling an
    `IN` of 10,000 bound parameters."""
    wanted = list(dict.fromkeys(keys))
    found: dict[str, str | None] = {}
    if not wanted:
        return found
    if conn.dialect.name == "postgresql":
        rows = conn.exec_driver_sql(
            "SELECT record_id, digest FROM seen_ids WHERE record_id = ANY(%(keys)s)", {"keys": wanted}
        )
        found.update((k, d) for k, d in rows)
        return found
    for i in range(0, len(wanted), LOOKUP_CHUNK):
        chunk = tuple(wanted[i : i + LOOKUP_CHUNK])
        rows = conn.exec_driver_sql(
            f"SELECT record_id, digest FROM seen_ids WHERE record_id IN ({', '.join('?' * len(chunk))})", chunk
        )
        found.update((k, d) for k, d in rows)
    return found


def seen_counts(conn: Connection, bounds: Sequence[int]) -> list[int]:
    """Timed ledger entries in each [bounds[i], bounds[i+1]): one range scan of the created_us index."""
    if len(bounds) < 2:
        return []
    c = seen_ids.c.created_us
    below = [func.sum(case((c < b, 1), else_=0)) for b in bounds[1:]]
    row = conn.execute(select(*below).where(and_(seen_ids.c.timed, c >= bounds[0], c < bounds[-1]))).one()
    cumulative = [int(v or 0) for v in row]
    return [n - prev for prev, n in zip([0, *cumulative[:-1]], cumulative, strict=True)]


def prune_seen(conn: Connection, before_us: int) -> int:
    """Forget rows both created and first read before `before_us` (the history window's start): rows
    that old are outside every day the rules look at, and a row without a time is forgotten a window
    after it was rejected."""
    return conn.execute(
        delete(seen_ids).where(and_(seen_ids.c.created_us < before_us, seen_ids.c.seen_us < before_us))
    ).rowcount


def bucket_counts(batch: Batch, calendar: Calendar) -> tuple[IntArray, IntArray, IntArray, IntArray]:
    """(hour_us, type code, channel code, count) for the batch, one row per distinct bucket."""
    if len(batch) == 0:
        z = np.zeros(0, dtype=np.int64)
        return z, z, z, z
    hours = calendar.hour_starts_of(batch.ts)
    keys = np.stack([hours, batch.type.astype(np.int64), batch.channel.astype(np.int64)], axis=1)
    uniq, counts = np.unique(keys, axis=0, return_counts=True)
    return uniq[:, 0], uniq[:, 1], uniq[:, 2], counts.astype(np.int64)


def add_buckets(conn: Connection, batch: Batch, calendar: Calendar, vocab: Vocab) -> None:
    hours, types, channels, counts = bucket_counts(batch, calendar)
    if len(hours) == 0:
        return
    rows = [
        {"hour_us": int(h), "type": vocab.decode(int(t)), "channel": vocab.decode(int(c)), "count": int(n)}
        for h, t, c, n in zip(hours, types, channels, counts, strict=True)
    ]
    ins = _upsert(conn.dialect.name)(hourly_buckets)
    stmt = ins.on_conflict_do_update(
        index_elements=["hour_us", "type", "channel"],
        set_={"count": hourly_buckets.c.count + ins.excluded.count},
    )
    conn.execute(stmt, rows)


def read_buckets(conn: Connection, start_us: int, end_us: int | None = None) -> Iterable[tuple[int, str, str, int]]:
    """Buckets whose hour starts in [start_us, end_us), ordered by hour."""
    q = select(hourly_buckets.c.hour_us, hourly_buckets.c.type, hourly_buckets.c.channel, hourly_buckets.c.count).where(
        hourly_buckets.c.hour_us >= start_us
    )
    if end_us is not None:
        q = q.where(hourly_buckets.c.hour_us < end_us)
    for h, t, c, n in conn.execute(q.order_by(hourly_buckets.c.hour_us)):
        yield int(h), t, c, int(n)


def prune_buckets(conn: Connection, before_us: int) -> int:
    return conn.execute(delete(hourly_buckets).where(hourly_buckets.c.hour_us < before_us)).rowcount


def _upsert(dialect: str) -> Callable[[Table], SqliteInsert | PgInsert]:
    """The dialect's INSERT ... ON CONFLICT; imported here so a daemon loads only its own store's dialect."""
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert
    from sqlalchemy.dialects.postgresql import insert as pg_insert

    return pg_insert
