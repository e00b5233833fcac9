"""Daily history of a threshold series from raw hourly buckets: counts per local day for the series'
labels and filters, and each day's baseline and threshold as the rule computes them."""

from __future__ import annotations

from datetime import date

import pytest

from sentinel.days import HOUR_US, Calendar
from sentinel.history import DailyCounts, chartable, series_history
from sentinel.model import OTHER
from tests.detect.builders import SH, at, threshold

CAL = Calendar(SH)
TODAY = date(2025, 7, 8).toordinal()
T, PHONE, WECHAT = "物流配送延误", "电话热线", "微信公众号"


def rows(day: date, per_type_channel: dict[tuple[str, str], int], hour: int = 10) -> list[tuple[int, str, str, int]]:
    start = at(f"{day.isoformat()} {hour:02d}:00")
    return [(start, t, c, n) for (t, c), n in per_type_channel.items()]


def daily_of(spec: dict[int, dict[tuple[str, str], int]]) -> DailyCounts:
    """spec: days before TODAY -> counts (one bucket at 10:00 each)."""
    out: list[tuple[int, str, str, int]] = []
    for back, cells in spec.items():
        out += rows(date.fromordinal(TODAY - back), cells)
    return DailyCounts(out, CAL)


def test_hours_are_summed_into_their_local_day() -> None:
    day = date(2025, 7, 7)
    local_midnight = at("2025-07-07 00:00")
    data = [
        (local_midnight - HOUR_US, T, PHONE, 3),  # 23:00 on July 6
        (local_midnight, T, PHONE, 2),
        (local_midnight + 23 * HOUR_US, T, PHONE, 5),
        (local_midnight + 5 * HOUR_US, T, WECHAT, 7),
    ]
    d = DailyCounts(data, CAL)
    cfg = threshold(group_by=["type"])
    assert d.series(cfg, {"type": T}, range(day.toordinal() - 1, day.toordinal() + 1)) == [3, 14]
    by_channel = threshold(group_by=["type", "channel"])
    assert d.series(by_channel, {"type": T, "channel": PHONE}, range(day.toordinal(), day.toordinal() + 1)) == [7]
    total = threshold(group_by=[])
    assert d.series(total, {}, range(day.toordinal(), day.toordinal() + 1)) == [14]


def test_filters_of_the_rule_apply() -> None:
    d = daily_of({1: {(T, PHONE): 4, (T, "内部录入"): 100}})
    cfg = threshold(where_not={"channel": ["内部录入"]})
    assert d.series(cfg, {"type": T}, range(TODAY - 1, TODAY)) == [4]
    only = threshold(where={"channel": ["内部录入"]})
    assert d.series(only, {"type": T}, range(TODAY - 1, TODAY)) == [100]


def test_baseline_is_the_mean_of_the_previous_days_and_waits_for_history() -> None:
    # coverage began 5 days ago (full days -5..-1), 10 a day, then 30 today
    spec = {back: {(T, PHONE): 10 + back} for back in range(1, 6)}
    spec[0] = {(T, PHONE): 30}
    d = daily_of(spec)
    cfg = threshold(baseline_days=3, min_history_days=3, factor=1.5, min_count=10)
    coverage = CAL.day_start(TODAY - 5)
    pts = series_history(d, cfg, {"type": T}, today=TODAY, coverage_start_us=coverage, days=7)
    # day -6 was never read (before the coverage): not drawn as a zero
    assert [p.day for p in pts] == [date.fromordinal(TODAY - k) for k in range(5, -1, -1)]
    assert [p.count for p in pts] == [15, 14, 13, 12, 11, 30]
    # days -5..-3 have fewer than 3 full days of coverage before them
    assert [p.baseline for p in pts[:3]] == [None, None, None]
    assert pts[3].baseline == pytest.approx((15 + 14 + 13) / 3)
    assert pts[4].baseline == pytest.approx((14 + 13 + 12) / 3)
    assert pts[5].baseline == pytest.approx(12.0) and pts[5].threshold == pytest.approx(18.0)
    assert [p.partial for p in pts] == [False] * 5 + [True]


def test_only_the_days_read_are_drawn() -> None:
    """Coverage from 14:00 two days ago: that day was read in part and is drawn; none before it, even with
    buckets there (a series' history older than the backfill window is not what the daemon read)."""
    d = daily_of({3: {(T, PHONE): 9}, 2: {(T, PHONE): 4}, 1: {(T, PHONE): 6}})
    coverage = CAL.day_start(TODAY - 2) + 14 * HOUR_US
    pts = series_history(d, threshold(), {"type": T}, today=TODAY, coverage_start_us=coverage, days=14)
    assert [(p.day, p.count) for p in pts] == [
        (date.fromordinal(TODAY - 2), 4),
        (date.fromordinal(TODAY - 1), 6),
        (date.fromordinal(TODAY), 0),
    ]
    today_only = series_history(
        d, threshold(), {"type": T}, today=TODAY, coverage_start_us=CAL.day_start(TODAY), days=14
    )
    assert [p.day for p in today_only] == [date.fromordinal(TODAY)]


def test_min_count_floors_the_threshold_and_median_is_honoured() -> None:
    d = daily_of({1: {(T, PHONE): 1}, 2: {(T, PHONE): 2}, 3: {(T, PHONE): 90}, 4: {(T, PHONE): 3}})
    coverage = CAL.day_start(TODAY - 30)
    mean = series_history(
        d, threshold(baseline_days=4, min_count=10), {"type": T}, today=TODAY, coverage_start_us=coverage, days=1
    )[0]
    assert mean.baseline == pytest.approx(24.0) and mean.threshold == pytest.approx(36.0)
    median = series_history(
        d,
        threshold(baseline_days=4, baseline="median", min_count=10),
        {"type": T},
        today=TODAY,
        coverage_start_us=coverage,
        days=1,
    )[0]
    assert median.baseline == pytest.approx(2.5) and median.threshold == 10.0


def test_fewer_available_days_than_the_window_average_what_there_is() -> None:
    d = daily_of({1: {(T, PHONE): 6}, 2: {(T, PHONE): 4}, 3: {(T, PHONE): 2}})
    coverage = CAL.day_start(TODAY - 3)
    p = series_history(
        d, threshold(baseline_days=7, min_history_days=3), {"type": T}, today=TODAY, coverage_start_us=coverage, days=1
    )[0]
    assert p.baseline == pytest.approx(4.0)


def test_no_coverage_means_no_baseline() -> None:
    d = daily_of({1: {(T, PHONE): 6}})
    p = series_history(d, threshold(), {"type": T}, today=TODAY, coverage_start_us=None, days=2)
    assert [(x.count, x.baseline, x.threshold) for x in p] == [(6, None, None), (0, None, None)]


def test_chartable() -> None:
    assert chartable(threshold(group_by=["type"]), {"type": T})
    assert chartable(threshold(group_by=[]), {})
    assert not chartable(threshold(group_by=["type"]), {"type": OTHER})
    assert not chartable(threshold(group_by=["type", "channel"]), {"type": T})
