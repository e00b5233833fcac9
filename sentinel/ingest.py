"""Ingest: read new rows from a source, validate and normalise them, count each exactly once, and move
the watermark.

The watermark is the newest `created_at` accepted so far, but never later than `now` (a row dated in
the future must not hide the rows dated now that follow it). Each poll re-reads the `lateness` window
behind it, so a row committed a little late is still read.

Whether a row was already counted is decided by the ledger (`seen_ids`), which remembers every row
counted or rejected over the whole history window with a digest of its content, in the same transaction
as the buckets. So a row is counted once however often it is read again: rows the database orders unlike
their parsed time (mixed "T"/" " text, BLOBs, naive times across a DST fall-back), a future row read at
every poll until now passes it, a rejected row (counted and logged once). A different row reusing a
counted id is rejected once as `duplicate_id`.

Only the keys of the rows the last poll read (the re-read window) are held in memory; any other key is
looked up in the store, one query per page. The cache changes only after a commit (`committed`), so a
failed commit reads the same rows again and counts them then.

A row committed after the look-back has passed its `created_at` is found by reconciliation
(`reconcile`): the source's row count per day of the history window is compared with the ledger's, and
the days that differ are read again (where the database orders rows unlike their parsed time, every day whose
counts changed); the rows the ledger lacks are counted as late records. Rows whose
`created_at` no watermark read returns (NULL, empty, before 1970) are read the same way and rejected once.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections import Counter
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol
from zoneinfo import ZoneInfo

from sqlalchemy import Connection

from sentinel.days import Calendar
from sentinel.model import US, Batch
from sentinel.sources import Cursor, Reconcilable, Source
from sentinel.sources.rows import BadValue, RawRow, Rejected, RowNormaliser, canonical_id, parse_time
from sentinel.store import records as repo
from sentinel.store.records import LedgerEntry

log = logging.getLogger("sentinel.ingest")

MAX_ROWS_PER_POLL = 10_000
"""A poll stops after this many new rows (at the end of a page) and the next one follows at once, so one
cycle's transaction and memory stay bounded during a burst or a long backfill. The freed memory of a
big poll is not given back to the system (the allocator keeps it), so this is also what a daemon's
resident size grows by: 200,000 rows held 8 days x 12,000 complaints in one poll and +61 MB RSS for the
rest of the process's life; 10,000 rows cost +18 MB, at the same backfill speed (1.9-2.2 s)."""

RANGE_LIMIT = 200_000
"""Rows one reconciliation reads at most (8 days x 12,000 complaints = 96,000 when every day differs);
days beyond it are read by the next reconciliation."""

ORDER_SLACK_US = 1000
"""A row a poll returns dated this much before the poll's bound is out of the database's order (less may be
the rounding of a float epoch bound)."""

DUP = "\x1fdup:"
NOID = "\x1fnoid:"  # \x1f, not \x00: PostgreSQL text cannot hold NUL


class Reader(Protocol):
    def reading(self) -> AbstractContextManager[Connection]: ...


@dataclass(slots=True)
class Polled:
    """What one poll (and the cycle's reconciliation) read: new valid records (sorted), rejections, the
    ledger entries to write, and the keys of every row the poll read (the next cache)."""

    batch: Batch
    rejected: list[Rejected] = field(default_factory=list)
    entries: list[LedgerEntry] = field(default_factory=list)
    watermark_us: int | None = None
    rows: int = 0
    repeats: int = 0  # rows already in the ledger (the look-back window, future rows, BLOBs...)
    exhausted: bool = True  # False when the poll stopped at MAX_ROWS_PER_POLL
    keys: dict[str, str | None] = field(default_factory=dict)
    reconciled: int = 0  # rows reconciliation found (counted or rejected)
    reconciled_records: int = 0  # of which counted: late records by definition
    reconciled_days: list[int] = field(default_factory=list)  # range starts (µs) where it found rows

    @property
    def rejected_by_reason(self) -> Counter[str]:
        return Counter(r.reason for r in self.rejected)

    def absorb(self, other: Polled) -> None:
        """Add a reconciliation's findings to the poll's (one transaction commits both)."""
        if len(other.batch):
            self.batch = other.batch if not len(self.batch) else Batch.concat([self.batch, other.batch]).sorted()
        self.rejected += other.rejected
        self.entries += other.entries
        self.rows += other.rows
        self.repeats += other.repeats
        self.reconciled += other.reconciled
        self.reconciled_records += other.reconciled_records
        self.reconciled_days += other.reconciled_days


