"""Assembling the daemon from a configuration: one place that knows every stage.

`build` wires source -> ingest -> detection -> dispatch -> outbox -> delivery into a `Daemon`, and
registers each stage's jobs, endpoints and reload hooks. Tests and the demo call it with their own
clock, listen address or source.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

from sentinel.clock import Clock, now_us
from sentinel.config import Config
from sentinel.daemon import Cycle, Daemon, Job, Reloadable
from sentinel.detection import Detector
from sentinel.logs import fields
from sentinel.metrics import Metrics
from sentinel.model import US
from sentinel.sources import Source
from sentinel.store import LockLost, Store
from sentinel.wake import Waker

if TYPE_CHECKING:
    from sentinel.sources.pg_notify import Listener

log = logging.getLogger("sentinel.daemon")


class DetectionStage:
    """Adapts the `Detector` to the daemon's stage protocol and its reload hook.

    After a committed transaction that recorded events to be told it calls `on_events` (the
    dispatcher's wake-up), so an alert is dispatched in the moment its poll commits, not at the next
    tick."""

    def __init__(self, daemon: Daemon, on_events: Callable[[], None] | None = None) -> None:
        self.daemon = daemon
        self.detector = Detector(daemon.cfg, daemon.calendar, daemon.vocab, daemon.metrics, daemon.lateness_us)
        self.on_events = on_events
        self.fresh = False  # a reload on a standby built a new detector: it starts from the store when it leads

    def start(self) -> None:
        d = self.daemon
        with d.store.transaction() as conn:
            coverage = d.state.coverage_start_us if d.state is not None else None
            self.detector.restore(conn, coverage, now_us(d.clock))
        self.committed()

    def on_cycle(self, conn: Connection, cycle: Cycle) -> None:
        self.detector.on_cycle(conn, cycle)

    def committed(self) -> None:
        if self.detector.committed() and self.on_events is not None:
            self.on_events()

    def recover(self, store: Store, now: int) -> None:
        if self.fresh:
            self.start()
            self.fresh = False
            return
        self.detector.recover(store, now)

    def reload(self, cfg: Config) -> None:
        d = self.daemon
        if not d.leading:  # a standby writes nothing: the new rules start from the store when it leads
            self.detector = Detector(cfg, d.calendar, d.vocab, d.metrics, d.lateness_us)
            self.fresh = True
            return
        with d.store.transaction() as conn:
            self.detector.reload(cfg, conn, now_us(d.clock))
        self.committed()

    def refresh(self) -> None:
        with self.daemon._cycle_lock:
            if self.daemon.leading:  # a standby exports no series gauges (they are the leader's)
                self.detector.refresh_gauges()


class DeliveryStage:
    """Dispatcher (events -> outbox, with its cursor, in one transaction) and the delivery worker.

    Both run on `Waker` threads: the detection stage wakes dispatch when a poll committed events,
    dispatch wakes delivery when it committed messages, and each sleeps until the next time it has
    something due (a group's group_wait/group_interval, a mute window's end, a repeat or escalation;
    a retry or a rate-limit window for delivery). The wakers' intervals are only a safety net.
    """

    FLUSH_ON_STOP_S = 10.0
    DISPATCH_SAFETY_S = 5.0
    DELIVER_SAFETY_S = 10.0

    def __init__(self, daemon: Daemon, dry_run: bool) -> None:
        from sentinel.alerting.dispatch import Dispatcher
        from sentinel.alerting.policy import Policy
        from sentinel.notify.worker import DeliveryWorker

        self.daemon = daemon
        self.dry_run = dry_run
        self.policy = Policy(daemon.cfg)
        self.dispatcher = Dispatcher(daemon.cfg, policy=self.policy)
        self.worker = DeliveryWorker(daemon.cfg, daemon.store, daemon.metrics, clock=daemon.clock, dry_run=dry_run,
                                     safety_interval_s=self.DELIVER_SAFETY_S)
        self._lock = threading.Lock()
        self.waker = Waker("dispatch", self._dispatch_step, self.DISPATCH_SAFETY_S)

    @property
    def wakers(self) -> list[Waker]:
        """Started by the daemon (before `start`) and stopped before the stop hooks flush the outbox."""
        return [self.waker, self.worker.waker]

    def start(self) -> None:
        """At the daemon's start: a leader starts delivery (re-queueing what a crash left in flight); a standby
        starts it when it takes the lead (`resume`)."""
        if self.daemon.leading:
            self.worker.start()

    def wake_dispatch(self) -> None:
        """Events were committed: dispatch now (group_wait and group_interval still decide what goes)."""
        self.waker.wake()

    def dispatch(self) -> int:
        """One dispatcher step in its own transaction; committed messages wake delivery at once."""
        with self._lock, self.daemon.store.transaction() as conn:
            written = self.dispatcher.step(conn, now_us(self.daemon.clock))
        if written:
            self.worker.wake()
        return written

    def _dispatch_step(self) -> float | None:
        if self.daemon._stop.is_set() or not self.daemon.store.lock_held():
            return None  # (lock lost: `resume` wakes dispatch once it is re-taken)
        try:
            self.dispatch()
        except LockLost:
            return None
        except SQLAlchemyError as exc:  # the store is down: try again, without a traceback each time
            log.warning("dispatch paused: the state store is unavailable", extra=fields(error=type(exc).__name__))
            return self.DISPATCH_SAFETY_S
        due = self.dispatcher.next_due_us
        return None if due is None else max(0, due - now_us(self.daemon.clock)) / US

    def reload(self, cfg: Config) -> None:
        with self._lock:
            self.policy.reload(cfg)
            self.dispatcher.reload(cfg)
            self.worker.reload(cfg)
        self.waker.wake()  # new routes and intervals: the next due time is computed again

    def stop(self) -> None:
        """SIGTERM: dispatch what is due and deliver it, within a bounded time; the rest waits. With the
        store's lock lost or the store down, nothing is dispatched or sent: it all waits in the outbox."""
        try:
            if self.daemon.store.lock_held():
                self.dispatch()
                self.worker.flush(self.FLUSH_ON_STOP_S)
        except (LockLost, SQLAlchemyError) as exc:
            log.warning("nothing dispatched or sent at shutdown: the state store is unavailable; the outbox "
                        "keeps it for the next start", extra=fields(error=type(exc).__name__))
        finally:
            self.worker.stop()

    def resume(self) -> None:
        """This instance took the lead: requeue what was claimed and not confirmed (by it before a loss, or by
        the former leader), then dispatch and deliver."""
        if self.worker.started:
            self.worker.resume()
        else:
            self.worker.start()
        self.waker.wake()

    def housekeeping(self) -> None:
        from sentinel.notify import outbox

        if not self.daemon.leading:
            return
        now = now_us(self.daemon.clock)
        day = 86_400_000_000
        with self._lock, self.daemon.store.transaction() as conn:
            outbox.prune(conn, now - outbox.DELIVERED_KEEP_US, now - outbox.FAILED_KEEP_US)
            self.dispatcher.forget_resolved(conn, now - 30 * day)


def make_listener(daemon: Daemon, config_path: str | None) -> Listener | None:
    """A LISTEN/NOTIFY listener that wakes the poll, for a PostgreSQL source that wants one.

    None for other databases, with `listen_notify = false` (a pooler in transaction mode cannot hold a
    LISTEN), and for a query source without `notify_channel` (no table to derive a channel from)."""
    from sqlalchemy.engine import make_url

    src = daemon.cfg.source
    assert src is not None
    url = src.url.get()
    if not src.listen_notify or make_url(url).get_backend_name() != "postgresql":
        return None
    from sentinel.sources.pg_notify import Listener, Target, channel_for  # psycopg only where it is used

    channel = channel_for(src.table, src.notify_channel)
    if channel is None:
        return None
    gauge = daemon.metrics.source_listen_up
    return Listener(Target.from_url(url, "sentinel-listen"), channel, daemon.wake_poll, table=src.table,
                    describe=daemon.source.describe(),
                    fix_hint=f"sentinel db notify-trigger --config {config_path or 'FILE'} --apply",
                    on_state=lambda up: gauge.set(1 if up else 0))


def make_source(cfg: Config) -> Source:
    from sentinel.sources.sql import SqlSource

    assert cfg.source is not None
    return SqlSource(cfg.source, ZoneInfo(cfg.source.timezone or cfg.timezone))


def build(cfg: Config, *, config_path: str | None = None, clock: Clock | None = None, listen: str | None = None,
          source: Source | None = None, store: Store | None = None, metrics: Metrics | None = None,
          dry_run: bool = False) -> Daemon:
    if cfg.source is None:
        raise ValueError("[source] is required to run the daemon")
    if cfg.state_url is None:
        raise ValueError("state_url is required to run the daemon")
    store = store or Store(cfg.state_url.get(), lease_ttl_s=cfg.state.lease_ttl.total_seconds())
    daemon = Daemon(cfg, source=source or make_source(cfg), store=store,
                    clock=clock, metrics=metrics, listen=listen, config_path=config_path)
    detection = DetectionStage(daemon)
    daemon.stages.append(detection)
    daemon.reloadables.append(Reloadable(detection.reload, "rules"))
    daemon.jobs.append(Job("gauges", detection.refresh, 15.0))
    daemon.on_open.append(detection.start)
    daemon.extras["detection"] = detection
    dry = dry_run or not cfg.notify
    daemon.extras["dry_run"] = dry
    delivery = DeliveryStage(daemon, dry)
    daemon.extras["delivery"] = delivery
    detection.on_events = delivery.wake_dispatch
    daemon.wakers += delivery.wakers
    daemon.on_ready.append(delivery.start)
    daemon.jobs.append(Job("outbox-housekeeping", delivery.housekeeping, 3600.0))
    daemon.reloadables.append(Reloadable(delivery.reload, "receivers"))
    daemon.on_stop.append(delivery.stop)
    daemon.leadership.on_lead.append(delivery.resume)
    from sentinel import api, api_v2

    api.register(daemon)
    api_v2.register(daemon)
    from sentinel.web import status_page

    status_page.register(daemon)
    listener = make_listener(daemon, config_path)
    if listener is not None:
        daemon.extras["listener"] = listener
        daemon.on_ready.append(listener.start)
        daemon.on_stop.insert(0, listener.stop)  # before the outbox flush, which may take seconds
    return daemon
