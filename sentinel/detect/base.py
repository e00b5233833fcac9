"""What every rule shares: the `Rule` protocol, the context it reads, filters and open alerts.

A rule is `process(batch, state)` for records and `advance(now, state)` for what time alone causes.
It never touches the store, the network or the clock: the engine hands it batches and instants, and
persists what it returns. Events caused by a record carry that record's time; events caused by time
carry the deadline's time, whenever `advance` happens to be called.

The engine knows a rule only through `Rule`: how to feed it, fork it for the look-ahead, save it
(`snapshot`, `series_snapshot`), put it back (`restore_saved`, `restore_edited`, `rebuilt`) and read
its gauges. Each rule has a state class of its own (`Rule[S]`); what the engine reads of any state
is `RuleState`.

A snapshot is `JsonValue` both ways (`sentinel.model`): a rule writes plain JSON values and reads them
back through `json_int`, `json_str`, `json_obj`, ..., which narrow and fail with TypeError on a shape no rule wrote.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from sentinel.config import Filter, RuleConfig
from sentinel.days import Calendar
from sentinel.detect.workdays import Workdays
from sentinel.model import (
    Batch,
    Buckets,
    Event,
    EventState,
    IntArray,
    JsonValue,
    Tier,
    Vocab,
    fingerprint,
    instance_id,
    json_float,
    json_int,
    json_obj,
    json_str,
)

SAMPLES = 5
"""Complaint ids an event carries (the records that made it), for the links in messages."""


def stable_order(keys: IntArray) -> npt.NDArray[np.intp]:
    """`argsort(keys, kind="stable")`, through numpy's radix sort when the keys fit 16 bits (series codes
    usually do): linear, not a merge sort of int64s, and the same order (a
    stable sort has one answer)."""
    if len(keys) and int(keys.min()) >= 0 and int(keys.max()) <= np.iinfo(np.int16).max:
        return np.argsort(keys.astype(np.int16), kind="stable")
    return np.argsort(keys, kind="stable")


def sample_ids(ids: npt.NDArray[np.generic]) -> list[str]:
    """The last few of `ids` (ints or strings, as the source gave them) as the strings a message links."""
    return [str(i) for i in ids.tolist()][-SAMPLES:]


# --- a snapshot read back: JSON narrowed to what a state holds -------------------------------------------
# The store hands back what `json.loads` made of what a rule's `snapshot` wrote; `sentinel.model`'s
# `json_int` / `json_float` / `json_str` / `json_list` / `json_obj` narrow it (converting as `int(...)` /
# `float(...)` did before they were typed), and anything else fails loudly (TypeError) rather than travelling
# on as the wrong type. These two add what only snapshots need.


def opt_int(v: JsonValue) -> int | None:
    return None if v is None else json_int(v)


def opt_float(v: JsonValue) -> float | None:
    """A number or None, kept as it was written (an int stays an int, as the events carried it)."""
    if v is None or isinstance(v, int | float):
        return v
    raise TypeError(f"expected a number or null, got {type(v).__name__}")


def as_labels(v: JsonValue) -> dict[str, str]:
    """An alert's labels (a fresh dict)."""
    return {k: json_str(x) for k, x in json_obj(v).items()}


@dataclass(slots=True)
class RuleContext:
    """Facts about the whole stream that every rule reads (owned by the engine)."""

    calendar: Calendar
    vocab: Vocab
    coverage_start_us: int | None = None
    workdays: Workdays | None = None  # the `holidays` calendar, for baselines by kind of day

    def first_full_day(self) -> int | None:
        """The first local day wholly inside the source's coverage."""
        if self.coverage_start_us is None:
            return None
        day = self.calendar.day_of(self.coverage_start_us)
        return day if self.calendar.day_start(day) >= self.coverage_start_us else day + 1

    def full_days_before(self, day: int) -> int:
        first = self.first_full_day()
        return 0 if first is None else max(0, day - first)


