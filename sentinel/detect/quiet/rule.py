"""`QuietRule`: the quiet rule's core (`sentinel.detect.quiet.core`) and what the engine needs to save
it and put it back.

A snapshot keeps each series' last sign of life and the past days' part of its silence (`last`, `acc`),
and the open alerts; the hourly counts come back from the raw buckets. A series the snapshot does not
know (a new rule) takes the end of its last hour with records as its last sign of life.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from sentinel.days import HOUR_US
from sentinel.detect.base import Gauges, OpenAlert, Snapshot, resumed
from sentinel.detect.quiet.core import QuietCore, QuietState
from sentinel.model import Batch, Buckets, JsonValue, json_float, json_int, json_obj


class QuietRule(QuietCore):
    # --- persistence -------------------------------------------------------------------------------
    def _key(self, state: QuietState, x: int) -> str:
        return "\x1f".join(state.series.labels[x][g] for g in self.cfg.group_by)

    def _admit(self, state: QuietState, key: str) -> int:
        return state.series.admit(tuple(key.split("\x1f")) if self.cfg.group_by else ())

    def snapshot(self, state: QuietState) -> dict[str, JsonValue]:
        return {
            "clock": state.clock,
            "day": state.day,
            "group_by": list[JsonValue](self.cfg.group_by),
            "alerts": {self._key(state, x): a.to_json() for x, a in state.alerts.items()},
            "last": {self._key(state, x): int(state.last[x]) for x in range(len(state.last))},
            "acc": {self._key(state, x): float(state.acc[x]) for x in np.flatnonzero(state.acc).tolist()},
        }

    def restore(self, snap: Mapping[str, JsonValue], series: list[list[str]], buckets: Buckets) -> QuietState:
        state = self.new_state()
        state.series.restore(series)
        clock = snap.get("clock")
        if clock is None or snap.get("day") is None:
            return state
        self.rebuild(state, buckets, json_int(clock), snap)
        return state

    def rebuild(
        self, state: QuietState, buckets: Buckets, clock: int, snap: Mapping[str, JsonValue] | None = None
    ) -> None:
        """Hourly counts of the window from the raw buckets; each series' last sign of life from the
        snapshot, or (a series it does not know: a new rule) the end of its last hour with records."""
        day = self.cal.day_of(clock)
        sel = buckets.hour_us >= self.cal.day_start(day - self.window_days)
        hours, counts = buckets.hour_us[sel], buckets.count[sel]
        probe = Batch(
            np.zeros(len(hours), dtype=np.int64),
            hours,
            buckets.type[sel].astype(np.int32),
            buckets.channel[sel].astype(np.int32),
        )
        keep = self.filter.mask(probe) if self.filter.active else np.ones(len(hours), dtype=bool)
        hours, counts, probe = hours[keep], counts[keep], probe.take(np.flatnonzero(keep))
        s = state.series.of_batch(probe)
        state.clock, state.day = clock, day
        self._fit(state)
        n = len(state.series)
        days = self.cal.days_of(hours)
        for d in np.unique(days[days <= day]).tolist():
            m = days == d
            wall = np.minimum(self.cal.wall_seconds_of(hours[m]) // HOUR_US, 23)
            state.hourly[d] = (
                np.bincount(s[m] * 24 + wall, weights=counts[m], minlength=n * 24).astype(np.int64).reshape(n, 24)
            )
        if len(s):
            seen = np.full(n, -1, dtype=np.int64)
            np.maximum.at(seen, s, hours + HOUR_US)
            state.last = np.where(seen >= 0, np.minimum(seen, clock), state.last)
        snap = snap or {}
        same = snap.get("group_by") == self.cfg.group_by  # else its keys mean other series
        for key, t in json_obj(snap.get("last") or {} if same else {}).items():
            x = self._admit(state, key)
            self._fit(state)
            state.last[x] = json_int(t)
        for key, e in json_obj(snap.get("acc") or {} if same else {}).items():
            x = self._admit(state, key)
            self._fit(state)
            state.acc[x] = json_float(e)
        for key, a in json_obj(snap.get("alerts", {})).items():
            state.alerts[self._admit(state, key)] = OpenAlert.from_json(json_obj(a))
        self._fit(state)
        self._start_day(state, day)
        state.series.changed = False

    def adopt(self, state: QuietState, alerts: list[OpenAlert]) -> None:
        """An edited rule keeps the open alerts of series it still has (no deadline for those)."""
        for alert in alerts:
            state.alerts[state.series.admit(tuple(alert.labels[g] for g in self.cfg.group_by))] = alert
        self._fit(state)
        if state.day is not None and state.clock is not None:
            self._baseline(state)

    def subtract_pending(self, state: QuietState) -> None:
        """Take records not yet processed back out of the hourly counts rebuilt from buckets."""
        b = self.filter.apply(state.pending)
        if len(b) == 0 or state.day is None:
            return
        s = state.series.of_batch(b)
        self._fit(state)
        self._add(state, b.ts, s, self.cal.days_of(b.ts), -1)
        self._baseline(state)

    # --- the engine's `Rule` -----------------------------------------------------------------------
    looks_ahead = False  # a quiet series is told by time alone (its records only resolve): that waits for the horizon

    @property
    def uses_holidays(self) -> bool:
        return self.cfg.baseline_by == "day_kind"

    def series_snapshot(self, state: QuietState, force: bool) -> list[list[str]] | None:
        return state.series.changes(force)

    def restore_saved(self, snap: Snapshot, buckets: Buckets) -> QuietState:
        return resumed(self.restore(snap.core, snap.series or [], buckets), snap.pending, self.subtract_pending)

    def restore_edited(self, snap: Snapshot, buckets: Buckets, alerts: list[OpenAlert]) -> QuietState:
        state = self.new_state()
        if snap.clock is not None:
            self.rebuild(state, buckets, snap.clock, {k: snap.core.get(k) for k in ("group_by", "last", "acc")})
            resumed(state, snap.pending, self.subtract_pending)
        self.adopt(state, [a for a in alerts if set(a.labels) == set(self.cfg.group_by)])
        return state

    def rebuilt(self, buckets: Buckets, clock: int) -> QuietState:
        state = self.new_state()
        self.rebuild(state, buckets, clock)
        return state

    def gauges(self, state: QuietState) -> Gauges:
        return Gauges()  # its series export no gauges (an open alert is the news)
