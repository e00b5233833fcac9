"""The pipeline: ingest -> detection -> dispatch -> delivery, one typed object.

Ingest heads it: the daemon's poll cycle (`sentinel.poll`) reads the source through it and hands the
`Cycle` to the stages after it, which share one protocol (`sentinel.stage.Stage`). Each stage is built
from the configuration, the store, the clock and the metrics, never from the daemon, so tests build the
same stages the daemon runs.

The wake-ups between stages are wired here: a committed poll that recorded events wakes dispatch,
committed messages wake delivery (and a LISTEN/NOTIFY `listener`, when the source has one, wakes the
poll). Each runs on its own `Waker` thread and sleeps until it is woken or its next due time comes.

Guarantees: the hooks run in the order `sentinel.stage` states, in the stages' order (detection,
dispatch, delivery) and, on taking the lead, in reverse (delivery re-queues what was in flight before
dispatch runs again); `reload` applies a new configuration to every stage or, when one refuses it,
raises so the daemon keeps the previous configuration; `stop` stops the listener first, then lets
dispatch write what is due and delivery send it, within a bounded time.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from sqlalchemy import Connection

from sentinel.clock import Clock
from sentinel.config import Config
from sentinel.delivery_stage import DeliveryStage
from sentinel.detection import DetectionStage
from sentinel.dispatch_stage import DispatchStage
from sentinel.ingest import Ingest
from sentinel.metrics import Metrics
from sentinel.model import US, Vocab
from sentinel.sources import Source
from sentinel.sources.rows import RowNormaliser
from sentinel.stage import Cycle, Job, Leading, Stage
from sentinel.store import Store
from sentinel.store.records import SourceState
from sentinel.wake import Waker

if TYPE_CHECKING:
    from sentinel.sources.pg_notify import Listener

log = logging.getLogger("sentinel.daemon")


class Pipeline:
    def __init__(
        self, ingest: Ingest, detection: DetectionStage, dispatch: DispatchStage, delivery: DeliveryStage
    ) -> None:
        self.ingest = ingest
        self.detection = detection
        self.dispatch = dispatch
        self.delivery = delivery
        self.listener: Listener | None = None
        # one poll's cycle, a reload, the exclusive jobs and the stop hooks never run at once
        self.cycle_lock = threading.RLock()
        detection.on_events = dispatch.wake
        dispatch.on_written = delivery.wake

    @classmethod
    def build(
        cls,
        cfg: Config,
        store: Store,
        clock: Clock,
        metrics: Metrics,
        *,
        source: Source,
        vocab: Vocab,
        leading: Leading,
        stopping: threading.Event,
        dry_run: bool = False,
    ) -> Pipeline:
        """Every stage of `cfg` on `store`; `leading` tells whether this instance may write, `stopping` is
        set once the daemon stops (dispatch then starts no new step)."""
        assert cfg.source is not None
        normaliser = RowNormaliser(vocab, cfg.source_tz, getattr(source, "id_type", cfg.source.id_type))
        lateness_us = int(cfg.source.lateness.total_seconds() * US)
        ingest = Ingest(source, normaliser, lateness_us, cfg.source.batch_size, store)
        return cls(
            ingest,
            DetectionStage(cfg, store, clock, metrics, vocab=vocab, horizon=ingest.horizon, leading=leading),
            DispatchStage(cfg, store, clock, metrics, leading=leading, stopping=stopping),
            DeliveryStage(cfg, store, clock, metrics, leading=leading, dry_run=dry_run),
        )

    @property
    def stages(self) -> list[Stage]:
        """The stages after ingest, in the order the hooks run."""
        return [self.detection, self.dispatch, self.delivery]

    @property
    def dry_run(self) -> bool:
        return self.delivery.dry_run

    # --- the hooks, in order -------------------------------------------------------------------------
    def open(self, state: SourceState | None, now: int) -> None:
        for stage in self.stages:
            stage.open(state, now)

    def on_cycle(self, conn: Connection, cycle: Cycle) -> None:
        for stage in self.stages:
            stage.on_cycle(conn, cycle)

    def committed(self) -> None:
        for stage in self.stages:
            stage.committed()

    def recover(self, state: SourceState | None, now: int) -> None:
        for stage in self.stages:
            stage.recover(state, now)

    def reload(self, cfg: Config) -> None:
        """Inside the cycle lock: the rules, then the routes and receivers."""
        with self.cycle_lock:
            for stage in self.stages:
                stage.reload(cfg)

    def jobs(self) -> list[Job]:
        """Every stage's scheduled jobs; the exclusive ones take the cycle lock."""
        return [
            Job(j.name, self._locked(j.func), j.seconds) if j.exclusive else j
            for stage in self.stages
            for j in stage.jobs()
        ]

    def _locked(self, func: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            with self.cycle_lock:
                func()

        return run

    def wakers(self) -> list[Waker]:
        return [w for stage in self.stages for w in stage.wakers()]

    def start(self) -> None:
        for stage in self.stages:
            stage.start()
        if self.listener is not None:
            self.listener.start()

    def resume(self) -> None:
        for stage in reversed(self.stages):
            stage.resume()

    def stop(self) -> None:
        """The listener first (the outbox flush may take seconds), then each stage, inside the cycle lock."""
        with self.cycle_lock:
            if self.listener is not None:
                self._stop_one(self.listener.stop)
            for stage in self.stages:
                self._stop_one(stage.stop)

    @staticmethod
    def _stop_one(fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception:
            log.exception("stop hook failed")
