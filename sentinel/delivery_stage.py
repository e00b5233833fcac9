"""The delivery stage: outbox messages reach the chat tools.

Guarantees: the worker claims a message, sends it and records the outcome, so a message is sent at
least once and, with its delivery id, repeated only when a crash or a lost lead left it in flight
(`sentinel.notify.worker`). It runs on its own `Waker` thread, woken by dispatch when messages were
committed and sleeping until a retry or a rate-limit window is due; the interval is only a safety net.
A leader starts delivering at start; a standby when it takes the lead (`resume`), after re-queueing what
was claimed and not confirmed. At SIGTERM what is due goes out within `FLUSH_ON_STOP_S`; the rest waits
in the outbox.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

from sentinel.clock import Clock
from sentinel.config import Config, ReceiverConfig
from sentinel.logs import fields
from sentinel.metrics import Metrics
from sentinel.notify.base import Adapter
from sentinel.notify.worker import DeliveryWorker
from sentinel.stage import Cycle, Job, Leading
from sentinel.store import LockLost, Store
from sentinel.store.records import SourceState
from sentinel.wake import Waker

log = logging.getLogger("sentinel.daemon")


class DeliveryStage:
    name = "delivery"
    FLUSH_ON_STOP_S = 10.0
    SAFETY_S = 10.0

    def __init__(
        self,
        cfg: Config,
        store: Store,
        clock: Clock,
        metrics: Metrics,
        *,
        leading: Leading,
        dry_run: bool = False,
        seed: int | None = None,
        adapter_factory: Callable[[ReceiverConfig], Adapter] | None = None,
    ) -> None:
        self.store = store
        self.leading = leading
        self.dry_run = dry_run
        self.worker = DeliveryWorker(
            cfg,
            store,
            metrics,
            clock=clock,
            dry_run=dry_run,
            seed=seed,
            adapter_factory=adapter_factory,
            safety_interval_s=self.SAFETY_S,
        )

    def wake(self) -> None:
        """Messages were committed: drain now."""
        self.worker.wake()

    # --- the stage protocol ----------------------------------------------------------------------------
    def open(self, state: SourceState | None, now: int) -> None:
        pass  # the worker reads the outbox and the rate windows when it starts

    def on_cycle(self, conn: Connection, cycle: Cycle) -> None:
        pass  # delivery runs on its own thread, woken by dispatch

    def committed(self) -> None:
        pass

    def recover(self, state: SourceState | None, now: int) -> None:
        pass  # `resume` re-reads what the store holds when this instance takes the lead

    def reload(self, cfg: Config) -> None:
        self.worker.reload(cfg)

    def jobs(self) -> list[Job]:
        return []

    def wakers(self) -> list[Waker]:
        return [self.worker.waker]

    def start(self) -> None:
        """A leader starts delivery (re-queueing what a crash left in flight); a standby starts it when it
        takes the lead (`resume`)."""
        if self.leading():
            self.worker.start()

    def resume(self) -> None:
        """This instance took the lead: requeue what was claimed and not confirmed (by it before a loss, or by
        the former leader), then deliver."""
        if self.worker.started:
            self.worker.resume()
        else:
            self.worker.start()

    def stop(self) -> None:
        """SIGTERM: deliver what is due within a bounded time; the rest waits. With the store's lock lost or
        the store down nothing is sent: it all waits in the outbox."""
        try:
            if self.store.lock_held():
                self.worker.flush(self.FLUSH_ON_STOP_S)
        except (LockLost, SQLAlchemyError) as exc:
            log.warning(
                "nothing sent at shutdown: the state store is unavailable; the outbox keeps it for the next start",
                extra=fields(error=type(exc).__name__),
            )
        finally:
            self.worker.stop()
