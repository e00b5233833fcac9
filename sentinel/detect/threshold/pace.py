"""`mode = "pace"`: today so far against the baseline days' average count by the same time of day.

The expectation is the baseline days' cumulative count by local wall-clock hour (linear inside the
hour), kept as exact integers over a shared denominator, so the comparison at a boundary needs no
float. It fires hours earlier on a morning surge than `day` mode and equals it at midnight. As the
expectation grows with the time of day, an open alert turns unmet by time alone (`t_unmet`, an exact
deadline) and resolves after `resolve_after` unmet; the count starts again from zero at midnight.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np

from sentinel.days import HOUR_US
from sentinel.detect.base import SAMPLES, OpenAlert
from sentinel.detect.baseline import poisson_sf
from sentinel.detect.threshold.core import ThresholdCore
from sentinel.detect.threshold.state import ThresholdState, by_series, grow2
from sentinel.model import US, Batch, Event, IntArray, JsonValue
from sentinel.model import from_datetime as _from_dt


class PaceMode:
    name = "pace"
    hourly = True

    def __init__(self, rule: ThresholdCore) -> None:
        self.rule = rule

    def current(self, state: ThresholdState) -> IntArray:
        assert state.day is not None
        return state.counts[state.day]

    def baseline(self, state: ThresholdState, days: list[int]) -> None:
        state.profile, state.profile_den = self._profile(state, days)

    def _profile(self, state: ThresholdState, days: list[int]) -> tuple[IntArray, int]:
        """The baseline days' cumulative count by each local wall-clock hour, as exact integers over a
        shared denominator (days for a mean, 2 for a median): [series, 25] numerators and that denominator."""
        n_series = len(state.series)
        if not days:
            return np.zeros((n_series, 25), dtype=np.int64), 1
        cums = []
        for d in days:
            got = state.hourly.get(d)
            h = (
                np.zeros((n_series, 24), dtype=np.int64)
                if got is None
                else grow2(got, n_series)[:n_series].astype(np.int64)
            )
            cums.append(np.concatenate([np.zeros((n_series, 1), dtype=np.int64), np.cumsum(h, axis=1)], axis=1))
        stack = np.stack(cums, axis=2)  # [series, 25, days]
        if self.rule.cfg.baseline == "median":
            srt = np.sort(stack, axis=2)
            n = srt.shape[2]
            mid = 2 * srt[:, :, n // 2] if n % 2 else srt[:, :, n // 2 - 1] + srt[:, :, n // 2]
            return np.asarray(mid, dtype=np.int64), 2
        return np.asarray(stack.sum(axis=2), dtype=np.int64), len(days)

    # --- records -------------------------------------------------------------------------------------
    def records(self, batch: Batch, s: IntArray, days: IntArray, state: ThresholdState) -> list[Event]:
        events = self._records(batch, s, state)
        self.rule.add(state, batch.ts, s, days, 1)
        return events

    def _expected(self, state: ThresholdState, ss: IntArray, wall: IntArray) -> tuple[IntArray, int]:
        """Expected count by each record's time of day as an exact fraction En / Ed: the profile linear
        inside the hour, the time of day in whole seconds."""
        h = np.minimum(wall // HOUR_US, 23)
        sec = (wall - h * HOUR_US) // US
        lo = state.profile[ss, h]
        hi = state.profile[ss, h + 1]
        return lo * 3600 + sec * (hi - lo), state.profile_den * 3600

    def _levels(self, count: IntArray, en: IntArray, ed: int) -> IntArray:
        """Exact: count > factor x E  <=>  count x Ed x f.den > f.num x En (no float at the boundary)."""
        rule = self.rule
        f, m, sv = rule.factor, rule.moderate, rule.severe
        mc = rule.cfg.min_count
        floor = f.numerator * en < mc * f.denominator * ed
        fires = (count * ed * f.denominator > f.numerator * en) & (count >= mc)
        by_ratio = (
            1
            + (count * ed * m.denominator >= m.numerator * en).astype(np.int64)
            + (count * ed * sv.denominator >= sv.numerator * en)
        )
        by_count = 2 + (count >= rule.floor_severe).astype(np.int64)
        return np.where(fires, np.where(floor, by_count, by_ratio), 0)

    def _records(self, batch: Batch, s: IntArray, state: ThresholdState) -> list[Event]:
        """The expectation grows with the time of day, so an open alert can turn unmet between two
        records of one batch. The series that matter (reaching a level, or with an open alert) are
        walked record by record, applying those in-between deadlines in order."""
        assert state.day is not None
        rule = self.rule
        max_p = rule.cfg.max_p
        order, ss, _, _, count = by_series(s, state.counts[state.day])
        ts = batch.ts[order]
        wall = rule.cal.wall_seconds_of(ts)
        en, ed = self._expected(state, ss, wall)
        level = self._levels(count, en, ed) if state.warm else np.zeros(len(ss), dtype=np.int64)
        walk = set(np.unique(ss[level > 0]).tolist()) | (set(np.unique(ss).tolist()) & set(state.alerts))
        events: list[Event] = []
        for x in sorted(walk):
            mine = np.flatnonzero(ss == x)
            for j, k in enumerate(mine.tolist()):
                t = int(ts[k])
                events += self._time_passes(state, x, t)
                alert = state.alerts.get(x)
                c, n_k, lv = int(count[k]), int(en[k]), int(level[k])
                e = n_k / ed
                if lv > (int(alert.tier) if alert else 0) and (max_p is None or poisson_sf(c, e) <= max_p):
                    events += rule.raise_alert(
                        state, x, lv, c, t, e, batch.ids[order[mine[max(0, j - SAMPLES + 1) : j + 1]]]
                    )
                    alert = state.alerts[x]
                if alert is None:
                    continue
                if self._met(c, n_k, ed):
                    alert.unmet_since = None
                    state.t_unmet[x] = self._unmet_time(state, x, c, int(wall[k]), t)
                elif alert.unmet_since is None:
                    alert.unmet_since = t
                    state.t_unmet.pop(x, None)
        return events

    def _time_passes(self, state: ThresholdState, x: int, t: int) -> list[Event]:
        """Deadlines of series x that fall at or before t (a record at t comes after them)."""
        alert = state.alerts.get(x)
        if alert is None:
            return []
        tu = state.t_unmet.get(x)
        if alert.unmet_since is None and tu is not None and tu <= t:
            alert.unmet_since = tu
            del state.t_unmet[x]
        if alert.unmet_since is not None and alert.unmet_since + self.rule.resolve_after <= t:
            return [self.rule.resolve(state, x, alert.unmet_since + self.rule.resolve_after, "condition unmet")]
        return []

    def _met(self, count: int, en: int, ed: int) -> bool:
        """Still met: count >= min_count and ratio above resolve_below (no expectation counts as above)."""
        if count < self.rule.cfg.min_count:
            return False
        rb = self.rule.resolve_below
        return en <= 0 or count * ed * rb.denominator > rb.numerator * en

    def _unmet_time(self, state: ThresholdState, x: int, c: int, wall: int, now: int) -> int:
        """The first whole second after `now` at which the expectation reaches c / resolve_below
        (ratio at or below it), exactly; the day's end if it never does."""
        assert state.day is not None
        end = self.rule.cal.day_end(state.day)
        rb = self.rule.resolve_below
        ed = state.profile_den * 3600
        need = c * ed * rb.denominator  # unmet once rb.num x En >= need
        prof = state.profile[x]
        for h in range(min(wall // HOUR_US, 23), 24):
            lo, hi = int(prof[h]), int(prof[h + 1])
            if rb.numerator * hi * 3600 < need:
                continue
            delta = hi - lo
            if rb.numerator * lo * 3600 >= need or delta <= 0:
                sec = 0
            else:  # smallest sec with rb.num x (lo x 3600 + sec x delta) >= need
                sec = -((-(need - rb.numerator * lo * 3600)) // (rb.numerator * delta))
            w = h * HOUR_US + sec * US
            if w <= wall:
                w = wall // US * US + US
            return min(end, self._wall_instant(state.day, w, after=now))
        return end

    def _wall_instant(self, day: int, wall_us: int, after: int) -> int:
        """The instant of a local wall-clock time of `day` that comes after `after` (in a repeated
        daylight-saving hour, the second reading when the first is already past)."""
        cal = self.rule.cal
        d = cal.date_of(day)
        local = datetime(d.year, d.month, d.day) + timedelta(microseconds=wall_us)
        first = _from_dt(local.replace(tzinfo=cal.tz, fold=0))
        if first > after:
            return first
        return max(_from_dt(local.replace(tzinfo=cal.tz, fold=1)), after + 1)

    # --- time ----------------------------------------------------------------------------------------
    def add(self, state: ThresholdState, ts: IntArray, s: IntArray, weight: int) -> None:
        pass  # the hourly counts of the baseline days make the profile

    def rebuilt(self, state: ThresholdState, hours: IntArray, s: IntArray, counts: IntArray, clock: int) -> None:
        pass

    def deadlines(self, state: ThresholdState) -> list[int]:
        return self.rule.unmet_deadlines(state)

    def at(self, t: int, state: ThresholdState) -> list[Event]:
        assert state.day is not None
        rule = self.rule
        events = rule.resolve_unmet(state, t)
        for x, tu in [(x, tu) for x, tu in state.t_unmet.items() if tu <= t]:
            del state.t_unmet[x]
            alert = state.alerts.get(x)
            if alert is not None and alert.unmet_since is None:
                alert.unmet_since = tu
        if t >= rule.cal.day_end(state.day):
            rule.end_day(state)
            state.t_unmet.clear()
            for alert in state.alerts.values():
                if alert.unmet_since is None:
                    alert.unmet_since = t  # the count starts again from zero
        return events + rule.resolve_unmet(state, t)

    def live_met(self, state: ThresholdState, x: int, alert: OpenAlert) -> bool:
        return alert.unmet_since is None

    def facts(self, state: ThresholdState, x: int, count: int, at: int) -> dict[str, JsonValue]:
        return {}
