"""Threshold rule boundaries, table-driven where the table reads better than prose."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from sentinel.detect.baseline import poisson_sf, poisson_threshold
from sentinel.model import EventState, Tier
from tests.detect.builders import Rec, at, days, run, spread, states, threshold

D0 = date(2025, 7, 1)
T = "物流配送延误"


def history(n_days: int, per_day: int, type_: str = T, start: date = D0) -> list[Rec]:
    return days(start, n_days, {type_: per_day})


def day(n: int) -> date:
    return D0 + timedelta(days=n)


@pytest.mark.parametrize(("today", "fires"), [(150, False), (151, True)])
def test_factor_boundary_is_strict_and_exact(today: int, fires: bool) -> None:
    recs = history(7, 100) + spread(day(7), today, T, start_h=8, end_h=20)
    events = run([threshold()], recs)
    assert [e.state for e in events] == ([EventState.FIRING] if fires else [])
    if fires:
        e = events[0]
        assert e.value == 151 and e.baseline == 100.0 and e.ratio == 1.51 and e.tier == Tier.LIGHT
        assert e.at == recs[7 * 100 + 150].ts  # the 151st record of the day, not a poll time
        assert e.labels == {"type": T}


def test_exact_arithmetic_with_fractional_baseline() -> None:
    # baseline 7 days summing 703 -> 100.428...; 1.5 x = 150.64 -> 151 fires, 150 not
    recs = history(6, 100) + spread(day(6), 103, T)
    assert not run([threshold()], recs + spread(day(7), 150, T, start_h=8))
    assert states(run([threshold()], recs + spread(day(7), 151, T, start_h=8))) == [("firing", "light", 151)]


@pytest.mark.parametrize(("coverage_days", "alerts_on_day"), [(2, None), (3, 3), (7, 7)])
def test_warm_up(coverage_days: int, alerts_on_day: int | None) -> None:
    """min_history_days = 3: no alert with 2 full days of coverage; baseline over what is available."""
    recs = history(coverage_days, 20) + spread(day(coverage_days), 60, T, start_h=8, end_h=12)
    events = run([threshold()], recs, coverage=at("2025-07-01 00:00"))
    if alerts_on_day is None:
        assert events == []
    else:
        assert states(events) == [("firing", "light", 31), ("upgraded", "moderate", 40), ("upgraded", "severe", 60)]
        assert events[0].baseline == 20.0
        assert events[0].at >= at(f"2025-07-0{1 + alerts_on_day} 08:00")


def test_partial_first_day_is_not_history() -> None:
    """Coverage starting at 09:00 makes that day partial: it is not one of the full days."""
    recs = spread(D0, 20, T, start_h=9) + history(2, 20, start=day(1)) + spread(day(3), 60, T, start_h=8)
    assert run([threshold()], recs) == []  # 2 full days only
    recs = spread(D0, 20, T, start_h=9) + history(3, 20, start=day(1)) + spread(day(4), 60, T, start_h=8)
    ev = run([threshold()], recs)
    assert ev[0].state == EventState.FIRING and ev[0].baseline == 20.0


def test_empty_days_count_as_zero() -> None:
    other = "服务态度"
    # the type is seen on days 0,1,2,4 (100 each); day 3, 5, 6 empty -> baseline 400/7 = 57.14
    recs = days(D0, 7, {other: 5})  # coverage for every day
    for d in (0, 1, 2, 4):
        recs += spread(day(d), 100, T)
    low = recs + spread(day(7), 85, T, start_h=9)  # 85 < 1.5 x 57.14 = 85.7
    high = recs + spread(day(7), 86, T, start_h=9)
    assert [e for e in run([threshold()], low) if e.labels["type"] == T] == []
    ev = [e for e in run([threshold()], high) if e.labels["type"] == T]
    assert len(ev) == 1 and ev[0].value == 86 and ev[0].baseline == pytest.approx(400 / 7)


def test_median_baseline_ignores_an_earlier_spike() -> None:
    recs = days(D0, 7, {T: 20})
    recs += spread(day(3), 400, T)  # a spike inside the baseline window
    recs += spread(day(7), 40, T, start_h=9)
    on_day7 = at("2025-07-08 00:00")
    assert [e for e in run([threshold()], recs) if e.at >= on_day7] == []  # mean = 77: 40 is below
    ev = [e for e in run([threshold(baseline="median")], recs) if e.at >= on_day7]
    assert states(ev) == [("firing", "light", 31), ("upgraded", "moderate", 40)] and ev[0].baseline == 20.0


def test_zero_baseline_new_type_is_floor_decided() -> None:
    new = "新问题"
    recs = days(D0, 7, {T: 50}) + spread(day(7), 20, new, start_h=9, end_h=10)
    events = [e for e in run([threshold()], recs) if e.labels["type"] == new]
    assert states(events) == [("firing", "moderate", 10), ("upgraded", "severe", 15)]
    assert events[0].ratio is None and events[0].baseline == 0.0


@pytest.mark.parametrize(
    ("today", "expected"),
    [
        (9, []),
        (10, [("firing", "moderate", 10)]),
        (14, [("firing", "moderate", 10)]),
        (15, [("firing", "moderate", 10), ("upgraded", "severe", 15)]),
    ],
)
def test_min_count_floor(today: int, expected: list[tuple[str, str, int]]) -> None:
    """baseline 2: 1.5 x 2 = 3 is under min_count 10, so the count decides (moderate 10, severe 15)."""
    recs = history(7, 2) + spread(day(7), today, T, start_h=9)
    ev = run([threshold()], recs)
    assert states(ev) == expected
    if ev:
        assert ev[0].ratio == 5.0


def test_min_count_custom() -> None:
    recs = history(7, 2) + spread(day(7), 5, T, start_h=9)
    assert states(run([threshold(min_count=5)], recs)) == [("firing", "moderate", 5)]
    assert run([threshold(min_count=6)], recs) == []


def test_max_p_gate() -> None:
    lam = 4.0
    need = poisson_threshold(10, lam, 1e-4)
    assert need > 10 and poisson_sf(need, lam) <= 1e-4 < poisson_sf(need - 1, lam)
    recs = history(7, 4)
    assert run([threshold(max_p=1e-4)], recs + spread(day(7), need - 1, T, start_h=9)) == []
    ev = run([threshold(max_p=1e-4)], recs + spread(day(7), need, T, start_h=9))
    assert len(ev) == 1 and ev[0].value == need and ev[0].p is not None and ev[0].p <= 1e-4
    # without the gate the same day fires at 10 with its (larger) p reported
    plain = run([threshold(max_p=0.5)], recs + spread(day(7), need, T, start_h=9))
    assert plain[0].value == 10 and plain[0].p == pytest.approx(poisson_sf(10, lam))


def test_tier_upgrades_only_upward_one_event_per_crossing() -> None:
    recs = history(7, 100) + spread(day(7), 320, T, start_h=9)
    assert states(run([threshold()], recs)) == [
        ("firing", "light", 151),
        ("upgraded", "moderate", 200),
        ("upgraded", "severe", 300),
    ]


def test_one_record_crossing_several_tiers_gives_one_event() -> None:
    """moderate 1.6 x 100 = 160 and factor 1.59 x 100 = 159 -> at 160 the record crosses both."""
    recs = history(7, 100) + spread(day(7), 161, T, start_h=9)
    cfg = threshold(factor=1.59, tiers={"moderate": 1.6, "severe": 1.61})
    assert states(run([cfg], recs)) == [("firing", "moderate", 160), ("upgraded", "severe", 161)]
    cfg = threshold(factor=1.59, tiers={"moderate": 1.595, "severe": 1.6})
    assert states(run([cfg], recs)) == [("firing", "severe", 160)]


def test_midnight_carry_over_and_resolution_shanghai() -> None:
    recs = history(7, 100)
    recs += spread(day(7), 200, T)  # surge: fires (moderate at 200 after light at 151)
    recs += spread(day(8), 200, T)  # still above 1.5 x (800/7 ~ 114 + ...) -> same alert, no new firing
    recs += spread(day(9), 100, T)  # a full day below -> resolves at the 00:00 ending day 9
    recs += spread(day(10), 5, T)
    ev = run([threshold()], recs)
    assert [e.state.value for e in ev] == ["firing", "upgraded", "resolved"]
    assert len({e.instance for e in ev}) == 1
    resolved = ev[-1]
    assert resolved.at == at("2025-07-11 00:00")
    assert resolved.extra["peak"] == 200 and resolved.extra["duration_s"] > 86400
    from zoneinfo import ZoneInfo

    assert resolved.to_json(ZoneInfo("Asia/Shanghai"))["at"] == "2025-07-11T00:00:00+08:00"


def test_resolution_happens_by_time_alone() -> None:
    """Open on 07-08 (met), 07-09 has no records at all: resolves at the 00:00 ending 07-09."""
    recs = history(7, 100) + spread(day(7), 200, T)
    ev = run([threshold()], recs, until=at("2025-07-10 00:00"))
    assert ev[-1].state == EventState.RESOLVED and ev[-1].at == at("2025-07-10 00:00")
    ev = run([threshold()], recs, until=at("2025-07-09 23:59:59"))
    assert ev[-1].state != EventState.RESOLVED


def test_daylight_saving_zone_days_and_resolution() -> None:
    ny = "America/New_York"
    start = date(2025, 3, 1)
    recs = days(start, 9, {T: 100}, tz=ny)  # includes the 23-hour day 2025-03-09
    recs += spread(date(2025, 3, 9), 60, T, tz=ny, start_h=22, end_h=23)  # late evening of the short day
    recs += spread(date(2025, 3, 10), 10, T, tz=ny)
    ev = run([threshold()], recs, tz=ny, until=at("2025-03-12 00:00", ny))
    assert [e.state.value for e in ev] == ["firing", "resolved"]
    # 151st record of 2025-03-09 is within the 22:00-23:00 burst of that day (not of the next one)
    assert at("2025-03-09 22:00", ny) <= ev[0].at < at("2025-03-09 23:00", ny)
    assert ev[1].at == at("2025-03-11 00:00", ny)
    from zoneinfo import ZoneInfo

    assert ev[1].to_json(ZoneInfo(ny))["at"] == "2025-03-11T00:00:00-04:00"


def test_ties_in_created_at_are_ordered_by_id() -> None:
    recs = history(7, 100)
    t = at("2025-07-08 10:00")
    recs += [Rec(t, T, id=10_000 + i) for i in range(151)]
    ev = run([threshold()], recs)
    assert len(ev) == 1 and ev[0].at == t and ev[0].value == 151


def test_late_record_for_a_closed_day_counts_but_never_alerts_for_it() -> None:
    recs = history(7, 100) + spread(day(7), 150, T)
    # the day closed at midnight with 150; a late record for it arrives on the next day
    late = Rec(at("2025-07-08 23:59:58"), T, id=99_999)
    nxt = spread(day(8), 3, T)
    from tests.detect.builders import engine, make_batch

    eng = engine([threshold()])
    batch = make_batch(recs + nxt, eng.vocab)
    eng.ctx.coverage_start_us = int(batch.ts[0])
    events = eng.feed(batch, int(batch.ts[-1]))
    events += eng.feed(make_batch([late], eng.vocab, first_id=99_999), int(batch.ts[-1]))
    assert events == []  # 151 for a closed day never opens an alert
    assert eng.late_records() == 1
    st = eng.states["surge"]
    x = st.series.admit((T,))
    assert st.counts[eng.ctx.calendar.day_of(late.ts)][x] == 151  # but its day counts it


def test_where_and_where_not_filters() -> None:
    internal = "内部录入"
    recs = history(7, 100) + spread(day(7), 200, T, channel=internal, start_h=9)
    assert run([threshold(where_not={"channel": [internal]})], recs) == []
    assert len(run([threshold()], recs)) == 2
    assert run([threshold(where={"type": ["服务态度"]})], recs) == []


def test_group_by_type_and_channel_and_total() -> None:
    recs = days(D0, 7, {T: 40}, channel="电话热线") + days(D0, 7, {T: 40}, channel="微信公众号")
    recs += spread(day(7), 70, T, channel="电话热线", start_h=9)
    ev = run([threshold(name="tc", group_by=["type", "channel"]), threshold(name="total", group_by=[])], recs)
    assert [(e.rule, e.labels, e.value) for e in ev] == [("tc", {"type": T, "channel": "电话热线"}, 61)]


def test_max_series_folds_into_other() -> None:
    recs = days(D0, 8, {f"t{i}": 1 for i in range(5)})
    from tests.detect.builders import engine, make_batch

    eng = engine([threshold(max_series=3)])
    b = make_batch(recs, eng.vocab)
    eng.ctx.coverage_start_us = int(b.ts[0])
    eng.feed(b, int(b.ts[-1]))
    series = eng.states["surge"].series
    assert len(series) == 4 and series.labels[-1] == {"type": "__other__"} and series.folded == 2


@pytest.mark.parametrize("mode", ["pace", "rolling"])
def test_pace_and_rolling_fire_on_a_morning_surge_earlier_than_day(mode: str) -> None:
    # normal days: 100 complaints spread over the whole day; the surge day: 100 by 10:00
    recs = history(7, 100) + spread(day(7), 100, T, start_h=8, end_h=10)
    assert run([threshold()], recs) == []  # day mode: 100 < 151
    ev = run([threshold(mode=mode)], recs)
    assert ev and ev[0].state == EventState.FIRING and ev[0].at < at("2025-07-08 10:00")


def test_pace_fires_by_time_of_day_and_resolves_after_resolve_after() -> None:
    """History: 4 an hour, all day. Surge: 60 between 06:00 and 07:00 (one a minute).
    Expected by t is 4 x hours; record k at 06:00 + k min fires once k+1 > 1.5 x (24 + k/15), k = 39."""
    recs = history(7, 96) + spread(day(7), 60, T, start_h=6, end_h=7)
    ev = run([threshold(mode="pace")], recs, until=at("2025-07-09 00:00"))
    assert ev[0].state == EventState.FIRING and ev[0].value == 40 and ev[0].at == at("2025-07-08 06:39")
    assert ev[0].baseline == pytest.approx(26.6)
    resolved = [e for e in ev if e.state == EventState.RESOLVED]
    # 60 stays above 1.5 x expected until expected reaches 40 at 10:00; resolve_after 1 h later
    assert len(resolved) == 1 and resolved[0].at == at("2025-07-08 11:00")


def test_pace_at_midnight_equals_day() -> None:
    recs = history(7, 96) + spread(day(7), 150, T)
    assert [e for e in run([threshold(mode="pace")], recs) if e.at >= at("2025-07-08 23:00")] == []


def test_rolling_window_slides_hourly() -> None:
    recs = history(7, 24) + spread(day(7), 40, T, start_h=1, end_h=2)
    ev = run([threshold(mode="rolling", resolve_after="30m")], recs, until=at("2025-07-09 03:00"))
    assert [e.state.value for e in ev][:1] == ["firing"]
    resolved = [e for e in ev if e.state == EventState.RESOLVED]
    # the window is the current hour and the 23 before it: at 01:00 next day the burst's hour leaves
    # it; unmet from then, resolved 30 min later
    assert resolved and resolved[0].at == at("2025-07-09 01:30")


def _early_history() -> list[Rec]:
    """7 days whose 50 complaints all come before 01:00: from 01:00 on pace expects exactly 50."""
    recs: list[Rec] = []
    for d in range(7):
        recs += spread(day(d), 50, T, start_h=0, end_h=1)
    return recs


def test_pace_compares_exactly_at_the_factor_boundary() -> None:
    cfg = {"factor": 2.3, "tiers": {"moderate": 3, "severe": 4}}  # 2.3 x 50 = 115 exactly: no alert
    recs = _early_history() + spread(day(7), 115, T, start_h=9, end_h=10)
    assert [e for e in run([threshold(**cfg)], recs) if e.at >= at("2025-07-08 00:00")] == []
    assert [e for e in run([threshold(mode="pace", **cfg)], recs) if e.at >= at("2025-07-08 00:00")] == []
    recs = _early_history() + spread(day(7), 116, T, start_h=9, end_h=10)
    assert states([e for e in run([threshold(mode="pace", **cfg)], recs) if e.at >= at("2025-07-08 00:00")]) == [
        ("firing", "light", 116)
    ]


def test_pace_tier_boundary_is_exact_and_equals_day() -> None:
    cfg = {"factor": 1.05, "tiers": {"moderate": 1.1, "severe": 1.2}}  # 1.1 x 50 = 55 exactly
    recs = _early_history() + spread(day(7), 55, T, start_h=9, end_h=10)
    today = at("2025-07-08 00:00")
    expected = [("firing", "light", 53), ("upgraded", "moderate", 55)]
    assert states([e for e in run([threshold(**cfg)], recs) if e.at >= today]) == expected
    assert states([e for e in run([threshold(mode="pace", **cfg)], recs) if e.at >= today]) == expected


def test_rolling_unmet_from_the_firing_record_whatever_the_split() -> None:
    """resolve_below 2.0 above factor 1.5: the alert is unmet from the record that opened it and
    resolves resolve_after later, however the records are batched."""
    recs = days(D0, 7, {T: 24, "其他": 24}) + spread(day(7), 30, T, start_h=9, end_h=10)
    recs.sort(key=lambda r: r.ts)
    cfg = threshold(mode="rolling", resolve_below=2.0, resolve_after="30m", min_count=5)
    whole = run([cfg], recs, until=at("2025-07-08 12:00"))
    fire = next(e for e in whole if e.state == EventState.FIRING and e.at >= at("2025-07-08 00:00"))
    k = [r.ts for r in recs].index(fire.at)
    for chunks in ([], [k + 1], [k, k + 1, k + 2]):
        got = [
            e.at
            for e in run([cfg], recs, until=at("2025-07-08 12:00"), chunks=chunks)
            if e.state == EventState.RESOLVED and e.instance == fire.instance
        ]
        assert got == [fire.at + 30 * 60 * 1_000_000]


def test_pace_record_in_the_repeated_dst_hour_keeps_the_alert_for_resolve_after() -> None:
    """Europe/Berlin, 2025-10-26: 02:00-03:00 happens twice. A record at the second 02:10 keeps the
    alert met; it cannot resolve before that record + resolve_after."""
    from datetime import UTC, datetime

    from sentinel.model import from_datetime

    ber = "Europe/Berlin"
    hist = days(date(2025, 10, 19), 7, {T: 240}, tz=ber)
    first_hour = spread(date(2025, 10, 26), 39, T, tz=ber, start_h=0, end_h=1)
    second_0210 = from_datetime(datetime(2025, 10, 26, 1, 10, tzinfo=UTC))  # 02:10+01:00
    ev = run(
        [threshold(mode="pace", min_count=3)],
        hist + first_hour + [Rec(second_0210, T)],
        tz=ber,
        until=at("2025-10-27 00:00", ber),
    )
    resolved = [e for e in ev if e.state == EventState.RESOLVED and e.at >= at("2025-10-26 00:00", ber)]
    assert resolved and resolved[0].at >= second_0210 + 3600 * 1_000_000


def test_min_history_days_zero_alerts_from_the_first_day_by_count() -> None:
    recs = spread(D0, 12, T, start_h=9, end_h=10)
    assert states(run([threshold(min_history_days=0)], recs, coverage=at("2025-07-01 00:00"))) == [
        ("firing", "moderate", 10)
    ]
    assert run([threshold()], recs, coverage=at("2025-07-01 00:00")) == []
