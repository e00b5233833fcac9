"""Streak rule boundaries: runs, tiers, hold, gaps, distinct customers, scopes, ties and chance."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from sentinel.model import EventState
from tests.detect.builders import SH, Rec, at, days, run, states, streak

A, B = "物流配送延误", "服务态度"
MIN = 60 * 1_000_000


def seq(
    pattern: str,
    start: str = "2025-07-08 10:00",
    step_min: float = 1,
    channel: str = "电话热线",
    customers: str | None = None,
) -> list[Rec]:
    """'AAAAB' -> records one `step_min` apart; customers 'abcde' gives each record's customer."""
    t0 = at(start)
    types = {"A": A, "B": B, "C": "其他"}
    return [
        Rec(t0 + int(i * step_min * MIN), types[c], channel, customers[i] if customers else None)
        for i, c in enumerate(pattern)
    ]


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("AAAAB", []),
        ("AAAAA", [("firing", "light", 5)]),
        ("BAAAABAAAA", []),
        ("AAAAAAAA", [("firing", "light", 5), ("upgraded", "moderate", 8)]),
        ("A" * 12, [("firing", "light", 5), ("upgraded", "moderate", 8), ("upgraded", "severe", 12)]),
    ],
)
def test_fires_at_the_fifth_not_the_fourth(pattern: str, expected: list[tuple[str, str, int]]) -> None:
    ev = run([streak()], seq(pattern))
    assert states(ev) == expected
    if ev:
        assert ev[0].at == seq(pattern)[4].ts and ev[0].labels == {"type": A}
        assert ev[0].extra["length"] == 5


def test_custom_length_and_tiers() -> None:
    ev = run([streak(length=3, tiers={"moderate": 4, "severe": 6})], seq("AAAAAA"))
    assert states(ev) == [("firing", "light", 3), ("upgraded", "moderate", 4), ("upgraded", "severe", 6)]


def test_hold_then_resolve_at_run_end_plus_hold() -> None:
    recs = seq("AAAAAB")  # the run ends at the B (10:05)
    ev = run([streak(hold="1h")], recs, until=at("2025-07-08 12:00"))
    assert [e.state.value for e in ev] == ["firing", "resolved"]
    assert ev[1].at == at("2025-07-08 11:05") and ev[1].instance == ev[0].instance


def test_second_run_inside_hold_continues_the_alert() -> None:
    recs = seq("AAAAAB") + seq("AAAAAAAA", start="2025-07-08 10:30")
    ev = run([streak(hold="1h")], recs, until=at("2025-07-08 13:00"))
    # no second firing: the second run continues the alert and upgrades it to moderate at its 8th
    assert [e.state.value for e in ev] == ["firing", "upgraded"]
    assert len({e.instance for e in ev}) == 1
    # the second run has not ended (no breaking record, max_gap not passed): the alert stays open
    assert ev[1].extra["length"] == 8


def test_second_run_after_hold_is_a_new_alert() -> None:
    recs = seq("AAAAAB") + seq("AAAAAB", start="2025-07-08 11:30")
    ev = run([streak(hold="1h")], recs, until=at("2025-07-08 14:00"))
    assert [e.state.value for e in ev] == ["firing", "resolved", "firing", "resolved"]
    assert ev[1].at == at("2025-07-08 11:05") and ev[0].instance != ev[2].instance
    assert ev[3].at == at("2025-07-08 12:35")


def test_run_reaching_length_exactly_when_hold_expires_is_new() -> None:
    """A deadline T applies before records at T: a run reaching 5 at T opens a new alert."""
    recs = seq("AAAAAB") + seq("AAAAA", start="2025-07-08 11:01")  # 5th at 11:05 = 10:05 + 1 h
    ev = run([streak(hold="1h")], recs)
    assert [e.state.value for e in ev] == ["firing", "resolved", "firing"]
    assert ev[1].at == ev[2].at == at("2025-07-08 11:05")


def test_max_gap_breaks_a_run() -> None:
    assert run([streak(max_gap="10m")], seq("AAAAA", step_min=11)) == []
    assert states(run([streak(max_gap="10m")], seq("AAAAA", step_min=10))) == [("firing", "light", 5)]


