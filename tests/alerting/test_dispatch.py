"""Routes, grouping windows, repeats, upgrades, resolutions, inhibition, mute times, silences,
acknowledgement and escalation — through the real dispatcher and store, with a moved clock."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from sentinel.alerting import silences
from sentinel.alerting.ack import acknowledge
from sentinel.model import from_datetime
from tests.alerting.builders import RECEIVERS, T0, Alerts, config, dispatcher, messages, open_test_store, seconds, step

L = "物流配送延误"
S = "服务态度"


@pytest.fixture
def env(tmp_path: Path):  # type: ignore[no-untyped-def]
    store = open_test_store(tmp_path)
    yield tmp_path, store
    store.close()


def test_no_routes_every_receiver_gets_every_alert_after_group_wait(env) -> None:  # type: ignore[no-untyped-def]
    tmp, store = env
    cfg = config(tmp, RECEIVERS)
    d = dispatcher(cfg)
    a = Alerts(store, cfg.tz)
    a.event("firing", "surge", L, "light", T0)
    assert step(d, store, T0 + seconds(0.999)) == 0  # group_wait 1 s
    assert step(d, store, T0 + seconds(1)) == 2
    assert [(m["receiver"], m["kind"], m["types"]) for m in messages(store)] == [
        ("cs-team", "alert", [L]), ("crisis", "alert", [L])]


ROUTES = RECEIVERS + """
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


def test_group_wait_then_group_interval_batches_changes(env) -> None:  # type: ignore[no-untyped-def]
    tmp, store = env
    cfg = config(tmp, ROUTES)
    d = dispatcher(cfg)
    a = Alerts(store, cfg.tz)
    a.event("firing", "surge", L, "light", T0)
    a.event("firing", "surge", S, "light", T0 + seconds(4))
    assert step(d, store, T0 + seconds(9)) == 0
    assert step(d, store, T0 + seconds(10)) == 1  # one digest for the group (group_by rule)
    first = messages(store)
    assert first[0]["kind"] == "digest" and sorted(first[0]["types"]) == sorted([L, S])
    a.event("firing", "surge", "其他", "light", T0 + seconds(20))
    assert step(d, store, T0 + seconds(60)) == 0  # within group_interval of the last flush
    assert step(d, store, T0 + seconds(310)) == 1
    assert messages(store)[-1]["types"] == ["其他"]


def test_upgrade_is_sent_at_once_and_routed_by_current_tier(env) -> None:  # type: ignore[no-untyped-def]
    tmp, store = env
    cfg = config(tmp, ROUTES)
    d = dispatcher(cfg)
    a = Alerts(store, cfg.tz)
    a.event("firing", "surge", L, "light", T0)
    step(d, store, T0 + seconds(10))
    a.event("upgraded", "surge", L, "moderate", T0 + seconds(30), value=200)
    assert step(d, store, T0 + seconds(31)) == 1  # not held by the 5-minute group_interval
    assert messages(store)[-1]["states"] == ["upgraded"] and messages(store)[-1]["tier"] == "moderate"
    a.event("upgraded", "surge", L, "severe", T0 + seconds(40), value=300)
    step(d, store, T0 + seconds(41))
    severe = [m for m in messages(store) if m["tier"] == "severe"]
    assert sorted(m["receiver"] for m in severe) == ["crisis", "cs-team"]
    # the crisis group hears of it for the first time: a new alert at its tier, not an "upgrade"
    assert [m["states"] for m in severe if m["receiver"] == "crisis"] == [["firing"]]


def test_resolution_goes_once_to_everyone_told(env) -> None:  # type: ignore[no-untyped-def]
    tmp, store = env
    cfg = config(tmp, ROUTES)
    d = dispatcher(cfg)
    a = Alerts(store, cfg.tz)
    a.event("firing", "surge", L, "light", T0)
    step(d, store, T0 + seconds(10))
    a.event("upgraded", "surge", L, "severe", T0 + seconds(20), value=300)
    step(d, store, T0 + seconds(21))
    a.event("resolved", "surge", L, "severe", T0 + seconds(600))
    step(d, store, T0 + seconds(601))
    step(d, store, T0 + seconds(2000))
    resolved = [m for m in messages(store) if m["states"] == ["resolved"]]
    assert sorted(m["receiver"] for m in resolved) == ["crisis", "cs-team"]


