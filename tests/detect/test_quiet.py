"""The quiet rule's boundaries: when a series that normally has traffic has had nothing for longer than
chance explains (max_p on the Poisson chance of none, min_expected a floor in complaints), resolving at
its next record; a channel normally quiet at night is not told of over a quiet night."""

from __future__ import annotations

import math
from datetime import date, timedelta
from typing import Any

import pytest

from sentinel.config import QuietRuleConfig
from sentinel.model import US
from tests.detect.builders import Rec, at, days, run, spread

D0 = date(2025, 7, 1)
T = "物流配送延误"
WX, PHONE = "微信公众号", "电话热线"
LAST = at("2025-07-08 10:00")  # the last record before the silence


def quiet(**kw: Any) -> QuietRuleConfig:
    kw.setdefault("name", "quiet")
    kw.setdefault("baseline_by", "all")  # every day alike here; kinds of day have their own test
    return QuietRuleConfig(kind="quiet", **kw)


def steady(channel: str = WX, per_day: int = 96, n_days: int = 7, **kw: Any) -> list[Rec]:
    """`per_day` evenly through the day (96: one every 15 minutes, 4 an hour) for `n_days` from D0."""
    return days(D0, n_days, {T: per_day}, channel=channel, **kw)


def silence_then(seconds: int, channel: str = WX) -> list[Rec]:
    """Today: the usual records up to 10:00, nothing for `seconds`, then one record."""
    today = [r for r in spread(D0 + timedelta(days=7), 96, T, channel) if r.ts <= LAST]
    return [*today, Rec(LAST + seconds * US, T, channel)]


# 4 complaints an hour: E after s seconds of silence is 4 s / 3600. -ln(1e-3) = 6.908 is reached at the
# first whole second of 1 h 43 m 37 s (6217 s); min_expected = 8 at exactly 2 h (7200 s).
@pytest.mark.parametrize(
    ("max_p", "min_expected", "silence_s", "fires_after_s"),
    [
        (1e-3, 1.0, 6216, None),  # one second short: chance still explains it
        (1e-3, 1.0, 6217, 6217),  # the record arrives at the very second the alert is told
        (1e-3, 1.0, 9000, 6217),
        (1e-3, 8.0, 7199, None),  # the floor decides: 8 complaints expected takes 2 h
        (1e-3, 8.0, 7200, 7200),
        (math.exp(-12.0), 8.0, 9000, None),  # now max_p decides: 12 expected takes 3 h
        (math.exp(-12.0), 8.0, 11000, 10800),
    ],
)
def test_max_p_and_min_expected_boundaries(
    max_p: float, min_expected: float, silence_s: int, fires_after_s: int | None
) -> None:
    events = run([quiet(max_p=max_p, min_expected=min_expected)], steady() + silence_then(silence_s))
    if fires_after_s is None:
        assert events == []
        return
    fired, resolved = events
    assert fired.state.value == "firing" and fired.labels == {"channel": WX}
    assert fired.at == LAST + fires_after_s * US and fired.value == 0
    assert fired.extra["silent_s"] == fires_after_s
    assert fired.baseline == fired.extra["expected"] == pytest.approx(4 * fires_after_s / 3600, rel=1e-3)
    assert fired.p == pytest.approx(math.exp(-fired.baseline), rel=1e-3) and fired.p <= max_p
    # resolved by the next record, at its time
    assert resolved.state.value == "resolved" and resolved.instance == fired.instance
    assert resolved.at == LAST + silence_s * US and resolved.extra["reason"] == "a complaint arrived"
    assert resolved.extra["duration_s"] == silence_s - fires_after_s


def test_one_silent_channel_among_flowing_ones() -> None:
    """The case it is for: one intake channel's sync breaks while the others flow on."""
    recs = (
        steady(WX)
        + steady(PHONE)
        + silence_then(4 * 3600)
        + [r for r in spread(D0 + timedelta(days=7), 96, T, PHONE) if r.ts <= LAST + 4 * 3600 * US]
    )
    events = run([quiet(max_p=1e-3)], recs)
    assert [(e.state.value, e.labels) for e in events] == [("firing", {"channel": WX}), ("resolved", {"channel": WX})]
    total = run([quiet(max_p=1e-3, group_by=[])], recs)
    assert total == []  # the stream as a whole never stopped