def test_max_gap_ends_an_alerted_run_by_time() -> None:
    ev = run([streak(max_gap="10m", hold="30m")], seq("AAAAA"), until=at("2025-07-08 12:00"))
    assert [e.state.value for e in ev] == ["firing", "resolved"]
    assert ev[1].at == at("2025-07-08 10:04") + 10 * MIN + 30 * MIN


def test_distinct_customers() -> None:
    same = seq("AAAAA", customers="xxxxx")
    assert run([streak(distinct="customer")], same) == []
    assert len(run([streak()], same)) == 1
    five = seq("AAAAAA", customers="xyxzuv")  # distinct: x y z u v -> 5th distinct at the 6th record
    ev = run([streak(distinct="customer")], five)
    assert states(ev) == [("firing", "light", 5)] and ev[0].at == five[5].ts


def test_per_channel_scope() -> None:
    # channel 电话热线 sees A A A A A while 微信公众号 interleaves B's into the global stream
    recs = []
    for i in range(5):
        recs += [
            Rec(at("2025-07-08 10:00") + 2 * i * MIN, A, "电话热线"),
            Rec(at("2025-07-08 10:00") + (2 * i + 1) * MIN, B, "微信公众号"),
        ]
    assert run([streak()], recs) == []
    ev = run([streak(scope=["channel"])], recs)
    assert sorted((e.state.value, e.labels["type"], e.labels["channel"]) for e in ev) == [
        ("firing", B, "微信公众号"),
        ("firing", A, "电话热线"),
    ]


def test_ties_ordered_by_id() -> None:
    t = at("2025-07-08 10:00")
    recs = [Rec(t, A, id=5), Rec(t, A, id=4), Rec(t, B, id=3), Rec(t, A, id=2), Rec(t, A, id=1), Rec(t + MIN, B, id=6)]
    assert run([streak(length=3, tiers={"moderate": 4, "severe": 5})], recs) == []
    recs[2] = Rec(t, A, id=3)  # now ids 1..5 are all A: the run is 5 long, in id order
    ev = run([streak(length=3, tiers={"moderate": 4, "severe": 5})], recs)
    assert states(ev) == [("firing", "light", 3), ("upgraded", "moderate", 4), ("upgraded", "severe", 5)]


def test_chance_and_expected_per_day_and_gate() -> None:
    # history: A is half of all complaints (100 a day: 50 A, 50 B, alternating: A never streaks)
    hist = days(date(2025, 7, 1), 7, {A: 50, B: 50})
    ev = run([streak()], hist + seq("AAAAAB"))
    today = [e for e in ev if e.at >= at("2025-07-08 10:00")]
    independent = 100 * 0.5 * 0.5**5
    assert today and today[0].extra["expected_per_day_independent"] == pytest.approx(independent)
    assert today[0].extra["expected_per_day_observed"] == 0.0
    # no run in 7 days observed, the independent estimate worth 7 days: the blend is half of it
    assert today[0].extra["expected_per_day"] == pytest.approx(independent / 2)
    assert today[0].extra["chance"] == pytest.approx(0.5**5 / 2)
    gated = run([streak(max_expected_per_day=0.5)], hist + seq("AAAAAB"))
    assert [e for e in gated if e.at >= at("2025-07-08 10:00")] == []


def history(pattern: str, count: int = 7, start: date = date(2025, 7, 1)) -> list[Rec]:
    """`count` days, each the 100-record `pattern` spread evenly from 00:00 (A is 20 of every 100)."""
    assert len(pattern) == 100 and pattern.count("A") == 20
    out: list[Rec] = []
    for d in range(count):
        out += seq(pattern, start=f"{start + timedelta(days=d)} 00:00", step_min=14.4)
    return out


STREAKS_DAILY = "AAAAA" + "B" * 5 + "ABBBB" * 15 + "B" * 15  # one run of five A every day
NEVER_STREAKS = "ABBBB" * 20  # A as often, never twice in a row
IND = 100 * 0.8 * 0.2**5  # the independent estimate for both: 0.0256 runs a day


