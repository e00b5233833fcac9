"""The daemon's lifecycle: open the store and take the lead, start the jobs and the HTTP server, reload
on SIGHUP, stop on SIGINT or SIGTERM after the running cycle.

What moves complaints is the pipeline (`sentinel.pipeline`: ingest -> detection -> dispatch ->
delivery); the poll cycle that drives it is `sentinel.poll`, the source's health `sentinel.source_health`,
the health endpoints `sentinel.probes`. Jobs never overlap (APScheduler `max_instances=1`).

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
from datetime import UTC, datetime
from types import FrameType

from apscheduler.schedulers.background import BackgroundScheduler

from sentinel.clock import Clock, SystemClock, now_us
from sentinel.commit_delay import CommitDelay
from sentinel.config import Config
from sentinel.days import Calendar
from sentinel.http import App, Server
from sentinel.leadership import Leadership
from sentinel.logs import fields
from sentinel.metrics import Metrics
from sentinel.model import US, JsonObject, Vocab
from sentinel.pipeline import Pipeline
from sentinel.poll import PollCycle
from sentinel.probes import Probes
from sentinel.sdnotify import Notifier, watchdog_interval
from sentinel.source_health import SourceHealth
from sentinel.sources import Source, SourceUnavailable
from sentinel.sources.rows import REJECT_REASONS
from sentinel.stage import Job
from sentinel.store import LockLost, Store, records
from sentinel.wake import Waker

log = logging.getLogger("sentinel.daemon")

KEEP_BUCKET_DAYS = 62
# `sentinel run` exits with this when another daemon holds an SQLite store's file lock: EX_TEMPFAIL of
# sysexits.h, "try again later". systemd's Restart=on-failure then starts it again, and it is refused the
# same way for as long as the other daemon runs. (On PostgreSQL a second daemon stands by instead.)
EXIT_LOCK_TAKEN = 75


class Daemon:
    def __init__(
        self,
        cfg: Config,
        *,
        source: Source,
        store: Store,
        clock: Clock | None = None,
        metrics: Metrics | None = None,
        listen: str | None = None,
        config_path: str | None = None,
        vocab: Vocab | None = None,
        dry_run: bool = False,
    ) -> None:
        assert cfg.source is not None
        self.cfg = cfg
        self.config_path = config_path
        self.clock = clock or SystemClock()
        self.store = store
        self.source = source
        self.metrics = metrics or Metrics()
        self.calendar = Calendar(cfg.tz)
        self.vocab = vocab or Vocab()
        self.app = App()
        self.listen = listen or cfg.listen
        self.server: Server | None = None
        self.scheduler = BackgroundScheduler(timezone="UTC")
        self.exit_code = 0
        self.notifier = Notifier.from_env()
        self._stop = threading.Event()
        self.leadership = Leadership(store, self.metrics, self._stop, lambda: self.cfg.tz)
        self.pipeline = Pipeline.build(
            cfg,
            store,
            self.clock,
            self.metrics,
            source=source,
            vocab=self.vocab,
            leading=lambda: self.leadership.leading,
            stopping=self._stop,
            dry_run=dry_run,
        )
        self.poll = PollCycle(
            cfg,
            store,
            self.clock,
            self.metrics,
            source=source,
            pipeline=self.pipeline,
            vocab=self.vocab,
            stopping=self._stop,
        )
        self.leadership.on_lost.append(self._lost_lead)
        self.leadership.on_lead.append(self._took_lead)
        self.leadership.on_lead.append(self.pipeline.resume)
        self._reload = threading.Event()
        self.probes = Probes(store, self.metrics, self.leadership, self.poll, self.scheduler)
        self.probes.register(self.app)

    # --- what the API, the status page and the tests read ----------------------------------------------
    @property
    def state(self) -> records.SourceState | None:
        return self.poll.state

    @property
    def health(self) -> SourceHealth:
        return self.poll.health

    @property
    def commit_delay(self) -> CommitDelay:
        return self.poll.commit_delay

    @property
    def poller(self) -> Waker:
        return self.poll.waker

    @property
    def wakers(self) -> list[Waker]:
        """Started after the scheduler, stopped before it: the poll's, then the stages'."""
        return [self.poll.waker, *self.pipeline.wakers()]

    @property
    def restore_error(self) -> str | None:
        return self.poll.restore_error

    def cycle(self) -> bool:
        """Poll once and commit (see `sentinel.poll`); True when the source has more rows waiting."""
        return self.poll.cycle()

    def poll_job(self) -> None:
        self.poll.poll_job()

    def wake_poll(self) -> None:
        """Poll as soon as possible (a LISTEN/NOTIFY wake-up); `poll_interval` stays the safety net."""
        self.poll.waker.wake()

    def readiness(self) -> list[str]:
        return self.probes.readiness()

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
            self.poll.load()
        else:
            # should this instance take the lead, its first cycle loads the state before anything else
            self.poll.restore_error = "a standby: its state is loaded from the store when it takes the lead"
            log.info(
                "standing by; this instance takes the lead when the leader stops or its lease expires",
                extra=fields(lease_ttl_s=self.store.lease_ttl_s),
            )

    def _upgrade(self) -> None:
        before, after = self.store.upgrade()
        if before != after:
            log.info("state store migrated", extra=fields(before=before, after=after))

    def start(self) -> None:
        self.open()
        for warning in self._source_warnings():
            log.warning(warning)
        self.server = Server(self.app, self.listen)
        self.server.start()
        log.info("listening", extra=fields(url=self.server.url))
        first = datetime.now(UTC)
        for job in self.pipeline.jobs():
            self.scheduler.add_job(
                self._guarded(job),
                "interval",
                seconds=job.seconds,
                id=job.name,
                max_instances=1,
                coalesce=True,
                next_run_time=first,
            )
        self.scheduler.add_job(
            self.housekeeping, "interval", seconds=600, id="housekeeping", max_instances=1, coalesce=True
        )
        wd = watchdog_interval()
        if wd is not None:
            self.scheduler.add_job(
                self._heartbeat,
                "interval",
                seconds=max(wd / 3, 0.5),
                id="watchdog",
                max_instances=1,
                coalesce=True,
                args=(wd,),
            )
        self.scheduler.start()
        for waker in self.wakers:
            waker.start()
        if self.leadership.watched:  # a file lock lives as long as the process: nothing to watch
            self.metrics.collect_hooks["leadership"] = self.leadership.refresh_gauges
            self.leadership.watch.start()
        for reason in REJECT_REASONS:  # every reason shows as 0 from the start, so dashboards and rate() see it
            self.metrics.records_rejected.labels(reason=reason)
        self.pipeline.start()
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
            self.health.mark(True, None)
            return warnings
        except SourceUnavailable as exc:
            self.health.mark(False, str(exc))
            return [f"source unavailable at start, will retry: {exc}"]

    def stop(self) -> None:
        """Stop jobs and wakers, finish the running cycle, stop the pipeline (the outbox flush) and the server."""
        self._stop.set()
        self.notifier.stopping()
        self.leadership.watch.stop(timeout_s=10.0)  # an attempt in progress ends within its connect timeout
        for waker in self.wakers:
            waker.stop()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)
        self.pipeline.stop()
        if self.server is not None:
            self.server.stop()
        self.source.close()
        self.store.close()

    def run_forever(self) -> int:
        """Run until SIGINT/SIGTERM; returns the exit status."""

        def on_signal(signum: int, _frame: FrameType | None) -> None:
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

    # --- leadership ----------------------------------------------------------------------------------
    def _lost_lead(self) -> None:
        """What this instance holds in memory is not the store's any more: reloaded when it leads again."""
        self.poll.hold("this instance lost the lead; its state is loaded from the store when it leads again")

    def _took_lead(self) -> None:
        """The first `on_lead` hook (the pipeline's `resume` follows): the next cycle reloads every stage's
        state before it polls."""
        poll = self.poll
        poll.hold("this instance took the lead; its state is not loaded from the store yet")
        poll.restore_failures = 0
        poll.next_reconcile_us = 0  # rows committed late while another instance led, or while this one held
        poll.waker.wake()

    @property
    def leading(self) -> bool:
        return self.leadership.leading

    @property
    def lock_error(self) -> str | None:
        return self.leadership.lock_error

    def lock_report(self) -> JsonObject:
        """The lock as `/api/v1/status` and `sentinel status` show it."""
        return self.leadership.lock_report()

    # --- other jobs --------------------------------------------------------------------------------
    def _heartbeat(self, limit: float) -> None:
        """WATCHDOG=1 only while the poll job keeps being entered: a hung scheduler stops the pings."""
        if time.monotonic() - self.poll.alive < limit:
            self.notifier.watchdog()
            self.notifier.status(self.status_line())

    def housekeeping(self) -> None:
        if not self.store.lock_held():
            return  # writes are fenced; the next run after the re-take prunes
        now = now_us(self.clock)
        cutoff = self.calendar.day_start(self.calendar.day_of(now) - KEEP_BUCKET_DAYS)
        with self.pipeline.cycle_lock, self.store.transaction() as conn:
            n = records.prune_buckets(conn, cutoff)
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
            with self.pipeline.cycle_lock:
                self.pipeline.reload(new)
                self.cfg = self.poll.cfg = new
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
