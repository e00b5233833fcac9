"""What the threshold rule does in every mode: counts, baselines, thresholds, tiers, alerts, midnight.

`ThresholdCore` keeps each series' daily count (and, for `day` and `pace`, its count by wall-clock
hour), sets the day's integer thresholds from the baseline days at local midnight (again when a late
record changes a baseline day), opens and upgrades alerts (tiers only go up while one is open; one
record crossing several tiers gives one event at the highest) and resolves them. What differs between
the modes (`sentinel.detect.threshold.mode`) it asks of its `mode`: the rule calls the mode, never
the other way round except for these shared steps.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from sentinel.config import ThresholdRuleConfig, exact
from sentinel.days import HOUR_US
from sentinel.detect.base import SAMPLES, OpenAlert, RecordFilter, RuleContext, event, open_alert, sample_ids
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
from sentinel.detect.threshold.mode import Mode
from sentinel.detect.threshold.state import (
    ThresholdState,
    baseline_days_of,
    by_series,
    grow,
    grow2,
    lookback_days,
    round4,
)
from sentinel.detect.workdays import Workdays
from sentinel.model import US, Batch, Event, EventState, IntArray, JsonValue, Tier


class ThresholdCore:
    kind = "threshold"

    def __init__(self, cfg: ThresholdRuleConfig, ctx: RuleContext, mode: Callable[[ThresholdCore], Mode]) -> None:
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
        self.mode = mode(self)

    # --- state -------------------------------------------------------------------------------------
    def new_state(self) -> ThresholdState:
        return ThresholdState(SeriesIndex(self.cfg.group_by, self.ctx.vocab, self.cfg.max_series))

    def fork(self, state: ThresholdState) -> ThresholdState:
        """A copy to run ahead on: arrays and alerts copied, the series index forked."""
        return ThresholdState(
            series=state.series.fork(),
            clock=state.clock,
            pending=state.pending,
            day=state.day,
            counts={d: a.copy() for d, a in state.counts.items()},
            # hourly arrays are shared: the fork copies one before it first changes it (see add)
            hourly=dict(state.hourly),
            shared_hourly=set(state.hourly),
            hour_totals={d: a.copy() for d, a in state.hour_totals.items()},
            hours={h: a.copy() for h, a in state.hours.items()},
            window=state.window.copy(),
            base=Baselines(state.base.num.copy(), state.base.den),
            fire_at=state.fire_at.copy(),
            mod_at=state.mod_at.copy(),
            sev_at=state.sev_at.copy(),
            p_done=state.p_done.copy(),
            profile=state.profile.copy(),
            profile_den=state.profile_den,
            shape=state.shape,
            warm=state.warm,
            alerts={x: a.copy() for x, a in state.alerts.items()},
            t_unmet=dict(state.t_unmet),
            late=state.late,
        )

    def _init(self, state: ThresholdState, at: int) -> None:
        if state.clock is None:
            start = self.ctx.coverage_start_us
            state.clock = min(at, start) if start is not None else at
            self.start_day(state, self.cal.day_of(state.clock))

    def fit(self, state: ThresholdState) -> None:
        """Grow the per-series arrays to the number of series (new series start at zero)."""
        n = len(state.series)
        old = len(state.fire_at)
        if old == n:
            return
        for day, arr in state.counts.items():
            state.counts[day] = grow(arr, n)
        # hourly arrays grow when counted into (add), not here: series keep appearing in a long replay
        for h, arr in state.hours.items():
            state.hours[h] = grow(arr, n)
        state.window = grow(state.window, n)
        num = grow(state.base.num, n)
        state.base = Baselines(num, state.base.den)
        state.profile = (
            np.concatenate([state.profile, np.zeros((n - old, 25), dtype=np.int64)]) if n > old else state.profile
        )
        fire, mod, sev, _ = self._thresholds(Baselines(np.zeros(n - old, dtype=np.int64), state.base.den), state.warm)
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

    def start_day(self, state: ThresholdState, day: int) -> None:
        """Local midnight: a new day to count, and its baselines and thresholds."""
        state.day = day
        self.fit(state)
        for d in [d for d in state.counts if d < day - self.window_days]:
            del state.counts[d]
            state.hourly.pop(d, None)
            state.hour_totals.pop(d, None)
        n_series = len(state.series)
        state.counts.setdefault(day, np.zeros(n_series, dtype=np.int64))
        if self.mode.hourly:
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
        daily = (
            np.stack([grow(state.counts.get(d, np.zeros(0, dtype=np.int64)), n_series) for d in days], axis=1)
            if days
            else np.zeros((n_series, 0), dtype=np.int64)
        )
        state.base = baselines(daily, self.cfg.baseline)
        state.fire_at, state.mod_at, state.sev_at, _ = self._thresholds(state.base, state.warm)
        state.p_done = np.full(n_series, self.cfg.max_p is None)
        self.mode.baseline(state, days)

    def baseline_days_of(self, day: int, available: int) -> list[int]:
        """The full days whose counts make `day`'s baseline, oldest first."""
        return baseline_days_of(self.cfg, self.day_kind, day, available)

    def day_kind(self, day: int) -> str:
        return self.workdays.kind(self.cal.date_of(day))

    def _baseline_facts(self, day: int | None) -> dict[str, JsonValue]:
        """What events say about their baseline days (only when they are not simply the last days)."""
        if self.cfg.baseline_by == "all" or day is None:
            return {}
        facts: dict[str, JsonValue] = {"baseline_by": self.cfg.baseline_by}
        if self.cfg.baseline_by == "day_kind":
            facts["day_kind"] = self.day_kind(day)
        else:
            facts["weekday"] = self.cal.date_of(day).strftime("%A")
        return facts

    # --- records -----------------------------------------------------------------------------------
    def process(self, batch: Batch, state: ThresholdState) -> list[Event]:
        batch = self.filter.apply(batch)
        if len(batch) == 0:
            return []
        self._init(state, int(batch.ts[0]))
        assert state.day is not None
        s = state.series.of_batch(batch)
        self.fit(state)
        days = self.cal.days_of(batch.ts)
        late = days < state.day
        if late.any():
            state.late += int(late.sum())
            self.add(state, batch.ts[late], s[late], days[late], 1)
            if (days[late] >= state.day - self.window_days).any():
                self._baseline(state)  # a baseline day changed: today's thresholds follow it
            keep = ~late
            batch, s, days = batch.take(np.flatnonzero(keep)), s[keep], days[keep]
            if len(batch) == 0:
                return []
        return self.mode.records(batch, s, days, state)

    def count_records(self, batch: Batch, s: IntArray, state: ThresholdState) -> list[Event]:
        """Day and rolling modes: integer thresholds fixed for the day."""
        if not state.warm:
            return []
        order, ss, first, group_start, count = by_series(s, self.mode.current(state))
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
                self.settle_p(state, x)
        events: list[Event] = []
        for pos in cand[np.argsort(order[cand], kind="stable")].tolist():
            x = int(ss[pos])
            lo = max(int(group_start[pos]), pos - SAMPLES + 1)
            events += self.raise_alert(
                state,
                x,
                int(level[pos]),
                int(count[pos]),
                int(batch.ts[order[pos]]),
                state.base.value(x),
                batch.ids[order[lo : pos + 1]],
            )
        return events

    def _levels(self, count: IntArray, ss: IntArray, state: ThresholdState) -> IntArray:
        fire, mod, sev = state.fire_at[ss], state.mod_at[ss], state.sev_at[ss]
        return np.where(count >= fire, 1 + (count >= mod).astype(np.int64) + (count >= sev), 0)

    def settle_p(self, state: ThresholdState, x: int) -> None:
        """Raise the firing count of series x to where the Poisson tail is <= max_p (lazily, per day)."""
        assert self.cfg.max_p is not None
        lam = state.base.value(x)
        fire = poisson_threshold(int(state.fire_at[x]), lam, self.cfg.max_p)
        state.fire_at[x] = fire
        state.mod_at[x] = max(int(state.mod_at[x]), fire)
        state.sev_at[x] = max(int(state.sev_at[x]), fire)
        state.p_done[x] = True

    def raise_alert(
        self,
        state: ThresholdState,
        x: int,
        level: int,
        value: float,
        at: int,
        baseline: float,
        samples: npt.NDArray[np.generic],
    ) -> list[Event]:
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
        facts = self.facts(state, x, round(value), at)
        return [
            event(
                self.name,
                self.kind,
                st,
                alert,
                at,
                value,
                baseline,
                round4(ratio),
                p,
                {**facts, "samples": list[JsonValue](sample_ids(samples))},
            )
        ]

    def facts(self, state: ThresholdState, x: int, count: int, at: int) -> dict[str, JsonValue]:
        """What an event of series x says besides its figures: the mode, the baseline days, the mode's own."""
        return {"mode": self.cfg.mode, **self._baseline_facts(state.day), **self.mode.facts(state, x, count, at)}

    # --- counting ------------------------------------------------------------------------------------
    def add(self, state: ThresholdState, ts: IntArray, s: IntArray, days: IntArray, weight: int) -> None:
        """Add records (weight 1) or take pending ones back out (weight -1) of every count kept."""
        if len(ts) == 0:
            return
        n = len(state.series)
        one_day = int(days.min()) == int(days.max())  # the usual batch: no mask, no sort for unique
        for d in [int(days[0])] if one_day else np.unique(days).tolist():
            m: npt.NDArray[np.bool_] | slice = slice(None) if one_day else days == d
            if d not in state.counts:
                if state.day is None or d < state.day - self.window_days or d > state.day:
                    continue
                state.counts[d] = np.zeros(n, dtype=np.int64)
            state.counts[d] += weight * np.bincount(s[m], minlength=n)
            if self.mode.hourly:
                hours = self._wall_hours(d, ts[m])
                h = state.hourly.get(d)
                if h is None:
                    h = state.hourly[d] = np.zeros((n, 24), dtype=np.int32)
                elif h.shape[0] < n:  # room to grow into, so new series do not copy it every batch
                    h = state.hourly[d] = grow2(h, max(n, 2 * h.shape[0]))
                    state.shared_hourly.discard(d)
                elif d in state.shared_hourly:  # the state this one was forked from holds it too
                    h = state.hourly[d] = h.copy()
                    state.shared_hourly.discard(d)
                totals = state.hour_totals.get(d)
                add_totals = weight * np.bincount(hours, minlength=24)
                state.hour_totals[d] = add_totals if totals is None else totals + add_totals
                np.add.at(h.reshape(-1), s[m] * 24 + hours, np.int32(weight))  # flat, typed: the fast path
        self.mode.add(state, ts, s, weight)

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
        times = [self.cal.day_end(state.day), *self.mode.deadlines(state)]
        return max(min(times), state.clock + 1)

    def advance(self, now: int, state: ThresholdState) -> tuple[list[Event], int | None]:
        if state.clock is None:
            self._init(state, now)
        assert state.clock is not None and state.day is not None
        events: list[Event] = []
        while True:
            d = self.deadline(state)
            if d is None or d > now:
                break
            state.clock = d
            events += self.mode.at(d, state)
        state.clock = max(state.clock, now)
        return events, self.deadline(state)

    def unmet_deadlines(self, state: ThresholdState) -> list[int]:
        """Pace and rolling: when open alerts resolve (unmet for `resolve_after`) or turn unmet by time."""
        times = []
        for x, alert in state.alerts.items():
            if alert.unmet_since is not None:
                times.append(alert.unmet_since + self.resolve_after)
            elif x in state.t_unmet:
                times.append(state.t_unmet[x])
        return times

    def resolve_unmet(self, state: ThresholdState, t: int) -> list[Event]:
        events = []
        for x in sorted(state.alerts):
            alert = state.alerts[x]
            if alert.unmet_since is not None and alert.unmet_since + self.resolve_after <= t:
                events.append(self.resolve(state, x, alert.unmet_since + self.resolve_after, "condition unmet"))
        return events

    def resolve(self, state: ThresholdState, x: int, at: int, reason: str) -> Event:
        alert = state.alerts.pop(x)
        state.t_unmet.pop(x, None)
        return event(
            self.name,
            self.kind,
            EventState.RESOLVED,
            alert,
            at,
            alert.value,
            alert.baseline,
            round4(alert.value / alert.baseline) if alert.baseline else None,
            None,
            {"mode": self.cfg.mode, "reason": reason, "peak": alert.peak, "duration_s": (at - alert.started) // US},
        )

    def update_peaks(self, state: ThresholdState) -> None:
        """The day (or window) ending: each open alert's peak takes its series' count."""
        current = self.mode.current(state)
        for x in sorted(state.alerts):
            alert = state.alerts[x]
            alert.peak = max(alert.peak, float(current[x]))

    def end_day(self, state: ThresholdState) -> None:
        """Local midnight: the peaks of the day ending, then the next day's baseline."""
        assert state.day is not None
        self.update_peaks(state)
        self.start_day(state, state.day + 1)

    # --- what is live --------------------------------------------------------------------------------
    def live(self, state: ThresholdState) -> list[tuple[OpenAlert, dict[str, JsonValue]]]:
        """Open alerts whose series meets the firing condition now (each mode says when: an alert of
        `day` mode carried over midnight from yesterday's surge is not live until today meets it too).
        What the first start hands on."""
        if state.day is None:
            return []
        out: list[tuple[OpenAlert, dict[str, JsonValue]]] = []
        today = state.counts.get(state.day)
        for x in sorted(state.alerts):
            alert = state.alerts[x]
            if not self.mode.live_met(state, x, alert):
                continue
            facts: dict[str, JsonValue] = {"mode": self.cfg.mode, **self._baseline_facts(state.day)}
            if today is not None and state.clock is not None:
                count = int(today[x]) if x < len(today) else 0
                facts.update(self.mode.facts(state, x, count, state.clock))
            out.append((alert, facts))
        return out
