"""The `Mode` protocol: what the threshold rule's `day`, `pace` and `rolling` modes do differently.

The rule (`sentinel.detect.threshold.core`) owns what every mode shares: daily counts, baselines and
integer thresholds, tiers, opening and resolving alerts, midnight. A mode decides what a series' count
is now, how a batch of records raises alerts, which instants are deadlines and what time reaching
one does, and when an open alert is still met. A mode keeps nothing of its own: all it knows is in
the `ThresholdState` it is handed, so forking or restoring the state forks or restores the mode too.
"""

from __future__ import annotations

from typing import Protocol

from sentinel.detect.base import OpenAlert
from sentinel.detect.threshold.state import ThresholdState
from sentinel.model import Batch, Event, IntArray, JsonValue


class Mode(Protocol):
    name: str  # the config's `mode`: "day" | "pace" | "rolling"
    hourly: bool  # keeps each day's counts by wall-clock hour (the pace profile, the day projection)

    def current(self, state: ThresholdState) -> IntArray:
        """Each series' count that the thresholds judge now (today's, or the last 24 hours')."""
        ...

    def baseline(self, state: ThresholdState, days: list[int]) -> None:
        """What the mode derives from the baseline days, once today's thresholds are set."""
        ...

    def records(self, batch: Batch, s: IntArray, days: IntArray, state: ThresholdState) -> list[Event]:
        """Records of the current day (time order, series `s`): the events they cause, counted in."""
        ...

    def add(self, state: ThresholdState, ts: IntArray, s: IntArray, weight: int) -> None:
        """Counts of the mode's own (beyond the daily and hourly ones): records in, or pending ones out."""
        ...

    def rebuilt(self, state: ThresholdState, hours: IntArray, s: IntArray, counts: IntArray, clock: int) -> None:
        """The mode's own counts from raw hourly buckets (series `s`, `counts` records each), as of `clock`."""
        ...

    def deadlines(self, state: ThresholdState) -> list[int]:
        """Instants before midnight at which time alone changes something."""
        ...

    def at(self, t: int, state: ThresholdState) -> list[Event]:
        """Time reached the deadline `t` (midnight or one of `deadlines`): what that causes."""
        ...

    def live_met(self, state: ThresholdState, x: int, alert: OpenAlert) -> bool:
        """Series x's open alert meets the firing condition now (what the first start hands on)."""
        ...

    def facts(self, state: ThresholdState, x: int, count: int, at: int) -> dict[str, JsonValue]:
        """What the mode adds to an event of series x with `count` at `at`."""
        ...
