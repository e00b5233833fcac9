"""The daemon: scheduled jobs that move complaints through the stages, and the HTTP server.

One poll cycle reads the source, then commits watermark, seen ids, buckets and whatever the cycle
hooks add (the detection engine's rule state and events) in ONE transaction; so stopping at any point
loses nothing and counts nothing twice. Jobs never overlap (APScheduler `max_instances=1`), and SIGINT
or SIGTERM stop the daemon after the cycle that is running.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import Connection, text

from sentinel.clock import Clock, SystemClock, now_us
from sentinel.config import Config, ThresholdRuleConfig, redact_url
from sentinel.days import Calendar, history_start_us
from sentinel.http import App, Request, Response, Server
from sentinel.ingest import Ingest, Polled
from sentinel.logs import fields
from sentinel.metrics import Metrics
from sentinel.model import US, Batch, Vocab
from sentinel.sources import Source, SourceUnavailable
from sentinel.sources.records import RowNormaliser
from sentinel.store import Store
from sentinel.store import records as repo

log = logging.getLogger("sentinel.daemon")

BACKOFF_MAX_S = 60.0


@dataclass(slots=True)
class Cycle:
    """What one committed poll carries to the hooks."""

    batch: Batch
    now_us: int
    replay: bool  # part of the first start's backfill: record events, send nothing
    state: repo.SourceState
    polled: Polled | None = None
    backfill_finished: bool = False


class CycleHook(Protocol):
    def __call__(self, conn: Connection, cycle: Cycle) -> None: ...


AfterCommit = Callable[[Cycle], None]


@dataclass
class SourceHealth:
    up: bool = False
    last_ok_us: int | None = None
    last_error: str | None = None
    failures: int = 0
    next_try_monotonic: float = 0.0
    newest_us: int | None = None


def backfill_days(cfg: Config) -> int:
    """Days read back on first start: the longest baseline window plus the day in progress."""
    days = [7] + [r.baseline_days for r in cfg.rules if isinstance(r, ThresholdRuleConfig)]
    return max(days) + 1


class Daemon:
    def __init__(self, cfg: Config, *, source: Source, store: Store, clock: Clock | None = None,
                 metrics: Metrics | None = None, listen: str | None = None) -> None:
        assert cfg.source is not None
        self.cfg = cfg
        self.clock = clock or SystemClock()
        self.store = store
        self.source = source
        self.metrics = metrics or Metrics()
        self.calendar = Calendar(cfg.tz)
        self.vocab = Vocab()
        self.normaliser = RowNormaliser(self.vocab, cfg.source_tz, cfg.source.id_type)
        self.lateness_us = int(cfg.source.lateness.total_seconds() * US)
        self.ingest = Ingest(source, self.normaliser, self.lateness_us, cfg.source.batch_size)
        self.app = App()
        self.listen = listen or cfg.listen
        self.server: Server | None = None
        self.scheduler = BackgroundScheduler(timezone="UTC")
        self.hooks: list[CycleHook] = []
        self.after_commit: list[AfterCommit] = []
        self.health = SourceHealth()
        self.state: repo.SourceState | None = None
        self._stop = threading.Event()
        self._cycle_lock = threading.Lock()
        self._wake = threading.Event()
        self._register_endpoints()

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        self.store.lock()
        before, after = self.store.upgrade()
        if before != after:
            log.info("state store migrated", extra=fields(before=before, after=after))
        with self.store.reading() as conn:
            self.state = repo.load_source_state(conn)
            self.ingest.load(conn)
        for warning in self._source_warnings():
            log.warning(warning)
        self.server = Server(self.app, self.listen)
        self.server.start()
        log.info("listening", extra=fields(url=self.server.url))
        interval = self.cfg.source.poll_interval.total_seconds() if self.cfg.source else 2.0
        self.scheduler.add_job(self.poll_job, "interval", seconds=interval, id="poll", max_instances=1,
                               coalesce=True, next_run_time=datetime.now(self.clock.now().tzinfo))
        self.scheduler.start()

    def _source_warnings(self) -> list[str]:
        try:
            warnings = self.source.check()
            self._mark_source(True, None)
            return warnings
        except SourceUnavailable as exc:
            self._mark_source(False, str(exc))
            return [f"source unavailable at start, will retry: {exc}"]

    def stop(self) -> None:
        """Finish the running cycle, then stop jobs, the server and release the store."""
        self._stop.set()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)
        with self._cycle_lock:
            pass
        if self.server is not None:
            self.server.stop()
        self.source.close()
        self.store.close()

    def run_forever(self) -> int:
        """Run until SIGINT/SIGTERM; returns the exit status."""
        def on_signal(signum: int, _frame: Any) -> None:
            log.info("stopping", extra=fields(signal=signal.Signals(signum).name))
            self._stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        self.start()
        try:
            while not self._stop.wait(0.5):
                pass
        finally:
            self.stop()
        return 0

    # --- the poll cycle ----------------------------------------------------------------------------
    def poll_job(self) -> None:
        """One scheduled poll; during a burst it keeps polling until the source is drained."""
        if self._stop.is_set() or time.monotonic() < self.health.next_try_monotonic:
            return
        for _ in range(100):
            if self._stop.is_set():
                return
            more = self.cycle()
            if not more:
                return

    def cycle(self) -> bool:
        """Poll once and commit; returns True when the source has more rows waiting right now."""
        with self._cycle_lock:
            started = time.perf_counter()
            now = now_us(self.clock)
            try:
                more = self._cycle(now)
            except SourceUnavailable as exc:
                self._mark_source(False, str(exc))
                return False
            self._mark_source(True, None)
            self.metrics.poll_duration.observe(time.perf_counter() - started)
            return more

    def _cycle(self, now: int) -> bool:
        state = self.state
        replay = False
        if state is None:
            state = self._first_start(now)
        if not state.backfill_done:
            replay = True
        since = self._since(state)
        polled = self.ingest.poll(since, state.watermark_us, now)
        finished = replay and polled.exhausted
        if finished:
            state.backfill_done = True
        cycle = Cycle(polled.batch, now, replay, state, polled, backfill_finished=finished)
        with self.store.transaction() as conn:
            self.ingest.commit(conn, polled, state, now, self.calendar)
            for hook in self.hooks:
                hook(conn, cycle)
        self.state = state
        self.ingest.committed(polled)
        self._count(polled, now)
        for fn in self.after_commit:
            fn(cycle)
        if finished:
            log.info("backfill finished", extra=fields(watermark=state.watermark_us))
        return not polled.exhausted

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
            types, channels = batch.type, batch.channel
            pairs, counts = _pair_counts(types, channels)
            for (t, c), n in zip(pairs, counts, strict=True):
                lt, lc = m.ingest_labels(self.vocab.decode(t), self.vocab.decode(c))
                m.records_ingested.labels(type=lt, channel=lc).inc(n)
            self.health.newest_us = max(self.health.newest_us or 0, int(batch.ts.max()))
        for reason, n in polled.rejected_by_reason.items():
            m.records_rejected.labels(reason=reason).inc(n)
        if self.health.newest_us is not None:
            m.source_lag.set(max(0.0, (now - self.health.newest_us) / US))

    def _mark_source(self, up: bool, error: str | None) -> None:
        h = self.health
        if up:
            if not h.up and h.failures:
                log.info("source is back", extra=fields(after_failures=h.failures))
            h.up, h.failures, h.last_error = True, 0, None
            h.last_ok_us = now_us(self.clock)
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

    # --- HTTP --------------------------------------------------------------------------------------
    def _register_endpoints(self) -> None:
        self.app.route("GET", "/healthz", lambda _r: Response.text("ok\n"))
        self.app.route("GET", "/metrics", self._metrics_endpoint)
        self.app.route("GET", "/readyz", self._readyz)

    def _metrics_endpoint(self, _req: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(200, self.metrics.render(), CONTENT_TYPE_LATEST)

    def readiness(self) -> list[str]:
        problems = []
        try:
            with self.store.reading() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            problems.append(f"state store unreachable: {type(exc).__name__}")
        if not self.health.up:
            problems.append(f"source unavailable: {self.health.last_error or 'not polled yet'}")
        if not self.scheduler.running:
            problems.append("scheduler not running")
        return problems

    def _readyz(self, _req: Request) -> Response:
        problems = self.readiness()
        if problems:
            return Response.text("not ready: " + "; ".join(problems) + "\n", 503)
        return Response.text("ready\n")

    def describe(self) -> dict[str, Any]:
        return {"source": self.source.describe(), "state": redact_url(self.store.description)}


def _pair_counts(types: Any, channels: Any) -> tuple[list[tuple[int, int]], list[int]]:
    import numpy as np

    key = types.astype(np.int64) * (1 << 31) + channels.astype(np.int64)
    uniq, counts = np.unique(key, return_counts=True)
    return [(int(k >> 31), int(k & ((1 << 31) - 1))) for k in uniq], [int(n) for n in counts]

