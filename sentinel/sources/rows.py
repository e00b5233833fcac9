"""Turning raw rows into a validated, normalised `Batch`, and saying why the others were refused.

Every source (SQL, CSV, JSONL) ends here, so a complaint is accepted or rejected for the same
reasons whatever it came from. A rejected record is counted by reason and reported once with its id;
it never stops the stream.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Literal, SupportsIndex, SupportsInt
from zoneinfo import ZoneInfo

import numpy as np

from sentinel.model import US, Batch, Vocab, from_datetime

MAX_FIELD_CHARS = 200
"""Longest type, channel, customer or id accepted; longer values are data errors, not complaints."""

UNKNOWN_CHANNEL = "unknown"

REJECT_REASONS = (
    "missing_id",
    "bad_id",
    "missing_type",
    "bad_time",
    "future_time",
    "oversized_field",
    "bad_encoding",
    "bad_record",
    "duplicate_id",
)

TIME_FLOOR_US = 86_400 * US
"""1970-01-02 00:00 UTC: a created_at before it (0, year 0001, a negative epoch) is a placeholder, not
the time of a complaint, and is rejected as `bad_time`."""

IdType = Literal["auto", "int", "str"]
RawRow = tuple[object, object, object, object, object]
"""(id, created_at, type, channel, customer) exactly as the source returned them: any driver value, so
every reader narrows by `isinstance` before use."""


@dataclass(frozen=True, slots=True)
class Rejected:
    id: str | None
    reason: str
    detail: str


@dataclass(slots=True)
class Normalised:
    batch: Batch
    rejected: list[Rejected] = field(default_factory=list)


class BadValue(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def normalise_text(value: object, what: str) -> str:
    """NFC, surrounding whitespace stripped; bytes must be UTF-8."""
    if isinstance(value, bytes | bytearray | memoryview):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadValue("bad_encoding", f"{what} is not valid UTF-8 (byte {exc.start})") from None
    elif not isinstance(value, str):
        value = str(value)
    text = unicodedata.normalize("NFC", value).strip()
    if len(text) > MAX_FIELD_CHARS:
        raise BadValue("oversized_field", f"{what} has {len(text)} characters (limit {MAX_FIELD_CHARS})")
    return text


def parse_time(value: object, naive_tz: ZoneInfo) -> int:
    """Microseconds since the epoch; naive values are read in `naive_tz`.

    Accepts datetimes, dates, ISO 8601 strings (with or without zone, "T" or space) and epoch numbers
    (seconds, milliseconds or microseconds, told apart by magnitude).
    """
    if isinstance(value, bytes | bytearray):
        try:
            value = bytes(value).decode("ascii")
        except UnicodeDecodeError:
            raise BadValue("bad_time", "created_at is not text") from None
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, date):
        dt = datetime(value.year, value.month, value.day)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        if isinstance(value, float) and not math.isfinite(value):
            raise BadValue("bad_time", f"created_at {value!r} is not a time")
        mag = abs(value)
        scale = US if mag < 1e11 else 1000 if mag < 1e14 else 1
        return _plausible(round(value * scale))
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            raise BadValue("bad_time", "created_at is empty")
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            try:
                return parse_time(float(text), naive_tz)
            except (ValueError, BadValue):
                raise BadValue("bad_time", f"created_at {text[:40]!r} is not a time") from None
    elif value is None:
        raise BadValue("bad_time", "created_at is missing")
    else:
        raise BadValue("bad_time", f"created_at of type {type(value).__name__} is not a time")
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=naive_tz)
    try:
        return _plausible(from_datetime(dt))
    except OverflowError:  # year 0001 in a zone east of UTC
        raise BadValue("bad_time", f"created_at {dt.isoformat()[:40]!r} is not a time") from None


def _plausible(t: int) -> int:
    if t < TIME_FLOOR_US:
        raise BadValue("bad_time", "created_at is before 1970-01-02")
    return t


def canonical_id(value: object, id_type: IdType) -> int | str:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise BadValue("missing_id", "id is missing")
    if isinstance(value, bytes | bytearray):
        value = normalise_text(value, "id")
    if id_type == "int" or (id_type == "auto" and isinstance(value, int) and not isinstance(value, bool)):
        try:
            number = _as_int(value)
        except (TypeError, ValueError):
            raise BadValue("bad_id", f"id {str(value)[:40]!r} is not an integer") from None
        if not -(1 << 63) <= number < (1 << 63):
            raise BadValue("bad_id", f"id {str(value)[:40]!r} is outside the 64-bit integer range")
        return number
    text = str(value).strip()
    if len(text) > MAX_FIELD_CHARS:
        raise BadValue("oversized_field", f"id has {len(text)} characters (limit {MAX_FIELD_CHARS})")
    return text


def _as_int(value: object) -> int:
    """`int(value)` of a driver value: text, bytes, or anything with `__int__` / `__index__` (Decimal,
    numpy integers, UUID); anything else is not an id number (TypeError, as `int()` itself raises)."""
    if isinstance(value, str | bytes | bytearray | memoryview | SupportsInt | SupportsIndex):
        return int(value)
    raise TypeError(f"{type(value).__name__} is not a number")


class RowNormaliser:
    """Validates raw rows into batches; one per source, sharing the process's `Vocab`."""

    def __init__(
        self, vocab: Vocab, naive_tz: ZoneInfo, id_type: IdType = "auto", max_future_us: int | None = 3600 * US
    ) -> None:
        self.vocab = vocab
        self.naive_tz = naive_tz
        self.id_type: IdType = id_type
        self.max_future_us = max_future_us

    def learn_ids(self, raw_ids: Iterable[object]) -> None:
        """With `id_type = "auto"`, the first usable id says what the source's ids are: numeric ids next
        to "abc" are then a data error (`bad_id`), not two kinds of complaint key."""
        if self.id_type != "auto":
            return
        for raw in raw_ids:
            try:
                rid = canonical_id(raw, "auto")
            except BadValue:
                continue
            self.id_type = "int" if isinstance(rid, int) else "str"
            return

    def normalise(
        self, rows: Iterable[RawRow], now_us: int | None = None, times: Sequence[int | None] | None = None
    ) -> Normalised:
        """`times`, when given, holds each row's created_at already parsed (None: parse it here)."""
        ids: list[int | str] = []
        ts: list[int] = []
        types: list[str] = []
        channels: list[str] = []
        customers: list[str | None] = []
        rejected: list[Rejected] = []
        limit = None if now_us is None or self.max_future_us is None else now_us + self.max_future_us
        for n, (raw_id, raw_ts, raw_type, raw_channel, raw_customer) in enumerate(rows):
            shown: str | None = None
            try:
                self.learn_ids((raw_id,))
                rid = canonical_id(raw_id, self.id_type)
                shown = str(rid)
                known = times[n] if times is not None else None
                t = known if known is not None else parse_time(raw_ts, self.naive_tz)
                if limit is not None and t > limit:
                    raise BadValue("future_time", "created_at is in the future")
                if raw_type is None:
                    raise BadValue("missing_type", "type is missing")
                typ = normalise_text(raw_type, "type")
                if not typ:
                    raise BadValue("missing_type", "type is empty")
                chan = UNKNOWN_CHANNEL if raw_channel is None else normalise_text(raw_channel, "channel")
                cust = None if raw_customer is None else normalise_text(raw_customer, "customer") or None
            except BadValue as bad:
                if shown is None and raw_id is not None:
                    shown = _show_id(raw_id)
                rejected.append(Rejected(shown, bad.reason, bad.detail))
                continue
            ids.append(rid)
            ts.append(t)
            types.append(typ)
            channels.append(chan or UNKNOWN_CHANNEL)
            customers.append(cust)
        return Normalised(self.build(ids, ts, types, channels, customers), rejected)

    def build(
        self,
        ids: Sequence[int | str],
        ts: Sequence[int],
        types: Sequence[str],
        channels: Sequence[str],
        customers: Sequence[str | None] | None,
    ) -> Batch:
        if not ts:
            return Batch.empty()
        id_arr = (
            np.asarray(ids, dtype=np.int64)
            if all(isinstance(i, int) for i in ids)
            else np.asarray([str(i) for i in ids], dtype=object)
        )
        cust_codes = None
        cust_values = None
        if customers is not None and any(c is not None for c in customers):
            local: dict[str, int] = {}
            codes = [-1 if c is None else local.setdefault(c, len(local)) for c in customers]
            cust_codes = np.asarray(codes, dtype=np.int32)
            cust_values = np.asarray(list(local), dtype=object)
        batch = Batch(
            id_arr,
            np.asarray(ts, dtype=np.int64),
            self.vocab.encode(types),
            self.vocab.encode(channels),
            cust_codes,
            cust_values,
        )
        return batch.sorted()


def _show_id(raw: object) -> str:
    if isinstance(raw, bytes | bytearray):
        return bytes(raw)[:40].decode("utf-8", "replace")
    return str(raw)[:60]
