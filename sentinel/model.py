"""The small values that travel between the stages of the data path.

A `Batch` is columnar: one numpy array per field instead of one Python object per complaint, so the
rules can be vectorised (a plain Python loop per record costs about twenty times the parse). Types
and channels are interned into a `Vocab` shared by every stage of one process; codes never leave the
process (state is persisted with the strings).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TypeAlias
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from sentinel.tiers import Tier as Tier  # noqa: PLC0414 - re-exported: config imports it without numpy

US = 1_000_000
"""Microseconds per second: every instant inside Sentinel is an int of microseconds since the epoch."""

JsonValue: TypeAlias = "str | int | float | bool | list[JsonValue] | dict[str, JsonValue] | None"
"""A value as `json.loads` returns it (a stored payload, a request body): narrow it with `isinstance`."""

JsonObject: TypeAlias = "dict[str, JsonValue]"
"""A JSON object: a stored event's payload, a silence, a response body."""

JsonOut: TypeAlias = "str | int | float | bool | Sequence[JsonOut] | Mapping[str, JsonOut] | None"
"""A value to write as JSON (a chat tool's request body): read-only containers, so that a `list[str]` or a
`dict[str, str]` is one, which a `JsonValue` (invariant `list` and `dict`) would refuse."""

JsonOutObject: TypeAlias = "Mapping[str, JsonOut]"
"""A JSON object to write."""


def json_int(v: JsonValue) -> int:
    """`int(v)` of a JSON number (or numeric string); anything else is the TypeError `int` would raise."""
    if isinstance(v, int | float | str):
        return int(v)
    raise TypeError(f"expected a number, got {type(v).__name__}")


def json_float(v: JsonValue) -> float:
    """`float(v)` of a JSON number (or numeric string); anything else is the TypeError `float` would raise."""
    if isinstance(v, int | float | str):
        return float(v)
    raise TypeError(f"expected a number, got {type(v).__name__}")


def json_str(v: JsonValue) -> str:
    """A JSON string; anything else is a TypeError (JSON this code did not write)."""
    if isinstance(v, str):
        return v
    raise TypeError(f"expected a string, got {type(v).__name__}")


def json_list(v: JsonValue) -> list[JsonValue]:
    """A JSON array; anything else is a TypeError."""
    if isinstance(v, list):
        return v
    raise TypeError(f"expected a list, got {type(v).__name__}")


def json_obj(v: JsonValue) -> dict[str, JsonValue]:
    """A JSON object; anything else is a TypeError."""
    if isinstance(v, dict):
        return v
    raise TypeError(f"expected an object, got {type(v).__name__}")


IntArray = npt.NDArray[np.int64]
CodeArray = npt.NDArray[np.int32]
IdArray: TypeAlias = npt.NDArray[np.int64 | np.object_]
"""Complaint ids: int64 when every id of the source is a number, else object (the ids as str)."""

OTHER = "__other__"
"""The label value that stands for every combination past a cap (a rule's `max_series`, a metric's label cap)."""


class EventState(StrEnum):
    FIRING = "firing"
    UPGRADED = "upgraded"
    RESOLVED = "resolved"


