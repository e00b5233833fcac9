"""The poll cycle: read the source through ingest, hand the `Cycle` to the stages, commit it all at once.

Guarantees: one cycle reads the source (the look-back behind the watermark is ingest's, see
`sentinel.ingest`; every `reconcile_interval` it also reconciles the history window), then commits
watermark, ledger entries, buckets and whatever the stages add (the engine's rule state and events) in
ONE transaction; so stopping at any point loses nothing and counts nothing twice. If that transaction
fails, every stage reloads its state from the store, and until that reload succeeded (retried with
backoff) nothing is fed: detection never runs on a state that is not the committed one. Cycles never
overlap (the pipeline's cycle lock); a standby, or a leader that lost its lock, does not poll.

A state store that cannot be reached (a read, the commit or the reload failing with a database error) is
one outage: logged once when it begins, with the driver's reason (passwords in the state URL masked), and
once when a poll commits again, with how long it was out; the failed polls in between log at debug.
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from sentinel.clock import Clock, now_us
from sentinel.commit_delay import CommitDelay
from sentinel.config import Config
from sentinel.days import Calendar, history_start_us
from sentinel.detect import history_days
from sentinel.ingest import Polled
from sentinel.logs import error_line, fields
from sentinel.metrics import Metrics
from sentinel.model import US, Vocab
from sentinel.pipeline import Pipeline
from sentinel.source_health import SourceHealth, backoff_s
from sentinel.sources import Source, SourceUnavailable
from sentinel.sources.sql_connect import driver_message, url_secrets
from sentinel.stage import Cycle
from sentinel.store import LockLost, Store, records
from sentinel.wake import Waker

log = logging.getLogger("sentinel.daemon")

BURST_CYCLES = 100
"""A poll job keeps polling while the source has more rows waiting, at most this many cycles."""
STORE_RETRY_S = 5.0


class StoreUnavailable(Exception):
    """The poll's transaction could not be committed (the state store is down, full or locked)."""


def backfill_days(cfg: Config) -> int:
    """Days read back on first start: the longest baseline window plus the day in progress."""
    return history_days(cfg)


def store_reason(exc: BaseException, state_url: str | None) -> str:
    """The driver's words on one line, the state URL's password (and secret query parameters) masked:
    drivers do not print them, but a message quoting the URL would."""
    secrets: tuple[str, ...] = ()
    if state_url is not None:
        try:
            secrets = url_secrets(make_url(state_url))
        except ArgumentError:
            secrets = ()
    return driver_message(exc, secrets)


