"""The value types every section of the configuration is built from, and the base model.

A duration, a rate, a time window, a time zone, a locale and a secret are each parsed here once, by a
`BeforeValidator` that takes what the file (or a `SENTINEL_*` variable) gave, so every key of that type
accepts the same spellings and rejects others with the same message. The validators take `object`: they
are handed raw TOML, YAML or environment values and narrow them themselves.
"""

from __future__ import annotations

from datetime import timedelta
from fractions import Fraction
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, PlainSerializer

from sentinel.config_common import Secret, check_locale, check_zone, to_secret
from sentinel.units import Rate, TimeWindow, format_duration, parse_duration, parse_rate, parse_window

SecretValue = Annotated[Secret, BeforeValidator(to_secret), PlainSerializer(str)]


# --- units -----------------------------------------------------------------------------------------


def _duration(value: object) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, str):
        return parse_duration(value)
    raise ValueError("must be a duration string such as 15s, 5m, 24h")


def _rate(value: object) -> Rate:
    if isinstance(value, Rate):
        return value
    if isinstance(value, str):
        return parse_rate(value)
    raise ValueError("must be a rate such as 20/min")


def _window(value: object) -> TimeWindow:
    if isinstance(value, TimeWindow):
        return value
    if isinstance(value, str):
        return parse_window(value)
    raise ValueError("must be a time window such as 22:00-08:00")


Duration = Annotated[timedelta, BeforeValidator(_duration), PlainSerializer(format_duration)]


def _gap(value: object) -> timedelta | None:
    """A streak's `max_gap`: a duration, or "off" (a run then never ends by time alone)."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "off"):
        return None
    return _duration(value)


def _format_gap(value: timedelta | None) -> str:
    return "off" if value is None else format_duration(value)


Gap = Annotated[timedelta | None, BeforeValidator(_gap), PlainSerializer(_format_gap)]
RateValue = Annotated[Rate, BeforeValidator(_rate), PlainSerializer(str)]
Window = Annotated[TimeWindow, BeforeValidator(_window), PlainSerializer(str)]


Zone = Annotated[str, BeforeValidator(check_zone)]
Locale = Annotated[Literal["zh_CN", "en"], BeforeValidator(check_locale)]


def exact(value: float) -> Fraction:
    """The decimal the user wrote (1.5 -> 3/2), so boundaries compare without float error."""
    return Fraction(str(value))


NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$"
"""What a rule's or a receiver's `name` may be: it appears in labels, URLs and log lines."""


class Model(BaseModel):
    """Every section's base: an unknown key is an error (a typo must not pass for a default), and a loaded
    configuration is frozen (a reload builds a new one)."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)
