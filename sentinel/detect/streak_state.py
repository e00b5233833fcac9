"""The streak rule's state, its snapshot codec, and the counting and figures that need no rule (`detect.streak`).

Guarantees:

- `StreakState.fork` is a copy that shares nothing feeding changes (the pending batch, never changed in
  place, is shared): feeding it (the look-ahead run) leaves the source as it was.
- `encode` and `decode_open` / `decode_run_counts` are inverse: a restored state carries the same runs,
  open alerts and run history (the window's days) as the one snapshotted (`SNAPSHOT_VERSION` 2). A
  version 1 snapshot, or one whose `runs_key` differs (an edit changed what a run is), restores with no
  run history: counting starts with the next full day, never from counts made under another definition.
- `new_in_run` and `add_counts` are vectorised over a batch and give what a record-at-a-time walk would.
- `normality` reads the share counts and run history of the days before `state.day` only (its cache of
  day totals is valid while a day's counts are the same array: counts are replaced, never changed).

Everything here is a function of its arguments (the state handed in is the only thing changed): no
clock, no store, no metrics, as everywhere under `detect/`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from sentinel.days import Calendar
from sentinel.detect.base import OpenAlert, RecordFilter, opt_int
from sentinel.detect.series import SeriesIndex
from sentinel.model import Batch, Buckets, IntArray, JsonValue, Vocab, json_int, json_list, json_obj, json_str

SNAPSHOT_VERSION = 2
"""2: the snapshot carries the daily run counts (`run_counts`, `counted_from`)."""


@dataclass(slots=True)
class Run:
    value: int  # vocab code of the field's value
    length: int
    started: int
    last: int
    customers: set[str] = field(default_factory=set)
    alert: tuple[int, int] | None = None  # key of the alert this run carries
    ids: list[str] = field(default_factory=list)  # its last few complaint ids, for the message

    def copy(self) -> Run:
        return Run(self.value, self.length, self.started, self.last, set(self.customers), self.alert, list(self.ids))


@dataclass(eq=False)
class StreakState:
    clock: int | None = None
    pending: Batch = field(default_factory=Batch.empty)
    day: int | None = None
    runs: dict[int, Run] = field(default_factory=dict)  # scope code -> current run
    alerts: dict[tuple[int, int], OpenAlert] = field(default_factory=dict)  # (scope, value) -> alert
    shares: SeriesIndex | None = None  # (scope..., field) combinations, for the share of a value
    counts: dict[int, IntArray] = field(default_factory=dict)  # day -> count per share series
    late: int = 0
    # day -> (scope, value) -> runs that reached `length` that day: the series' own streak history
    run_counts: dict[int, dict[tuple[int, int], int]] = field(default_factory=dict)
    counted_from: int | None = None  # the first full day whose runs are all in `run_counts`
    # (day, scope value or None) -> (that day's counts array, its total in the scope): `chance` asks for
    # the same past days' totals at every crossing; valid while `counts[day]` is that very array (counts
    # are replaced, never changed in place), so a late record's new array recomputes it
    day_totals: dict[tuple[int, str | None], tuple[IntArray, int]] = field(default_factory=dict)

    def fork(self) -> StreakState:
        """A copy to run ahead on: runs, alerts and share counts copied (`day_totals` is a cache: the
        copy recomputes it)."""
        return StreakState(
            clock=self.clock,
            pending=self.pending,
            day=self.day,
            runs={k: r.copy() for k, r in self.runs.items()},
            alerts={k: a.copy() for k, a in self.alerts.items()},
            shares=self.shares.fork() if self.shares is not None else None,
            counts={d: a.copy() for d, a in self.counts.items()},
            late=self.late,
            run_counts={d: dict(c) for d, c in self.run_counts.items()},
            counted_from=self.counted_from,
        )

    def forget_before(self, day: int) -> None:
        """Drop the share counts, run counts and cached totals of the days before `day` (out of the window)."""
        for old in [x for x in self.counts if x < day]:
            del self.counts[old]
        for old in [x for x in self.run_counts if x < day]:
            del self.run_counts[old]
        for key in [k for k in self.day_totals if k[0] < day]:
            del self.day_totals[key]


# --- runs ----------------------------------------------------------------------------------------------
def new_in_run(batch: Batch, idx: IntArray, run_id: IntArray, carried: Run | None, by_customer: bool) -> IntArray:
    """1 where a record makes its run longer: always, or (`by_customer`) for a customer new to the run.
    `run_id` numbers the runs of the records `idx` in order; run 0 continues `carried` when given."""
    n = len(idx)
    if not by_customer or batch.customer is None:
        return np.ones(n, dtype=np.int64)
    cust = batch.customer[idx].astype(np.int64)
    key = run_id.astype(np.int64) * (1 << 32) + (cust + 1)
    # ties in record order, as a lexsort with arange did; runs come in order, which timsort sees at once
    order = np.argsort(key, kind="stable")
    first = np.ones(n, dtype=bool)
    sk = key[order]
    first[1:] = sk[1:] != sk[:-1]
    new = np.zeros(n, dtype=np.int64)
    new[order] = first
    new[cust < 0] = 1  # without a customer we cannot tell: count it
    if carried is not None and carried.customers and batch.customer_values is not None:
        values = batch.customer_values
        known = [int(i) for c in carried.customers for i in np.flatnonzero(values == c)]
        if known:
            in_run0 = (run_id == 0) & np.isin(cust, list(known))
            new[in_run0] = 0
    return new


def customers_of(batch: Batch, idx: IntArray, before: set[str]) -> set[str]:
    """`before` and the customers of the records `idx`."""
    out = set(before)
    if batch.customer is None or batch.customer_values is None:
        return out
    codes = batch.customer[idx]
    for c in np.unique(codes[codes >= 0]).tolist():
        out.add(str(batch.customer_values[c]))
    return out


# --- how normal a run is ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Normality:
    """How many runs like this one a normal day has: the blended figure and what it is made of."""

    KEYS = ("expected_per_day_observed", "expected_per_day_independent", "runs_observed", "days_observed")

    chance: float | None = None
    expected: float | None = None  # the blend: what `max_expected_per_day` compares
    independent: float | None = None  # daily volume x (1 - share) x share^length
    observed: float | None = None  # runs reaching `length` per day over the days counted
    runs: int = 0
    days: int = 0

    def facts(self) -> dict[str, JsonValue]:
        return {
            "chance": self.chance,
            "expected_per_day": self.expected,
            "expected_per_day_observed": self.observed,
            "expected_per_day_independent": self.independent,
            "runs_observed": self.runs,
            "days_observed": self.days,
        }


def normality(
    state: StreakState,
    key: tuple[int, int],
    labels: dict[str, str],
    scope_field: str | None,
    length: int,
    n: int,
    seen: int,
    prior_days: float,
) -> Normality:
    """How normal a run of `length` of the series `key` (`labels`) is, from the `n` days before `state.day`
    (`seen` of them with their runs counted): the Gamma-Poisson blend of `detect.streak`'s docstring.
    Each past day's total in the scope is cached in `state.day_totals` while its counts stay the same array."""
    assert state.day is not None and state.shares is not None
    shares = state.shares
    mine_idx = shares.admit(tuple(labels[g] for g in shares.group_by))
    in_scope: npt.NDArray[np.bool_] | None = None
    want = labels[scope_field] if scope_field is not None else None
    total = mine = 0
    for d in range(state.day - n, state.day):
        c = state.counts.get(d)
        if c is None:
            continue
        cached = state.day_totals.get((d, want))
        if cached is not None and cached[0] is c:
            total += cached[1]
        else:
            if scope_field is not None and in_scope is None:
                in_scope = np.fromiter(
                    (lab[scope_field] == want for lab in shares.labels), dtype=bool, count=len(shares.labels)
                )
            day_total = int(c.sum()) if in_scope is None else int(c[in_scope[: len(c)]].sum())
            state.day_totals[(d, want)] = (c, day_total)
            total += day_total
        mine += int(c[mine_idx]) if mine_idx < len(c) else 0
    if total == 0:
        return Normality()
    share = mine / total
    independent = (total / n) * (1 - share) * share**length
    runs = sum(state.run_counts.get(d, {}).get(key, 0) for d in range(state.day - seen, state.day))
    expected = (runs + prior_days * independent) / (seen + prior_days) if seen + prior_days > 0 else independent
    # chance: the per-record probability of such a run starting that the expectation implies
    starts = (total / n) * (1 - share)
    chance = min(1.0, expected / starts) if starts > 0 else share**length
    return Normality(sig(chance), sig(expected), sig(independent), sig(runs / seen) if seen else None, runs, seen)