@pytest.mark.parametrize(
    ("case", "hist", "today", "options", "fires", "facts"),
    [
        # a value that streaks every day: observed 1/day outweighs the optimistic independent estimate
        (
            "streaks every day",
            history(STREAKS_DAILY),
            "AAAAAB",
            {},
            False,
            {
                "runs_observed": 7,
                "days_observed": 7,
                "expected_per_day_observed": 1.0,
                "expected_per_day": (7 + 7 * IND) / 14,
            },
        ),
        # the same share, never a run: the blend is below the independent estimate, it fires
        (
            "never streaks",
            history(NEVER_STREAKS),
            "AAAAAB",
            {},
            True,
            {
                "runs_observed": 0,
                "days_observed": 7,
                "expected_per_day_observed": 0.0,
                "expected_per_day": 7 * IND / 14,
            },
        ),
        # a type never seen: no share and no runs, nothing says it is normal
        (
            "a new type",
            history(STREAKS_DAILY),
            "CCCCCB",
            {},
            True,
            {"runs_observed": 0, "days_observed": 7, "expected_per_day_independent": 0.0, "expected_per_day": 0.0},
        ),
        # one day of history: the one run seen counts as one day against the prior's seven
        (
            "thin history",
            history(STREAKS_DAILY, count=1),
            "AAAAAB",
            {},
            True,
            {"runs_observed": 1, "days_observed": 1, "expected_per_day": (1 + 7 * IND) / 8},
        ),
        (
            "thin history, no prior",
            history(STREAKS_DAILY, count=1),
            "AAAAAB",
            {"prior_days": 0},
            False,
            {"runs_observed": 1, "days_observed": 1, "expected_per_day": 1.0},
        ),
        # the window: runs older than history_days no longer count
        (
            "runs outside the window",
            history(STREAKS_DAILY, count=3) + history(NEVER_STREAKS, 4, date(2025, 7, 4)),
            "AAAAAB",
            {"history_days": 4},
            True,
            {"runs_observed": 0, "days_observed": 4, "expected_per_day": 7 * IND / 11},
        ),
        (
            "runs inside the window",
            history(STREAKS_DAILY, count=3) + history(NEVER_STREAKS, 4, date(2025, 7, 4)),
            "AAAAAB",
            {},
            False,
            {"runs_observed": 3, "days_observed": 7, "expected_per_day": (3 + 7 * IND) / 14},
        ),
    ],
)
def test_expected_per_day_from_the_series_own_runs(
    case: str, hist: list[Rec], today: str, options: dict[str, Any], fires: bool, facts: dict[str, float]
) -> None:
    start = at(f"{date(2025, 7, 1) + timedelta(days=len(hist) // 100)} 10:00")
    tomorrow = seq(today, start=str(datetime.fromtimestamp(start / 1e6, ZoneInfo(SH)).replace(tzinfo=None)))
    probe = run([streak(**options)], hist + tomorrow)
    mine = [e for e in probe if e.at >= start and e.state == EventState.FIRING]
    assert len(mine) == 1, case  # without a gate every run fires: its figures are on the event
    for key, want in facts.items():
        assert mine[0].extra[key] == pytest.approx(want, rel=1e-5), (case, key)
    gated = run([streak(max_expected_per_day=0.2, **options)], hist + tomorrow)
    assert bool([e for e in gated if e.at >= start and e.state == EventState.FIRING]) == fires, case


def test_the_history_counts_runs_not_records() -> None:
    """A run of twelve is one run: the daily rate is of runs reaching `length`, whatever their length."""
    pattern = "A" * 12 + "B" * 8 + "ABBBB" * 1 + "B" * 75 + "AAAAAAA"
    pattern = pattern[:100]
    assert pattern.count("A") == 13
    recs: list[Rec] = []
    for d in range(3):
        recs += seq(pattern, start=f"2025-07-0{d + 1} 00:00", step_min=14.4)
    ev = run([streak()], recs + seq("AAAAAB", start="2025-07-04 10:00"))
    last = [e for e in ev if e.state == EventState.FIRING][-1]
    assert last.extra["runs_observed"] == 3 and last.extra["days_observed"] == 3


