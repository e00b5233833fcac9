"""Ingest: read new rows from a source, validate and normalise them, drop the ones already counted,
and move the watermark.

The watermark is the newest `created_at` accepted so far. Each poll re-reads the `lateness` window
behind it, so a row committed late (created 23:59:58, committed 00:00:03) is still read; the ids seen
inside that window are remembered, in memory and in the store, so no row is ever counted twice, across
restarts too. A rejected row is remembered the same way, so it is counted and logged exactly once.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection

from sentinel.model import Batch
from sentinel.sources import Source
from sentinel.sources.records import RawRow, Rejected, RowNormaliser, canonical_id, parse_time
from sentinel.store import records as repo

log = logging.getLogger("sentinel.ingest")

MAX_ROWS_PER_POLL = 10_000
"""A poll stops after this many rows (at the end of a page) and the next one follows at once, so one
cycle's transaction and memory stay bounded during a burst or a long backfill. The freed memory of a
big poll is not given back to the system (the allocator keeps it), so this is also what a daemon's
resident size grows by: 200,000 rows held 8 days x 12,000 complaints in one poll and +61 MB RSS for the
rest of the process's life; 10,000 rows cost +18 MB, at the same backfill speed (1.9-2.2 s)."""


@dataclass(slots=True)
class Polled:
    """What one poll read: new valid records (sorted), rejections, and the ids to remember."""

    batch: Batch
    rejected: list[Rejected] = field(default_factory=list)
    new_seen: list[tuple[str, int]] = field(default_factory=list)
    watermark_us: int | None = None
    rows: int = 0
    repeats: int = 0  # rows of the look-back window already counted
    exhausted: bool = True  # False when the poll stopped at MAX_ROWS_PER_POLL

    @property
    def rejected_by_reason(self) -> Counter[str]:
        return Counter(r.reason for r in self.rejected)


class Ingest:
    def __init__(self, source: Source, normaliser: RowNormaliser, lateness_us: int, batch_size: int,
                 max_rows: int = MAX_ROWS_PER_POLL) -> None:
        self.source = source
        self.normaliser = normaliser
        self.lateness_us = lateness_us
        self.batch_size = batch_size
        self.max_rows = max_rows
        self.seen: dict[str, int] = {}

    def load(self, conn: Connection) -> None:
        self.seen = repo.load_seen(conn)

    def poll(self, since_us: int, watermark_us: int | None, now_us: int | None) -> Polled:
        """Read every row with created_at > since_us not seen before (up to `max_rows`)."""
        cursor: Any = None
        fresh: list[RawRow] = []
        keys: list[str] = []
        rows = repeats = 0
        batch_keys: set[str] = set()
        exhausted = True
        while True:
            page = self.source.read(since_us, cursor, self.batch_size)
            rows += len(page.rows)
            for row in page.rows:
                key = _dedup_key(row, self.normaliser)
                if key in self.seen or key in batch_keys:
                    repeats += 1
                    continue
                batch_keys.add(key)
                fresh.append(row)
                keys.append(key)
            if page.next is None:
                break
            if rows >= self.max_rows:
                exhausted = False
                break
            cursor = page.next
        norm = self.normaliser.normalise(fresh, now_us)
        wm = watermark_us
        if len(norm.batch):
            newest = int(norm.batch.ts.max())
            wm = newest if wm is None else max(wm, newest)
        new_seen = _seen_entries(fresh, keys, self.normaliser, wm if wm is not None else since_us)
        return Polled(norm.batch, norm.rejected, new_seen, wm, rows, repeats, exhausted)

    def commit(self, conn: Connection, polled: Polled, state: repo.SourceState, now_us: int,
               calendar: Any) -> None:
        """Write the poll's watermark, seen ids and buckets into the cycle's transaction."""
        repo.add_seen(conn, polled.new_seen)
        if polled.watermark_us is not None:
            state.watermark_us = polled.watermark_us
            repo.prune_seen(conn, polled.watermark_us - self.lateness_us)
        if state.coverage_start_us is None and len(polled.batch):
            state.coverage_start_us = int(polled.batch.ts.min())
        repo.add_buckets(conn, polled.batch, calendar, self.normaliser.vocab)
        repo.save_source_state(conn, state, now_us)

    def committed(self, polled: Polled) -> None:
        """Mirror a committed poll in memory (only after the transaction succeeded)."""
        self.seen.update(polled.new_seen)
        if polled.watermark_us is not None:
            horizon = polled.watermark_us - self.lateness_us
            if any(c <= horizon for c in self.seen.values()):
                self.seen = {k: c for k, c in self.seen.items() if c > horizon}
        for r in polled.rejected:
            log.warning("record rejected", extra={"fields": {"id": r.id, "reason": r.reason, "detail": r.detail}})


def _dedup_key(row: RawRow, normaliser: RowNormaliser) -> str:
    try:
        return str(canonical_id(row[0], normaliser.id_type))
    except Exception:  # noqa: BLE001 - a row without a usable id is keyed by its content
        digest = hashlib.sha1(repr(row).encode("utf-8", "replace"), usedforsecurity=False).hexdigest()
        return f"\x00noid:{digest}"


def _seen_entries(rows: Sequence[RawRow], keys: Sequence[str], normaliser: RowNormaliser,
                  fallback_us: int) -> list[tuple[str, int]]:
    out = []
    for row, key in zip(rows, keys, strict=True):
        try:
            created = parse_time(row[1], normaliser.naive_tz)
        except Exception:  # noqa: BLE001 - unparsable: keep it for one lateness window from now
            created = fallback_us
        out.append((key[:256], created))
    return out

