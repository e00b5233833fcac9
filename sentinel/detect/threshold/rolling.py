"""`mode = "rolling"`: the last 24 local hours (the current hour and the 23 before it) against the
baseline days' daily average.

The window slides at every hour boundary (a deadline): the hour leaving it is taken out and every
open alert is judged again. Records only raise the window, so an alert they leave unmet has been
unmet since it opened; it resolves after `resolve_after` unmet.
"""

from __future__ import annotations

import numpy as np

from sentinel.days import HOUR_US
from sentinel.detect.base import OpenAlert
from sentinel.detect.threshold.core import ThresholdCore
from sentinel.detect.threshold.state import ThresholdState, grow
from sentinel.model import Batch, Event, IntArray, JsonValue


class RollingMode:
    name = "rolling"
    hourly = False

    def __init__(self, rule: ThresholdCore) -> None:
        self.rule = rule

    def current(self, state: ThresholdState) -> IntArray:
        return state.window

    def baseline(self, state: ThresholdState, days: list[int]) -> None:
        pass  # the daily baseline is all it compares with

    def records(self, batch: Batch, s: IntArray, days: IntArray, state: ThresholdState) -> list[Event]:
        events = self.rule.count_records(batch, s, state)
        self.rule.add(state, batch.ts, s, days, 1)
        # records only raise the window: an alert unmet after them has been unmet since it opened
        self._recheck(state, set(np.unique(s).tolist()) & set(state.alerts), int(batch.ts[0]), since_opened=True)
        return events

    def add(self, state: ThresholdState, ts: IntArray, s: IntArray, weight: int) -> None:
        """Records into (or out of) the hours still inside the window, and the window's total."""
        if state.clock is None:
            return
        cal = self.rule.cal
        n = len(state.series)
        hs = cal.hour_starts_of(ts)
        lo = cal.hour_start(max(state.clock, int(ts.max()))) - 24 * HOUR_US
        for h in np.unique(hs).tolist():
            if h <= lo:
                continue
            m = hs == h
            add = weight * np.bincount(s[m], minlength=n)
            state.hours[h] = state.hours.get(h, np.zeros(n, dtype=np.int64)) + add
            state.window = state.window + add

    def rebuilt(self, state: ThresholdState, hours: IntArray, s: IntArray, counts: IntArray, clock: int) -> None:
        n = len(state.series)
        lo = self.rule.cal.hour_start(clock) - 24 * HOUR_US
        state.window = np.zeros(n, dtype=np.int64)
        for h in np.unique(hours[hours > lo]).tolist():
            m = hours == h
            arr = np.bincount(s[m], weights=counts[m], minlength=n).astype(np.int64)
            state.hours[h] = arr
            state.window = state.window + arr

    def deadlines(self, state: ThresholdState) -> list[int]:
        assert state.clock is not None
        return [self.rule.cal.next_hour(state.clock), *self.rule.unmet_deadlines(state)]

    def at(self, t: int, state: ThresholdState) -> list[Event]:
        assert state.day is not None
        rule = self.rule
        events = rule.resolve_unmet(state, t)
        if rule.cal.hour_start(t) == t:
            self._slide(state, t)
        if t >= rule.cal.day_end(state.day):
            rule.end_day(state)
            self._recheck(state, set(state.alerts), t)
        return events + rule.resolve_unmet(state, t)

    def _slide(self, state: ThresholdState, t: int) -> None:
        lo = t - 24 * HOUR_US
        for h in [h for h in state.hours if h <= lo]:
            state.window = state.window - grow(state.hours.pop(h), len(state.window))
        self._recheck(state, set(state.alerts), t)

    def _recheck(self, state: ThresholdState, xs: set[int], now: int, since_opened: bool = False) -> None:
        for x in xs & set(state.alerts):
            alert = state.alerts[x]
            if self._met(state, x):
                alert.unmet_since = None
            elif alert.unmet_since is None:
                alert.unmet_since = max(alert.started, now) if since_opened else now

    def _met(self, state: ThresholdState, x: int) -> bool:
        rule = self.rule
        c = int(state.window[x])
        if c < rule.cfg.min_count:
            return False
        num, den = int(state.base.num[x]), state.base.den
        if num == 0:
            return True  # a null ratio counts as above
        rb = rule.resolve_below
        return c * rb.denominator * den > rb.numerator * num

    def live_met(self, state: ThresholdState, x: int, alert: OpenAlert) -> bool:
        return alert.unmet_since is None

    def facts(self, state: ThresholdState, x: int, count: int, at: int) -> dict[str, JsonValue]:
        return {}
