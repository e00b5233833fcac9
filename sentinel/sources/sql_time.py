"""How an SQL source's `created_at` is stored, and how to write an instant in that representation.

Guarantees:
- `TimeCodec.bind` writes an instant exactly as the column stores it (naive or aware datetime, the stored
  text layout, the stored epoch unit and number type), so the database compares `created_at` with the
  bound natively: a comparison it had to convert could not use the index and, for naive columns, would
  silently shift by the session's time zone.
- The epoch unit is chosen by the magnitudes `parse_time` uses, so a bound and the parsed value of the
  same stored number agree.
- `TimeCodec.fixer` gives the one correction a read value needs before `RowNormaliser` judges it (a MySQL
  TIMESTAMP read in UTC gets its zone; a DECIMAL epoch becomes a plain number); nothing else is changed.
- A column's category comes from what the driver or reflection says (PostgreSQL OIDs, MySQL field types,
  SQLAlchemy types); SQLite's declared types say nothing, so there a stored sample decides.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import Decimal
from typing import Literal
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from sentinel.model import US

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Category = Literal["naive", "aware", "utc", "number", "text"]
"""What the driver says about a column: datetimes need no sample; numbers and text need one stored value
to learn the unit or layout. "utc" is a MySQL TIMESTAMP, shown in the session zone we pin to UTC."""

BoundTime = datetime | str | int | float | Decimal
"""An instant written in a column's own representation, ready to be bound as a parameter."""

EpochNumber = type[int] | type[float] | type[Decimal]

_PG_TYPES: dict[int, Category] = {
    1114: "naive",
    1082: "naive",
    1184: "aware",
    20: "number",
    21: "number",
    23: "number",
    700: "number",
    701: "number",
    1700: "number",
    25: "text",
    1043: "text",
    1042: "text",
}
_MYSQL_TYPES: dict[int, Category] = {
    12: "naive",
    10: "naive",
    7: "utc",
    0: "number",
    1: "number",
    2: "number",
    3: "number",
    4: "number",
    5: "number",
    8: "number",
    9: "number",
    246: "number",
    15: "text",
    253: "text",
    254: "text",
}
_ISO = re.compile(r"\d{4}-\d{2}-\d{2}(?:([T ])\d{2}:\d{2}(:\d{2})?(?:\.(\d+))?)?(Z|[+-]\d{2}(?::?\d{2})?)?")


@dataclass(frozen=True, slots=True)
class TimeCodec:
    """How to write an instant so the database compares it with `created_at` natively."""

    kind: Literal["naive", "aware", "utc", "text", "epoch"]
    zone: tzinfo = UTC
    sep: str = " "
    seconds: bool = True
    digits: int = 6
    suffix: str = ""
    scale: int = US
    number: EpochNumber = int

    def bind(self, since_us: int) -> BoundTime:
        at = EPOCH + timedelta(microseconds=since_us)
        if self.kind == "aware":
            return at
        if self.kind == "utc":
            return at.replace(tzinfo=None)
        if self.kind == "naive":
            return at.astimezone(self.zone).replace(tzinfo=None)
        if self.kind == "text":
            return self._text(at.astimezone(self.zone))
        if self.number is int:  # S > x  <=>  S > floor(x) for integer S: no cast, the index still serves
            return since_us // self.scale
        if self.number is Decimal:
            return Decimal(since_us) / self.scale
        return since_us / self.scale

    def _text(self, dt: datetime) -> str:
        # A naive layout is written with seconds and six digits: ISO text without a zone sorts like time
        # whatever fraction the stored values carry, so the bound is right for all of them.
        text = f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}{self.sep}{dt.hour:02d}:{dt.minute:02d}"
        if self.seconds:
            text += f":{dt.second:02d}"
        if self.digits:
            text += "." + f"{dt.microsecond:06d}{'0' * self.digits}"[: self.digits]
        return text + self.suffix

    def fixer(self) -> Callable[[object], object] | None:
        if self.kind == "utc":
            return attach_utc
        if self.kind == "epoch" and self.number is Decimal:
            return plain_number
        return None

    def describe(self) -> str:
        if self.kind == "naive":
            return f"naive datetime in {self.zone}"
        if self.kind == "text":
            return f"text like {self._text(EPOCH.astimezone(self.zone))!r}"
        if self.kind == "epoch":
            unit = {US: "s", 1000: "ms", 1: "µs"}[self.scale]
            return f"epoch {unit} ({self.number.__name__})"
        return {"aware": "datetime with time zone", "utc": "TIMESTAMP read in UTC"}[self.kind]


def codec_for(category: Category | None, naive_tz: ZoneInfo) -> TimeCodec | None:
    if category in ("aware", "utc"):
        return TimeCodec(category)
    if category == "naive":
        return TimeCodec("naive", naive_tz)
    return None


def codec_from_sample(value: object, naive_tz: ZoneInfo) -> TimeCodec | None:
    """The codec for a stored value, or None when it says nothing (bad value, bytes, NULL)."""
    if isinstance(value, datetime):
        return TimeCodec("aware") if value.tzinfo is not None else TimeCodec("naive", naive_tz)
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        mag = abs(float(value))
        if not math.isfinite(mag):
            return None
        scale = US if mag < 1e11 else 1000 if mag < 1e14 else 1  # parse_time's magnitudes: bind and parse agree
        number: EpochNumber = int if isinstance(value, int) else Decimal if isinstance(value, Decimal) else float
        return TimeCodec("epoch", scale=scale, number=number)
    if not isinstance(value, str):
        return None
    text = value.strip()
    m = _ISO.fullmatch(text)
    if m is None:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    sep = m.group(1) or " "
    if parsed.tzinfo is None or not m.group(4):
        return TimeCodec("text", naive_tz, sep=sep)
    # Zoned text sorts like time only with one fixed layout: copy the sample's exactly.
    return TimeCodec(
        "text", parsed.tzinfo, sep=sep, seconds=bool(m.group(2)), digits=len(m.group(3) or ""), suffix=m.group(4)
    )


def attach_utc(value: object) -> object:
    return value.replace(tzinfo=UTC) if isinstance(value, datetime) and value.tzinfo is None else value


def plain_number(value: object) -> object:
    """A finite DECIMAL as int (when integral) or float, as an epoch or an id is compared; else unchanged."""
    if isinstance(value, Decimal) and value.is_finite():
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def category_of_code(dialect: str, type_code: object) -> Category | None:
    """The category of a result column from the driver's type code (query mode: there is nothing to reflect)."""
    if not isinstance(type_code, int):
        return None
    if dialect == "postgresql":
        return _PG_TYPES.get(type_code)
    if dialect in ("mysql", "mariadb"):
        return _MYSQL_TYPES.get(type_code)
    return None


def category_of_type(dialect: str, col_type: sa.types.TypeEngine[object]) -> Category | None:
    """The category of a reflected column (table mode)."""
    if dialect == "sqlite":  # declared types say nothing about what SQLite stores
        return "number" if isinstance(col_type, sa.Integer) else None
    if isinstance(col_type, sa.DateTime):
        if dialect in ("mysql", "mariadb") and isinstance(col_type, sa.TIMESTAMP):
            return "utc"
        return "aware" if col_type.timezone else "naive"
    if isinstance(col_type, sa.Date):
        return "naive"
    if isinstance(col_type, sa.Numeric | sa.Integer):
        return "number"
    if isinstance(col_type, sa.String):
        return "text"
    return None
