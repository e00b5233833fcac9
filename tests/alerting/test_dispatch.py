"""Routes, grouping windows, repeats, upgrades, resolutions, inhibition, mute times, silences,
acknowledgement and escalation — through the real dispatcher and store, with a moved clock."""

from __future__ import annotations

from datetime import timedelta

import pytest

from sentinel.alerting import silences
from sentinel.alerting.ack import acknowledge
from sentinel.model import from_datetime
from tests.alerting.builders import INHIBIT, RECEIVERS, T0, seconds
from tests.alerting.conftest import MakeDesk

L = "物流配送延误"
S = "服务态度"


def test_no_routes_every_receiver_gets_every_alert_after_group_wait(desk: MakeDesk) -> None:
    d = desk(RECEIVERS)
    d.event("firing", "surge", L, "light", T0)
    assert d.step(T0 + seconds(0.999)) == 0  # group_wait 1 s
    assert d.step(T0 + seconds(1)) == 2
    assert [(m["receiver"], m["kind"], m["types"]) for m in d.messages()] == [
        ("cs-team", "alert", [L]),
        ("crisis", "alert", [L]),
    ]


ROUTES = (
    RECEIVERS
    + """
[[routes]]
match = { tier = ["light", "moderate"] }
receivers = ["cs-team"]
group_wait = "10s"
group_interval = "5m"
repeat_interval = "4h"

[[routes]]
match = { tier = "severe" }
receivers = ["crisis", "cs-team"]
group_wait = "0s"
repeat_interval = "30m"
"""
)


def test_group_wait_then_group_interval_batches_changes(desk: MakeDesk) -> None:
    d = desk(ROUTES)
    d.event("firing", "surge", L, "light", T0)
    d.event("firing", "surge", S, "light", T0 + seconds(4))
    assert d.step(T0 + seconds(9)) == 0
    assert d.step(T0 + seconds(10)) == 1  # one digest for the group (group_by rule)
    first = d.messages()
    assert first[0]["kind"] == "digest" and sorted(first[0]["types"]) == sorted([L, S])
    d.event("firing", "surge", "其他", "light", T0 + seconds(20))
    assert d.step(T0 + seconds(60)) == 0  # within group_interval of the last flush
    assert d.step(T0 + seconds(310)) == 1
    assert d.messages()[-1]["types"] == ["其他"]


def test_upgrade_is_sent_at_once_and_routed_by_current_tier(desk: MakeDesk) -> None:
    d = desk(ROUTES)
    d.event("firing", "surge", L, "light", T0)
    d.step(T0 + seconds(10))
    d.event("upgraded", "surge", L, "moderate", T0 + seconds(30), value=200)
    assert d.step(T0 + seconds(31)) == 1  # not held by the 5-minute group_interval
    assert d.messages()[-1]["states"] == ["upgraded"] and d.messages()[-1]["tier"] == "moderate"
    d.event("upgraded", "surge", L, "severe", T0 + seconds(40), value=300)
    d.step(T0 + seconds(41))
    severe = [m for m in d.messages() if m["tier"] == "severe"]
    assert sorted(m["receiver"] for m in severe) == ["crisis", "cs-team"]
    # the crisis group hears of it for the first time: a new alert at its tier, not an "upgrade"
    assert [m["states"] for m in severe if m["receiver"] == "crisis"] == [["firing"]]


def test_resolution_goes_once_to_everyone_told(desk: MakeDesk) -> None:
    d = desk(ROUTES)
    d.event("firing", "surge", L, "light", T0)
    d.step(T0 + seconds(10))
    d.event("upgraded", "surge", L, "severe", T0 + seconds(20), value=300)
    d.step(T0 + seconds(21))
    d.event("resolved", "surge", L, "severe", T0 + seconds(600))
    d.step(T0 + seconds(601))
    d.step(T0 + seconds(2000))
    resolved = [m for m in d.messages() if m["states"] == ["resolved"]]
    assert sorted(m["receiver"] for m in resolved) == ["crisis", "cs-team"]