def test_alert_resolved_before_anyone_was_told_is_not_announced(env) -> None:  # type: ignore[no-untyped-def]
    tmp, store = env
    cfg = config(tmp, ROUTES)
    d = dispatcher(cfg)
    a = Alerts(store, cfg.tz)
    a.event("firing", "surge", L, "light", T0)
    a.event("resolved", "surge", L, "light", T0 + seconds(5))
    step(d, store, T0 + seconds(6))
    step(d, store, T0 + seconds(60))
    assert messages(store) == []


def test_repeat_for_open_unacknowledged_alerts_and_ack_stops_it(env) -> None:  # type: ignore[no-untyped-def]
    tmp, store = env
    cfg = config(tmp, ROUTES)
    d = dispatcher(cfg)
    a = Alerts(store, cfg.tz)
    ev = a.event("firing", "surge", L, "light", T0)
    step(d, store, T0 + seconds(10))
    step(d, store, T0 + timedelta(hours=3))
    assert len(messages(store)) == 1
    step(d, store, T0 + timedelta(hours=4, seconds=10))
    step(d, store, T0 + timedelta(hours=4, seconds=30))
    assert [m["kind"] for m in messages(store)] == ["alert", "repeat"]
    with store.transaction() as conn:
        acknowledge(conn, ev.instance, "zhangsan", "api", from_datetime(T0 + timedelta(hours=5)))
    step(d, store, T0 + timedelta(hours=9))
    step(d, store, T0 + timedelta(hours=9, seconds=30))
    assert [m["kind"] for m in messages(store)] == ["alert", "repeat"]


INHIBIT = RECEIVERS + """
[[rules]]
name = "type-surge"
kind = "threshold"

[[rules]]
name = "type-channel-surge"
kind = "threshold"
group_by = ["type", "channel"]

[[inhibit]]
source = { rule = "type-surge" }
target = { rule = "type-channel-surge" }
equal = ["type"]
"""


def test_inhibition_across_rules(env) -> None:  # type: ignore[no-untyped-def]
    tmp, store = env
    cfg = config(tmp, INHIBIT)
    d = dispatcher(cfg)
    a = Alerts(store, cfg.tz)
    a.event("firing", "type-surge", L, "light", T0)
    a.event("firing", "type-channel-surge", L, "light", T0, channel="电话热线")
    a.event("firing", "type-channel-surge", S, "light", T0, channel="电话热线")  # other type: not inhibited
    step(d, store, T0 + seconds(3))
    sent = {(m["receiver"], tuple(m["types"]), m["payload"]["views"][0]["rule"]) for m in messages(store)}
    assert ("cs-team", (L,), "type-surge") in sent
    assert ("cs-team", (S,), "type-channel-surge") in sent
    assert not any(rule == "type-channel-surge" and types == (L,) for _, types, rule in sent)
    # once the source resolves, the target (still open) is told at its group's next interval
    a.event("resolved", "type-surge", L, "light", T0 + seconds(100))
    step(d, store, T0 + seconds(101))
    step(d, store, T0 + seconds(170))
    later = [m for m in messages(store)
             if m["payload"]["views"][0]["rule"] == "type-channel-surge" and m["types"] == [L]]
    assert sorted(m["receiver"] for m in later) == ["crisis", "cs-team"]


MUTED = RECEIVERS + """
[[routes]]
receivers = ["cs-team"]
group_wait = "0s"
mute = ["22:00-08:00"]
"""


def test_mute_window_across_midnight_sends_one_digest_at_its_end(env) -> None:  # type: ignore[no-untyped-def]
    tmp, store = env
    cfg = config(tmp, MUTED)
    d = dispatcher(cfg)
    a = Alerts(store, cfg.tz)
    night = T0.replace(hour=15)  # 23:00 in Shanghai
    a.event("firing", "surge", L, "light", night)
    a.event("firing", "surge", S, "light", night + timedelta(hours=2))  # 01:00, after midnight
    a.event("firing", "surge", "其他", "light", night + timedelta(hours=3))
    a.event("resolved", "surge", "其他", "light", night + timedelta(hours=4))  # resolved before morning
    for h in range(1, 9):
        step(d, store, night + timedelta(hours=h, minutes=59))  # up to 07:59
    assert messages(store) == []
    step(d, store, night + timedelta(hours=9))  # 08:00: the window ends
    msgs = messages(store)
    assert len(msgs) == 1 and msgs[0]["kind"] == "digest" and sorted(msgs[0]["types"]) == sorted([L, S])


