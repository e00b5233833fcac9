"""The streak rule: "the same type five times in a row".

Records are ordered by (created_at, id) inside a scope (`scope = []`: the whole stream; `["channel"]`:
each channel's own sequence). A run is consecutive records with the same `field` value; it fires when
it reaches `length` (the 5th fires, the 4th does not) and upgrades at `tiers`. With `distinct =
"customer"` a run counts distinct customers, so one customer filing five times is not a crisis. A run
ends at the record that breaks it, or at its last record + `max_gap`. The alert stays open for `hold`
after its run ends; a later run of the same value reaching `length` inside the hold continues it.

Runs are found with numpy over the whole batch; only runs that reach `length` (rare) go through the
small state machine in Python. The rule is self-timed: `process` applies its own deadlines (gap ends,
hold expiries) inside a batch, so any split of the records gives the same events.

How normal is a run? Real streams are clustered (one caller reporting five street lights, a clerk
entering a batch), so the independent-arrivals estimate (daily volume x (1 - share) x share^length) is
100-1000x too optimistic for exactly the values that streak most. The rule therefore also counts, per
day, the runs of each value that reached `length`, and judges a run by what the series did over the last
`history_days`: `expected_per_day` is the posterior mean of a Gamma-Poisson model whose prior is the
independent estimate worth `prior_days` days of observation,

    expected = (runs observed + prior_days x independent) / (days observed + prior_days)

so a rule with no history (a new rule, a first start) relies on the independent estimate, and a new type
(no share, no runs) can still fire. The run counts cannot be rebuilt from the hourly buckets; they are
part of the rule's snapshot (version 2; an older snapshot restores with no run history), whose codec is in
`detect.streak_state` with the rule's state, its vectorised counting and the blend above (`normality`):
this module is the rule itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from sentinel.config import StreakRuleConfig
from sentinel.detect.base import SAMPLES, Gauges, OpenAlert, RecordFilter, RuleContext, event, open_alert, sample_ids
from sentinel.detect.series import SeriesIndex
from sentinel.detect.streak_state import (
    Normality,
    Run,
    StreakState,
    add_counts,
    counts_from_buckets,
    customers_of,
    decode_open,
    decode_run_counts,
    encode,
    new_in_run,
    normality,
)
from sentinel.model import US, Batch, Buckets, Event, EventState, IntArray, JsonValue, Tier, json_int

__all__ = ["Normality", "Run", "StreakRule", "StreakState"]  # the state's types are imported from here

if TYPE_CHECKING:
    from sentinel.detect.base import Snapshot


class StreakRule:
    kind = "streak"

    def __init__(self, cfg: StreakRuleConfig, ctx: RuleContext) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.ctx = ctx
        self.cal = ctx.calendar
        self.vocab = ctx.vocab
        self.filter = RecordFilter(cfg.where, cfg.where_not, ctx.vocab)
        self.gap = None if cfg.max_gap is None else int(cfg.max_gap.total_seconds() * US)
        self.hold = int(cfg.hold.total_seconds() * US)
        self.levels = (cfg.length, cfg.tiers.moderate, cfg.tiers.severe)
        self.scope_field = cfg.scope[0] if cfg.scope else None
        self.window = cfg.history_days

    def new_state(self) -> StreakState:
        return StreakState(shares=self._share_index())

    def fork(self, state: StreakState) -> StreakState:
        """A copy to run ahead on: runs, alerts and share counts copied."""
        return state.fork()

    def runs_key(self) -> str:
        """What makes a run: rules agreeing on it count the same runs, so an edit that changes only how
        runs are judged or told (`max_expected_per_day`, `hold`, `tiers`, `history_days`, ...) keeps
        the run history."""
        c = self.cfg
        text = repr(
            (
                c.field,
                c.scope,
                c.length,
                c.distinct,
                c.max_gap,
                c.where.model_dump_json(),
                c.where_not.model_dump_json(),
                self.cal.tz.key,
            )
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def _share_index(self) -> SeriesIndex:
        return SeriesIndex((*self.cfg.scope, self.cfg.field), self.vocab, max_series=1 << 62)

    # --- columns -------------------------------------------------------------------------------------
    def _values(self, batch: Batch) -> npt.NDArray[np.int32]:
        return batch.type if self.cfg.field == "type" else batch.channel

    def _scopes(self, batch: Batch) -> npt.NDArray[np.int32]:
        if self.scope_field is None:
            return np.zeros(len(batch), dtype=np.int32)
        return batch.type if self.scope_field == "type" else batch.channel

    def labels(self, scope: int, value: int) -> dict[str, str]:
        out: dict[str, str] = {self.cfg.field: self.vocab.decode(value)}
        if self.scope_field is not None:
            out[self.scope_field] = self.vocab.decode(scope)
        return out

    def tier_of(self, length: int) -> Tier:
        if length >= self.levels[2]:
            return Tier.SEVERE
        if length >= self.levels[1]:
            return Tier.MODERATE
        return Tier.LIGHT

    # --- records -------------------------------------------------------------------------------------
    def process(self, batch: Batch, state: StreakState) -> list[Event]:
        if state.counted_from is None and len(batch):
            # runs are counted from here on: a day is fully observed when the first record is at its start
            first = int(batch.ts[0]) if state.clock is None else max(int(batch.ts[0]), state.clock)
            day = self.cal.day_of(first)
            state.counted_from = day if first == self.cal.day_start(day) else day + 1
        batch = self.filter.apply(batch)
        if len(batch) == 0:
            return []
        if state.clock is None:
            state.clock = int(batch.ts[0])
            state.day = self.cal.day_of(state.clock)
        assert state.day is not None
        self._count_shares(batch, state)
        closed = self.cal.days_of(batch.ts) < self.cal.day_of(state.clock)
        if closed.any():  # rows of a day already closed (committed hours late): its shares, never a run now
            state.late += int(closed.sum())
            batch = batch.take(np.flatnonzero(~closed))
            if len(batch) == 0:
                return []
        state.late += int((batch.ts < state.clock).sum())
        # late records take their place in read order: their effective time is the rule's clock
        eff = np.maximum(batch.ts, state.clock)
        scopes = self._scopes(batch)
        values = self._values(batch)
        events: list[Event] = []
        for scope in np.unique(scopes).tolist():
            idx = np.flatnonzero(scopes == scope) if self.scope_field is not None else np.arange(len(batch))
            events += self._scope(int(scope), batch, idx, eff[idx], values[idx], state)
        last = int(eff[-1])
        if self.gap is not None:
            # an alerted run whose scope had no record since its pause passed max_gap ended then: as the
            # deadline `last + max_gap + 1` would have ended it, had the batch been split there
            for scope, run in list(state.runs.items()):
                if run.alert is not None and run.last + self.gap < last:
                    self._end_run(run, run.last + self.gap, state, run.length)
                    del state.runs[scope]
        events += self._expire(state, last, inclusive=True)
        state.clock = max(state.clock, last)
        return events

    def _scope(
        self, scope: int, batch: Batch, idx: IntArray, ts: IntArray, vals: npt.NDArray[np.int32], state: StreakState
    ) -> list[Event]:
        """One scope's records (in order): find runs with numpy, walk only the interesting ones."""
        n = len(idx)
        carried = state.runs.get(scope)
        brk = np.ones(n, dtype=bool)
        if n > 1:
            brk[1:] = vals[1:] != vals[:-1]
            if self.gap is not None:
                brk[1:] |= np.diff(ts) > self.gap
        if carried is not None:
            brk[0] = bool(vals[0] != carried.value or (self.gap is not None and ts[0] - carried.last > self.gap))
        continuing = carried is not None and not brk[0]
        starts = np.flatnonzero(brk)
        if continuing:
            starts = np.concatenate([[0], starts])
        bounds = np.append(starts, n)
        run_of = np.repeat(np.arange(len(starts)), np.diff(bounds))
        new = self._is_new(batch, idx, run_of, carried if continuing else None)
        cum = np.cumsum(new)
        length = cum - (cum[starts] - new[starts])[run_of]
        if continuing and carried is not None:
            length[run_of == 0] += carried.length
        events: list[Event] = []
        if carried is not None and not continuing:
            self._end_run(carried, self._end_time(carried.last, int(ts[0])), state, carried.length)
        hit = new.astype(bool) & np.isin(length, self.levels)
        last = len(starts) - 1
        wanted = set(np.unique(run_of[hit]).tolist()) | {last}
        if continuing and carried is not None and carried.alert is not None:
            wanted.add(0)
        for k in sorted(wanted):
            s, e = int(bounds[k]), int(bounds[k + 1])
            run = (
                carried
                if (k == 0 and continuing and carried is not None)
                else Run(int(vals[s]), 0, int(ts[s]), int(ts[s]))
            )
            before = run.ids if run is carried else []
            for p in (s + np.flatnonzero(hit[s:e])).tolist():
                samples = (before + sample_ids(batch.ids[idx[max(s, p - SAMPLES + 1) : p + 1]]))[-SAMPLES:]
                events += self._cross(scope, run, int(length[p]), int(ts[p]), state, samples)
            if k < last:
                self._end_run(run, self._end_time(int(ts[e - 1]), int(ts[e])), state, int(length[e - 1]))
                continue
            run.length, run.last = int(length[-1]), int(ts[-1])
            run.ids = (before + sample_ids(batch.ids[idx[max(s, n - SAMPLES) :]]))[-SAMPLES:]
            if self.cfg.distinct == "customer":
                run.customers = self._customers_of(batch, idx[s:], run.customers if run is carried else set())
            state.runs[scope] = run
        return events

    def _end_time(self, last: int, next_ts: int) -> int:
        if self.gap is not None and next_ts - last > self.gap:
            return last + self.gap
        return next_ts

    def _is_new(self, batch: Batch, idx: IntArray, run_id: IntArray, carried: Run | None) -> IntArray:
        """1 where a record makes its run longer: always, or for a customer new to the run."""
        return new_in_run(batch, idx, run_id, carried, self.cfg.distinct == "customer")

    def _customers_of(self, batch: Batch, idx: IntArray, before: set[str]) -> set[str]:
        return customers_of(batch, idx, before)

    # --- the small state machine ------------------------------------------------------------------
    def _cross(self, scope: int, run: Run, length: int, at: int, state: StreakState, samples: list[str]) -> list[Event]:
        key = (scope, run.value)
        events: list[Event] = []
        alert = state.alerts.get(key)
        if alert is not None and alert.hold_until is not None and alert.hold_until <= at:
            events.append(self._resolve(key, state, alert.hold_until, "hold expired"))
            alert = None
        norm = self._chance(scope, run.value, length, state)
        if length == self.levels[0]:
            assert state.day is not None
            today = state.run_counts.setdefault(state.day, {})
            today[key] = today.get(key, 0) + 1
        facts = norm.facts()  # kept on the alert for its resolution
        expected = norm.expected
        extra: dict[str, JsonValue] = {"length": length, **facts, "samples": list[JsonValue](samples)}
        tier = self.tier_of(length)
        if run.alert is not None and alert is not None:
            if tier > alert.tier:
                alert.tier = tier
                alert.value = alert.peak = max(alert.peak, length)
                alert.extra.update(facts)
                events.append(
                    event(self.name, self.kind, EventState.UPGRADED, alert, at, length, None, None, None, extra)
                )
            return events
        if alert is not None:  # a new run of the same value inside the hold continues the alert
            alert.hold_until = None
            run.alert = key
            alert.peak = max(alert.peak, length)
            if tier > alert.tier:
                alert.tier = tier
                alert.extra.update(facts)
                events.append(
                    event(self.name, self.kind, EventState.UPGRADED, alert, at, length, None, None, None, extra)
                )
            return events
        limit = self.cfg.max_expected_per_day
        if limit is not None and expected is not None and expected > limit:
            return events  # a run this long is normal for so dominant a value
        alert = open_alert(self.name, self.labels(scope, run.value), at, tier, length, None)
        alert.extra.update(facts)
        state.alerts[key] = alert
        run.alert = key
        events.append(event(self.name, self.kind, EventState.FIRING, alert, at, length, None, None, None, extra))
        return events

    def _end_run(self, run: Run, end: int, state: StreakState, length: int) -> None:
        """The run carrying an alert ended: the alert now waits out its hold."""
        if run.alert is None:
            return
        alert = state.alerts.get(run.alert)
        run.alert = None
        if alert is not None:
            alert.hold_until = end + self.hold
            alert.peak = max(alert.peak, length)

    def _resolve(self, key: tuple[int, int], state: StreakState, at: int, reason: str) -> Event:
        alert = state.alerts.pop(key)
        facts = {k: alert.extra.get(k) for k in Normality.KEYS if k in alert.extra}
        return event(
            self.name,
            self.kind,
            EventState.RESOLVED,
            alert,
            at,
            alert.peak,
            None,
            None,
            None,
            {
                "length": int(alert.peak),
                "chance": alert.extra.get("chance"),
                "expected_per_day": alert.extra.get("expected_per_day"),
                **facts,
                "reason": reason,
                "peak": alert.peak,
                "duration_s": (at - alert.started) // US,
            },
        )

    def _expire(self, state: StreakState, now: int, inclusive: bool) -> list[Event]:
        events = []
        for key in sorted(state.alerts, key=lambda k: (state.alerts[k].hold_until or 0, k)):
            alert = state.alerts[key]
            if alert.hold_until is not None and (alert.hold_until <= now if inclusive else alert.hold_until < now):
                events.append(self._resolve(key, state, alert.hold_until, "hold expired"))
        return events

    # --- chance ------------------------------------------------------------------------------------
    def _count_shares(self, batch: Batch, state: StreakState, weight: int = 1) -> None:
        """Daily counts per (scope, value), vectorised: the history behind `chance`."""
        add_counts(state, batch, self.cal, self.window, weight)

    def _chance(self, scope: int, value: int, length: int, state: StreakState) -> Normality:
        """How normal a run of `length` of this value is, from the history before today."""
        assert state.day is not None
        n = min(self.ctx.full_days_before(state.day), self.window)
        if n <= 0:
            return Normality()
        return normality(
            state,
            (scope, value),
            self.labels(scope, value),
            self.scope_field,
            length,
            n,
            self._days_counted(state, n),
            self.cfg.prior_days,
        )

    def _days_counted(self, state: StreakState, n: int) -> int:
        """How many of the last `n` full days this rule counted the runs of."""
        assert state.day is not None
        if state.counted_from is None:
            return 0
        return max(0, min(n, state.day - state.counted_from))

    # --- time ----------------------------------------------------------------------------------------
    def deadline(self, state: StreakState) -> int | None:
        times = []
        if state.day is not None:
            times.append(self.cal.day_end(state.day))
        if self.gap is not None:  # a pause LONGER than max_gap ends a run: a record at last + gap continues it
            times += [r.last + self.gap + 1 for r in state.runs.values() if r.alert is not None]
        times += [a.hold_until for a in state.alerts.values() if a.hold_until is not None]
        return min(times) if times else None

    def advance(self, now: int, state: StreakState) -> tuple[list[Event], int | None]:
        if state.clock is None:
            state.clock = now
            state.day = self.cal.day_of(now)
        assert state.day is not None
        events: list[Event] = []
        while True:
            d = self.deadline(state)
            if d is None or d > now:
                break
            state.clock = max(state.clock, d)
            if self.gap is not None:
                for scope, run in list(state.runs.items()):
                    if run.last + self.gap < d:
                        self._end_run(run, run.last + self.gap, state, run.length)
                        del state.runs[scope]
            events += self._expire(state, d, inclusive=True)
            if d >= self.cal.day_end(state.day):
                state.day += 1
                state.forget_before(state.day - self.window)
        state.clock = max(state.clock, now)
        return events, self.deadline(state)

    # --- what is live --------------------------------------------------------------------------------
    def live(self, state: StreakState) -> list[tuple[OpenAlert, dict[str, JsonValue]]]:
        """Open alerts whose run is still going (not ended by another value or by `max_gap`; with
        `max_gap = "off"`, its last record today): what the first start hands on, with the run's length.
        An alert waiting out its hold after its run ended is not live."""
        out: list[tuple[OpenAlert, dict[str, JsonValue]]] = []
        for _, run in sorted(state.runs.items()):
            alert = state.alerts.get(run.alert) if run.alert is not None else None
            if alert is None:
                continue
            if self.gap is None and self.cal.day_of(run.last) != state.day:
                continue
            facts = {k: alert.extra[k] for k in ("chance", "expected_per_day", *Normality.KEYS) if k in alert.extra}
            out.append((alert, {"length": run.length, "run_length": run.length, **facts}))
        return out

    # --- persistence -----------------------------------------------------------------------------------
    def snapshot(self, state: StreakState) -> dict[str, JsonValue]:
        return encode(state, self.vocab, self.scope_field is not None, self.runs_key())

    def restore(self, snap: Mapping[str, JsonValue], buckets: Buckets) -> StreakState:
        state = StreakState()
        if snap.get("clock") is None:
            return state
        state.clock, state.day = json_int(snap["clock"]), json_int(snap["day"])
        self.restore_runs(state, snap)
        decode_open(state, snap, self.vocab, self.scope_field is not None)
        self.rebuild_shares(state, buckets)
        return state

    def restore_runs(self, state: StreakState, snap: Mapping[str, JsonValue]) -> None:
        """The run history from a snapshot, when it counted runs as this rule does; otherwise (a version
        1 snapshot, or an edit that changed what a run is) counting starts with the next full day."""
        decode_run_counts(state, snap, self.vocab, self.scope_field is not None, self.runs_key(), self.window)

    def rebuild_shares(self, state: StreakState, buckets: Buckets) -> None:
        """The share history from the raw hourly buckets (at start and after a reload)."""
        state.counts.clear()
        state.shares = self._share_index()
        counts_from_buckets(state, buckets, self.cal, self.window, self.filter)

    def subtract_pending(self, state: StreakState) -> None:
        """Take records not yet processed back out of the share counts rebuilt from buckets."""
        b = self.filter.apply(state.pending)
        if len(b):
            self._count_shares(b, state, weight=-1)

    def run_view(self, state: StreakState) -> list[tuple[dict[str, str], int]]:
        """(labels, current run length) per scope, for the metrics."""
        return [(self.labels(scope, run.value), run.length) for scope, run in state.runs.items()]

    # --- the engine's `Rule` -----------------------------------------------------------------------
    looks_ahead = True
    uses_holidays = False

    def series_snapshot(self, state: StreakState, force: bool) -> list[list[str]] | None:
        return None  # its share series come back from the buckets

    def restore_saved(self, snap: Snapshot, buckets: Buckets) -> StreakState:
        state = self.restore(snap.core, buckets)
        state.pending = snap.pending
        self.subtract_pending(state)
        return state

    def restore_edited(self, snap: Snapshot, buckets: Buckets, alerts: list[OpenAlert]) -> StreakState:
        state = self.new_state()
        if snap.clock is not None:
            state.clock, state.day = snap.clock, self.cal.day_of(snap.clock)
            self.restore_runs(state, snap.core)  # kept when the edit did not change what a run is
        for alert in [a for a in alerts if set(a.labels) == {self.cfg.field, *self.cfg.scope}]:
            scope = self.vocab.code(alert.labels[self.scope_field]) if self.scope_field else 0
            alert.hold_until = alert.hold_until or state.clock
            state.alerts[(scope, self.vocab.code(alert.labels[self.cfg.field]))] = alert
        self.rebuild_shares(state, buckets)
        return state

    def rebuilt(self, buckets: Buckets, clock: int) -> StreakState:
        return self.new_state()  # runs exist only in snapshots: a rule never saved starts with none

    def gauges(self, state: StreakState) -> Gauges:
        return Gauges(runs=self.run_view(state))