class Ingest:
    def __init__(
        self,
        source: Source,
        normaliser: RowNormaliser,
        lateness_us: int,
        batch_size: int,
        store: Reader,
        max_rows: int = MAX_ROWS_PER_POLL,
    ) -> None:
        self.source = source
        self.normaliser = normaliser
        self.lateness_us = lateness_us
        self.batch_size = batch_size
        self.max_rows = max_rows
        self.store = store
        self.cache: dict[str, str | None] = {}  # keys (-> digest) of the rows the last committed poll read
        self._pruned_before: int | None = None
        # range start -> (end, source count, ledger count) at its last read that found every row in the
        # ledger: not read again while they stay the same (see `_read_ranges`)
        self._settled: dict[int, tuple[int, int, int]] = {}
        # the database orders some rows unlike their parsed time (a poll returned one dated before its bound,
        # or a range was complete with counts that differ): equal counts prove nothing (see `_read_ranges`)
        self.mixed = False

    def load(self, _conn: Connection) -> None:
        """Start from the store alone: the ledger is there, the cache refills with the next read."""
        self.cache = {}
        self._pruned_before = None

    def lookup(self, keys: Sequence[str]) -> dict[str, str | None]:
        if not keys:
            return {}
        with self.store.reading() as conn:
            return repo.lookup_seen(conn, keys)

    def since(self, state: repo.SourceState) -> int:
        """The look-back: a poll reads the rows after this bound, `lateness` behind the watermark (on the
        first start, from the backfill's start). The one place `lateness` is applied to the watermark."""
        if state.watermark_us is not None:
            return state.watermark_us - self.lateness_us
        assert state.backfill_start_us is not None
        return state.backfill_start_us - 1

    def horizon(self, now_us: int) -> int:
        """Where detection settles: no record older than `lateness` before now is expected any more (one
        that comes later, through reconciliation, is counted as a late record)."""
        return now_us - self.lateness_us

    def read_from(self, since_us: int, now_us: int) -> int:
        """Where the poll's SQL bound starts: `since_us`, further back across a DST fall-back, where naive
        local times repeat an hour and parse to the first (earlier) one."""
        return since_us - fold_margin_us(self.normaliser.naive_tz, since_us, now_us)

    def poll(self, since_us: int, watermark_us: int | None, now_us: int | None, window_us: int | None = None) -> Polled:
        """Read every row with created_at > since_us not counted before (up to `max_rows`).

        `window_us` is where the history window begins: a row older than it (a BLOB that sorts after
        every text, read at every poll) is outside every day the rules look at and is not counted."""
        now = now_us if now_us is not None else since_us
        start = self.read_from(since_us, now)
        sorter = _Sorter(self, now, window_us, {}, floor_us=start)
        cursor: Cursor | None = None
        rows = 0
        exhausted = True
        while True:
            page = self.source.read(start, cursor, self.batch_size)
            rows += len(page.rows)
            sorter.add(page.rows)
            if page.next is None:
                break
            if len(sorter.entries) >= self.max_rows:  # new rows only: re-read ones cost no memory to speak of,
                exhausted = False  # and stopping on them would read them again forever
                break
            cursor = page.next
        polled = sorter.finish(now_us)
        polled.rows, polled.exhausted = rows, exhausted
        wm = watermark_us
        if len(polled.batch):
            newest = int(polled.batch.ts.max())
            if now_us is not None:
                newest = min(newest, now_us)  # a future row must not hide the rows dated now after it
            wm = newest if wm is None else max(wm, newest)
        polled.watermark_us = wm
        polled.keys = sorter.read
        return polled

    def reconcile(self, bounds: Sequence[int], now_us: int, window_us: int | None, polled: Polled) -> Polled | None:
        """Compare the source's row count in each [bounds[i], bounds[i+1]) with the ledger's; read the
        ranges that differ and the rows without a usable time, and judge the rows the ledger lacks.
        None for a source that cannot count by range."""
        src = self.source
        if not isinstance(src, Reconcilable):
            return None
        known = dict(polled.keys)
        known.update((e.key, e.digest) for e in polled.entries)
        sorter = _Sorter(self, now_us, window_us, known)
        rows = 0
        if len(bounds) >= 2:
            theirs = src.count_range(bounds)
            with self.store.reading() as conn:
                ours = repo.seen_counts(conn, bounds)
            ranges = list(zip(bounds, bounds[1:], theirs, ours, strict=False))
            settled: dict[int, tuple[int, int, int]] = {}
            done: set[int] = set()
            mixed = self.mixed
            rows = self._read_ranges(src, ranges, sorter, settled, done, rows)
            if self.mixed and not mixed:  # equal counts proved nothing in the ranges just skipped
                rows = self._read_ranges(src, ranges, sorter, settled, done, rows)
            self._settled = settled
        strays = src.read_strays()
        rows += len(strays.rows)
        before = len(sorter.entries)
        sorter.add(strays.rows)
        found = sorter.finish(now_us)
        found.rows = rows
        found.reconciled = len(found.entries)
        found.reconciled_records = len(found.batch)
        found.reconciled_days = list(sorter.found_in)
        if len(sorter.entries) > before:
            found.reconciled_days.append(-1)  # -1: rows without a usable time
        return found

    def _read_ranges(
        self,
        src: Reconcilable,
        ranges: Sequence[tuple[int, int, int, int]],
        sorter: _Sorter,
        settled: dict[int, tuple[int, int, int]],
        done: set[int],
        rows: int,
    ) -> int:
        """Read the ranges (start, end, source count, ledger count) that may hold rows the ledger lacks.

        Equal counts prove a range complete only while the database orders rows as their parsed time
        does. Once a read found a range complete with counts that differ ("T" and " " text, a BLOB: rows
        the database sorts into another range), a missing row can hide behind such a row in equal counts,
        so from then on a range is read whenever its counts are not those of its last complete read (a row
        committed late always adds to the source's count of the range it sorts into)."""
        for start, end, n_src, n_ledger in ranges:
            if start in done or rows >= RANGE_LIMIT:
                continue
            if n_src == n_ledger and not self.mixed:
                continue
            done.add(start)
            if self._settled.get(start) == (end, n_src, n_ledger):
                settled[start] = (end, n_src, n_ledger)
                continue
            before = len(sorter.entries)
            cursor: Cursor | None = None
            while True:
                page = src.read_range(start, end, cursor, self.batch_size)
                rows += len(page.rows)
                sorter.add(page.rows)
                if page.next is None or rows >= RANGE_LIMIT:
                    break
                cursor = page.next
            if len(sorter.entries) > before:
                sorter.found_in.append(start)
            elif page.next is None:
                settled[start] = (end, n_src, n_ledger)
                self.mixed = self.mixed or n_src != n_ledger
        return rows

    def commit(
        self,
        conn: Connection,
        polled: Polled,
        state: repo.SourceState,
        now_us: int,
        calendar: Calendar,
        window_us: int | None = None,
    ) -> None:
        """Write the poll's watermark, ledger entries and buckets into the cycle's transaction."""
        repo.add_seen(conn, polled.entries)
        if polled.watermark_us is not None:
            state.watermark_us = polled.watermark_us
        if window_us is not None and window_us != self._pruned_before:
            repo.prune_seen(conn, window_us)
        if state.coverage_start_us is None and len(polled.batch):
            state.coverage_start_us = int(polled.batch.ts.min())
        repo.add_buckets(conn, polled.batch, calendar, self.normaliser.vocab)
        repo.save_source_state(conn, state, now_us)

    def committed(self, polled: Polled, window_us: int | None = None) -> None:
        """Mirror a committed poll in memory (only after the transaction succeeded)."""
        self.cache = polled.keys
        if window_us is not None:
            self._pruned_before = window_us
        for r in polled.rejected:
            log.warning("record rejected", extra={"fields": {"id": r.id, "reason": r.reason, "detail": r.detail}})