class PollCycle:
    def __init__(
        self,
        cfg: Config,
        store: Store,
        clock: Clock,
        metrics: Metrics,
        *,
        source: Source,
        pipeline: Pipeline,
        vocab: Vocab,
        stopping: threading.Event,
    ) -> None:
        assert cfg.source is not None
        self.cfg = cfg  # the running configuration (a reload replaces it)
        self.store = store
        self.clock = clock
        self.metrics = metrics
        self.source = source
        self.pipeline = pipeline
        self.ingest = pipeline.ingest
        self.vocab = vocab
        self.calendar = Calendar(cfg.tz)
        self.stopping = stopping
        self.reconcile_us = int(cfg.source.reconcile_interval.total_seconds() * US)
        self.next_reconcile_us = 0  # the first live cycle reconciles: rows committed while we were down
        self.commit_delay = CommitDelay(metrics, self.ingest.lateness_us)
        self._counted_us: int | None = None  # when the last committed poll began
        self.health = SourceHealth(metrics)
        self.state: records.SourceState | None = None
        self.loaded = False  # state loaded and the stages opened (a standby has not, until it leads)
        self.store_error: str | None = None
        # Set when a cycle's transaction failed: the stages' memory may then hold what was not committed,
        # so nothing is fed until a reload from the store succeeds (retried with backoff).
        self.restore_error: str | None = None
        self.restore_failures = 0
        self.restore_retry_monotonic = 0.0
        self.store_out_since: float | None = None  # monotonic start of the current state-store outage
        self.store_out_failures = 0  # failed store operations in it
        self.alive = time.monotonic()  # the last time the poll job was entered (the watchdog's proof of life)
        self.waker = Waker("poll", self.poll_job, cfg.source.poll_interval.total_seconds())

    def load(self) -> None:
        """As the leader: the committed state from the store, then every stage opens (the engine's restore)."""
        with self.store.reading() as conn:
            self.state = records.load_source_state(conn)
            self.ingest.load(conn)
        self.pipeline.open(self.state, now_us(self.clock))
        self.loaded = True

    def hold(self, reason: str) -> None:
        """What the stages hold in memory may not be the store's: reload it before the next poll."""
        self.restore_error = reason
        self.restore_retry_monotonic = 0.0

    # --- the job -------------------------------------------------------------------------------------
    def poll_job(self) -> None:
        """One scheduled poll; during a burst it keeps polling until the source is drained."""
        self.alive = time.monotonic()
        if self.stopping.is_set() or self.health.backing_off:
            return
        for _ in range(BURST_CYCLES):
            if self.stopping.is_set():
                return
            more = self.cycle()
            self.alive = time.monotonic()
            if not more:
                return

    def cycle(self) -> bool:
        """Poll once and commit; returns True when the source has more rows waiting right now."""
        with self.pipeline.cycle_lock:
            started = time.perf_counter()
            now = now_us(self.clock)
            if not self.store.lock_held():
                return False  # a standby, or the lead was lost: detection holds until this instance leads
            if self.restore_error is not None and not self.restore(now):
                return False  # detection holds: it never runs on a state that is not the committed one
            try:
                more = self._cycle(now)
            except LockLost:
                return False  # nothing was committed; the lock watch steps down and restores when it leads
            except SourceUnavailable as exc:
                self.health.mark(False, str(exc))
                return False
            except StoreUnavailable as exc:
                # nothing was committed, so nothing is lost: the same rows are read again next time
                self.store_error = str(exc)
                self.health.next_try_monotonic = time.monotonic() + STORE_RETRY_S
                return False
            except SQLAlchemyError as exc:
                # a read of the store (the ledger, the reconciliation's counts) before the commit: nothing
                # was committed or changed in memory, the same rows are read again next time
                self.store_down("poll cycle could not read the state store; polls retried", exc)
                self.health.next_try_monotonic = time.monotonic() + STORE_RETRY_S
                return False
            self.store_error = None
            self.store_up()
            self.health.mark(True, None)
            self.metrics.poll_duration.observe(time.perf_counter() - started)
            return more

    def _cycle(self, now: int) -> bool:
        state = self.state
        if state is None:
            state = self._first_start(now)
        replay = not state.backfill_done
        since = self.ingest.since(state)
        window = self.history_window_start(now)
        polled = self.ingest.poll(since, state.watermark_us, now, window)
        finished = replay and polled.exhausted
        # the ledger knows every row after the first poll's bound: reconciliation never looks before it
        ledger_start = state.ledger_start_us if state.ledger_start_us is not None else since
        new_state = records.SourceState(
            state.watermark_us,
            state.coverage_start_us,
            state.backfill_start_us,
            state.backfill_done or finished,
            state.started_us,
            ledger_start,
        )
        reconciled = False
        if not replay and polled.exhausted and now >= self.next_reconcile_us:
            self._reconcile(polled, ledger_start, since, now, window)
            reconciled = True
        quiet = (
            not replay
            and state.watermark_us is not None
            and not polled.entries
            and not polled.rejected
            and len(polled.batch) == 0
            and ledger_start == state.ledger_start_us
        )
        cycle = Cycle(
            polled.batch,
            now,
            self.ingest.horizon(now),
            replay,
            new_state,
            polled,
            backfill_finished=finished,
            quiet=quiet,
            late_records=polled.reconciled_records,
        )
        self._commit(cycle, polled, window)
        self.state = new_state
        self.ingest.committed(polled, None if quiet else window)
        if reconciled:
            self.next_reconcile_us = now + self.reconcile_us
        self._count(polled, now)
        self.pipeline.committed()
        if finished:
            log.info("backfill finished", extra=fields(records=len(polled.batch)))
        return not polled.exhausted

    def _reconcile(self, polled: Polled, ledger_start: int, since: int, now: int, window: int) -> None:
        try:
            found = self.ingest.reconcile(self.reconcile_bounds(ledger_start, since, now, window), now, window, polled)
        except SourceUnavailable as exc:
            # the poll's rows are still committed: a failing reconciliation must never stop ingest
            log.warning("reconciliation failed; tried again after reconcile_interval", extra=fields(error=str(exc)))
            found = None
        if found is not None:
            polled.absorb(found)

    def _commit(self, cycle: Cycle, polled: Polled, window: int) -> None:
        try:
            with self.store.transaction() as conn:
                if not cycle.quiet:
                    self.ingest.commit(conn, polled, cycle.state, cycle.now_us, self.calendar, window)
                self.pipeline.on_cycle(conn, cycle)
        except LockLost:
            # the fence refused the commit: the stages' memory holds what was not committed; they are
            # reloaded from the store once this instance leads again (never while another one may write it)
            self.hold("the state store's lock was lost during a poll; state not reloaded yet")
            raise
        except Exception as exc:
            if isinstance(exc, SQLAlchemyError):  # the store is down, full or locked: no traceback for that
                self.store_down("poll cycle could not be committed; reloading state from the store", exc)
            else:
                log.exception("poll cycle could not be committed; reloading state from the store")
            self.hold(f"the poll's transaction failed ({type(exc).__name__}); state not reloaded yet")
            self.restore(cycle.now_us)
            raise StoreUnavailable(type(exc).__name__) from None

    def history_window_start(self, now: int) -> int:
        """Where the days the rules look at begin (the first start's backfill start): the ledger
        remembers every row after it, rows before it are not counted."""
        return self.calendar.day_start(self.calendar.day_of(now) - backfill_days(self.cfg))

    def reconcile_bounds(self, ledger_start: int, since: int, now: int, window: int) -> list[int]:
        """Local days of the history window the ledger covers, up to the poll's look-back (which reads
        everything after it anyway), on whole seconds so epoch-second columns compare exactly.

        The poll reads rows strictly after its bound, so the last range ends one second past it: a row
        created exactly at the bound (five minutes before the newest row, committed late) is counted
        here, not lost between the two reads (the ledger makes the overlap harmless)."""
        lo = -(-max(window, ledger_start + 1) // US) * US
        hi = self.ingest.read_from(since, now) // US * US + US
        if hi <= lo:
            return []
        cal = self.calendar
        inner = [cal.day_start(d) for d in range(cal.day_of(lo) + 1, cal.day_of(hi) + 1)]
        return [lo, *[b for b in inner if lo < b < hi], hi]

    # --- recovery ------------------------------------------------------------------------------------
    def restore(self, now: int) -> bool:
        """Reload every stage's state from the store; until it succeeds, detection holds."""
        if time.monotonic() < self.restore_retry_monotonic:
            return False
        try:
            self._recover(now)
        except Exception as exc:  # noqa: BLE001 - the store is still down: hold and retry with backoff
            self.restore_failures += 1
            delay = backoff_s(self.restore_failures)
            self.restore_retry_monotonic = time.monotonic() + delay
            error = f"reloading state from the store failed ({type(exc).__name__}); detection holds"
            if isinstance(exc, SQLAlchemyError):
                self.store_down(error, exc, retry_in_s=delay)
            elif error != self.restore_error:
                log.error(error, extra=fields(retry_in_s=delay, error=error_line(exc)))
            self.restore_error = error
            return False
        log.info("state reloaded from the store; detection resumes", extra=fields(after=self.restore_failures))
        self.restore_error, self.restore_failures = None, 0
        return True

    # --- state-store outages ----------------------------------------------------------------------------
    def store_down(self, what: str, exc: BaseException, **extra: object) -> None:
        """A store operation of the poll failed: the first failure of an outage logs `what` and the reason
        (an error), the others only at debug (polls fail every few seconds while it lasts)."""
        self.store_out_failures += 1
        reason = store_reason(exc, self.cfg.state_url.get() if self.cfg.state_url is not None else None)
        if self.store_out_since is None:
            self.store_out_since = time.monotonic()
            log.error(
                what, extra=fields(error=reason, outage="logged once; a line follows when the store is back", **extra)
            )
        else:
            log.debug(what, extra=fields(error=reason, failures=self.store_out_failures, **extra))

    def store_up(self) -> None:
        """A poll committed: an outage of the store, if one was going, ended (logged once, with its length)."""
        if self.store_out_since is None:
            return
        out_s = time.monotonic() - self.store_out_since
        log.info(
            "state store is back; polls commit again",
            extra=fields(outage_s=round(out_s, 3), failures=self.store_out_failures),
        )
        self.store_out_since, self.store_out_failures = None, 0

    def _recover(self, now: int) -> None:
        if not self.loaded:  # a standby that now leads: its first load, as a start does
            self.load()
            return
        with self.store.reading() as conn:
            self.state = records.load_source_state(conn)
            self.ingest.load(conn)
        self.pipeline.recover(self.state, now)

    def _first_start(self, now: int) -> records.SourceState:
        days = backfill_days(self.cfg)
        today = self.calendar.day_of(now)
        start = self.calendar.day_start(today - days)
        first = self.source.first_record_time()
        if self.cfg.history_start is not None:
            coverage: int | None = history_start_us(self.cfg.history_start, self.calendar)
        else:
            coverage = None if first is None else max(first, start)
        log.info(
            "first start: reading back the baseline window",
            extra=fields(days=days, since=self.calendar.date_of(today - days).isoformat()),
        )
        return records.SourceState(
            watermark_us=None, coverage_start_us=coverage, backfill_start_us=start, backfill_done=False, started_us=now
        )

    # --- after commit --------------------------------------------------------------------------------
    def _count(self, polled: Polled, now: int) -> None:
        m = self.metrics
        batch = polled.batch
        if len(batch):
            key = batch.type.astype(np.int64) * (1 << 31) + batch.channel.astype(np.int64)
            uniq, counts = np.unique(key, return_counts=True)
            for k, n in zip(uniq.tolist(), counts.tolist(), strict=True):
                t, c = divmod(k, 1 << 31)
                lt, lc = m.ingest_labels(self.vocab.decode(t), self.vocab.decode(c))
                m.records_ingested.labels(type=lt, channel=lc).inc(n)
            self.health.newest_us = max(self.health.newest_us or 0, int(batch.ts.max()))
            # first poll, after an outage, or after a gap longer than lateness since the last committed poll
            # (the daemon did not look: a cycle waited out a locked store): what was created before waited for us
            gap = self._counted_us is not None and now - self._counted_us > self.ingest.lateness_us
            if self.commit_delay.horizon_us is None or self.store_error is not None or not self.health.up or gap:
                self.commit_delay.restart_at(now)
            self.commit_delay.observe(batch.ts, now)
        self._counted_us = now
        for reason, n in polled.rejected_by_reason.items():
            m.records_rejected.labels(reason=reason).inc(n)
        if polled.reconciled:
            m.records_reconciled.inc(polled.reconciled)
            days = sorted(
                {
                    "no usable time" if d < 0 else self.calendar.date_of(self.calendar.day_of(d)).isoformat()
                    for d in polled.reconciled_days
                }
            )
            log.warning(
                "reconciliation found rows the watermark reads had missed (committed later than "
                "lateness, or ordered by the database unlike their time); counted as late records",
                extra=fields(rows=polled.reconciled, records=polled.reconciled_records, days=days),
            )
        if self.health.newest_us is None and self.state is not None and self.state.watermark_us is not None:
            self.health.newest_us = self.state.watermark_us
        if self.health.newest_us is not None:
            m.source_lag.set(max(0.0, (now - self.health.newest_us) / US))
