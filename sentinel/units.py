"""Human units used in configuration: durations ("15s", "1h30m"), rates ("20/min") and daily time
windows ("22:00-08:00").

Parsing lives here, apart from the config models, so that the rules, the delivery worker and the
tests share one definition of what "5m" means.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta

_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse_duration(text: str) -> timedelta:
    """Parse "15s", "5m", "24h", "7d", "1h30m" or "0s" into a timedelta.

    A bare number is refused: "5" could mean seconds or minutes, and a wrong guess in an alerting
    tool silences people for an hour instead of a minute.
    """
    s = text.strip().lower().replace(" ", "")
    if not s:
        raise ValueError("empty duration")
    pos = 0
    total = 0.0
    for m in _DURATION_PART.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    if pos != len(s):
        raise ValueError(f"{text!r} is not a duration (use e.g. 15s, 5m, 24h, 7d, 1h30m)")
    return timedelta(seconds=total)


def format_duration(delta: timedelta) -> str:
    """Short human form: 90 s -> "1m30s", 0 -> "0s"."""
    seconds = round(delta.total_seconds())
    if seconds == 0:
        return "0s"
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return sign + "".join(parts)


_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*(s|sec|second|m|min|minute|h|hour|d|day)\s*$", re.IGNORECASE)
_RATE_UNIT = {
    "s": 1,
    "sec": 1,
    "second": 1,
    "m": 60,
    "min": 60,
    "minute": 60,
    "h": 3600,
    "hour": 3600,
    "d": 86400,
    "day": 86400,
}


@dataclass(frozen=True, slots=True)
class Rate:
    """At most `count` events per `per_seconds` (a sliding window)."""

    count: int
    per_seconds: float

    def __str__(self) -> str:
        return f"{self.count}/{format_duration(timedelta(seconds=self.per_seconds))}"


def parse_rate(text: str) -> Rate:
    """Parse "20/min", "1/s", "100/1m", "5/10s"."""
    m = _RATE.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a rate (use e.g. 20/min, 1/s, 100/h)")
    count = int(m.group(1))
    mult = int(m.group(2)) if m.group(2) else 1
    if count <= 0 or mult <= 0:
        raise ValueError(f"{text!r}: a rate must be positive")
    return Rate(count, float(mult * _RATE_UNIT[m.group(3).lower()]))


_WINDOW = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """A daily window of local wall-clock time; it wraps midnight when `end <= start`."""

    start: time
    end: time

    def contains(self, t: time) -> bool:
        if self.start < self.end:
            return self.start <= t < self.end
        return t >= self.start or t < self.end

    def end_after(self, local: datetime) -> datetime:
        """The first end of this window after `local` (today's, or tomorrow's when today's has passed)."""
        end = datetime.combine(local.date(), self.end, tzinfo=local.tzinfo)
        return end if end > local else end + timedelta(days=1)

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


def parse_window(text: str) -> TimeWindow:
    """Parse "22:00-08:00" (wraps midnight) or "12:00-13:30"; "24:00" means the end of the day."""
    m = _WINDOW.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a time window (use e.g. 22:00-08:00)")
    h1, m1, h2, m2 = (int(g) for g in m.groups())

    def mk(h: int, mi: int) -> time:
        if h == 24 and mi == 0:
            return time(0, 0)
        if not (0 <= h < 24 and 0 <= mi < 60):
            raise ValueError(f"{text!r}: {h:02d}:{mi:02d} is not a time of day")
        return time(h, mi)

    start, end = mk(h1, m1), mk(h2, m2)
    if start == end:
        raise ValueError(f"{text!r}: an empty window (start equals end)")
    return TimeWindow(start, end)