class _Sorter:
    """Sorts the rows of one read into new ones, repeats and different rows reusing a counted id."""

    def __init__(
        self,
        ingest: Ingest,
        now_us: int,
        window_us: int | None,
        known: dict[str, str | None],
        floor_us: int | None = None,
    ) -> None:
        self.ingest = ingest
        self.floor_us = floor_us  # a poll's SQL bound: a row it returns dated before it is out of order
        self.now_us = now_us
        self.window_us = window_us
        self.known = known  # judged earlier in this cycle, not committed yet
        self.read: dict[str, str | None] = {}  # every key read (-> the ledger's digest)
        self.fresh: list[RawRow] = []
        self.times: list[int | None] = []
        self.entries: list[LedgerEntry] = []
        self.dups: list[Rejected] = []
        self.repeats = 0
        self.found_in: list[int] = []

    def _held(self, key: str, found: dict[str, str | None]) -> tuple[bool, str | None]:
        for m in (self.known, self.read, self.ingest.cache, found):
            if key in m:
                return True, m[key]
        return False, None

    def add(self, rows: Sequence[RawRow]) -> None:
        if not rows:
            return
        norm = self.ingest.normaliser
        norm.learn_ids(row[0] for row in rows)  # before any key is made: keys depend on it
        keyed = [(row, *identity(row, norm)) for row in rows]
        cache = self.ingest.cache
        unknown = [k for _, k, _ in keyed if k not in self.known and k not in self.read and k not in cache]
        found = self.ingest.lookup(unknown)
        clashes = []
        for _, k, d in keyed:
            held, digest = self._held(k, found)
            if held and digest is not None and digest != d:
                dk = dup_key(k, d)
                if not self._held(dk, found)[0]:
                    clashes.append(dk)
        found.update(self.ingest.lookup(clashes))
        for row, k, d in keyed:
            held, digest = self._held(k, found)
            if not held:
                self._judge(row, k, d, None)
                continue
            self.read[k] = digest
            if digest is None or digest == d:
                self.repeats += 1
                if self.floor_us is not None and not self.ingest.mixed:
                    with contextlib.suppress(BadValue):
                        self._check_order(parse_time(row[1], norm.naive_tz))
                continue
            dk = dup_key(k, d)
            if self._held(dk, found)[0]:
                self.read[dk] = d
                self.repeats += 1
                continue
            self._judge(
                row, dk, d, Rejected(str(k)[:60], "duplicate_id", "the id of a counted record, with different content")
            )

    def _judge(self, row: RawRow, key: str, digest: str, dup: Rejected | None) -> None:
        try:
            created: int | None = parse_time(row[1], self.ingest.normaliser.naive_tz)
        except BadValue:
            created = None
        self._check_order(created)
        self.read[key] = digest
        if created is not None and self.window_us is not None and created < self.window_us:
            return  # outside the history window: no day the rules look at
        self.known[key] = digest
        self.entries.append(
            LedgerEntry(key, digest, created if created is not None else self.now_us, created is not None, self.now_us)
        )
        if dup is not None:
            self.dups.append(dup)
        else:
            self.fresh.append(row)
            self.times.append(created)

    def _check_order(self, created: int | None) -> None:
        """A poll's `created_at > bound` returned a row dated well before the bound: the database orders
        this column unlike its parsed time (mixed "T" and " " text, a BLOB among text, naive local time
        across a DST fall-back), so equal counts no longer prove a reconciled range complete."""
        if created is not None and self.floor_us is not None and created < self.floor_us - ORDER_SLACK_US:
            self.ingest.mixed = True

    def finish(self, now_us: int | None) -> Polled:
        norm = self.ingest.normaliser.normalise(self.fresh, now_us, self.times)
        return Polled(norm.batch, norm.rejected + self.dups, self.entries, repeats=self.repeats)


