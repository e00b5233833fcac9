"""The clock is a seam: the daemon asks it for `now`, tests freeze or move it (freezegun works
because `SystemClock` reads `datetime.now`, which freezegun patches)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol

from sentinel.model import from_datetime


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock that only moves when told to; for tests and the backtest."""

    def __init__(self, start: datetime) -> None:
        self._now = start

    def now(self) -> datetime:
        return self._now

    def set(self, when: datetime) -> None:
        self._now = when


def now_us(clock: Clock) -> int:
    return from_datetime(clock.now())