def test_a_channel_quiet_at_night_is_not_told_of_its_night() -> None:
    """Office hours only (08:00-20:00): fourteen hours of nothing overnight is its normal night; the same
    silence from 10:00 in a channel that runs all day is not."""
    office = steady(per_day=48, start_h=8, end_h=20)
    tonight = [r for r in spread(D0 + timedelta(days=7), 48, T, WX, start_h=8, end_h=20)]
    tomorrow = [Rec(at("2025-07-09 08:00"), T, WX)]
    assert run([quiet(max_p=1e-3)], office + tonight + tomorrow) == []
    # the same silence by day: from 10:00 on the 8th to 08:00 on the 9th
    by_day = [r for r in tonight if r.ts <= LAST]
    fired = run([quiet(max_p=1e-3)], office + by_day + tomorrow)
    assert [e.state.value for e in fired] == ["firing", "resolved"]
    assert at("2025-07-08 11:00") < fired[0].at < at("2025-07-08 13:00")  # 6.9 expected at 4 an hour


@pytest.mark.parametrize(("n_days", "fires"), [(2, False), (3, True)])
def test_no_alert_before_min_history_days(n_days: int, fires: bool) -> None:
    history = days(D0 + timedelta(days=7 - n_days), n_days, {T: 96}, channel=WX)
    events = run([quiet(max_p=1e-3)], history + silence_then(5 * 3600), coverage=at(f"2025-07-0{8 - n_days}"))
    assert bool(events) == fires


def test_a_series_without_traffic_never_fires() -> None:
    """Rare channels: a handful a week is no traffic to miss (E stays below the bound for days)."""
    recs = days(D0, 7, {T: 1}, channel="其他渠道", start_h=12, end_h=13) + steady(PHONE)
    recs += [r for r in spread(D0 + timedelta(days=7), 96, T, PHONE)]
    events = run([quiet(max_p=1e-3)], recs, until=at("2025-07-09 00:00"))
    assert [e.labels for e in events] == []


def test_a_sync_catching_up_resolves_once_and_does_not_reopen() -> None:
    """The channel's records arrive hours late (created while it was 'silent'): the first one read
    resolves the alert at the rule's clock, and the old times do not make the silence start again."""
    from tests.detect.builders import engine, make_batch

    eng = engine([quiet(max_p=1e-3)], coverage=at("2025-07-01 00:00"))
    now = LAST + 6 * 3600 * US
    today = D0 + timedelta(days=7)
    first = make_batch(
        steady(WX)
        + steady(PHONE)
        + [r for r in spread(today, 96, T, WX) if r.ts <= LAST]
        + [r for r in spread(today, 96, T, PHONE) if r.ts <= now],
        eng.vocab,
    )
    fired = eng.feed(first, now)
    assert [(e.state.value, e.labels) for e in fired] == [("firing", {"channel": WX})]
    late = make_batch([Rec(LAST + k * 900 * US, T, WX) for k in range(1, 24)], eng.vocab, first_id=10_000)
    caught_up = eng.feed(late, now + 60 * US)
    assert [(e.state.value, e.at) for e in caught_up] == [("resolved", now)]
    assert eng.feed(make_batch([], eng.vocab), now + 3600 * US) == []  # an hour on: the silence began at `now`


@pytest.mark.parametrize(("baseline_by", "fires"), [("day_kind", False), ("all", True)])
def test_a_weekend_is_compared_with_weekends(baseline_by: str, fires: bool) -> None:
    """A channel busy on workdays and nearly silent at weekends (a call centre): its Saturday is judged
    against earlier weekends by default, not against the workdays' traffic."""
    recs: list[Rec] = []
    for d in range(14):  # 2025-07-01 (Tuesday) to 07-14
        day = D0 + timedelta(days=d)
        weekend = day.weekday() >= 5
        recs += spread(day, 2 if weekend else 96, T, WX, start_h=10, end_h=12 if weekend else 24)
    saturday = [r for r in spread(date(2025, 7, 19), 2, T, WX, start_h=10, end_h=12)]
    events = run(
        [quiet(baseline_by=baseline_by, max_p=1e-3)],
        recs + [r for k in range(4) for r in spread(date(2025, 7, 15 + k), 96, T, WX)] + saturday,
        until=at("2025-07-19 20:00"),
    )
    assert bool(events) == fires
    from datetime import datetime
    from zoneinfo import ZoneInfo

    firings = [e for e in events if e.state.value == "firing"]
    # all days alike: every weekend day's quiet looks like a broken channel (and only those)
    assert all(datetime.fromtimestamp(e.at / US, ZoneInfo("Asia/Shanghai")).weekday() >= 5 for e in firings)