def identity(row: RawRow, normaliser: RowNormaliser) -> tuple[str, str]:
    """(ledger key, content digest) of a raw row: the canonical id, or for a row without a usable id a
    digest of all of it. The digest tells a row read again from a different row reusing its id."""
    content: tuple[object, ...] = row[1:]
    if not all(v is None or type(v) in _PLAIN for v in content):
        content = tuple(_stable(v) for v in content)
    digest = hashlib.blake2b(repr(content).encode("utf-8", "replace"), digest_size=8).hexdigest()
    try:
        key = str(canonical_id(row[0], normaliser.id_type))[:200]
    except Exception:  # noqa: BLE001 - a row without a usable id is keyed by its content
        whole = repr((_stable(row[0]), *content)).encode("utf-8", "replace")
        key = NOID + hashlib.blake2b(whole, digest_size=20).hexdigest()
    return key, digest


_PLAIN = (str, int, float)


def dup_key(key: str, digest: str) -> str:
    return key[:200] + DUP + digest


def _stable(value: object) -> object:
    """The same value however the session shows it (an aware datetime in UTC, a memoryview as bytes)."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC)
    if isinstance(value, memoryview | bytearray):
        return bytes(value)
    return value


def fold_margin_us(tz: ZoneInfo, since_us: int, now_us: int) -> int:
    """How much earlier than `since_us` a naive local time may parse when the zone's offset fell between
    `since_us` and now (the repeated hour of a DST fall-back parses to its first occurrence)."""
    try:
        then = datetime.fromtimestamp(since_us / US, tz).utcoffset()
        now = datetime.fromtimestamp(now_us / US, tz).utcoffset()
    except (OverflowError, OSError, ValueError):
        return 0
    if then is None or now is None or then <= now:
        return 0
    return int((then - now).total_seconds()) * US
