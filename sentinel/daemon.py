"""The daemon: scheduled jobs that move complaints through the stages, and the HTTP server.

One poll cycle reads the source (and, every `reconcile_interval`, reconciles the history window with
it), then commits watermark, ledger entries, buckets and whatever the cycle stages add (the detection
engine's rule state and events) in ONE transaction; so stopping at any point loses nothing and counts
nothing twice. If that transaction fails, every stage reloads its in-memory state from the store.
Jobs never overlap (APScheduler `max_instances=1`); SIGINT or SIGTERM stop the daemon after the
running cycle; SIGHUP reloads the configuration.

On PostgreSQL several daemons may share one store: one leads, the others stand by
(`sentinel.leadership`). The lead can be lost while the daemon runs (its lock session ended: a network
blip, a restarted server, a terminated backend, or a takeover after it paused). Then detection and
delivery hold at once (every write is fenced by the lock and the lease's epoch, see `sentinel.store.lock`
and `sentinel.store.lease`) and the daemon stands by; whenever it takes the lead, every stage reloads its
state from the store as after a failed cycle and the daemon continues.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import Connection, text
from sqlalchemy.exc import SQLAlchemyError

from sentinel.clock import Clock, SystemClock, now_us
from sentinel.commit_delay import CommitDelay
from sentinel.config import Config
from sentinel.days import Calendar, history_start_us
from sentinel.http import App, Request, Response, Server
from sentinel.ingest import Ingest, Polled
from sentinel.logs import error_line, fields
from sentinel.metrics import Metrics
from sentinel.model import US, Batch, Vocab
from sentinel.sdnotify import Notifier, watchdog_interval
from sentinel.sources import Source, SourceUnavailable
from sentinel.sources.rows import REJECT_REASONS, RowNormaliser
from sentinel.store import LockLost, Store
from sentinel.store import records as repo
from sentinel.wake import Waker

log = logging.getLogger("sentinel.daemon")

BACKOFF_MAX_S = 60.0
KEEP_BUCKET_DAYS = 62
# `sentinel run` exits with this when another daemon holds an SQLite store's file lock: EX_TEMPFAIL of
# sysexits.h, "try again later". systemd's Restart=on-failure then starts it again, and it is refused the
# same way for as long as the other daemon runs. (On PostgreSQL a second daemon stands by instead.)
EXIT_LOCK_TAKEN = 75


@dataclass(slots=True)
class Cycle:
    """What one poll carries to the stages."""

    batch: Batch
    now_us: int
    replay: bool  # part of the first start's backfill: record events, send nothing
    state: repo.SourceState
    polled: Polled | None = None
    backfill_finished: bool = False
    quiet: bool = False  # nothing new was read: stages write only what time changed (an idle poll costs no fsync)
    late_records: int = 0  # records found by reconciliation: all committed later than `lateness`


class Stage(Protocol):
    """A stage that writes into the poll's transaction."""

    def on_cycle(self, conn: Connection, cycle: Cycle) -> None: ...

    def committed(self) -> None: ...

    def recover(self, store: Store, now: int) -> None:
        """The transaction failed: reload in-memory state from the store."""
        ...


class StoreUnavailable(Exception):
    """The poll's transaction could not be committed (the state store is down, full or locked)."""


@dataclass
class SourceHealth:
    up: bool = False
    last_error: str | None = None
    failures: int = 0
    next_try_monotonic: float = 0.0
    newest_us: int | None = None


@dataclass
class Job:
    name: str
    func: Callable[[], None]
    seconds: float


def backfill_days(cfg: Config) -> int:
    """Days read back on first start: the longest baseline window plus the day in progress."""
    from sentinel.detect import history_days

    return history_days(cfg)


@dataclass
class Reloadable:
    """Something SIGHUP reconfigures: called with the new config, inside the cycle lock."""

    apply: Callable[[Config], None]
    name: str = ""