def test_where_filter_drops_records_from_the_sequence() -> None:
    recs = seq("AABAAA")
    recs[2] = Rec(recs[2].ts, B, "内部录入")
    assert run([streak()], recs) == []
    assert states(run([streak(where_not={"channel": ["内部录入"]})], recs)) == [("firing", "light", 5)]


def test_resolved_event_reports_length_and_duration() -> None:
    ev = run([streak(hold="10m")], seq("AAAAAAB"), until=at("2025-07-08 11:00"))
    res = ev[-1]
    assert res.state == EventState.RESOLVED and res.extra["length"] == 6 and res.value == 6
    assert res.extra["duration_s"] == (at("2025-07-08 10:16") - at("2025-07-08 10:04")) // 1_000_000


def test_samples_are_the_runs_last_records_whatever_the_split() -> None:
    recs = seq("BAAAAAAAA")
    for chunks in ([], [3], [2, 4, 6]):
        ev = run([streak()], recs, chunks=chunks)
        assert ev[0].extra["samples"] == ["2", "3", "4", "5", "6"]
        assert ev[1].extra["samples"] == ["5", "6", "7", "8", "9"]


def test_a_pause_of_exactly_max_gap_continues_the_run_whatever_the_split() -> None:
    """ "A pause longer than max_gap ends the run": 10 minutes exactly does not (in a batch, or when
    the pause spans a deadline between batches)."""
    recs = [*seq("AAAAAAA"), Rec(at("2025-07-08 10:16"), A)]  # 8th A exactly 10 min after the 7th
    for chunks in ([], [7], [1, 2, 3, 4, 5, 6, 7]):
        assert states(run([streak(max_gap="10m")], recs, chunks=chunks)) == [
            ("firing", "light", 5),
            ("upgraded", "moderate", 8),
        ]
    across_midnight = [
        Rec(at(t), A)
        for t in ("2025-07-08 23:47", "2025-07-08 23:48", "2025-07-08 23:49", "2025-07-08 23:50", "2025-07-09 00:00")
    ]
    assert states(run([streak(max_gap="10m")], across_midnight)) == [("firing", "light", 5)]
    longer = [*across_midnight[:4], Rec(at("2025-07-09 00:00") + 1, A)]
    assert run([streak(max_gap="10m")], longer) == []


def test_max_gap_ends_an_alerted_run_in_a_scope_that_fell_silent_whatever_the_split() -> None:
    """Found by the daemon = backtest property once `max_gap` had a default: with `scope = ["channel"]`,
    a run alerted on one channel whose channel then fell silent must end at its last record + max_gap
    even when records of another channel carry the batch far past that (no deadline split in between)."""
    rule = streak(length=3, tiers={"moderate": 4, "severe": 6}, scope=["channel"], max_gap="2h", hold="2h")
    recs = (
        seq("AAA", channel="电话热线")
        + seq("AAA", channel="微信公众号")
        + [Rec(at("2025-07-08 19:00"), A, "微信公众号")]
    )
    whole = run([rule], recs)
    for cut in range(1, len(recs)):
        assert [(e.state.value, e.labels["channel"], e.at) for e in run([rule], recs, chunks=[cut])] == [
            (e.state.value, e.labels["channel"], e.at) for e in whole
        ]
    phone = [e for e in whole if e.labels["channel"] == "电话热线"]
    # the phone run's last record was 10:02: ended by the pause at 12:02, resolved when its hold ran out
    assert [(e.state.value, e.at) for e in phone] == [
        ("firing", at("2025-07-08 10:02")),
        ("resolved", at("2025-07-08 14:02")),
    ]


def test_max_gap_off_lets_a_run_go_on_across_a_quiet_night() -> None:
    night = seq("AAA", start="2025-07-08 21:00") + seq("AA", start="2025-07-09 08:00")
    assert states(run([streak(max_gap="off")], night)) == [("firing", "light", 5)]
    assert run([streak()], night) == []  # the default 2h ends the run over the night
