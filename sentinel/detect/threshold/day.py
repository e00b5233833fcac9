"""`mode = "day"`: today's count so far against the baseline days' daily average.

Thresholds are integers fixed for the day, so a batch is evaluated with a few numpy passes. An alert
carries over midnight and resolves at the 00:00 ending the first full day that never met the firing
condition. Events carry the day's projected final count at the pace of the record
(`sentinel.detect.projection`), from the series' own hourly shape and the whole stream's.
"""

from __future__ import annotations

import numpy as np

from sentinel.detect import projection
from sentinel.detect.base import OpenAlert
from sentinel.detect.threshold.core import ThresholdCore
from sentinel.detect.threshold.state import ThresholdState
from sentinel.model import Batch, Event, IntArray, JsonValue, json_int


class DayMode:
    name = "day"
    hourly = True

    def __init__(self, rule: ThresholdCore) -> None:
        self.rule = rule

    def current(self, state: ThresholdState) -> IntArray:
        assert state.day is not None
        return state.counts[state.day]

    def baseline(self, state: ThresholdState, days: list[int]) -> None:
        # the whole stream's shape of a day, for projections
        state.shape = projection.cumulative([state.hour_totals[d] for d in days if d in state.hour_totals])

    def records(self, batch: Batch, s: IntArray, days: IntArray, state: ThresholdState) -> list[Event]:
        events = self.rule.count_records(batch, s, state)
        self.rule.add(state, batch.ts, s, days, 1)
        return events

    def add(self, state: ThresholdState, ts: IntArray, s: IntArray, weight: int) -> None:
        pass  # the daily and hourly counts are all it judges

    def rebuilt(self, state: ThresholdState, hours: IntArray, s: IntArray, counts: IntArray, clock: int) -> None:
        pass

    def deadlines(self, state: ThresholdState) -> list[int]:
        return []  # only midnight

    def at(self, t: int, state: ThresholdState) -> list[Event]:
        """Midnight: resolve alerts whose day never met the condition (met yesterday: kept a day more)."""
        assert state.day is not None
        rule = self.rule
        if t < rule.cal.day_end(state.day):
            return []
        rule.update_peaks(state)
        events: list[Event] = []
        today = state.counts[state.day]
        for x in sorted(state.alerts):
            alert = state.alerts[x]
            met = state.warm and today[x] >= state.fire_at[x]
            if met and not state.p_done[x]:
                rule.settle_p(state, x)
                met = today[x] >= state.fire_at[x]
            if met:
                alert.extra["met_day"] = state.day
            elif json_int(alert.extra.get("met_day", rule.cal.day_of(alert.started))) < state.day:
                events.append(rule.resolve(state, x, t, "a full day below the threshold"))
        rule.start_day(state, state.day + 1)
        return events

    def live_met(self, state: ThresholdState, x: int, alert: OpenAlert) -> bool:
        """Today's count meets the firing condition (not only yesterday's surge)."""
        assert state.day is not None
        today = state.counts.get(state.day)
        count = int(today[x]) if today is not None and x < len(today) else 0
        met = bool(state.warm and count >= state.fire_at[x])
        if met and not state.p_done[x]:
            self.rule.settle_p(state, x)
            met = bool(count >= state.fire_at[x])
        return met

    def facts(self, state: ThresholdState, x: int, count: int, at: int) -> dict[str, JsonValue]:
        return {"projected": self.projected(state, x, count, at)}

    def projected(self, state: ThresholdState, x: int, count: int, at: int) -> float | None:
        """Today's final count at the pace of the record at `at` (`sentinel.detect.projection`)."""
        assert state.day is not None
        rule = self.rule
        days = rule.baseline_days_of(state.day, rule.ctx.full_days_before(state.day))
        own = projection.cumulative(
            [state.hourly[d][x] for d in days if d in state.hourly and x < len(state.hourly[d])]
        )
        wall = int(rule.cal.wall_seconds_of(np.asarray([at], dtype=np.int64))[0])
        return projection.projected(count, own, state.shape, wall)