class Vocab:
    """Interns strings (types, channels) into dense int32 codes for vectorised grouping."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        self.values: list[str] = []
        self._index: dict[str, int] = {}
        for v in values:
            self.code(v)

    def __len__(self) -> int:
        return len(self.values)

    def code(self, value: str) -> int:
        c = self._index.get(value)
        if c is None:
            c = len(self.values)
            self._index[value] = c
            self.values.append(value)
        return c

    def lookup(self, value: str) -> int | None:
        return self._index.get(value)

    def encode(self, values: Sequence[str]) -> CodeArray:
        """Codes for a column of strings; the Python loop runs once per distinct value only."""
        if len(values) == 0:
            return np.zeros(0, dtype=np.int32)
        uniq, inverse = np.unique(np.asarray(values, dtype=object), return_inverse=True)
        return self.encode_dictionary(list(uniq), inverse)

    def encode_dictionary(self, dictionary: Sequence[str], indices: npt.ArrayLike) -> CodeArray:
        """Codes for a dictionary-encoded column (as pyarrow produces it)."""
        mapping = np.fromiter((self.code(v) for v in dictionary), dtype=np.int32, count=len(dictionary))
        return mapping[np.asarray(indices, dtype=np.int64)] if len(mapping) else np.zeros(0, np.int32)

    def decode(self, code: int) -> str:
        return self.values[code]


@dataclass(frozen=True, eq=False, slots=True)
class Batch:
    """Complaints as columns, ordered by (created_at, id) unless said otherwise.

    `customer` holds codes local to this batch into `customer_values` (-1: no customer): customers are
    many and only ever compared inside a streak, so they are not interned for the process lifetime.
    """

    ids: IdArray
    ts: IntArray
    type: CodeArray
    channel: CodeArray
    customer: CodeArray | None = None
    customer_values: npt.NDArray[np.object_] | None = None

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    @staticmethod
    def empty() -> Batch:
        return Batch(
            np.zeros(0, dtype=np.int64),
            np.zeros(0, dtype=np.int64),
            np.zeros(0, dtype=np.int32),
            np.zeros(0, dtype=np.int32),
        )

    def take(self, index: npt.ArrayLike) -> Batch:
        idx = np.asarray(index)
        return Batch(
            self.ids[idx],
            self.ts[idx],
            self.type[idx],
            self.channel[idx],
            None if self.customer is None else self.customer[idx],
            self.customer_values,
        )

    def slice(self, start: int, stop: int) -> Batch:
        sl = slice(start, stop)
        return Batch(
            self.ids[sl],
            self.ts[sl],
            self.type[sl],
            self.channel[sl],
            None if self.customer is None else self.customer[sl],
            self.customer_values,
        )

    def customer_of(self, i: int) -> str | None:
        if self.customer is None or self.customer_values is None:
            return None
        c = int(self.customer[i])
        return None if c < 0 else str(self.customer_values[c])

    def sorted(self) -> Batch:
        """The batch in (created_at, id) order; cheap when it already is."""
        if len(self) < 2:
            return self
        d = np.diff(self.ts)
        if np.all(d > 0):
            return self
        if np.all(d >= 0):
            ties = np.flatnonzero(d == 0)
            if len(ties) == 0:
                return self
            if self.ids.dtype != object and np.all(np.less(self.ids[ties], self.ids[ties + 1])):
                return self
        order = np.lexsort((self.ids, self.ts)) if self.ids.dtype != object else _sort_mixed(self)
        return self.take(order)

    @staticmethod
    def concat(batches: Sequence[Batch]) -> Batch:
        batches = [b for b in batches if len(b)]
        if not batches:
            return Batch.empty()
        if len(batches) == 1:
            return batches[0]
        ids = _concat_ids([b.ids for b in batches])
        customer: CodeArray | None = None
        values: npt.NDArray[np.object_] | None = None
        if any(b.customer is not None for b in batches):
            # one code per distinct customer across the batches: a customer is the same person in each
            parts = []
            index: dict[object, int] = {}
            for b in batches:
                if b.customer is None or b.customer_values is None:
                    parts.append(np.full(len(b), -1, dtype=np.int32))
                    continue
                remap = np.asarray(
                    [index.setdefault(v, len(index)) for v in b.customer_values.tolist()] + [-1], dtype=np.int32
                )
                parts.append(remap[b.customer])  # code -1 picks the trailing -1
            customer = np.concatenate(parts)
            values = np.asarray(list(index), dtype=object)
        return Batch(
            ids,
            np.concatenate([b.ts for b in batches]),
            np.concatenate([b.type for b in batches]),
            np.concatenate([b.channel for b in batches]),
            customer,
            values,
        )


@dataclass(frozen=True, slots=True)
class Buckets:
    """Raw hourly buckets as columns (codes in the process's Vocab): what ingest stores and every rule's
    series are rebuilt from."""

    hour_us: IntArray
    type: IntArray
    channel: IntArray
    count: IntArray

    @staticmethod
    def empty() -> Buckets:
        z = np.zeros(0, dtype=np.int64)
        return Buckets(z, z.astype(np.int32), z.astype(np.int32), z)


def _concat_ids(parts: list[IdArray]) -> IdArray:
    if all(p.dtype != object for p in parts):
        return np.concatenate(parts)
    return np.concatenate([p.astype(object) for p in parts])


def _sort_mixed(b: Batch) -> npt.NDArray[np.int64]:
    keys = sorted(range(len(b)), key=lambda i: (int(b.ts[i]), str(b.ids[i])))
    return np.asarray(keys, dtype=np.int64)


def labels_key(labels: Mapping[str, str]) -> str:
    return json.dumps(dict(sorted(labels.items())), ensure_ascii=False, separators=(",", ":"))


def fingerprint(rule: str, labels: Mapping[str, str]) -> str:
    """Identity of an alerting series: the rule plus its labels (stable across processes)."""
    digest = hashlib.sha256(f"{rule}\x00{labels_key(labels)}".encode()).hexdigest()
    return digest[:16]


def instance_id(fp: str, started_us: int) -> str:
    """Identity of one crisis of a series: its fingerprint plus when it started."""
    return hashlib.sha256(f"{fp}\x00{started_us}".encode()).hexdigest()[:16]


def to_datetime(us: int, tz: ZoneInfo) -> datetime:
    return datetime.fromtimestamp(us / US, tz) if us % US else datetime.fromtimestamp(us // US, tz)


def from_datetime(dt: datetime) -> int:
    """Microseconds since the epoch of an aware datetime (exact, no float rounding)."""
    if dt.tzinfo is None:
        raise ValueError("naive datetime")
    delta = dt - datetime(1970, 1, 1, tzinfo=ZoneInfo("UTC"))
    return (delta.days * 86400 + delta.seconds) * US + delta.microseconds


@dataclass(frozen=True, slots=True)
class Event:
    """One change of an alert: opened (`firing`), tier up (`upgraded`) or `resolved`.

    `at` is the time of the record that caused it, or the deadline that time alone crossed.
    """

    at: int
    rule: str
    kind: str
    state: EventState
    tier: Tier
    labels: Mapping[str, str]
    value: float
    baseline: float | None
    ratio: float | None
    fingerprint: str
    instance: str
    started: int
    p: float | None = None
    extra: Mapping[str, JsonValue] = field(default_factory=dict)

    def to_json(self, tz: ZoneInfo) -> JsonObject:
        out: JsonObject = {
            "at": to_datetime(self.at, tz).isoformat(),
            "rule": self.rule,
            "kind": self.kind,
            "state": self.state.value,
            "tier": self.tier.label,
            "labels": dict(self.labels),
            "value": self.value,
            "baseline": self.baseline,
            "ratio": self.ratio,
            "p": self.p,
            "fingerprint": self.fingerprint,
            "instance": self.instance,
            "started": to_datetime(self.started, tz).isoformat(),
        }
        out.update(self.extra)
        return out