class RecordFilter:
    """`where` / `where_not` on type and channel, as a vectorised mask."""

    def __init__(self, where: Filter, where_not: Filter, vocab: Vocab) -> None:
        self.where = where
        self.where_not = where_not
        self.vocab = vocab
        self.active = bool(where.type or where.channel or where_not.type or where_not.channel)

    def _codes(self, values: list[str]) -> npt.NDArray[np.int32]:
        codes = [self.vocab.lookup(v) for v in values]
        return np.asarray([c for c in codes if c is not None], dtype=np.int32)

    def mask(self, batch: Batch) -> npt.NDArray[np.bool_]:
        keep = np.ones(len(batch), dtype=bool)
        for values, column in ((self.where.type, batch.type), (self.where.channel, batch.channel)):
            if values:
                keep &= np.isin(column, self._codes(values))
        for values, column in ((self.where_not.type, batch.type), (self.where_not.channel, batch.channel)):
            if values:
                keep &= ~np.isin(column, self._codes(values))
        return keep

    def admits(self, type_: str, channel: str) -> bool:
        w, n = self.where, self.where_not
        if (w.type and type_ not in w.type) or (w.channel and channel not in w.channel):
            return False
        return not ((n.type and type_ in n.type) or (n.channel and channel in n.channel))

    def apply(self, batch: Batch) -> Batch:
        if not self.active or len(batch) == 0:
            return batch
        keep = self.mask(batch)
        return batch if keep.all() else batch.take(np.flatnonzero(keep))


@dataclass(slots=True)
class OpenAlert:
    """An alert instance while it is open, as the rule that owns it tracks it."""

    labels: dict[str, str]
    fingerprint: str
    instance: str
    started: int
    tier: Tier
    peak: float
    value: float = 0.0
    baseline: float | None = None
    unmet_since: int | None = None  # pace / rolling: condition unmet since
    hold_until: int | None = None  # streak: the run ended; resolves then unless continued
    extra: dict[str, JsonValue] = field(default_factory=dict)  # what the rule keeps for the events to come

    def copy(self) -> OpenAlert:
        return replace(self, labels=dict(self.labels), extra=dict(self.extra))

    def to_json(self) -> dict[str, JsonValue]:
        return {
            "labels": dict(self.labels),
            "fingerprint": self.fingerprint,
            "instance": self.instance,
            "started": self.started,
            "tier": int(self.tier),
            "peak": self.peak,
            "value": self.value,
            "baseline": self.baseline,
            "unmet_since": self.unmet_since,
            "hold_until": self.hold_until,
            "extra": self.extra,
        }

    @staticmethod
    def from_json(d: Mapping[str, JsonValue]) -> OpenAlert:
        return OpenAlert(
            as_labels(d["labels"]),
            json_str(d["fingerprint"]),
            json_str(d["instance"]),
            json_int(d["started"]),
            Tier(json_int(d["tier"])),
            json_float(d["peak"]),
            json_float(d.get("value", 0.0)),
            opt_float(d.get("baseline")),
            opt_int(d.get("unmet_since")),
            opt_int(d.get("hold_until")),
            dict(json_obj(d.get("extra") or {})),
        )


def open_alert(
    rule: str, labels: dict[str, str], at: int, tier: Tier, value: float, baseline: float | None
) -> OpenAlert:
    fp = fingerprint(rule, labels)
    return OpenAlert(labels, fp, instance_id(fp, at), at, tier, value, value, baseline)


def event(
    rule: str,
    kind: str,
    state: EventState,
    alert: OpenAlert,
    at: int,
    value: float,
    baseline: float | None,
    ratio: float | None,
    p: float | None = None,
    extra: Mapping[str, JsonValue] | None = None,
) -> Event:
    return Event(
        at=at,
        rule=rule,
        kind=kind,
        state=state,
        tier=alert.tier,
        labels=dict(alert.labels),
        value=value,
        baseline=baseline,
        ratio=ratio,
        fingerprint=alert.fingerprint,
        instance=alert.instance,
        started=alert.started,
        p=p,
        extra=dict(extra or {}),
    )


