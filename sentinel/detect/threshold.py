"""The threshold rule: "a type's volume passes 1.5 x its daily average".

Modes:
- `day`: today's count so far against the mean (or median) of the previous full days; thresholds are
  integers fixed for the day, so a batch is evaluated with a few numpy passes.
- `rolling`: the last 24 local hours (the current hour and the 23 before it) against the same daily
  baseline; the window slides at every hour boundary (a deadline).
- `pace`: today so far against the baseline days' average count by the same time of day (hourly
  buckets, linear inside the hour): fires hours earlier on a morning surge and equals `day` at midnight.

Tiers only go up while an alert is open; one record crossing several tiers gives one event at the
highest. Day-mode alerts carry over midnight and resolve at the 00:00 ending the first full day that
never met the firing condition; pace and rolling alerts resolve after `resolve_after` unmet.

Baseline days (`baseline_by`): `all` the previous `baseline_days` days; `day_kind` the previous
`baseline_days` days of the same kind (a workday against workdays, a rest day, weekend or public holiday,
against rest days: `holidays` names the calendar), looked for over at most `lookback_days`; `weekday` the
same weekday in each of the last `baseline_weeks` weeks. Monday after a quiet weekend is then compared
with other workdays, not with the weekend.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from sentinel.config import QuietRuleConfig, ThresholdRuleConfig, exact
from sentinel.days import HOUR_US
from sentinel.detect import projection
from sentinel.detect.base import (
    SAMPLES,
    OpenAlert,
    RecordFilter,
    RuleContext,
    event,
    open_alert,
    sample_ids,
    stable_order,
)
from sentinel.detect.baseline import (
    NEVER,
    Baselines,
    above_threshold,
    at_least,
    baselines,
    poisson_sf,
    poisson_threshold,
)
from sentinel.detect.series import SeriesIndex
from sentinel.detect.workdays import Workdays
from sentinel.model import US, Batch, Buckets, Event, EventState, IntArray, Tier
from sentinel.model import from_datetime as _from_dt


def lookback_days(cfg: ThresholdRuleConfig | QuietRuleConfig) -> int:
    """Days of daily counts a rule keeps: enough to find its baseline days of the right kind."""
    if cfg.baseline_by == "weekday":
        return 7 * cfg.baseline_weeks
    if cfg.baseline_by == "day_kind":
        # rest days are about 2 in 7 (more around long holidays): five times as many days finds them
        return min(366, 5 * cfg.baseline_days)
    return cfg.baseline_days


def baseline_days_of(cfg: ThresholdRuleConfig | QuietRuleConfig, day_kind: Callable[[int], str], day: int,
                     available: int) -> list[int]:
    """The full days whose counts make `day`'s baseline, oldest first (`baseline_by`): the last
    `baseline_days`, those of the same kind of day, or the same weekday of the last `baseline_weeks`."""
    n = min(available, lookback_days(cfg))
    if cfg.baseline_by == "weekday":
        return [day - 7 * k for k in range(cfg.baseline_weeks, 0, -1) if 7 * k <= n]
    if cfg.baseline_by == "day_kind":
        kind = day_kind(day)
        same = [d for d in range(day - n, day) if day_kind(d) == kind]
        return same[-cfg.baseline_days:]
    return list(range(day - n, day))


_N = TypeVar("_N", bound=np.generic)


@dataclass(eq=False)
class ThresholdState:
    series: SeriesIndex
    clock: int | None = None
    pending: Batch = field(default_factory=Batch.empty)
    day: int | None = None
    counts: dict[int, IntArray] = field(default_factory=dict)  # day -> count per series
    # pace, day: day -> [series (with room to grow), 24 wall hours]; int32 (an hour's count of one series)
    hourly: dict[int, npt.NDArray[np.int32]] = field(default_factory=dict)
    shared_hourly: set[int] = field(default_factory=set)  # days whose hourly array a fork shares: copy first
    hour_totals: dict[int, IntArray] = field(default_factory=dict)  # day: every series' count by wall hour
    hours: dict[int, IntArray] = field(default_factory=dict)  # rolling: hour start -> count per series
    window: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # rolling: last 24 h
    base: Baselines = field(default_factory=lambda: Baselines(np.zeros(0, dtype=np.int64), 1))
    fire_at: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    mod_at: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    sev_at: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    p_done: npt.NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, dtype=bool))
    profile: IntArray = field(default_factory=lambda: np.zeros((0, 25), dtype=np.int64))  # pace, x profile_den
    profile_den: int = 1
    shape: IntArray = field(default_factory=lambda: np.zeros(25, dtype=np.int64))  # day: all series, cumulative
    warm: bool = False  # enough history to alert today
    alerts: dict[int, OpenAlert] = field(default_factory=dict)
    t_unmet: dict[int, int] = field(default_factory=dict)  # pace: open & met alert turns unmet by time here
    late: int = 0


class ThresholdRule:
    kind = "threshold"

    def __init__(self, cfg: ThresholdRuleConfig, ctx: RuleContext) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.ctx = ctx
        self.cal = ctx.calendar
        self.filter = RecordFilter(cfg.where, cfg.where_not, ctx.vocab)
        self.factor = exact(cfg.factor)
        self.moderate = exact(cfg.tiers.moderate)
        self.severe = exact(cfg.tiers.severe)
        self.resolve_below = exact(cfg.resolve_below) if cfg.resolve_below is not None else self.factor
        self.resolve_after = int(cfg.resolve_after.total_seconds() * US)
        # floor-decided series: moderate at min_count, severe at (severe / moderate) x min_count
        floor_sev = self.severe / self.moderate * cfg.min_count
        self.floor_severe = -((-floor_sev.numerator) // floor_sev.denominator)
        self.window_days = lookback_days(cfg)
        self.workdays = ctx.workdays if ctx.workdays is not None else Workdays(None)
        # hourly counts per day: the pace profile, and in day mode the projection of the day
        self.hourly = cfg.mode in ("pace", "day")

    # --- state -------------------------------------------------------------------------------------
    def new_state(self) -> ThresholdState:
        return ThresholdState(SeriesIndex(self.cfg.group_by, self.ctx.vocab, self.cfg.max_series))

    def fork(self, state: ThresholdState) -> ThresholdState:
        """A copy to run ahead on: arrays and alerts copied, the series index forked."""
        return ThresholdState(
            series=state.series.fork(), clock=state.clock, pending=state.pending, day=state.day,
            counts={d: a.copy() for d, a in state.counts.items()},
            # hourly arrays are shared: the fork copies one before it first changes it (see _add)
            hourly=dict(state.hourly), shared_hourly=set(state.hourly),
            hour_totals={d: a.copy() for d, a in state.hour_totals.items()},
            hours={h: a.copy() for h, a in state.hours.items()}, window=state.window.copy(),
            base=Baselines(state.base.num.copy(), state.base.den), fire_at=state.fire_at.copy(),
            mod_at=state.mod_at.copy(), sev_at=state.sev_at.copy(), p_done=state.p_done.copy(),
            profile=state.profile.copy(), profile_den=state.profile_den, shape=state.shape, warm=state.warm,
            alerts={x: a.copy() for x, a in state.alerts.items()}, t_unmet=dict(state.t_unmet), late=state.late)

    def _init(self, state: ThresholdState, at: int) -> None:
        if state.clock is None:
            start = self.ctx.coverage_start_us
            state.clock = min(at, start) if start is not None else at
            self._start_day(state, self.cal.day_of(state.clock))

    def _fit(self, state: ThresholdState) -> None:
        """Grow the per-series arrays to the number of series (new series start at zero)."""
        n = len(state.series)
        old = len(state.fire_at)
        if old == n:
            return
        for day, arr in state.counts.items():
            state.counts[day] = _grow(arr, n)
        # hourly arrays grow when counted into (_add), not here: series keep appearing in a long replay
        for h, arr in state.hours.items():
            state.hours[h] = _grow(arr, n)
        state.window = _grow(state.window, n)
        num = _grow(state.base.num, n)
        state.base = Baselines(num, state.base.den)
        state.profile = (np.concatenate([state.profile, np.zeros((n - old, 25), dtype=np.int64)])
                         if n > old else state.profile)
        fire, mod, sev, _ = self._thresholds(Baselines(np.zeros(n - old, dtype=np.int64), state.base.den),
                                             state.warm)
        state.fire_at = np.concatenate([state.fire_at, fire])
        state.mod_at = np.concatenate([state.mod_at, mod])
        state.sev_at = np.concatenate([state.sev_at, sev])
        state.p_done = np.concatenate([state.p_done, np.full(n - old, self.cfg.max_p is None)])

    def _thresholds(self, b: Baselines, warm: bool) -> tuple[IntArray, IntArray, IntArray, npt.NDArray[np.bool_]]:
        n = len(b.num)
        if not warm:
            never = np.full(n, NEVER, dtype=np.int64)
            return never, never.copy(), never.copy(), np.zeros(n, dtype=bool)
        mc = self.cfg.min_count
        fire = np.maximum(above_threshold(b, self.factor), mc)
        floor = self.factor.numerator * b.num < mc * self.factor.denominator * b.den
        mod = np.where(floor, fire, np.maximum(fire, at_least(b, self.moderate)))
        sev = np.where(floor, np.maximum(fire, self.floor_severe), np.maximum(mod, at_least(b, self.severe)))
        return fire, mod, sev, floor

    def _start_day(self, state: ThresholdState, day: int) -> None:
        """Local midnight: a new day to count, and its baselines and thresholds."""
        state.day = day
        self._fit(state)
        for d in [d for d in state.counts if d < day - self.window_days]:
            del state.counts[d]
            state.hourly.pop(d, None)
            state.hour_totals.pop(d, None)
        n_series = len(state.series)
        state.counts.setdefault(day, np.zeros(n_series, dtype=np.int64))
        if self.hourly:
            state.hourly.setdefault(day, np.zeros((n_series, 24), dtype=np.int32))
        self._baseline(state)

    def _baseline(self, state: ThresholdState) -> None:
        """Baselines and thresholds of the current day from the previous days' counts. Called at
        midnight, and again when late records change a baseline day (so baselines stay right)."""
        assert state.day is not None
        day = state.day
        n_series = len(state.series)
        available = self.ctx.full_days_before(day)
        state.warm = available >= self.cfg.min_history_days  # with no day yet, every series is floor-decided
        days = self.baseline_days_of(day, available)
        daily = (np.stack([_grow(state.counts.get(d, np.zeros(0, dtype=np.int64)), n_series) for d in days],
                          axis=1)
                 if days else np.zeros((n_series, 0), dtype=np.int64))
        state.base = baselines(daily, self.cfg.baseline)
        state.fire_at, state.mod_at, state.sev_at, _ = self._thresholds(state.base, state.warm)
        state.p_done = np.full(n_series, self.cfg.max_p is None)
        if self.cfg.mode == "pace":
            state.profile, state.profile_den = self._profile(state, days)
        if self.cfg.mode == "day":  # the whole stream's shape of a day, for projections
            state.shape = projection.cumulative([state.hour_totals[d] for d in days if d in state.hour_totals])

    def baseline_days_of(self, day: int, available: int) -> list[int]:
        """The full days whose counts make `day`'s baseline, oldest first."""
        return baseline_days_of(self.cfg, self.day_kind, day, available)

    def day_kind(self, day: int) -> str:
        return self.workdays.kind(self.cal.date_of(day))

    def _baseline_facts(self, day: int | None) -> dict[str, Any]:
        """What events say about their baseline days (only when they are not simply the last days)."""
        if self.cfg.baseline_by == "all" or day is None:
            return {}
        facts: dict[str, Any] = {"baseline_by": self.cfg.baseline_by}
        if self.cfg.baseline_by == "day_kind":
            facts["day_kind"] = self.day_kind(day)
        else:
            facts["weekday"] = self.cal.date_of(day).strftime("%A")
        return facts

    def _profile(self, state: ThresholdState, days: list[int]) -> tuple[IntArray, int]:
        """The baseline days' cumulative count by each local wall-clock hour, as exact integers over a
        shared denominator (days for a mean, 2 for a median): [series, 25] numerators and that denominator."""
        n_series = len(state.series)
        if not days:
            return np.zeros((n_series, 25), dtype=np.int64), 1
        cums = []
        for d in days:
            got = state.hourly.get(d)
            h = (np.zeros((n_series, 24), dtype=np.int64) if got is None
                 else _grow2(got, n_series)[:n_series].astype(np.int64))
            cums.append(np.concatenate([np.zeros((n_series, 1), dtype=np.int64), np.cumsum(h, axis=1)], axis=1))
        stack = np.stack(cums, axis=2)  # [series, 25, days]
        if self.cfg.baseline == "median":
            srt = np.sort(stack, axis=2)
            n = srt.shape[2]
            mid = 2 * srt[:, :, n // 2] if n % 2 else srt[:, :, n // 2 - 1] + srt[:, :, n // 2]
            return np.asarray(mid, dtype=np.int64), 2
        return np.asarray(stack.sum(axis=2), dtype=np.int64), len(days)

    # --- records -----------------------------------------------------------------------------------
    def process(self, batch: Batch, state: ThresholdState) -> list[Event]:
        batch = self.filter.apply(batch)
        if len(batch) == 0:
            return []
        self._init(state, int(batch.ts[0]))
        assert state.day is not None
        s = state.series.of_batch(batch)
        self._fit(state)
        days = self.cal.days_of(batch.ts)
        late = days < state.day
        if late.any():
            state.late += int(late.sum())
            self._add(state, batch.ts[late], s[late], days[late], 1)
            if (days[late] >= state.day - self.window_days).any():
                self._baseline(state)  # a baseline day changed: today's thresholds follow it
            keep = ~late
            batch, s, days = batch.take(np.flatnonzero(keep)), s[keep], days[keep]
            if len(batch) == 0:
                return []
        if self.cfg.mode == "pace":
            events = self._pace_records(batch, s, state)
        else:
            events = self._count_records(batch, s, state)
        self._add(state, batch.ts, s, days, 1)
        if self.cfg.mode == "rolling":
            # records only raise the window: an alert unmet after them has been unmet since it opened
            self._recheck_rolling(state, set(np.unique(s).tolist()) & set(state.alerts), int(batch.ts[0]),
                                  since_opened=True)
        return events

    def _current(self, state: ThresholdState) -> IntArray:
        assert state.day is not None
        return state.window if self.cfg.mode == "rolling" else state.counts[state.day]

    def _count_records(self, batch: Batch, s: IntArray, state: ThresholdState) -> list[Event]:
        """Day and rolling modes: integer thresholds fixed for the day."""
        if not state.warm:
            return []
        order, ss, first, group_start, count = _by_series(s, self._current(state))
        cur = np.zeros(len(state.series), dtype=np.int64)
        for idx, alert in state.alerts.items():
            cur[idx] = int(alert.tier)
        for _ in range(3):  # at most one extra pass after the Poisson thresholds are settled
            level = self._levels(count, ss, state)
            prev = np.where(first, 0, np.roll(level, 1))
            cand = np.flatnonzero(level > np.maximum(prev, cur[ss]))
            unsettled = [int(x) for x in np.unique(ss[cand]) if not state.p_done[x]]
            if not unsettled:
                break
            for x in unsettled:
                self._settle_p(state, x)
        events: list[Event] = []
        for pos in cand[np.argsort(order[cand], kind="stable")].tolist():
            x = int(ss[pos])
            lo = max(int(group_start[pos]), pos - SAMPLES + 1)
            events += self._raise(state, x, int(level[pos]), int(count[pos]), int(batch.ts[order[pos]]),
                                  state.base.value(x), batch.ids[order[lo:pos + 1]])
        return events

    def _levels(self, count: IntArray, ss: IntArray, state: ThresholdState) -> IntArray:
        fire, mod, sev = state.fire_at[ss], state.mod_at[ss], state.sev_at[ss]
        return np.where(count >= fire, 1 + (count >= mod).astype(np.int64) + (count >= sev), 0)

    def _settle_p(self, state: ThresholdState, x: int) -> None:
        """Raise the firing count of series x to where the Poisson tail is <= max_p (lazily, per day)."""
        assert self.cfg.max_p is not None
        lam = state.base.value(x)
        fire = poisson_threshold(int(state.fire_at[x]), lam, self.cfg.max_p)
        state.fire_at[x] = fire
        state.mod_at[x] = max(int(state.mod_at[x]), fire)
        state.sev_at[x] = max(int(state.sev_at[x]), fire)
        state.p_done[x] = True

    def _raise(self, state: ThresholdState, x: int, level: int, value: float, at: int,
               baseline: float, samples: npt.NDArray[Any]) -> list[Event]:
        """Open the series' alert or move it up a tier."""
        ratio = value / baseline if baseline > 0 else None
        p = poisson_sf(round(value), baseline) if self.cfg.max_p is not None else None
        alert = state.alerts.get(x)
        tier = Tier(min(level, 3))
        if alert is None:
            alert = open_alert(self.name, state.series.labels[x], at, tier, value, baseline)
            state.alerts[x] = alert
            st = EventState.FIRING
        else:
            if tier <= alert.tier:
                return []
            alert.tier = tier
            st = EventState.UPGRADED
        alert.value, alert.baseline = value, baseline
        alert.peak = max(alert.peak, value)
        alert.unmet_since = None
        facts: dict[str, Any] = {"mode": self.cfg.mode, **self._baseline_facts(state.day)}
        if self.cfg.mode == "day":
            facts["projected"] = self.projected(state, x, round(value), at)
        return [event(self.name, self.kind, st, alert, at, value, baseline, _round(ratio), p,
                      {**facts, "samples": sample_ids(samples)})]

    def projected(self, state: ThresholdState, x: int, count: int, at: int) -> float | None:
        """Day mode: today's final count at the pace of the record at `at` (`sentinel.detect.projection`)."""
        assert state.day is not None
        days = self.baseline_days_of(state.day, self.ctx.full_days_before(state.day))
        own = projection.cumulative([state.hourly[d][x] for d in days
                                     if d in state.hourly and x < len(state.hourly[d])])
        wall = int(self.cal.wall_seconds_of(np.asarray([at], dtype=np.int64))[0])
        return projection.projected(count, own, state.shape, wall)

    # --- pace ----------------------------------------------------------------------------------------
    def _expected(self, state: ThresholdState, ss: IntArray, wall: IntArray) -> tuple[IntArray, int]:
        """Expected count by each record's time of day as an exact fraction En / Ed: the profile linear
        inside the hour, the time of day in whole seconds."""
        h = np.minimum(wall // HOUR_US, 23)
        sec = (wall - h * HOUR_US) // US
        lo = state.profile[ss, h]
        hi = state.profile[ss, h + 1]
        return lo * 3600 + sec * (hi - lo), state.profile_den * 3600

    def _pace_levels(self, count: IntArray, en: IntArray, ed: int) -> IntArray:
        """Exact: count > factor x E  <=>  count x Ed x f.den > f.num x En (no float at the boundary)."""
        f, m, sv = self.factor, self.moderate, self.severe
        mc = self.cfg.min_count
        floor = f.numerator * en < mc * f.denominator * ed
        fires = (count * ed * f.denominator > f.numerator * en) & (count >= mc)
        by_ratio = (1 + (count * ed * m.denominator >= m.numerator * en).astype(np.int64)
                    + (count * ed * sv.denominator >= sv.numerator * en))
        by_count = 2 + (count >= self.floor_severe).astype(np.int64)
        return np.where(fires, np.where(floor, by_count, by_ratio), 0)

    def _pace_records(self, batch: Batch, s: IntArray, state: ThresholdState) -> list[Event]:
        """Pace mode: the expectation grows with the time of day, so an open alert can turn unmet
        between two records of one batch. The series that matter (reaching a level, or with an open
        alert) are walked record by record, applying those in-between deadlines in order."""
        assert state.day is not None
        order, ss, _, _, count = _by_series(s, state.counts[state.day])
        ts = batch.ts[order]
        wall = self.cal.wall_seconds_of(ts)
        en, ed = self._expected(state, ss, wall)
        level = self._pace_levels(count, en, ed) if state.warm else np.zeros(len(ss), dtype=np.int64)
        walk = set(np.unique(ss[level > 0]).tolist()) | (set(np.unique(ss).tolist()) & set(state.alerts))
        events: list[Event] = []
        for x in sorted(walk):
            mine = np.flatnonzero(ss == x)
            for j, k in enumerate(mine.tolist()):
                t = int(ts[k])
                events += self._pace_time_passes(state, x, t)
                alert = state.alerts.get(x)
                c, n_k, lv = int(count[k]), int(en[k]), int(level[k])
                e = n_k / ed
                if lv > (int(alert.tier) if alert else 0) and (
                        self.cfg.max_p is None or poisson_sf(c, e) <= self.cfg.max_p):
                    events += self._raise(state, x, lv, c, t, e,
                                          batch.ids[order[mine[max(0, j - SAMPLES + 1):j + 1]]])
                    alert = state.alerts[x]
                if alert is None:
                    continue
                if self._pace_met(c, n_k, ed):
                    alert.unmet_since = None
                    state.t_unmet[x] = self._pace_unmet_time(state, x, c, int(wall[k]), t)
                elif alert.unmet_since is None:
                    alert.unmet_since = t
                    state.t_unmet.pop(x, None)
        return events

    def _pace_time_passes(self, state: ThresholdState, x: int, t: int) -> list[Event]:
        """Deadlines of series x that fall at or before t (a record at t comes after them)."""
        alert = state.alerts.get(x)
        if alert is None:
            return []
        tu = state.t_unmet.get(x)
        if alert.unmet_since is None and tu is not None and tu <= t:
            alert.unmet_since = tu
            del state.t_unmet[x]
        if alert.unmet_since is not None and alert.unmet_since + self.resolve_after <= t:
            return [self._resolve(state, x, alert.unmet_since + self.resolve_after, "condition unmet")]
        return []

    def _pace_met(self, count: int, en: int, ed: int) -> bool:
        """Still met: count >= min_count and ratio above resolve_below (no expectation counts as above)."""
        if count < self.cfg.min_count:
            return False
        rb = self.resolve_below
        return en <= 0 or count * ed * rb.denominator > rb.numerator * en

    def _pace_unmet_time(self, state: ThresholdState, x: int, c: int, wall: int, now: int) -> int:
        """The first whole second after `now` at which the expectation reaches c / resolve_below
        (ratio at or below it), exactly; the day's end if it never does."""
        assert state.day is not None
        end = self.cal.day_end(state.day)
        rb = self.resolve_below
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
        from datetime import datetime, timedelta

        d = self.cal.date_of(day)
        local = datetime(d.year, d.month, d.day) + timedelta(microseconds=wall_us)
        first = _from_dt(local.replace(tzinfo=self.cal.tz, fold=0))
        if first > after:
            return first
        return max(_from_dt(local.replace(tzinfo=self.cal.tz, fold=1)), after + 1)

    # --- rolling -------------------------------------------------------------------------------------
    def _recheck_rolling(self, state: ThresholdState, xs: set[int], now: int, since_opened: bool = False) -> None:
        for x in xs & set(state.alerts):
            alert = state.alerts[x]
            if self._rolling_met(state, x):
                alert.unmet_since = None
            elif alert.unmet_since is None:
                alert.unmet_since = max(alert.started, now) if since_opened else now

    def _rolling_met(self, state: ThresholdState, x: int) -> bool:
        c = int(state.window[x])
        if c < self.cfg.min_count:
            return False
        num, den = int(state.base.num[x]), state.base.den
        if num == 0:
            return True  # a null ratio counts as above
        rb = self.resolve_below
        return c * rb.denominator * den > rb.numerator * num

    # --- counting ------------------------------------------------------------------------------------
    def _add(self, state: ThresholdState, ts: IntArray, s: IntArray, days: IntArray, weight: int) -> None:
        """Add records (weight 1) or take pending ones back out (weight -1) of every count kept."""
        if len(ts) == 0:
            return
        n = len(state.series)
        one_day = int(days.min()) == int(days.max())  # the usual batch: no mask, no sort for unique
        for d in ([int(days[0])] if one_day else np.unique(days).tolist()):
            m: npt.NDArray[np.bool_] | slice = slice(None) if one_day else days == d
            if d not in state.counts:
                if state.day is None or d < state.day - self.window_days or d > state.day:
                    continue
                state.counts[d] = np.zeros(n, dtype=np.int64)
            state.counts[d] += weight * np.bincount(s[m], minlength=n)
            if self.hourly:
                hours = self._wall_hours(d, ts[m])
                h = state.hourly.get(d)
                if h is None:
                    h = state.hourly[d] = np.zeros((n, 24), dtype=np.int32)
                elif h.shape[0] < n:  # room to grow into, so new series do not copy it every batch
                    h = state.hourly[d] = _grow2(h, max(n, 2 * h.shape[0]))
                    state.shared_hourly.discard(d)
                elif d in state.shared_hourly:  # the state this one was forked from holds it too
                    h = state.hourly[d] = h.copy()
                    state.shared_hourly.discard(d)
                totals = state.hour_totals.get(d)
                add_totals = weight * np.bincount(hours, minlength=24)
                state.hour_totals[d] = add_totals if totals is None else totals + add_totals
                np.add.at(h.reshape(-1), s[m] * 24 + hours, np.int32(weight))  # flat, typed: the fast path
        if self.cfg.mode == "rolling" and state.clock is not None:
            hs = self.cal.hour_starts_of(ts)
            lo = self.cal.hour_start(max(state.clock, int(ts.max()))) - 24 * HOUR_US
            for h in np.unique(hs).tolist():
                if h <= lo:
                    continue
                m = hs == h
                add = weight * np.bincount(s[m], minlength=n)
                state.hours[h] = state.hours.get(h, np.zeros(n, dtype=np.int64)) + add
                state.window = state.window + add

    def _wall_hours(self, day: int, ts: IntArray) -> IntArray:
        """Local wall-clock hour (0-23) of instants of `day`: hours since midnight on a 24-hour day,
        the zone's offsets on a day with a daylight-saving change."""
        start = self.cal.day_start(day)
        if self.cal.day_end(day) - start == 24 * HOUR_US:
            return np.minimum((ts - start) // HOUR_US, 23)
        return np.minimum(self.cal.wall_seconds_of(ts) // HOUR_US, 23)

    # --- time --------------------------------------------------------------------------------------
    def deadline(self, state: ThresholdState) -> int | None:
        if state.clock is None or state.day is None:
            return None
        times = [self.cal.day_end(state.day)]
        if self.cfg.mode == "rolling":
            times.append(self.cal.next_hour(state.clock))
        if self.cfg.mode in ("rolling", "pace"):
            for x, alert in state.alerts.items():
                if alert.unmet_since is not None:
                    times.append(alert.unmet_since + self.resolve_after)
                elif x in state.t_unmet:
                    times.append(state.t_unmet[x])
        return max(min(times), state.clock + 1) if times else None

    def advance(self, now: int, state: ThresholdState) -> tuple[list[Event], int | None]:
        if state.clock is None:
            self._init(state, now)
        assert state.clock is not None and state.day is not None
        events: list[Event] = []
        while True:
            d = self.deadline(state)
            if d is None or d > now:
                break
            events += self._at(d, state)
        state.clock = max(state.clock, now)
        return events, self.deadline(state)

    def _at(self, t: int, state: ThresholdState) -> list[Event]:
        """Everything that happens at instant t (a deadline)."""
        assert state.day is not None and state.clock is not None
        events: list[Event] = []
        state.clock = t
        mode = self.cfg.mode
        if mode in ("rolling", "pace"):
            events += self._resolve_unmet(state, t)
        if mode == "rolling" and self.cal.hour_start(t) == t:
            self._slide(state, t)
        if mode == "pace":
            for x, tu in [(x, tu) for x, tu in state.t_unmet.items() if tu <= t]:
                del state.t_unmet[x]
                alert = state.alerts.get(x)
                if alert is not None and alert.unmet_since is None:
                    alert.unmet_since = tu
        if t >= self.cal.day_end(state.day):
            events += self._end_day(state, t)
            if mode == "pace":
                state.t_unmet.clear()
                for alert in state.alerts.values():
                    if alert.unmet_since is None:
                        alert.unmet_since = t  # the count starts again from zero
            if mode == "rolling":
                self._recheck_rolling(state, set(state.alerts), t)
        if mode in ("rolling", "pace"):
            events += self._resolve_unmet(state, t)
        return events

    def _resolve_unmet(self, state: ThresholdState, t: int) -> list[Event]:
        events = []
        for x in sorted(state.alerts):
            alert = state.alerts[x]
            if alert.unmet_since is not None and alert.unmet_since + self.resolve_after <= t:
                events.append(self._resolve(state, x, alert.unmet_since + self.resolve_after, "condition unmet"))
        return events

    def _resolve(self, state: ThresholdState, x: int, at: int, reason: str) -> Event:
        alert = state.alerts.pop(x)
        state.t_unmet.pop(x, None)
        return event(self.name, self.kind, EventState.RESOLVED, alert, at, alert.value, alert.baseline,
                     _round(alert.value / alert.baseline) if alert.baseline else None, None,
                     {"mode": self.cfg.mode, "reason": reason, "peak": alert.peak,
                      "duration_s": (at - alert.started) // US})

    def _slide(self, state: ThresholdState, t: int) -> None:
        lo = t - 24 * HOUR_US
        for h in [h for h in state.hours if h <= lo]:
            state.window = state.window - _grow(state.hours.pop(h), len(state.window))
        self._recheck_rolling(state, set(state.alerts), t)

    def _end_day(self, state: ThresholdState, t: int) -> list[Event]:
        """Local midnight: resolve day-mode alerts whose day never met the condition; next day's baseline."""
        assert state.day is not None
        events: list[Event] = []
        today = state.counts[state.day]
        current = self._current(state)
        for x in sorted(state.alerts):
            alert = state.alerts[x]
            alert.peak = max(alert.peak, float(current[x]))
            if self.cfg.mode != "day":
                continue
            met = state.warm and today[x] >= state.fire_at[x]
            if met and not state.p_done[x]:
                self._settle_p(state, x)
                met = today[x] >= state.fire_at[x]
            if met:
                alert.extra["met_day"] = state.day
            elif alert.extra.get("met_day", self.cal.day_of(alert.started)) < state.day:
                events.append(self._resolve(state, x, t, "a full day below the threshold"))
        self._start_day(state, state.day + 1)
        return events

    # --- what is live --------------------------------------------------------------------------------
    def live(self, state: ThresholdState) -> list[tuple[OpenAlert, dict[str, Any]]]:
        """Open alerts whose series meets the firing condition now: in `day` mode today's count (an alert
        carried over midnight from yesterday's surge is not live until today meets it too), in `pace` and
        `rolling` mode the condition is not unmet. What the first start hands on."""
        if state.day is None:
            return []
        out: list[tuple[OpenAlert, dict[str, Any]]] = []
        today = state.counts.get(state.day)
        for x in sorted(state.alerts):
            alert = state.alerts[x]
            if self.cfg.mode == "day":
                count = int(today[x]) if today is not None and x < len(today) else 0
                met = state.warm and count >= state.fire_at[x]
                if met and not state.p_done[x]:
                    self._settle_p(state, x)
                    met = count >= state.fire_at[x]
            else:
                met = alert.unmet_since is None
            if not met:
                continue
            facts: dict[str, Any] = {"mode": self.cfg.mode, **self._baseline_facts(state.day)}
            if self.cfg.mode == "day" and today is not None and state.clock is not None:
                facts["projected"] = self.projected(state, x, int(today[x]), state.clock)
            out.append((alert, facts))
        return out

    # --- persistence -------------------------------------------------------------------------------
    def snapshot(self, state: ThresholdState) -> dict[str, Any]:
        return {
            "clock": state.clock,
            "day": state.day,
            "alerts": {"\x1f".join(state.series.labels[x][g] for g in self.cfg.group_by): a.to_json()
                       for x, a in state.alerts.items()},
            "t_unmet": {"\x1f".join(state.series.labels[x][g] for g in self.cfg.group_by): t
                        for x, t in state.t_unmet.items()},
            "p_done": sorted(int(x) for x in np.flatnonzero(state.p_done & (state.fire_at < NEVER))
                             if self.cfg.max_p is not None),
        }

    def restore(self, snap: dict[str, Any], series: list[list[str]], buckets: Buckets) -> ThresholdState:
        """Rebuild the counts from raw buckets, then put back what only the snapshot knows."""
        state = self.new_state()
        state.series.restore(series)
        clock, day = snap.get("clock"), snap.get("day")
        if clock is None or day is None:
            return state
        self.rebuild(state, buckets, clock)
        for key, a in snap.get("alerts", {}).items():
            x = state.series.admit(tuple(key.split("\x1f")) if self.cfg.group_by else ())
            state.alerts[x] = OpenAlert.from_json(a)
        for key, t in snap.get("t_unmet", {}).items():
            state.t_unmet[state.series.admit(tuple(key.split("\x1f")) if self.cfg.group_by else ())] = int(t)
        self._fit(state)
        for x in snap.get("p_done", []):
            if x < len(state.series) and not state.p_done[x]:
                self._settle_p(state, int(x))
        state.series.changed = False
        return state

    def rebuild(self, state: ThresholdState, buckets: Buckets, clock: int) -> None:
        """Counts of the window days (and today) from the raw hourly buckets, as of `clock`."""
        day = self.cal.day_of(clock)
        start = self.cal.day_start(day - self.window_days)
        state.clock = clock
        sel = buckets.hour_us >= start
        hours, types, chans, counts = (buckets.hour_us[sel], buckets.type[sel], buckets.channel[sel],
                                       buckets.count[sel])
        keep = np.ones(len(hours), dtype=bool)
        if self.filter.active:
            probe = Batch(np.zeros(len(hours), dtype=np.int64), hours, types.astype(np.int32),
                          chans.astype(np.int32))
            keep = self.filter.mask(probe)
        hours, types, chans, counts = hours[keep], types[keep], chans[keep], counts[keep]
        s = state.series.of_codes(types, chans)
        state.day = day
        self._fit(state)
        days = self.cal.days_of(hours)
        # expand the buckets into weighted adds, one per bucket
        n = len(state.series)
        for d in np.unique(days[days <= day]).tolist():
            m = days == d
            state.counts[d] = np.bincount(s[m], weights=counts[m], minlength=n).astype(np.int64)
            if self.hourly:
                wall = np.minimum(self.cal.wall_seconds_of(hours[m]) // HOUR_US, 23)
                state.hourly[d] = np.bincount(s[m] * 24 + wall, weights=counts[m],
                                              minlength=n * 24).astype(np.int32).reshape(n, 24)
                state.hour_totals[d] = state.hourly[d].sum(axis=0, dtype=np.int64)
        if self.cfg.mode == "rolling":
            lo = self.cal.hour_start(clock) - 24 * HOUR_US
            state.window = np.zeros(n, dtype=np.int64)
            for h in np.unique(hours[hours > lo]).tolist():
                m = hours == h
                arr = np.bincount(s[m], weights=counts[m], minlength=n).astype(np.int64)
                state.hours[h] = arr
                state.window = state.window + arr
        self._start_day(state, day)
        state.clock = clock

    def subtract_pending(self, state: ThresholdState) -> None:
        """Take records not yet processed back out of the counts rebuilt from buckets."""
        b = self.filter.apply(state.pending)
        if len(b) == 0 or state.day is None:
            return
        s = state.series.of_batch(b)
        self._fit(state)
        self._add(state, b.ts, s, self.cal.days_of(b.ts), -1)

    def series_view(self, state: ThresholdState) -> list[tuple[dict[str, str], float, float, float, float | None]]:
        """(labels, current, baseline, threshold, ratio) of every series, for the metrics."""
        if state.day is None:
            return []
        self._fit(state)
        cur = self._current(state)
        out = []
        for x, labels in enumerate(state.series.labels):
            b = state.base.value(x)
            thr = float(state.fire_at[x]) if state.fire_at[x] < NEVER else float("nan")
            out.append((labels, float(cur[x]), b, thr, float(cur[x]) / b if b > 0 else None))
        return out


def _by_series(s: IntArray, before: IntArray) -> tuple[IntArray, IntArray, npt.NDArray[np.bool_], IntArray, IntArray]:
    """Records grouped by series, time order kept inside each group: (order, series in that order,
    first-of-group flags, each record's group start, the series' count once that record is counted)."""
    order = stable_order(s)
    ss = s[order]
    first = np.ones(len(ss), dtype=bool)
    first[1:] = ss[1:] != ss[:-1]
    starts = np.flatnonzero(first)
    group_start = np.repeat(starts, np.diff(np.append(starts, len(ss))))
    count = before[ss] + (np.arange(len(ss)) - group_start) + 1
    return order, ss, first, group_start, count


def _grow(arr: IntArray, n: int) -> IntArray:
    if len(arr) >= n:
        return arr
    return np.concatenate([arr, np.zeros(n - len(arr), dtype=arr.dtype)])


def _grow2(arr: npt.NDArray[_N], n: int) -> npt.NDArray[_N]:
    if arr.shape[0] >= n:
        return arr
    return np.concatenate([arr, np.zeros((n - arr.shape[0], arr.shape[1]), dtype=arr.dtype)])


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 4)