def test_alert_resolved_before_anyone_was_told_is_not_announced(desk: MakeDesk) -> None:
    d = desk(ROUTES)
    d.event("firing", "surge", L, "light", T0)
    d.event("resolved", "surge", L, "light", T0 + seconds(5))
    d.step(T0 + seconds(6))
    d.step(T0 + seconds(60))
    assert d.messages() == []


def test_repeat_for_open_unacknowledged_alerts_and_ack_stops_it(desk: MakeDesk) -> None:
    d = desk(ROUTES)
    ev = d.event("firing", "surge", L, "light", T0)
    d.step(T0 + seconds(10))
    d.step(T0 + timedelta(hours=3))
    assert len(d.messages()) == 1
    d.step(T0 + timedelta(hours=4, seconds=10))
    d.step(T0 + timedelta(hours=4, seconds=30))
    assert [m["kind"] for m in d.messages()] == ["alert", "repeat"]
    with d.store.transaction() as conn:
        acknowledge(conn, ev.instance, "zhangsan", "api", from_datetime(T0 + timedelta(hours=5)))
    d.step(T0 + timedelta(hours=9))
    d.step(T0 + timedelta(hours=9, seconds=30))
    assert [m["kind"] for m in d.messages()] == ["alert", "repeat"]


def test_inhibition_across_rules(desk: MakeDesk) -> None:
    d = desk(INHIBIT)
    d.event("firing", "type-surge", L, "light", T0)
    d.event("firing", "type-channel-surge", L, "light", T0, channel="电话热线")
    d.event("firing", "type-channel-surge", S, "light", T0, channel="电话热线")  # other type: not inhibited
    d.step(T0 + seconds(3))
    sent = {(m["receiver"], tuple(m["types"]), m["payload"]["views"][0]["rule"]) for m in d.messages()}
    assert ("cs-team", (L,), "type-surge") in sent
    assert ("cs-team", (S,), "type-channel-surge") in sent
    assert not any(rule == "type-channel-surge" and types == (L,) for _, types, rule in sent)
    # once the source resolves, the target (still open) is told at its group's next interval
    d.event("resolved", "type-surge", L, "light", T0 + seconds(100))
    d.step(T0 + seconds(101))
    d.step(T0 + seconds(170))
    later = [m for m in d.messages() if m["payload"]["views"][0]["rule"] == "type-channel-surge" and m["types"] == [L]]
    assert sorted(m["receiver"] for m in later) == ["crisis", "cs-team"]


MUTED = (
    RECEIVERS
    + """
[[routes]]
receivers = ["cs-team"]
group_wait = "0s"
mute = ["22:00-08:00"]
"""
)


def test_mute_window_across_midnight_sends_one_digest_at_its_end(desk: MakeDesk) -> None:
    d = desk(MUTED)
    night = T0.replace(hour=15)  # 23:00 in Shanghai
    d.event("firing", "surge", L, "light", night)
    d.event("firing", "surge", S, "light", night + timedelta(hours=2))  # 01:00, after midnight
    d.event("firing", "surge", "其他", "light", night + timedelta(hours=3))
    d.event("resolved", "surge", "其他", "light", night + timedelta(hours=4))  # resolved before morning
    for h in range(1, 9):
        d.step(night + timedelta(hours=h, minutes=59))  # up to 07:59
    assert d.messages() == []
    d.step(night + timedelta(hours=9))  # 08:00: the window ends
    msgs = d.messages()
    assert len(msgs) == 1 and msgs[0]["kind"] == "digest" and sorted(msgs[0]["types"]) == sorted([L, S])