class Daemon:
    def __init__(self, cfg: Config, *, source: Source, store: Store, clock: Clock | None = None,
                 metrics: Metrics | None = None, listen: str | None = None, config_path: str | None = None,
                 vocab: Vocab | None = None) -> None:
        assert cfg.source is not None
        self.cfg = cfg
        self.config_path = config_path
        self.clock = clock or SystemClock()
        self.store = store
        self.source = source
        self.metrics = metrics or Metrics()
        self.calendar = Calendar(cfg.tz)
        self.vocab = vocab or Vocab()
        self.normaliser = RowNormaliser(self.vocab, cfg.source_tz, getattr(source, "id_type", cfg.source.id_type))
        self.lateness_us = int(cfg.source.lateness.total_seconds() * US)
        self.ingest = Ingest(source, self.normaliser, self.lateness_us, cfg.source.batch_size, store)
        self.reconcile_us = int(cfg.source.reconcile_interval.total_seconds() * US)
        self.next_reconcile_us = 0  # the first live cycle reconciles: rows committed while we were down
        self.commit_delay = CommitDelay(self.metrics, self.lateness_us)
        self._counted_us: int | None = None  # when the last committed poll began
        self.app = App()
        self.listen = listen or cfg.listen
        self.server: Server | None = None
        self.scheduler = BackgroundScheduler(timezone="UTC")
        self.stages: list[Stage] = []
        self.jobs: list[Job] = []
        self.reloadables: list[Reloadable] = []
        self.on_open: list[Callable[[], None]] = []  # after the store is open, before any thread
        self.on_ready: list[Callable[[], None]] = []
        self.extras: dict[str, Any] = {}
        self.on_stop: list[Callable[[], None]] = []
        self.health = SourceHealth()
        self.store_error: str | None = None
        # Set when a cycle's transaction failed: the stages' memory may then hold what was not committed,
        # so nothing is fed until a reload from the store succeeds (retried with backoff).
        self.restore_error: str | None = None
        self.restore_failures = 0
        self.restore_retry_monotonic = 0.0
        self.state: repo.SourceState | None = None
        self.loaded = False  # state loaded and the on_open hooks run (a standby has not, until it leads)
        self.exit_code = 0
        self.notifier = Notifier.from_env()
        self._stop = threading.Event()
        from sentinel.leadership import Leadership

        self.leadership = Leadership(store, self.metrics, self._stop, lambda: self.cfg.tz)
        self.leadership.on_lost.append(self._lost_lead)
        self.leadership.on_lead.append(self._took_lead)
        self._reload = threading.Event()
        self._cycle_lock = threading.RLock()
        self._alive = time.monotonic()
        interval = cfg.source.poll_interval.total_seconds()
        self.poller = Waker("poll", self.poll_job, interval)
        self.wakers: list[Waker] = [self.poller]  # started after the scheduler, stopped before it
        self._register_endpoints()

    # --- lifecycle -------------------------------------------------------------------------------
    def open(self) -> None:
        """Migrate the store and try to lead; as the leader load state; no threads yet (tests call this alone).

        PostgreSQL migrates first (serialised between instances; the lease needs its table) and a daemon
        that does not get the lead stands by. SQLite locks first, so a refused second daemon migrates nothing."""
        pg = self.store.sqlite_path is None
        if pg:
            self._upgrade()
        leading = self.leadership.begin()
        if not pg:
            self._upgrade()
        if leading:
            self._load()
        else:
            # should this instance take the lead, its first cycle loads the state before anything else
            self.restore_error = "a standby: its state is loaded from the store when it takes the lead"
            log.info("standing by; this instance takes the lead when the leader stops or its lease expires",
                     extra=fields(lease_ttl_s=self.store.lease_ttl_s))

    def _upgrade(self) -> None:
        before, after = self.store.upgrade()
        if before != after:
            log.info("state store migrated", extra=fields(before=before, after=after))

    def _load(self) -> None:
        """As the leader: the committed state from the store, then the stages' start hooks (the engine's restore)."""
        with self.store.reading() as conn:
            self.state = repo.load_source_state(conn)
            self.ingest.load(conn)
        for fn in self.on_open:
            fn()
        self.loaded = True

    def start(self) -> None:
        self.open()
        for warning in self._source_warnings():
            log.warning(warning)
        self.server = Server(self.app, self.listen)
        self.server.start()
        log.info("listening", extra=fields(url=self.server.url))
        first = datetime.now(UTC)
        for job in self.jobs:
            self.scheduler.add_job(self._guarded(job), "interval", seconds=job.seconds, id=job.name,
                                   max_instances=1, coalesce=True, next_run_time=first)
        self.scheduler.add_job(self.housekeeping, "interval", seconds=600, id="housekeeping", max_instances=1,
                               coalesce=True)
        wd = watchdog_interval()
        if wd is not None:
            self.scheduler.add_job(self._heartbeat, "interval", seconds=max(wd / 3, 0.5), id="watchdog",
                                   max_instances=1, coalesce=True, args=(wd,))
        self.scheduler.start()
        for waker in self.wakers:
            waker.start()
        if self.leadership.watched:  # a file lock lives as long as the process: nothing to watch
            self.metrics.collect_hooks["leadership"] = self.leadership.refresh_gauges
            self.leadership.watch.start()
        for reason in REJECT_REASONS:  # every reason shows as 0 from the start, so dashboards and rate() see it
            self.metrics.records_rejected.labels(reason=reason)
        for fn in self.on_ready:
            fn()
        self.notifier.ready(self.status_line())

    def _guarded(self, job: Job) -> Callable[[], None]:
        def run() -> None:
            if self._stop.is_set():
                return
            try:
                job.func()
            except LockLost:
                pass  # reported once by the lock watch; the job runs again once the lock is re-taken
            except Exception:
                log.exception("job failed", extra=fields(job=job.name))

        return run

    def _source_warnings(self) -> list[str]:
        try:
            warnings = self.source.check()
            self._mark_source(True, None)
            return warnings
        except SourceUnavailable as exc:
            self._mark_source(False, str(exc))
            return [f"source unavailable at start, will retry: {exc}"]

    def stop(self) -> None:
        """Finish the running cycle, run the stop hooks (outbox flush), stop jobs and the server."""
        self._stop.set()
        self.notifier.stopping()
        self.leadership.watch.stop(timeout_s=10.0)  # an attempt in progress ends within its connect timeout
        for waker in self.wakers:
            waker.stop()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)
        with self._cycle_lock:
            for fn in self.on_stop:
                try:
                    fn()
                except Exception:
                    log.exception("stop hook failed")
        if self.server is not None:
            self.server.stop()
        self.source.close()
        self.store.close()

    def run_forever(self) -> int:
        """Run until SIGINT/SIGTERM; returns the exit status."""
        def on_signal(signum: int, _frame: Any) -> None:
            if signum == signal.SIGHUP:
                self._reload.set()
                return
            log.info("stopping", extra=fields(signal=signal.Signals(signum).name))
            self._stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGHUP, on_signal)
        self.start()
        try:
            while not self._stop.wait(0.2):
                if self._reload.is_set():
                    self._reload.clear()
                    self.reload()
        finally:
            self.stop()
        return self.exit_code

    # --- the poll cycle ----------------------------------------------------------------------------
    def wake_poll(self) -> None:
        """Poll as soon as possible (a LISTEN/NOTIFY wake-up); `poll_interval` stays the safety net."""
        self.poller.wake()

    def poll_job(self) -> None:
        """One scheduled poll; during a burst it keeps polling until the source is drained."""
        self._alive = time.monotonic()
        if self._stop.is_set() or time.monotonic() < self.health.next_try_monotonic:
            return
        for _ in range(100):
            if self._stop.is_set():
                return
            more = self.cycle()
            self._alive = time.monotonic()
            if not more:
                return

    def cycle(self) -> bool:
        """Poll once and commit; returns True when the source has more rows waiting right now."""
        with self._cycle_lock:
            started = time.perf_counter()
            now = now_us(self.clock)
            if not self.store.lock_held():
                return False  # a standby, or the lead was lost: detection holds until this instance leads
            if self.restore_error is not None and not self._restore(now):
                return False  # detection holds: it never runs on a state that is not the committed one
            try:
                more = self._cycle(now)
            except LockLost:
                return False  # nothing was committed; the lock watch steps down and restores when it leads
            except SourceUnavailable as exc:
                self._mark_source(False, str(exc))
                return False
            except StoreUnavailable as exc:
                # nothing was committed, so nothing is lost: the same rows are read again next time
                self.store_error = str(exc)
                self.health.next_try_monotonic = time.monotonic() + 5.0
                return False
            self.store_error = None
            self._mark_source(True, None)
            self.metrics.poll_duration.observe(time.perf_counter() - started)
            return more

    def _cycle(self, now: int) -> bool:
        state = self.state
        if state is None:
            state = self._first_start(now)
        replay = not state.backfill_done
        since = self._since(state)
        window = self.history_window_start(now)
        polled = self.ingest.poll(since, state.watermark_us, now, window)
        finished = replay and polled.exhausted
        # the ledger knows every row after the first poll's bound: reconciliation never looks before it
        ledger_start = state.ledger_start_us if state.ledger_start_us is not None else since
        new_state = repo.SourceState(state.watermark_us, state.coverage_start_us, state.backfill_start_us,
                                     state.backfill_done or finished, state.started_us, ledger_start)
        reconciled = False
        if not replay and polled.exhausted and now >= self.next_reconcile_us:
            try:
                found = self.ingest.reconcile(self.reconcile_bounds(ledger_start, since, now, window), now,
                                              window, polled)
            except SourceUnavailable as exc:
                # the poll's rows are still committed: a failing reconciliation must never stop ingest
                log.warning("reconciliation failed; tried again after reconcile_interval",
                            extra=fields(error=str(exc)))
                found = None
            if found is not None:
                polled.absorb(found)
            reconciled = True
        quiet = (not replay and state.watermark_us is not None and not polled.entries and not polled.rejected
                 and len(polled.batch) == 0 and ledger_start == state.ledger_start_us)
        cycle = Cycle(polled.batch, now, replay, new_state, polled, backfill_finished=finished, quiet=quiet,
                      late_records=polled.reconciled_records)
        try:
            with self.store.transaction() as conn:
                if not quiet:
                    self.ingest.commit(conn, polled, new_state, now, self.calendar, window)
                for stage in self.stages:
                    stage.on_cycle(conn, cycle)
        except LockLost:
            # the fence refused the commit: the stages' memory holds what was not committed; they are
            # reloaded from the store once this instance leads again (never while another one may write it)
            self.restore_error = "the state store's lock was lost during a poll; state not reloaded yet"
            self.restore_retry_monotonic = 0.0
            raise
        except Exception as exc:
            if isinstance(exc, SQLAlchemyError):  # the store is down, full or locked: no traceback for that
                log.error("poll cycle could not be committed; reloading state from the store",
                          extra=fields(error=error_line(exc)))
            else:
                log.exception("poll cycle could not be committed; reloading state from the store")
            self.restore_error = f"the poll's transaction failed ({type(exc).__name__}); state not reloaded yet"
            self.restore_retry_monotonic = 0.0
            self._restore(now)
            raise StoreUnavailable(type(exc).__name__) from None
        self.state = new_state
        self.ingest.committed(polled, None if quiet else window)
        if reconciled:
            self.next_reconcile_us = now + self.reconcile_us
        self._count(polled, now)
        for stage in self.stages:
            stage.committed()
        if finished:
            log.info("backfill finished", extra=fields(records=len(polled.batch)))
        return not polled.exhausted

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

    def _restore(self, now: int) -> bool:
        """Reload every stage's state from the store; until it succeeds, detection holds."""
        if time.monotonic() < self.restore_retry_monotonic:
            return False
        try:
            self._recover(now)
        except Exception as exc:  # noqa: BLE001 - the store is still down: hold and retry with backoff
            self.restore_failures += 1
            delay = min(BACKOFF_MAX_S, 2.0 ** min(self.restore_failures, 6))
            self.restore_retry_monotonic = time.monotonic() + delay
            error = f"reloading state from the store failed ({type(exc).__name__}); detection holds"
            if error != self.restore_error:
                log.error(error, extra=fields(retry_in_s=delay))
            self.restore_error = error
            return False
        log.info("state reloaded from the store; detection resumes", extra=fields(after=self.restore_failures))
        self.restore_error, self.restore_failures = None, 0
        return True

    def _recover(self, now: int) -> None:
        if not self.loaded:  # a standby that now leads: its first load, as a start does
            self._load()
            return
        with self.store.reading() as conn:
            self.state = repo.load_source_state(conn)
            self.ingest.load(conn)
        for stage in self.stages:
            stage.recover(self.store, now)

    def _first_start(self, now: int) -> repo.SourceState:
        days = backfill_days(self.cfg)
        today = self.calendar.day_of(now)
        start = self.calendar.day_start(today - days)
        first = self.source.first_record_time()
        if self.cfg.history_start is not None:
            coverage: int | None = history_start_us(self.cfg.history_start, self.calendar)
        else:
            coverage = None if first is None else max(first, start)
        log.info("first start: reading back the baseline window",
                 extra=fields(days=days, since=self.calendar.date_of(today - days).isoformat()))
        return repo.SourceState(watermark_us=None, coverage_start_us=coverage, backfill_start_us=start,
                                backfill_done=False, started_us=now)

    def _since(self, state: repo.SourceState) -> int:
        if state.watermark_us is not None:
            return state.watermark_us - self.lateness_us
        assert state.backfill_start_us is not None
        return state.backfill_start_us - 1

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
            gap = self._counted_us is not None and now - self._counted_us > self.lateness_us
            if self.commit_delay.horizon_us is None or self.store_error is not None or not self.health.up or gap:
                self.commit_delay.restart_at(now)
            self.commit_delay.observe(batch.ts, now)
        self._counted_us = now
        for reason, n in polled.rejected_by_reason.items():
            m.records_rejected.labels(reason=reason).inc(n)
        if polled.reconciled:
            m.records_reconciled.inc(polled.reconciled)
            days = sorted({"no usable time" if d < 0 else self.calendar.date_of(self.calendar.day_of(d)).isoformat()
                           for d in polled.reconciled_days})
            log.warning("reconciliation found rows the watermark reads had missed (committed later than "
                        "lateness, or ordered by the database unlike their time); counted as late records",
                        extra=fields(rows=polled.reconciled, records=polled.reconciled_records, days=days))
        if self.health.newest_us is None and self.state is not None and self.state.watermark_us is not None:
            self.health.newest_us = self.state.watermark_us
        if self.health.newest_us is not None:
            m.source_lag.set(max(0.0, (now - self.health.newest_us) / US))

    def _mark_source(self, up: bool, error: str | None) -> None:
        h = self.health
        if up:
            if not h.up and h.failures:
                log.info("source is back", extra=fields(after_failures=h.failures))
            h.up, h.failures, h.last_error = True, 0, None
            h.next_try_monotonic = 0.0
        else:
            h.failures += 1
            delay = min(BACKOFF_MAX_S, 2.0 ** min(h.failures, 6))
            h.next_try_monotonic = time.monotonic() + delay
            if h.up or h.failures == 1 or error != h.last_error:
                log.error("source unavailable", extra=fields(error=error, retry_in_s=delay))
            h.up, h.last_error = False, error
            self.metrics.source_errors.inc()
        self.metrics.source_up.set(1 if up else 0)

    # --- leadership ----------------------------------------------------------------------------------
    def _lost_lead(self) -> None:
        """What this instance holds in memory is not the store's any more: reloaded when it leads again."""
        self.restore_error = "this instance lost the lead; its state is loaded from the store when it leads again"
        self.restore_retry_monotonic = 0.0

    def _took_lead(self) -> None:
        """The first `on_lead` hook: the next cycle reloads every stage's state before it polls."""
        self.restore_error = "this instance took the lead; its state is not loaded from the store yet"
        self.restore_retry_monotonic, self.restore_failures = 0.0, 0
        self.next_reconcile_us = 0  # rows committed late while another instance led, or while this one held
        self.poller.wake()

    @property
    def leading(self) -> bool:
        return self.leadership.leading

    @property
    def lock_error(self) -> str | None:
        return self.leadership.lock_error

    def lock_report(self) -> dict[str, Any]:
        """The lock as `/api/v1/status` and `sentinel status` show it."""
        return self.leadership.lock_report()

    # --- other jobs --------------------------------------------------------------------------------
    def _heartbeat(self, limit: float) -> None:
        """WATCHDOG=1 only while the poll job keeps being entered: a hung scheduler stops the pings."""
        if time.monotonic() - self._alive < limit:
            self.notifier.watchdog()
            self.notifier.status(self.status_line())

    def housekeeping(self) -> None:
        if not self.store.lock_held():
            return  # writes are fenced; the next run after the re-take prunes
        now = now_us(self.clock)
        cutoff = self.calendar.day_start(self.calendar.day_of(now) - KEEP_BUCKET_DAYS)
        with self._cycle_lock, self.store.transaction() as conn:
            n = repo.prune_buckets(conn, cutoff)
        if n:
            log.info("pruned old buckets", extra=fields(rows=n))

    def status_line(self) -> str:
        h = self.health
        src = "source up" if h.up else f"source DOWN ({h.last_error})"
        lag = "" if h.newest_us is None else f", lag {int((now_us(self.clock) - h.newest_us) / US)}s"
        if not self.leading:
            return "standby" if self.lock_error is None else "state store lock LOST, standing by"
        return f"{src}{lag}"

    def reload(self) -> bool:
        """SIGHUP: read the config file again; a bad one is refused and the old one keeps running."""
        from sentinel.loader import ConfigError, load

        if self.config_path is None:
            return False
        self.notifier.reloading()
        try:
            new = load(self.config_path)
        except ConfigError as exc:
            for line in exc.problems:
                log.error("reload refused: %s", line)
            self.metrics.config_reload_ok.set(0)
            self.notifier.ready(self.status_line())
            return False
        for key in ("state_url", "listen", "timezone", "state"):
            if getattr(new, key) != getattr(self.cfg, key):
                log.warning("reload: %s changed; it takes effect at the next restart", key)
        if new.source != self.cfg.source:
            log.warning("reload: [source] changed; it takes effect at the next restart")
        try:
            with self._cycle_lock:
                for r in self.reloadables:
                    r.apply(new)
                self.cfg = new
        except Exception:
            log.exception("reload failed; keeping the previous configuration")
            self.metrics.config_reload_ok.set(0)
            self.notifier.ready(self.status_line())
            return False
        self.metrics.config_reload_ok.set(1)
        self.metrics.config_reload_time.set(time.time())
        log.info("configuration reloaded", extra=fields(rules=len(new.rules), receivers=len(new.receivers)))
        self.notifier.ready(self.status_line())
        return True

    # --- HTTP --------------------------------------------------------------------------------------
    def _register_endpoints(self) -> None:
        self.app.route("GET", "/healthz", lambda _r: Response.text("ok\n"))
        self.app.route("GET", "/metrics", self._metrics_endpoint)
        self.app.route("GET", "/readyz", self._readyz)

    def _metrics_endpoint(self, _req: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(200, self.metrics.render(), CONTENT_TYPE_LATEST)

    def readiness(self) -> list[str]:
        """What keeps this instance from being ready (empty: ready). A standby is ready when it can serve
        reads from the store (the leader polls the source); a leader also needs its source and its jobs."""
        problems = []
        try:
            with self.store.reading() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            problems.append(f"state store unreachable: {type(exc).__name__}")
        if not self.leading:
            if problems and self.lock_error is not None:
                problems.insert(0, self.lock_error)
            return problems
        if self.store_error is not None:
            problems.append(f"state store write failed: {self.store_error}")
        if self.restore_error is not None:
            problems.append(self.restore_error)
        if not self.health.up:
            problems.append(f"source unavailable: {self.health.last_error or 'not polled yet'}")
        if not self.scheduler.running:
            problems.append("scheduler not running")
        elif not self.poller.running:
            problems.append("poll loop not running")
        return problems

    def _readyz(self, _req: Request) -> Response:
        problems = self.readiness()
        if problems:
            return Response.text("not ready: " + "; ".join(problems) + "\n", 503)
        if not self.leading:
            return Response.text(self.leadership.standby_line() + "\n")
        return Response.text("ready\n")

