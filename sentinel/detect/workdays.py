"""Workdays and rest days for baselines that compare like with like (`baseline_by = "day_kind"`).

A customer-service stream on the first workday after a weekend or a public holiday is not a surge; it is
Monday. `holidays = "CN"` (a country code, optionally with a subdivision: `"US-MA"`) names the public
holidays; a rest day is a weekend day or a public holiday, except an adjusted working day (China's 调休:
the Saturday or Sunday worked to bridge a holiday), which is a workday. The `holidays` library knows
those adjusted days for China (`is_working_day`). Without `holidays` only weekends are rest days.

This is data, not a clock: the rules ask about a local date and get the same answer every time, so
detection stays pure and the daemon still equals the backtest.
"""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING

from sentinel.days import parse_holiday_code

if TYPE_CHECKING:
    from holidays.holiday_base import HolidayBase

    from sentinel.config import Config


class Workdays:
    """Which local dates are workdays, memoised per year."""

    def __init__(self, code: str | None) -> None:
        self.code = code
        self._cal: HolidayBase | None = None
        if code is not None:
            import holidays

            country, subdiv = parse_holiday_code(code)
            self._cal = holidays.country_holidays(country, subdiv=subdiv)
        self._known: dict[date, bool] = {}

    def is_workday(self, d: date) -> bool:
        known = self._known.get(d)
        if known is None:
            known = d.weekday() < 5 if self._cal is None else bool(self._cal.is_working_day(d))
            self._known[d] = known
        return known

    def kind(self, d: date) -> str:
        return "workday" if self.is_workday(d) else "rest day"

    def holiday_name(self, d: date) -> str | None:
        if self._cal is None:
            return None
        name = self._cal.get(d)
        return None if name is None else str(name)


def workdays_of(cfg: Config) -> Workdays | None:
    """The configuration's workday calendar, when a rule compares by kind of day."""
    from sentinel.config import QuietRuleConfig, ThresholdRuleConfig

    if not any(isinstance(r, ThresholdRuleConfig | QuietRuleConfig) and r.baseline_by == "day_kind" for r in cfg.rules):
        return None
    return Workdays(cfg.holidays)