@pytest.mark.parametrize(
    ("matcher", "silenced"),
    [
        ({"name": "type", "value": L, "isRegex": False}, True),
        ({"name": "type", "value": "物流.*", "isRegex": True}, True),
        ({"name": "type", "value": "物流", "isRegex": False}, False),
        ({"name": "type", "value": L, "isRegex": False, "isEqual": False}, False),
        ({"name": "rule", "value": "surge", "isRegex": False}, True),
    ],
)
def test_silence_matching(desk: MakeDesk, matcher: dict[str, object], silenced: bool) -> None:
    d = desk(RECEIVERS)
    now = from_datetime(T0)
    body = {
        "matchers": [matcher],
        "endsAt": (T0 + timedelta(hours=1)).isoformat(),
        "createdBy": "ops",
        "comment": "known issue",
    }
    ms, starts, ends, by, comment = silences.parse(body, now)
    with d.store.transaction() as conn:
        silences.add(conn, ms, starts, ends, by, comment, now)
    d.event("firing", "surge", L, "light", T0)
    d.step(T0 + seconds(3))
    assert (d.messages() == []) is silenced


def test_silence_expiry_lets_the_next_notification_through(desk: MakeDesk) -> None:
    d = desk(RECEIVERS)
    now = from_datetime(T0)
    ms, starts, ends, by, comment = silences.parse(
        {
            "matchers": [{"name": "type", "value": L}],
            "endsAt": (T0 + timedelta(minutes=30)).isoformat(),
            "createdBy": "ops",
            "comment": "deploy",
        },
        now,
    )
    with d.store.transaction() as conn:
        silences.add(conn, ms, starts, ends, by, comment, now)
    d.event("firing", "surge", L, "light", T0)
    for minute in range(0, 30, 5):
        d.step(T0 + timedelta(minutes=minute, seconds=3))
    assert d.messages() == []
    d.step(T0 + timedelta(minutes=31))  # expired: told at the group's next interval
    assert [m["types"] for m in d.messages()] == [[L], [L]]


ESCALATE = (
    RECEIVERS
    + """
[[routes]]
receivers = ["cs-team"]
group_wait = "0s"
escalate_to = ["crisis"]
escalate_after = "1h"
"""
)


def test_escalation_timing_once_per_level_and_ack_prevents_it(desk: MakeDesk) -> None:
    d = desk(ESCALATE)
    d.event("firing", "surge", L, "light", T0)
    d.step(T0 + seconds(1))
    d.step(T0 + timedelta(hours=2))
    assert [m["receiver"] for m in d.messages()] == ["cs-team"]  # light: never escalated
    d.event("upgraded", "surge", L, "moderate", T0 + timedelta(hours=2), value=200)
    d.step(T0 + timedelta(hours=2, seconds=1))
    d.step(T0 + timedelta(hours=2, minutes=59))
    assert [m["receiver"] for m in d.messages() if m["kind"] == "escalation"] == []
    d.step(T0 + timedelta(hours=3, seconds=1))
    d.step(T0 + timedelta(hours=3, minutes=30))
    esc = [m for m in d.messages() if m["kind"] == "escalation"]
    assert [m["receiver"] for m in esc] == ["crisis"] and esc[0]["tier"] == "moderate"
    # severe escalates again, once; an acknowledged alert would not
    ev = d.event("upgraded", "surge", L, "severe", T0 + timedelta(hours=4), value=300)
    d.step(T0 + timedelta(hours=5, seconds=1))
    d.step(T0 + timedelta(hours=6))
    assert [m["tier"] for m in d.messages() if m["kind"] == "escalation"] == ["moderate", "severe"]
    b = d.event("firing", "surge", S, "severe", T0 + timedelta(hours=6))
    d.step(T0 + timedelta(hours=6, seconds=1))
    with d.store.transaction() as conn:
        acknowledge(conn, b.instance, "lisi", "link", from_datetime(T0 + timedelta(hours=6, minutes=10)))
    d.step(T0 + timedelta(hours=8))
    assert all(S not in m["types"] for m in d.messages() if m["kind"] == "escalation")
    assert ev.instance
