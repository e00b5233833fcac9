"""The dispatch stage: events recorded by detection become outbox messages.

Guarantees: one dispatcher step reads the events it has not taken, applies the policy (silences,
inhibition, acknowledgements, mute windows, repeats, escalation) and routing, and writes the messages
and its cursor in ONE transaction, so an event is dispatched once however the daemon stops. It runs on
its own `Waker` thread: detection wakes it when a poll committed events, and it sleeps until the next
time it has something due (a group's group_wait/group_interval, a mute window's end, a repeat or an
escalation); the waker's interval is only a safety net. Committed messages wake delivery
(`on_written`). Only the leader dispatches (every write is fenced by the store's lock).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

from sentinel.alerting.dispatch import Dispatcher
from sentinel.alerting.policy import Policy
from sentinel.clock import Clock, now_us
from sentinel.config import Config
from sentinel.logs import fields
from sentinel.metrics import Metrics
from sentinel.model import US
from sentinel.notify import outbox
from sentinel.stage import Cycle, Job, Leading
from sentinel.store import LockLost, Store
from sentinel.store.records import SourceState
from sentinel.wake import Waker

log = logging.getLogger("sentinel.daemon")

DAY_US = 86_400 * US


class DispatchStage:
    name = "dispatch"
    SAFETY_S = 5.0
    HOUSEKEEPING_S = 3600.0
    RESOLVED_KEEP_US = 30 * DAY_US

    def __init__(
        self,
        cfg: Config,
        store: Store,
        clock: Clock,
        metrics: Metrics,
        *,
        leading: Leading,
        stopping: threading.Event | None = None,
        on_written: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.metrics = metrics
        self.leading = leading
        self.stopping = stopping or threading.Event()
        self.on_written = on_written
        self.policy = Policy(cfg)
        self.dispatcher = Dispatcher(cfg, policy=self.policy)
        self._lock = threading.Lock()
        self.waker = Waker("dispatch", self._step, self.SAFETY_S)

    def wake(self) -> None:
        """Events were committed: dispatch now (group_wait and group_interval still decide what goes)."""
        self.waker.wake()

    def dispatch(self) -> int:
        """One dispatcher step in its own transaction; committed messages wake delivery at once."""
        with self._lock, self.store.transaction() as conn:
            written = self.dispatcher.step(conn, now_us(self.clock))
        if written and self.on_written is not None:
            self.on_written()
        return written

    def _step(self) -> float | None:
        if self.stopping.is_set() or not self.store.lock_held():
            return None  # (lock lost: `resume` wakes dispatch once it is re-taken)
        try:
            self.dispatch()
        except LockLost:
            return None
        except SQLAlchemyError as exc:  # the store is down: try again, without a traceback each time
            log.warning("dispatch paused: the state store is unavailable", extra=fields(error=type(exc).__name__))
            return self.SAFETY_S
        due = self.dispatcher.next_due_us
        return None if due is None else max(0, due - now_us(self.clock)) / US

    # --- the stage protocol ----------------------------------------------------------------------------
    def open(self, state: SourceState | None, now: int) -> None:
        pass  # the dispatcher's cursor and groups are read from the store at each step

    def on_cycle(self, conn: Connection, cycle: Cycle) -> None:
        pass  # dispatch runs in its own transaction, woken by detection's `committed`

    def committed(self) -> None:
        pass

    def recover(self, state: SourceState | None, now: int) -> None:
        pass  # nothing in memory that the store does not hold

    def reload(self, cfg: Config) -> None:
        with self._lock:
            self.policy.reload(cfg)
            self.dispatcher.reload(cfg)
        self.waker.wake()  # new routes and intervals: the next due time is computed again

    def jobs(self) -> list[Job]:
        return [Job("outbox-housekeeping", self.housekeeping, self.HOUSEKEEPING_S)]

    def wakers(self) -> list[Waker]:
        return [self.waker]

    def start(self) -> None:
        pass  # the waker's first run dispatches what the last run left

    def resume(self) -> None:
        self.waker.wake()

    def stop(self) -> None:
        """SIGTERM: dispatch what is due (delivery's stop then sends it). With the store's lock lost or the
        store down nothing is dispatched: the events wait for the next start."""
        try:
            if self.store.lock_held():
                self.dispatch()
        except (LockLost, SQLAlchemyError) as exc:
            log.warning(
                "nothing dispatched at shutdown: the state store is unavailable; the events wait for the next start",
                extra=fields(error=type(exc).__name__),
            )

    def housekeeping(self) -> None:
        """Old delivered and failed messages, and alerts resolved long ago, leave the store."""
        if not self.leading():
            return
        now = now_us(self.clock)
        with self._lock, self.store.transaction() as conn:
            outbox.prune(conn, now - outbox.DELIVERED_KEEP_US, now - outbox.FAILED_KEEP_US)
            self.dispatcher.forget_resolved(conn, now - self.RESOLVED_KEEP_US)
