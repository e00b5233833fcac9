"""What the quiet rule does between saving and restoring: each series' profile, its silence's
expectation E and the deadline at which E reaches the bound, records, time, what is live.

The deadline is exact (the first whole second at which E reaches the bound, from the piecewise-linear
profile) and never early; any split of the records into batches gives the same events. See the
package's docstring (`sentinel.detect.quiet`) for the rule itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from sentinel.config import QuietRuleConfig
from sentinel.days import HOUR_US
from sentinel.detect.base import (
    OpenAlert,
    RecordFilter,
    RuleContext,
    event,
    open_alert,
    sample_ids,
)
from sentinel.detect.baseline import NEVER
from sentinel.detect.series import SeriesIndex
from sentinel.detect.threshold import baseline_days_of, lookback_days
from sentinel.detect.workdays import Workdays
from sentinel.model import US, Batch, Event, EventState, IntArray, JsonValue, Tier

FloatArray = npt.NDArray[np.float64]

SEC_HOUR = 3600


@dataclass(eq=False)
class QuietState:
    series: SeriesIndex
    clock: int | None = None
    pending: Batch = field(default_factory=Batch.empty)
    day: int | None = None
    hourly: dict[int, IntArray] = field(default_factory=dict)  # day -> [series, 24 wall hours]
    profile: IntArray = field(default_factory=lambda: np.zeros((0, 25), dtype=np.int64))  # cumulative, x den
    den: int = 1  # baseline days the profile sums
    last: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # last sign of life
    # E of the full past days of each silence, each day judged by its own profile (0: it began today)
    acc: FloatArray = field(default_factory=lambda: np.zeros(0, dtype=np.float64))
    due: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # when E reaches the bound
    warm: bool = False
    alerts: dict[int, OpenAlert] = field(default_factory=dict)
    late: int = 0


class QuietCore:
    kind = "quiet"

    def __init__(self, cfg: QuietRuleConfig, ctx: RuleContext) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.ctx = ctx
        self.cal = ctx.calendar
        self.filter = RecordFilter(cfg.where, cfg.where_not, ctx.vocab)
        self.bound = max(cfg.min_expected, -math.log(cfg.max_p))  # the E at which the silence is told
        self.tier = Tier.parse(cfg.tier)
        self.window_days = lookback_days(cfg)
        self.workdays = ctx.workdays if ctx.workdays is not None else Workdays(None)

    # --- state -------------------------------------------------------------------------------------
    def new_state(self) -> QuietState:
        return QuietState(SeriesIndex(self.cfg.group_by, self.ctx.vocab, self.cfg.max_series))

    def fork(self, state: QuietState) -> QuietState:
        return QuietState(
            series=state.series.fork(),
            clock=state.clock,
            pending=state.pending,
            day=state.day,
            hourly={d: a.copy() for d, a in state.hourly.items()},
            profile=state.profile.copy(),
            den=state.den,
            last=state.last.copy(),
            acc=state.acc.copy(),
            due=state.due.copy(),
            warm=state.warm,
            alerts={x: a.copy() for x, a in state.alerts.items()},
            late=state.late,
        )

    def _fit(self, state: QuietState) -> None:
        """Grow the per-series arrays (a new series' last sign of life is the rule's clock)."""
        n, old = len(state.series), len(state.last)
        if n == old:
            return
        for d, arr in state.hourly.items():
            if arr.shape[0] < n:
                state.hourly[d] = np.concatenate([arr, np.zeros((n - arr.shape[0], 24), dtype=np.int64)])
        state.profile = np.concatenate([state.profile, np.zeros((n - old, 25), dtype=np.int64)])
        start = state.clock if state.clock is not None else 0
        state.last = np.concatenate([state.last, np.full(n - old, start, dtype=np.int64)])
        state.acc = np.concatenate([state.acc, np.zeros(n - old, dtype=np.float64)])
        state.due = np.concatenate([state.due, np.full(n - old, NEVER, dtype=np.int64)])

    def _init(self, state: QuietState, at: int) -> None:
        if state.clock is None:
            start = self.ctx.coverage_start_us
            state.clock = min(at, start) if start is not None else at
            self._start_day(state, self.cal.day_of(state.clock))

    def _start_day(self, state: QuietState, day: int) -> None:
        """Local midnight: the day's profile from the baseline days, and every silence's deadline."""
        state.day = day
        self._fit(state)
        for d in [d for d in state.hourly if d < day - self.window_days]:
            del state.hourly[d]
        state.hourly.setdefault(day, np.zeros((len(state.series), 24), dtype=np.int64))
        self._baseline(state)

    def _baseline(self, state: QuietState) -> None:
        assert state.day is not None
        n = len(state.series)
        available = self.ctx.full_days_before(state.day)
        state.warm = available >= self.cfg.min_history_days
        days = baseline_days_of(self.cfg, self.day_kind, state.day, available)
        total = np.zeros((n, 24), dtype=np.int64)
        for d in days:
            h = state.hourly.get(d)
            if h is not None:
                total[: h.shape[0]] += h[:n]
        state.profile = np.concatenate([np.zeros((n, 1), dtype=np.int64), np.cumsum(total, axis=1)], axis=1)
        state.den = max(1, len(days))
        state.due = np.full(n, NEVER, dtype=np.int64)
        quiet = np.asarray([x not in state.alerts for x in range(n)], dtype=bool)
        self._schedule(state, np.flatnonzero(quiet))

    def day_kind(self, day: int) -> str:
        return self.workdays.kind(self.cal.date_of(day))

    # --- the expectation ---------------------------------------------------------------------------
    def _need(self, state: QuietState) -> int:
        """The bound as an integer numerator of E (units: complaints x den x seconds)."""
        return math.ceil(self.bound * state.den * SEC_HOUR)

    def _wall_s(self, ts: IntArray) -> IntArray:
        return np.asarray(self.cal.wall_seconds_of(ts) // US, dtype=np.int64)

    @staticmethod
    def _cum(profile: IntArray, xs: IntArray, wall_s: IntArray) -> IntArray:
        """Series xs' cumulative profile at wall-clock seconds, x 3600 (exact integers, linear inside the
        hour); gathers two entries per series, never whole rows."""
        h = np.minimum(wall_s // SEC_HOUR, 23)
        sec = wall_s - h * SEC_HOUR
        lo, hi = profile[xs, h], profile[xs, h + 1]
        return np.asarray(lo * SEC_HOUR + sec * (hi - lo), dtype=np.int64)

    def _before_today(self, state: QuietState, xs: IntArray, last: IntArray) -> FloatArray:
        """Each series' E numerator (today's units) of its silence before today: the past days' E when it
        began before today, or minus the part of today already past when it began: E(now) = this + P(now)."""
        assert state.day is not None
        today = last >= self.cal.day_start(state.day)
        at_last = self._cum(state.profile, xs, self._wall_s(np.where(today, last, self.cal.day_start(state.day))))
        return np.where(today, -at_last.astype(np.float64), state.acc[xs] * (state.den * SEC_HOUR))

    def expected_num(self, state: QuietState, x: int, t: int) -> float:
        """E numerator of series x's silence up to instant t (today's part by today's profile)."""
        xs = np.asarray([x], dtype=np.int64)
        now = self._cum(state.profile, xs, self._wall_s(np.asarray([t], dtype=np.int64)))
        return float(self._before_today(state, xs, state.last[xs])[0] + now[0])

    def _close_day(self, state: QuietState) -> None:
        """Midnight: the day ending adds its part of every silence to E, judged by its own profile."""
        assert state.day is not None
        n = len(state.series)
        if n == 0:
            return
        start = self.cal.day_start(state.day)
        began = np.maximum(state.last, start)
        done = self._cum(state.profile, np.arange(n), self._wall_s(began))
        part = (state.profile[:, 24] * SEC_HOUR - done) / (state.den * SEC_HOUR)
        part = np.where(state.last < self.cal.day_end(state.day), np.maximum(part, 0.0), 0.0)
        state.acc = np.where(state.last < start, state.acc, 0.0) + part
        state.acc[list(state.alerts)] = 0.0  # an open alert waits for a record, not for E

    def _schedule(self, state: QuietState, xs: IntArray) -> None:
        """Deadlines of these series: the first whole second of today at which E reaches the bound."""
        if len(xs):
            state.due[xs] = self._dues(state, xs, state.last[xs])

    def _dues(self, state: QuietState, xs: IntArray, last: IntArray) -> IntArray:
        """The deadlines these series would have with these last signs of life (NEVER: not today)."""
        assert state.day is not None and state.clock is not None
        if not state.warm or len(xs) == 0:
            return np.full(len(xs), NEVER, dtype=np.int64)
        prof = state.profile[xs] * SEC_HOUR
        target = self._need(state) - self._before_today(state, xs, last)
        reach = prof[:, 1:] >= target[:, None]
        found = reach.any(axis=1) & (state.profile[xs, 24] > 0)
        h = np.argmax(reach, axis=1)
        rows = np.arange(len(xs))
        lo, hi = prof[rows, h], prof[rows, h + 1]
        step = np.maximum((hi - lo) // SEC_HOUR, 1)
        sec = np.where(target <= lo, 0, -((lo - target) // step))
        sec = np.minimum(sec, SEC_HOUR).astype(np.int64)
        wall = (h * SEC_HOUR + sec) * US
        start = self.cal.day_start(state.day)
        off0 = self.cal.offset(start)
        guess = start + wall
        inst = guess + off0 - self.cal.offsets_of(guess)
        inst = np.maximum(inst, np.maximum(last + 1, state.clock))
        # never early: a wall time in the hour a spring-forward skips maps to an earlier instant
        early = (
            found & (inst < self.cal.day_end(state.day)) & (self._cum(state.profile, xs, self._wall_s(inst)) < target)
        )
        inst = np.where(early, inst + HOUR_US, inst)
        return np.asarray(np.where(found, inst, NEVER), dtype=np.int64)

    # --- records -----------------------------------------------------------------------------------
    def process(self, batch: Batch, state: QuietState) -> list[Event]:
        batch = self.filter.apply(batch)
        if len(batch) == 0:
            return []
        self._init(state, int(batch.ts[0]))
        assert state.day is not None and state.clock is not None
        s = state.series.of_batch(batch)
        self._fit(state)
        days = self.cal.days_of(batch.ts)
        late = days < state.day
        if late.any():
            state.late += int(late.sum())
        self._add(state, batch.ts, s, days, 1)
        if late.any() and (days[late] >= state.day - self.window_days).any():
            self._baseline(state)  # a baseline day changed: every deadline follows it
        eff = np.maximum(batch.ts, state.clock)  # late records: a sign of life now, in read order
        return self._records(state, batch, s, eff)

    def _records(self, state: QuietState, batch: Batch, s: IntArray, eff: IntArray) -> list[Event]:
        """Records of one day in time order. The first of a silent series resolves its alert; after each
        record, the deadline it sets (vectorised, one per record) is compared with its series' next
        record here: a silence that reaches its bound before it is told at that deadline and resolved by
        that next record, exactly as if the batch had been split there (any split gives these events)."""
        assert state.clock is not None
        events: list[Event] = []
        # one stable sort by series (time order kept inside each): first, next and last record of each
        key = s.astype(np.uint16) if len(state.series) < 1 << 16 else s  # radix sort for the usual few series
        order = np.argsort(key, kind="stable")
        ss = s[order]
        starts = np.flatnonzero(np.concatenate([[True], ss[1:] != ss[:-1]]))
        uniq, first = ss[starts], order[starts]
        last_idx = order[np.append(starts[1:], len(ss)) - 1]
        # silences that were due before these records: time reached them (a deadline applies before the
        # records at or after it), so they are told first, then the series' own first record resolves them
        first_of = np.full(len(state.due), NEVER, dtype=np.int64)
        first_of[uniq] = eff[first]
        passed = np.flatnonzero((state.due <= np.minimum(first_of, int(eff[-1]))) & (state.due < NEVER))
        for x in sorted(passed.tolist(), key=lambda x: (int(state.due[x]), x)):
            t = int(state.due[x])
            events.append(self._fire(state, x, t, self.expected_num(state, x, t) / (state.den * SEC_HOUR)))
        for x, i in zip(uniq.tolist(), first.tolist(), strict=True):
            if x in state.alerts:
                events.append(self._resolve(state, x, int(eff[i]), batch.ids[i : i + 1]))
        nxt = np.full(len(s), NEVER, dtype=np.int64)
        same = s[order][1:] == s[order][:-1]
        nxt[order[:-1][same]] = eff[order[1:][same]]
        # a silence between two records of a series can reach its bound only if E over it does: the
        # deadlines of those few (exact, never early) decide; every record's would cost a pass over the day
        has_next = nxt < NEVER
        gap = np.zeros(len(s), dtype=np.int64)
        if has_next.any() and state.warm:
            both = np.flatnonzero(has_next)
            gap[both] = self._cum(state.profile, s[both], self._wall_s(nxt[both])) - self._cum(
                state.profile, s[both], self._wall_s(eff[both])
            )
        cand = np.flatnonzero(has_next & (gap >= self._need(state)))
        cand_dues = self._dues(state, s[cand], eff[cand])
        for k, due in zip(cand.tolist(), cand_dues.tolist(), strict=True):
            if due > nxt[k]:
                continue
            x = int(s[k])
            state.last[x] = int(eff[k])
            expected = self.expected_num(state, x, due) / (state.den * SEC_HOUR)
            events.append(self._fire(state, x, due, expected))
            nk = int(np.searchsorted(eff, nxt[k], side="left"))  # the next record: the first at that time
            while int(s[nk]) != x:
                nk += 1
            events.append(self._resolve(state, x, int(nxt[k]), batch.ids[nk : nk + 1]))
        state.last[uniq] = np.maximum(state.last[uniq], eff[last_idx])
        state.acc[uniq] = 0.0
        state.due[uniq] = self._dues(state, uniq, state.last[uniq])
        # a series' last record here sets a deadline that later records of other series already passed
        for x in sorted(uniq[state.due[uniq] <= int(eff[-1])].tolist(), key=lambda x: (int(state.due[x]), x)):
            t = int(state.due[x])
            events.append(self._fire(state, x, t, self.expected_num(state, x, t) / (state.den * SEC_HOUR)))
        state.clock = max(state.clock, int(eff[-1]))
        return events

    def _add(self, state: QuietState, ts: IntArray, s: IntArray, days: IntArray, weight: int) -> None:
        assert state.day is not None
        n = len(state.series)
        for d in np.unique(days).tolist():
            if d < state.day - self.window_days or d > state.day:
                continue
            m = days == d
            hours = np.minimum(self.cal.wall_seconds_of(ts[m]) // HOUR_US, 23)
            h = state.hourly.setdefault(d, np.zeros((n, 24), dtype=np.int64))
            h += weight * np.bincount(s[m] * 24 + hours, minlength=n * 24).reshape(n, 24)

    def _resolve(self, state: QuietState, x: int, at: int, ids: npt.NDArray[np.generic]) -> Event:
        alert = state.alerts.pop(x)
        silent = (at - int(state.last[x])) // US
        return event(
            self.name,
            self.kind,
            EventState.RESOLVED,
            alert,
            at,
            0.0,
            alert.baseline,
            None,
            None,
            {
                "reason": "a complaint arrived",
                "expected": alert.baseline,
                "silent_s": silent,
                "peak": alert.peak,
                "duration_s": (at - alert.started) // US,
                "samples": list[JsonValue](sample_ids(ids)),
            },
        )

    # --- time --------------------------------------------------------------------------------------
    def deadline(self, state: QuietState) -> int | None:
        if state.clock is None or state.day is None:
            return None
        # only midnight splits a batch: the silences' deadlines are applied by the rule itself, in
        # `_records` (records show how far time went) and in `advance` (time alone), like a streak's gaps
        return max(self.cal.day_end(state.day), state.clock + 1)

    def _next(self, state: QuietState) -> int:
        """The next instant time alone causes something: a silence's deadline or midnight."""
        assert state.day is not None and state.clock is not None
        soonest = int(state.due.min()) if len(state.due) else NEVER
        return max(min(self.cal.day_end(state.day), soonest), state.clock)

    def advance(self, now: int, state: QuietState) -> tuple[list[Event], int | None]:
        if state.clock is None:
            self._init(state, now)
        assert state.clock is not None and state.day is not None
        events: list[Event] = []
        while True:
            t = self._next(state)
            if t > now:
                break
            events += self._at(t, state)
        state.clock = max(state.clock, now)
        return events, self.deadline(state)

    def _at(self, t: int, state: QuietState) -> list[Event]:
        assert state.day is not None
        events = self._fire_due(state, t)
        if t >= self.cal.day_end(state.day):
            self._close_day(state)
            self._start_day(state, state.day + 1)
        return events

    def _fire_due(self, state: QuietState, t: int) -> list[Event]:
        """Instant t: the silences whose bound it reaches are told."""
        assert state.clock is not None
        state.clock = max(state.clock, t)
        events: list[Event] = []
        for x in np.flatnonzero(state.due <= t).tolist():
            e_num = self.expected_num(state, x, t)
            if e_num < self._need(state):  # not yet (never expected: deadlines are never early): again later
                self._schedule(state, np.asarray([x], dtype=np.int64))
                state.due[x] = max(int(state.due[x]), t + 1)
                continue
            events.append(self._fire(state, x, t, e_num / (state.den * SEC_HOUR)))
        return events

    def _fire(self, state: QuietState, x: int, t: int, expected: float) -> Event:
        state.due[x] = NEVER
        e = _sig(expected)
        alert = open_alert(self.name, state.series.labels[x], t, self.tier, 0.0, e)
        state.alerts[x] = alert
        return event(
            self.name,
            self.kind,
            EventState.FIRING,
            alert,
            t,
            0.0,
            e,
            None,
            _sig(math.exp(-expected)),
            {"expected": e, "silent_s": (t - int(state.last[x])) // US},
        )

    # --- what is live ------------------------------------------------------------------------------
    def live(self, state: QuietState) -> list[tuple[OpenAlert, dict[str, JsonValue]]]:
        """Every open alert is live: its series is still silent (a record would have resolved it). The
        figures are those of the silence so far: its length, what it normally holds, the chance of that."""
        if state.clock is None:
            return []
        out: list[tuple[OpenAlert, dict[str, JsonValue]]] = []
        for x, a in sorted(state.alerts.items()):
            expected = max(self.expected_num(state, x, state.clock) / (state.den * SEC_HOUR), a.baseline or 0.0)
            out.append(
                (
                    a,
                    {
                        "expected": _sig(expected),
                        "p": _sig(math.exp(-expected)),
                        "silent_s": (state.clock - int(state.last[x])) // US,
                    },
                )
            )
        return out


def _sig(x: float) -> float:
    return float(f"{x:.4g}") if x and math.isfinite(x) else x
