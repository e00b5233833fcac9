"""`projected`: a day-mode surge's expected final count of the day at the current pace, from the baseline
days' same-time-of-day profile (the series' own shape shrunk toward the whole stream's)."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pytest

from sentinel.detect.projection import SHAPE_PRIOR, cumulative, fraction_done, projected
from sentinel.model import US
from tests.detect.builders import Rec, at, days, run, spread, threshold

D0 = date(2025, 7, 1)
T, U = "物流配送延误", "服务态度"
HOUR = 3600 * US


def flat(per_hour: int) -> np.ndarray:
    return cumulative([np.full(24, per_hour, dtype=np.int64)])


def office(per_hour: int) -> np.ndarray:
    """Traffic only from 08:00 to 20:00."""
    h = np.zeros(24, dtype=np.int64)
    h[8:20] = per_hour
    return cumulative([h])


@pytest.mark.parametrize(
    ("count", "series", "stream", "wall_h", "expected"),
    [
        (100, flat(10), flat(10), 12.0, 200.0),  # half a flat day done: twice today's count
        (100, flat(10), flat(10), 6.0, 400.0),
        (100, flat(10), flat(10), 24.0 - 1 / 3600, 100.0),  # the day's last second: what there is
        (60, office(10), office(10), 14.0, 120.0),  # 14:00 is half of an 08:00-20:00 day
        (60, office(10), office(10), 21.0, 60.0),  # the office day is over: nothing more expected
        (12, cumulative([]), office(10), 14.0, 24.0),  # a new type takes the stream's shape
        (12, cumulative([]), cumulative([]), 14.0, None),  # no history at all: nothing to project
        # the series' flat shape, shrunk toward the stream's office hours (none done by 07:00)
        (5, flat(10), office(10), 7.0, round(5 / ((7 * 10) / (240 + SHAPE_PRIOR)))),
    ],
)
def test_projection_table(
    count: int, series: np.ndarray, stream: np.ndarray, wall_h: float, expected: float | None
) -> None:
    got = projected(count, series, stream, int(wall_h * HOUR))
    assert got == (None if expected is None else float(expected))


def test_a_small_series_leans_on_the_streams_shape() -> None:
    """Two complaints a day at night say little about a day's shape: with SHAPE_PRIOR the series' own
    night-only profile is outweighed by the stream's office-hours one, and a large series keeps its own."""
    night = np.zeros(24, dtype=np.int64)
    night[2] = 2
    stream = office(100)
    small = fraction_done(cumulative([night]), stream, 14 * HOUR)
    big = fraction_done(cumulative([night * 1000]), stream, 14 * HOUR)
    assert small is not None and big is not None
    assert small == (2 + SHAPE_PRIOR * 0.5) / (2 + SHAPE_PRIOR)  # near the stream's 0.5, not the series' 1.0
    assert small < 0.55
    assert big > 0.99  # its own: all of its day is done by 03:00


def test_a_morning_surge_projects_the_day_from_the_history_of_that_hour() -> None:
    """History: 96 a day of T, one every 15 minutes, so by any time of day the share done is w / 24 h;
    a burst at 06:00 crosses 1.5 x 96 at its 145th complaint, and the event projects the day."""
    recs = days(D0, 7, {T: 96}) + spread(D0 + timedelta(days=7), 300, T, start_h=6, end_h=7)
    events = run([threshold()], recs)
    firing = events[0]
    assert firing.state.value == "firing" and firing.value == 145
    wall_s = (firing.at - at("2025-07-08 00:00")) // US
    assert firing.extra["projected"] == float(round(145 * 86400 / wall_s))
    assert firing.extra["projected"] / firing.baseline > 5  # "about 5.9x the daily mean"
    upgrades = [e for e in events if e.state.value == "upgraded"]
    assert upgrades and all(e.extra["projected"] >= e.value for e in upgrades)


@pytest.mark.parametrize("mode", ["pace", "rolling"])
def test_only_day_mode_projects(mode: str) -> None:
    recs = days(D0, 7, {T: 96}) + spread(D0 + timedelta(days=7), 200, T, start_h=6, end_h=7)
    events = run([threshold(mode=mode)], recs)
    assert events and all("projected" not in e.extra for e in events)


def test_a_new_type_is_projected_with_the_streams_shape() -> None:
    """A type never seen before, floor-decided at min_count: the other types' office-hours shape says
    how much of the day is still to come."""
    recs = days(D0, 7, {U: 120}, start_h=8, end_h=20) + [
        Rec(at("2025-07-08 14:00") + i * US, "新类型") for i in range(10)
    ]
    firing = run([threshold()], recs)[0]
    assert firing.labels == {"type": "新类型"} and firing.value == 10
    assert firing.extra["projected"] == 20.0  # 14:00 is half of an 08:00-20:00 day


@pytest.mark.parametrize("day", ["2025-03-08", "2025-03-09", "2025-11-02", "2025-07-08"])
def test_the_hour_of_day_is_the_wall_clocks_on_daylight_saving_days(day: str) -> None:
    """The hourly profile counts by local wall-clock hour: on New York's 23- and 25-hour days too."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from sentinel.days import Calendar
    from sentinel.detect.base import RuleContext
    from sentinel.detect.threshold import ThresholdRule
    from sentinel.model import Vocab

    ny = ZoneInfo("America/New_York")
    cal = Calendar(ny)
    rule = ThresholdRule(threshold(), RuleContext(cal, Vocab()))
    d = date.fromisoformat(day).toordinal()
    ts = np.arange(cal.day_start(d), cal.day_end(d), 7 * 60 * US, dtype=np.int64)
    expected = [datetime.fromtimestamp(int(t) // US, ny).hour for t in ts]
    assert rule._wall_hours(d, ts).tolist() == expected
    assert (2 in expected) == (day != "2025-03-09")  # the hour the spring-forward day skips
