"""What every stage of the pipeline shares: the `Stage` protocol, the `Cycle` a poll hands to the
stages, and the `Job`s a stage asks the scheduler to run.

A stage is built from the configuration, the store, the clock and the metrics (plus the few facts the
pipeline shares between stages, such as the label vocabulary); never from the daemon. The pipeline
(`sentinel.pipeline`) calls these hooks in a fixed order, so a stage can rely on it:

- `open` once, as the leader, after the store's committed state is loaded and before any thread runs;
- `on_cycle` inside each poll's transaction, then `committed` once that transaction committed;
- `recover` when a poll's transaction failed or this instance took the lead: the stage drops what it
  holds in memory and reloads it from the store (it never runs on a state that is not the committed one);
- `reload` on SIGHUP with a configuration that passed every check, inside the cycle lock;
- `start` once every thread is running, `resume` whenever this instance takes the lead again, and
  `stop` at shutdown, after the running cycle, inside the cycle lock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import Connection

from sentinel.config import Config
from sentinel.ingest import Polled
from sentinel.model import Batch
from sentinel.store.records import SourceState
from sentinel.wake import Waker


@dataclass(slots=True)
class Cycle:
    """What one poll carries to the stages."""

    batch: Batch
    now_us: int
    horizon_us: int  # records at or before it are settled: the look-back will not read older ones (ingest's)
    replay: bool  # part of the first start's backfill: record events, send nothing
    state: SourceState
    polled: Polled | None = None
    backfill_finished: bool = False
    quiet: bool = False  # nothing new was read: stages write only what time changed (an idle poll costs no fsync)
    late_records: int = 0  # records found by reconciliation: all committed later than `lateness`


@dataclass(frozen=True, slots=True)
class Job:
    """A scheduled job of a stage: run every `seconds` (and once at start), never two at once.

    `exclusive` jobs run inside the cycle lock: they read what a poll's cycle writes in memory."""

    name: str
    func: Callable[[], None]
    seconds: float
    exclusive: bool = False


Leading = Callable[[], bool]
"""Whether this instance leads now (a standby writes nothing; see `sentinel.leadership`)."""


class Stage(Protocol):
    """One stage of the pipeline after ingest (detection, dispatch, delivery)."""

    name: str

    def open(self, state: SourceState | None, now: int) -> None:
        """As the leader, after the store's state is loaded: build the in-memory state from the store."""
        ...

    def on_cycle(self, conn: Connection, cycle: Cycle) -> None:
        """Write into the poll's transaction."""
        ...

    def committed(self) -> None:
        """The poll's transaction committed: count it, wake the next stage."""
        ...

    def recover(self, state: SourceState | None, now: int) -> None:
        """The transaction failed (or the lead was taken): reload in-memory state from the store."""
        ...

    def reload(self, cfg: Config) -> None:
        """SIGHUP with a checked configuration; raising keeps the previous one everywhere."""
        ...

    def jobs(self) -> list[Job]:
        """Scheduled jobs (gauges, housekeeping)."""
        ...

    def wakers(self) -> list[Waker]:
        """Threads woken by the stage before it (started after the scheduler, stopped before it)."""
        ...

    def start(self) -> None:
        """Every thread runs: start what needs them (a leader's delivery)."""
        ...

    def resume(self) -> None:
        """This instance took the lead (again)."""
        ...

    def stop(self) -> None:
        """Shutdown, after the running cycle: finish within a bounded time."""
        ...