def sig(x: float) -> float:
    """`x` to 6 significant digits, as the events carry it."""
    if x == 0 or not math.isfinite(x):
        return x
    return float(f"{x:.6g}")


# --- share counts ------------------------------------------------------------------------------------
def add_counts(state: StreakState, batch: Batch, cal: Calendar, window: int, weight: int = 1) -> None:
    """Daily counts per (scope, value), vectorised: the history behind `chance`. Days older than the
    window are skipped; a negative `weight` (taking records back out) never touches a day after
    `state.day`, which a rebuild did not read."""
    assert state.shares is not None
    x = state.shares.of_batch(batch)
    n = len(state.shares)
    days = cal.days_of(batch.ts)
    one_day = len(days) > 0 and int(days.min()) == int(days.max())  # the usual batch: no mask, no sort
    for d in [int(days[0])] if one_day else np.unique(days).tolist():
        if state.day is not None and d < state.day - window:
            continue
        if weight < 0 and state.day is not None and d > state.day:
            continue  # a rebuild reads no day after the current one: nothing to take back out
        add = weight * np.bincount(x if one_day else x[days == d], minlength=n)
        old = state.counts.get(d)
        if old is None:
            state.counts[d] = add
        else:
            if len(old) < n:
                old = np.concatenate([old, np.zeros(n - len(old), dtype=old.dtype)])
            state.counts[d] = old + add