@pytest.mark.parametrize(("matcher", "silenced"), [
    ({"name": "type", "value": L, "isRegex": False}, True),
    ({"name": "type", "value": "物流.*", "isRegex": True}, True),
    ({"name": "type", "value": "物流", "isRegex": False}, False),
    ({"name": "type", "value": L, "isRegex": False, "isEqual": False}, False),
    ({"name": "rule", "value": "surge", "isRegex": False}, True),
])
def test_silence_matching(env, matcher: dict[str, object], silenced: bool) -> None:  # type: ignore[no-untyped-def]
    tmp, store = env
    cfg = config(tmp, RECEIVERS)
    d = dispatcher(cfg)
    now = from_datetime(T0)
    body = {"matchers": [matcher], "endsAt": (T0 + timedelta(hours=1)).isoformat(), "createdBy": "ops",
            "comment": "known issue"}
    ms, starts, ends, by, comment = silences.parse(body, now)
    with store.transaction() as conn:
        silences.add(conn, ms, starts, ends, by, comment, now)
    Alerts(store, cfg.tz).event("firing", "surge", L, "light", T0)
    step(d, store, T0 + seconds(3))
    assert (messages(store) == []) is silenced


def test_silence_expiry_lets_the_next_notification_through(env) -> None:  # type: ignore[no-untyped-def]
    tmp, store = env
    cfg = config(tmp, RECEIVERS)
    d = dispatcher(cfg)
    now = from_datetime(T0)
    ms, starts, ends, by, comment = silences.parse(
        {"matchers": [{"name": "type", "value": L}], "endsAt": (T0 + timedelta(minutes=30)).isoformat(),
         "createdBy": "ops", "comment": "deploy"}, now)
    with store.transaction() as conn:
        silences.add(conn, ms, starts, ends, by, comment, now)
    a = Alerts(store, cfg.tz)
    a.event("firing", "surge", L, "light", T0)
    for minute in range(0, 30, 5):
        step(d, store, T0 + timedelta(minutes=minute, seconds=3))
    assert messages(store) == []
    step(d, store, T0 + timedelta(minutes=31))  # expired: told at the group's next interval
    assert [m["types"] for m in messages(store)] == [[L], [L]]


ESCALATE = RECEIVERS + """
[[routes]]
receivers = ["cs-team"]
group_wait = "0s"
escalate_to = ["crisis"]
escalate_after = "1h"
"""


def test_escalation_timing_once_per_level_and_ack_prevents_it(env) -> None:  # type: ignore[no-untyped-def]
    tmp, store = env
    cfg = config(tmp, ESCALATE)
    d = dispatcher(cfg)
    a = Alerts(store, cfg.tz)
    a.event("firing", "surge", L, "light", T0)
    step(d, store, T0 + seconds(1))
    step(d, store, T0 + timedelta(hours=2))
    assert [m["receiver"] for m in messages(store)] == ["cs-team"]  # light: never escalated
    a.event("upgraded", "surge", L, "moderate", T0 + timedelta(hours=2), value=200)
    step(d, store, T0 + timedelta(hours=2, seconds=1))
    step(d, store, T0 + timedelta(hours=2, minutes=59))
    assert [m["receiver"] for m in messages(store) if m["kind"] == "escalation"] == []
    step(d, store, T0 + timedelta(hours=3, seconds=1))
    step(d, store, T0 + timedelta(hours=3, minutes=30))
    esc = [m for m in messages(store) if m["kind"] == "escalation"]
    assert [m["receiver"] for m in esc] == ["crisis"] and esc[0]["tier"] == "moderate"
    # severe escalates again, once; an acknowledged alert would not
    ev = a.event("upgraded", "surge", L, "severe", T0 + timedelta(hours=4), value=300)
    step(d, store, T0 + timedelta(hours=5, seconds=1))
    step(d, store, T0 + timedelta(hours=6))
    assert [m["tier"] for m in messages(store) if m["kind"] == "escalation"] == ["moderate", "severe"]
    b = a.event("firing", "surge", S, "severe", T0 + timedelta(hours=6))
    step(d, store, T0 + timedelta(hours=6, seconds=1))
    with store.transaction() as conn:
        acknowledge(conn, b.instance, "lisi", "link", from_datetime(T0 + timedelta(hours=6, minutes=10)))
    step(d, store, T0 + timedelta(hours=8))
    assert all(S not in m["types"] for m in messages(store) if m["kind"] == "escalation")
    assert ev.instance