@dataclass(slots=True)
class Snapshot:
    """What the store keeps of one rule between cycles."""

    config_hash: str
    core: dict[str, JsonValue]  # the rule's own `snapshot` (its clock, open alerts, what buckets cannot give)
    series: list[list[str]] | None  # the series' labels when they changed (threshold and quiet rules)
    pending: Batch  # records not settled yet (the store writes them with their strings, not codes)
    ahead: list[dict[str, JsonValue]] = field(default_factory=list)  # told ahead (see detect.ahead)

    @property
    def clock(self) -> int | None:
        """The rule's clock when it was saved (None: it had seen nothing yet)."""
        clock = self.core.get("clock")
        return clock if isinstance(clock, int) else None


@dataclass(frozen=True, slots=True)
class SeriesGauge:
    """One threshold series now: what the metrics export of it."""

    labels: dict[str, str]
    current: float
    baseline: float
    threshold: float  # NaN while the series cannot fire
    ratio: float | None


@dataclass(frozen=True, slots=True)
class Gauges:
    """What a rule says about its series for the gauges (the metrics themselves are the caller's)."""

    folded: int = 0  # series folded into `__other__` so far (past `max_series`)
    series: list[SeriesGauge] = field(default_factory=list)
    runs: list[tuple[dict[str, str], int]] = field(default_factory=list)  # streak: labels, current run length


class RuleState(Protocol):
    """What the engine reads and sets of every rule's state."""

    clock: int | None
    pending: Batch  # records past the horizon, waiting (see detect.feed)
    late: int  # records that arrived after their time was closed, since the engine last asked

    @property
    def alerts(self) -> Mapping[int, OpenAlert] | Mapping[tuple[int, int], OpenAlert]:
        """The open alerts, by the rule's own key of a series."""
        ...


S = TypeVar("S", bound=RuleState)


def resumed(state: S, pending: Batch, subtract: Callable[[S], None]) -> S:
    """`state` rebuilt from buckets that count the records still pending when it was saved: they wait
    again, and `subtract` takes them back out of its counts (they are counted when they are fed)."""
    state.pending = pending
    subtract(state)
    return state


class Rule(Protocol[S]):
    """A rule as the engine drives it, with its own kind of state `S`."""

    name: str
    kind: str

    @property
    def cfg(self) -> RuleConfig: ...

    @property
    def looks_ahead(self) -> bool:
        """Pending records run ahead on a fork of its state (a quiet rule is told by time alone)."""
        ...

    @property
    def uses_holidays(self) -> bool:
        """Its baseline depends on the holiday calendar (a change of calendar rebuilds it)."""
        ...

    def new_state(self) -> S: ...

    def process(self, batch: Batch, state: S) -> list[Event]: ...

    def advance(self, now: int, state: S) -> tuple[list[Event], int | None]: ...

    def deadline(self, state: S) -> int | None: ...

    def fork(self, state: S) -> S:
        """An independent copy of `state`: feeding it leaves `state` unchanged (the look-ahead run)."""
        ...

    def live(self, state: S) -> list[tuple[OpenAlert, dict[str, JsonValue]]]:
        """Open alerts a person can still act on, with what the rule says about each."""
        ...

    def snapshot(self, state: S) -> dict[str, JsonValue]:
        """What only the state knows (JSON): its clock, open alerts, and what buckets cannot give back."""
        ...

    def series_snapshot(self, state: S, force: bool) -> list[list[str]] | None:
        """The series' labels to save, when they changed since the last call (or `force`); else None."""
        ...

    def restore_saved(self, snap: Snapshot, buckets: Buckets) -> S:
        """The state saved in `snap` under this very definition, counts rebuilt from the raw buckets."""
        ...

    def restore_edited(self, snap: Snapshot, buckets: Buckets, alerts: list[OpenAlert]) -> S:
        """A state for this definition, which `snap` saved under another: rebuilt from the buckets as of
        the saved clock, keeping those of the saved open `alerts` whose series it still has."""
        ...

    def rebuilt(self, buckets: Buckets, clock: int) -> S:
        """A state for a rule never saved, as of `clock`: what the buckets can give back."""
        ...

    def gauges(self, state: S) -> Gauges: ...