def counts_from_buckets(
    state: StreakState, buckets: Buckets, cal: Calendar, window: int, record_filter: RecordFilter
) -> None:
    """`state.counts` from the raw hourly buckets of the window up to `state.day` (`state.shares` fresh)."""
    assert state.shares is not None
    if state.day is None or len(buckets.hour_us) == 0:
        return
    start = cal.day_start(state.day - window)
    end = cal.day_end(state.day)
    sel = (buckets.hour_us >= start) & (buckets.hour_us < end)
    probe = Batch(
        np.zeros(int(sel.sum()), dtype=np.int64),
        buckets.hour_us[sel],
        buckets.type[sel].astype(np.int32),
        buckets.channel[sel].astype(np.int32),
    )
    keep = record_filter.mask(probe) if record_filter.active else np.ones(len(probe), dtype=bool)
    weights = buckets.count[sel][keep]
    probe = probe.take(np.flatnonzero(keep))
    x = state.shares.of_batch(probe)
    n = len(state.shares)
    days = cal.days_of(probe.ts)
    for d in np.unique(days).tolist():
        m = days == d
        state.counts[d] = np.bincount(x[m], weights=weights[m], minlength=n).astype(np.int64)


# --- the snapshot codec --------------------------------------------------------------------------------
def encode(state: StreakState, vocab: Vocab, scoped: bool, runs_key: str) -> dict[str, JsonValue]:
    """The state as JSON (codes as their values; without a scope field the scope is "")."""
    dec = vocab.decode
    return {
        "version": SNAPSHOT_VERSION,
        "runs_key": runs_key,
        "clock": state.clock,
        "day": state.day,
        "counted_from": state.counted_from,
        "run_counts": [
            [d, dec(k[0]) if scoped else "", dec(k[1]), n]
            for d, per in sorted(state.run_counts.items())
            for k, n in sorted(per.items())
        ],
        "runs": [
            {
                "scope": dec(s) if scoped else "",
                "value": dec(r.value),
                "length": r.length,
                "started": r.started,
                "last": r.last,
                "customers": list[JsonValue](sorted(r.customers)),
                "alert": r.alert is not None,
                "ids": list[JsonValue](r.ids),
            }
            for s, r in state.runs.items()
        ],
        "alerts": [
            {"scope": dec(k[0]) if scoped else "", "value": dec(k[1]), "alert": a.to_json()}
            for k, a in state.alerts.items()
        ],
    }


def decode_open(state: StreakState, snap: Mapping[str, JsonValue], vocab: Vocab, scoped: bool) -> None:
    """The open alerts and the current runs of a snapshot, into `state`."""
    code = vocab.code
    for a in map(json_obj, json_list(snap.get("alerts", []))):
        key = (code(json_str(a["scope"])) if scoped else 0, code(json_str(a["value"])))
        state.alerts[key] = OpenAlert.from_json(json_obj(a["alert"]))
    for r in map(json_obj, json_list(snap.get("runs", []))):
        scope = code(json_str(r["scope"])) if scoped else 0
        value = code(json_str(r["value"]))
        state.runs[scope] = Run(
            value,
            json_int(r["length"]),
            json_int(r["started"]),
            json_int(r["last"]),
            {json_str(c) for c in json_list(r["customers"])},
            (scope, value) if r["alert"] else None,
            [json_str(i) for i in json_list(r.get("ids", []))],
        )


def decode_run_counts(
    state: StreakState, snap: Mapping[str, JsonValue], vocab: Vocab, scoped: bool, runs_key: str, window: int
) -> None:
    """The run history of a snapshot (the days of the window before `state.day`), when it counted runs
    as `runs_key` says; otherwise (a version 1 snapshot, or an edit that changed what a run is) counting
    starts with the next full day."""
    assert state.day is not None
    if json_int(snap.get("version", 1)) < 2 or snap.get("runs_key") != runs_key:
        state.counted_from = state.day + 1
        return
    code = vocab.code
    state.counted_from = opt_int(snap.get("counted_from"))
    for entry in json_list(snap.get("run_counts", [])):
        d, sc, val, n = json_list(entry)  # [day, scope, value, runs]
        if json_int(d) >= state.day - window:
            key = (code(json_str(sc)) if scoped else 0, code(json_str(val)))
            state.run_counts.setdefault(json_int(d), {})[key] = json_int(n)
