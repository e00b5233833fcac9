"""`ThresholdRule`: the core (`sentinel.detect.threshold.core`) with its configured mode, and what the
engine needs to save it and put it back.

Saving keeps only what the raw hourly buckets cannot give back: the clock, the open alerts, the pace
deadlines and which Poisson thresholds were settled; restoring rebuilds every count from the buckets
first, so a new or edited rule has its full history at once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from sentinel.config import ThresholdRuleConfig
from sentinel.days import HOUR_US
from sentinel.detect.base import Gauges, OpenAlert, RuleContext, SeriesGauge, Snapshot, resumed
from sentinel.detect.baseline import NEVER
from sentinel.detect.threshold.core import ThresholdCore
from sentinel.detect.threshold.day import DayMode
from sentinel.detect.threshold.mode import Mode
from sentinel.detect.threshold.pace import PaceMode
from sentinel.detect.threshold.rolling import RollingMode
from sentinel.detect.threshold.state import ThresholdState
from sentinel.model import Batch, Buckets, JsonValue, json_int, json_list, json_obj

MODES: dict[str, Callable[[ThresholdCore], Mode]] = {"day": DayMode, "pace": PaceMode, "rolling": RollingMode}


class ThresholdRule(ThresholdCore):
    looks_ahead = True

    def __init__(self, cfg: ThresholdRuleConfig, ctx: RuleContext) -> None:
        super().__init__(cfg, ctx, MODES[cfg.mode])

    @property
    def uses_holidays(self) -> bool:
        return self.cfg.baseline_by == "day_kind"

    # --- persistence -------------------------------------------------------------------------------
    def _key(self, state: ThresholdState, x: int) -> str:
        return "\x1f".join(state.series.labels[x][g] for g in self.cfg.group_by)

    def _admit(self, state: ThresholdState, key: str) -> int:
        return state.series.admit(tuple(key.split("\x1f")) if self.cfg.group_by else ())

    def snapshot(self, state: ThresholdState) -> dict[str, JsonValue]:
        return {
            "clock": state.clock,
            "day": state.day,
            "alerts": {self._key(state, x): a.to_json() for x, a in state.alerts.items()},
            "t_unmet": {self._key(state, x): t for x, t in state.t_unmet.items()},
            "p_done": list[JsonValue](
                sorted(
                    int(x) for x in np.flatnonzero(state.p_done & (state.fire_at < NEVER)) if self.cfg.max_p is not None
                )
            ),
        }

    def restore(self, snap: Mapping[str, JsonValue], series: list[list[str]], buckets: Buckets) -> ThresholdState:
        """Rebuild the counts from raw buckets, then put back what only the snapshot knows."""
        state = self.new_state()
        state.series.restore(series)
        clock, day = snap.get("clock"), snap.get("day")
        if clock is None or day is None:
            return state
        self.rebuild(state, buckets, json_int(clock))
        for key, a in json_obj(snap.get("alerts", {})).items():
            state.alerts[self._admit(state, key)] = OpenAlert.from_json(json_obj(a))
        for key, t in json_obj(snap.get("t_unmet", {})).items():
            state.t_unmet[self._admit(state, key)] = json_int(t)
        self.fit(state)
        for x in map(json_int, json_list(snap.get("p_done", []))):
            if x < len(state.series) and not state.p_done[x]:
                self.settle_p(state, x)
        state.series.changed = False
        return state

    def rebuild(self, state: ThresholdState, buckets: Buckets, clock: int) -> None:
        """Counts of the window days (and today) from the raw hourly buckets, as of `clock`."""
        day = self.cal.day_of(clock)
        start = self.cal.day_start(day - self.window_days)
        state.clock = clock
        sel = buckets.hour_us >= start
        hours, types, chans, counts = (
            buckets.hour_us[sel],
            buckets.type[sel],
            buckets.channel[sel],
            buckets.count[sel],
        )
        keep = np.ones(len(hours), dtype=bool)
        if self.filter.active:
            probe = Batch(np.zeros(len(hours), dtype=np.int64), hours, types.astype(np.int32), chans.astype(np.int32))
            keep = self.filter.mask(probe)
        hours, types, chans, counts = hours[keep], types[keep], chans[keep], counts[keep]
        s = state.series.of_codes(types, chans)
        state.day = day
        self.fit(state)
        days = self.cal.days_of(hours)
        # expand the buckets into weighted adds, one per bucket
        n = len(state.series)
        for d in np.unique(days[days <= day]).tolist():
            m = days == d
            state.counts[d] = np.bincount(s[m], weights=counts[m], minlength=n).astype(np.int64)
            if self.mode.hourly:
                wall = np.minimum(self.cal.wall_seconds_of(hours[m]) // HOUR_US, 23)
                state.hourly[d] = (
                    np.bincount(s[m] * 24 + wall, weights=counts[m], minlength=n * 24).astype(np.int32).reshape(n, 24)
                )
                state.hour_totals[d] = state.hourly[d].sum(axis=0, dtype=np.int64)
        self.mode.rebuilt(state, hours, s, counts, clock)
        self.start_day(state, day)
        state.clock = clock

    def subtract_pending(self, state: ThresholdState) -> None:
        """Take records not yet processed back out of the counts rebuilt from buckets."""
        b = self.filter.apply(state.pending)
        if len(b) == 0 or state.day is None:
            return
        s = state.series.of_batch(b)
        self.fit(state)
        self.add(state, b.ts, s, self.cal.days_of(b.ts), -1)

    def series_view(self, state: ThresholdState) -> list[tuple[dict[str, str], float, float, float, float | None]]:
        """(labels, current, baseline, threshold, ratio) of every series, for the metrics."""
        if state.day is None:
            return []
        self.fit(state)
        cur = self.mode.current(state)
        out = []
        for x, labels in enumerate(state.series.labels):
            b = state.base.value(x)
            thr = float(state.fire_at[x]) if state.fire_at[x] < NEVER else float("nan")
            out.append((labels, float(cur[x]), b, thr, float(cur[x]) / b if b > 0 else None))
        return out

    # --- the engine's `Rule` -----------------------------------------------------------------------
    def series_snapshot(self, state: ThresholdState, force: bool) -> list[list[str]] | None:
        return state.series.changes(force)

    def restore_saved(self, snap: Snapshot, buckets: Buckets) -> ThresholdState:
        return resumed(self.restore(snap.core, snap.series or [], buckets), snap.pending, self.subtract_pending)

    def restore_edited(self, snap: Snapshot, buckets: Buckets, alerts: list[OpenAlert]) -> ThresholdState:
        state = self.new_state()
        if snap.clock is not None:
            self.rebuild(state, buckets, snap.clock)
            resumed(state, snap.pending, self.subtract_pending)  # re-fed as records of the new definition
        group_by = self.cfg.group_by
        keep = {tuple(a.labels.get(g, "") for g in group_by): a for a in alerts if set(a.labels) == set(group_by)}
        for key, alert in keep.items():
            state.alerts[state.series.admit(key)] = alert
        self.fit(state)
        return state

    def rebuilt(self, buckets: Buckets, clock: int) -> ThresholdState:
        state = self.new_state()
        self.rebuild(state, buckets, clock)
        return state

    def gauges(self, state: ThresholdState) -> Gauges:
        return Gauges(folded=state.series.folded, series=[SeriesGauge(*view) for view in self.series_view(state)])
