"""Local calendar days and hours for vectorised code, correct across daylight-saving changes.

A day is identified by its proleptic ordinal (`date.toordinal()`); its start is the instant of local
midnight. An hour bucket is identified by the instant its local hour starts, so a 25-hour day has 25
buckets and half-hour zones (Asia/Kolkata) bucket by their own hours.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np

from sentinel.model import US, IntArray, from_datetime

HOUR_US = 3600 * US
DAY_US = 86400 * US

HOLIDAY_CODE = re.compile(r"^([A-Z]{2,3})(?:-([A-Z0-9]{1,6}))?$")


def parse_holiday_code(code: str) -> tuple[str, str | None]:
    """The top-level `holidays` key: 'US-MA' -> ('US', 'MA'); a ValueError names what is wrong (for
    `sentinel check`). Here, below both the configuration and the rules, since both read it."""
    m = HOLIDAY_CODE.match(code)
    if m is None:
        raise ValueError(f'{code!r} is not a country code with an optional subdivision, e.g. "CN" or "US-MA"')
    country, subdiv = m.group(1), m.group(2)
    import holidays

    try:
        holidays.country_holidays(country, subdiv=subdiv, years=2025)
    except NotImplementedError as exc:
        raise ValueError(f"{code!r}: {exc}") from None
    return country, subdiv


class Calendar:
    """Day and hour arithmetic in one time zone, with caches that make arrays cheap."""

    def __init__(self, tz: ZoneInfo | str) -> None:
        self.tz = tz if isinstance(tz, ZoneInfo) else ZoneInfo(tz)
        self._day_start: dict[int, int] = {}
        self._range: tuple[int, int] | None = None  # days covered by the arrays below
        self._starts = np.zeros(0, dtype=np.int64)
        self._trans_at = np.zeros(0, dtype=np.int64)  # instants where the UTC offset changes
        self._trans_off = np.zeros(0, dtype=np.int64)  # offset (µs) from that instant on

    # --- scalars -------------------------------------------------------------------------------
    def day_start(self, day: int) -> int:
        """Instant of local midnight starting `day` (the first instant of that local date)."""
        s = self._day_start.get(day)
        if s is None:
            d = date.fromordinal(day)
            local = datetime(d.year, d.month, d.day, tzinfo=self.tz)
            # In a zone that skips midnight (America/Santiago, Asia/Beirut) fold=0 resolves the
            # missing 00:00 with the old offset, which is exactly the instant the new day begins.
            s = from_datetime(local)
            self._day_start[day] = s
        return s

    def day_of(self, us: int) -> int:
        return datetime.fromtimestamp(us // US, self.tz).date().toordinal()

    def day_end(self, day: int) -> int:
        return self.day_start(day + 1)

    def date_of(self, day: int) -> date:
        return date.fromordinal(day)

    def offset(self, us: int) -> int:
        off = datetime.fromtimestamp(us // US, self.tz).utcoffset()
        return int((off or timedelta(0)).total_seconds()) * US

    def hour_start(self, us: int) -> int:
        off = self.offset(us)
        return ((us + off) // HOUR_US) * HOUR_US - off

    def next_hour(self, us: int) -> int:
        """The first local hour start strictly after `us`."""
        h = self.hour_start(us)
        nxt = h + HOUR_US
        # An offset change inside the hour moves the next local hour start.
        return self.hour_start(nxt) if self.hour_start(nxt) > h else nxt

    # --- arrays --------------------------------------------------------------------------------
    def _ensure(self, lo_us: int, hi_us: int) -> None:
        lo_day = self.day_of(lo_us) - 1
        hi_day = self.day_of(hi_us) + 1
        if self._range is not None and self._range[0] <= lo_day and hi_day <= self._range[1]:
            return
        if self._range is not None:
            lo_day = min(lo_day, self._range[0])
            hi_day = max(hi_day, self._range[1])
        lo_day -= 2
        hi_day += 32  # time moves forward: a month ahead, so a replay of a year rebuilds these a dozen times
        self._range = (lo_day, hi_day)
        self._starts = np.asarray([self.day_start(d) for d in range(lo_day, hi_day + 2)], dtype=np.int64)
        trans_at = [self._starts[0]]
        trans_off = [self.offset(int(self._starts[0]))]
        for i in range(len(self._starts) - 1):
            a, b = int(self._starts[i]), int(self._starts[i + 1])
            if self.offset(b) != trans_off[-1]:
                # bisect in whole seconds for the instant the offset changed
                lo, hi = a // US, b // US
                target = trans_off[-1]
                while hi - lo > 1:
                    mid = (lo + hi) // 2
                    if self.offset(mid * US) == target:
                        lo = mid
                    else:
                        hi = mid
                trans_at.append(hi * US)
                trans_off.append(self.offset(hi * US))
        self._trans_at = np.asarray(trans_at, dtype=np.int64)
        self._trans_off = np.asarray(trans_off, dtype=np.int64)

    def days_of(self, ts: IntArray) -> IntArray:
        """Day ordinal of every instant."""
        if len(ts) == 0:
            return np.zeros(0, dtype=np.int64)
        lo, hi = int(ts.min()), int(ts.max())
        self._ensure(lo, hi)
        assert self._range is not None
        first, last = np.searchsorted(self._starts, [lo, hi], side="right") - 1
        if first == last:  # the usual batch lies within one day: no per-instant search
            return np.full(len(ts), int(first) + self._range[0], dtype=np.int64)
        idx = np.searchsorted(self._starts, ts, side="right") - 1
        return idx.astype(np.int64) + self._range[0]

    def offsets_of(self, ts: IntArray) -> IntArray:
        if len(ts) == 0:
            return np.zeros(0, dtype=np.int64)
        self._ensure(int(ts.min()), int(ts.max()))
        idx = np.searchsorted(self._trans_at, ts, side="right") - 1
        return self._trans_off[np.maximum(idx, 0)]

    def hour_starts_of(self, ts: IntArray) -> IntArray:
        """The instant each record's local hour began (the key of the raw hourly buckets)."""
        off = self.offsets_of(ts)
        return ((ts + off) // HOUR_US) * HOUR_US - off

    def wall_seconds_of(self, ts: IntArray) -> IntArray:
        """Local wall-clock time of day in microseconds (0 .. 24 h), for same-time-of-day profiles."""
        off = self.offsets_of(ts)
        return (ts + off) % DAY_US


def history_start_us(value: date | datetime, calendar: Calendar) -> int:
    """`history_start` from the config: a date means its local midnight, a naive datetime local time."""
    if isinstance(value, datetime):
        dt = value if value.tzinfo is not None else value.replace(tzinfo=calendar.tz)
        return from_datetime(dt)
    return calendar.day_start(value.toordinal())
