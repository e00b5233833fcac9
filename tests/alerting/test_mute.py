"""The mute stages as units: each Muter (silences, inhibition, mute windows, acknowledgement) on made-up
alerts, their composition in order, and one moment's Muting read from a real store."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sentinel.alerting import silences
from sentinel.alerting.ack import Acknowledged, acknowledge
from sentinel.alerting.inhibit import Inhibitor, inhibit_rules
from sentinel.alerting.mute import Hold, MuteStage, MuteWindows, window_end, window_reason
from sentinel.alerting.policy import Policy
from sentinel.alerting.routing import IMPLICIT, Route, Router
from sentinel.alerting.silences import Silence, SilenceMatcher, Silencer
from sentinel.config import RouteConfig
from sentinel.model import US, Tier, from_datetime
from sentinel.store import Store
from sentinel.store.alerts import StoredAlert
from sentinel.units import parse_window
from tests.alerting.builders import INHIBIT, RECEIVERS, T0, Alerts, config, stored

L = "物流配送延误"
S = "服务态度"
NOW = from_datetime(T0)  # 10:00 in Shanghai
HOUR = 3600 * US


def silence(sid: str, *matchers: SilenceMatcher, starts: int = NOW, ends: int = NOW + HOUR) -> Silence:
    return Silence(sid, matchers, starts, ends, "ops", "why", starts)


# --- silences ---------------------------------------------------------------------------------------


def test_a_silence_mutes_only_while_active_the_oldest_named_first() -> None:
    a = stored("surge", {"type": L})
    by_type, by_rule = silence("t", SilenceMatcher("type", L)), silence("r", SilenceMatcher("alertname", "surge"))
    assert Silencer([by_type, by_rule], NOW).mutes(a) == "t"
    assert Silencer([by_type, by_rule], NOW).all_muting(a) == ("t", "r")
    assert Silencer([by_type], NOW - 1).mutes(a) is None  # pending
    assert Silencer([by_type], NOW + HOUR).mutes(a) is None  # expired
    assert Silencer([by_type], NOW).mutes(stored("surge", {"type": S})) is None
    assert Silencer([], NOW).mutes(a) is None


# --- inhibition ----------------------------------------------------------------------------------------


def test_an_open_source_inhibits_targets_with_equal_labels(tmp_path: Path) -> None:
    rules = inhibit_rules(config(tmp_path, INHIBIT))
    source = stored("type-surge", {"type": L})
    target = stored("type-channel-surge", {"type": L, "channel": "电话"})
    other_type = stored("type-channel-surge", {"type": S, "channel": "电话"})
    inhibitor = Inhibitor(rules, [source, target, other_type])
    assert inhibitor.mutes(target) == source.instance
    assert inhibitor.mutes(other_type) is None  # `equal` differs
    assert inhibitor.mutes(source) is None  # not a target
    assert Inhibitor(rules, [target]).mutes(target) is None  # no source open
    assert Inhibitor((), [source, target]).mutes(target) is None  # no rules


def test_an_alert_never_inhibits_itself_and_missing_equal_labels_count_as_empty(tmp_path: Path) -> None:
    both = (
        RECEIVERS
        + """
[[inhibit]]
source = { tier = "severe" }
target = { kind = "threshold" }
equal = ["channel"]
"""
    )
    rules = inhibit_rules(config(tmp_path, both))
    severe = stored("a", {"type": L}, Tier.SEVERE)
    light = stored("b", {"type": S}, Tier.LIGHT)
    inhibitor = Inhibitor(rules, [severe, light])
    assert inhibitor.mutes(severe) is None  # source and target at once: not by itself
    assert inhibitor.mutes(light) == severe.instance  # neither has a channel: equal
    assert Inhibitor(rules, [severe]).mutes(stored("b", {"type": S, "channel": "电话"})) is None


# --- mute windows --------------------------------------------------------------------------------------

MUTED = (
    RECEIVERS
    + """
[[routes]]
match = { tier = "light" }
receivers = ["cs-team"]
mute = ["22:00-08:00", "12:00-13:30"]

[[routes]]
receivers = ["crisis"]
"""
)


def at_local(hour: int, minute: int = 0) -> int:
    """µs of the day of T0 at hour:minute in Shanghai (UTC+8)."""
    return from_datetime(T0.replace(hour=0, minute=0) + timedelta(hours=hour - 8, minutes=minute))


def test_a_route_is_held_while_one_of_its_windows_contains_the_local_time(tmp_path: Path) -> None:
    cfg = config(tmp_path, MUTED)
    router = Router(cfg)
    muted, plain = router.routes
    light, severe = stored("surge", {"type": L}, Tier.LIGHT), stored("surge", {"type": L}, Tier.SEVERE)
    for hour, minute, held in [
        (23, 0, True),
        (1, 0, True),
        (7, 59, True),
        (8, 0, False),
        (12, 0, True),
        (13, 30, False),
        (21, 59, False),
    ]:
        w = MuteWindows(cfg.tz, router, at_local(hour, minute))
        assert w.holds(muted) is held, (hour, minute)
        assert not w.holds(plain)
        assert (w.mutes(light) is not None) is held
        assert w.mutes(severe) is None  # routed elsewhere
    assert MuteWindows(cfg.tz, router, at_local(23)).reasons(light) == ("route 1 mute 22:00-08:00",)
    assert MuteWindows(cfg.tz, None, at_local(23)).mutes(light) is None  # no routes known: none held


def test_a_held_group_may_go_when_its_window_ends(tmp_path: Path) -> None:
    cfg = config(tmp_path, MUTED)
    muted, plain = Router(cfg).routes
    assert window_end(muted, cfg.tz, at_local(23)) == at_local(24 + 8)  # across midnight: the next morning
    assert window_end(muted, cfg.tz, at_local(1)) == at_local(8)
    assert window_end(muted, cfg.tz, at_local(12, 15)) == at_local(13, 30)
    assert window_end(muted, cfg.tz, at_local(10)) is None
    assert window_end(plain, cfg.tz, at_local(23)) is None


def test_windows_are_named_by_route_as_alertmanager_lists_them(tmp_path: Path) -> None:
    night = parse_window("22:00-08:00")
    implicit = Route(IMPLICIT, RouteConfig(receivers=["cs-team"], mute=[night]), ())
    assert window_reason(implicit, night) == "route default mute 22:00-08:00"
    assert window_reason(Route(0, implicit.cfg, ()), night) == "route 1 mute 22:00-08:00"


# --- acknowledgement and composition --------------------------------------------------------------------


def test_acknowledgement_names_who() -> None:
    a, b = stored("surge", {"type": L}), stored("surge", {"type": S})
    acks = Acknowledged({a.instance: ("zhangsan", NOW)})
    assert acks.mutes(a) == "acknowledged by zhangsan" and acks.mutes(b) is None


class Fixed:
    """A Muter with set answers, to see the composition."""

    def __init__(self, reasons: dict[str, str]) -> None:
        self.reasons = reasons
        self.asked: list[str] = []

    def mutes(self, alert: StoredAlert) -> str | None:
        self.asked.append(alert.instance)
        return self.reasons.get(alert.instance)


def test_a_stage_gives_the_first_reason_in_order_and_asks_no_further() -> None:
    a, b, c = (stored("surge", {"type": t}) for t in (L, S, "其他"))
    first, second = Fixed({a.instance: "one"}), Fixed({a.instance: "two", b.instance: "two"})
    stage = MuteStage((first, second))
    assert [stage.mutes(x) for x in (a, b, c)] == ["one", "two", None]
    assert second.asked == [b.instance, c.instance]  # `a` was held by the first
    assert stage.passes([a, b, c]) == [c]
    assert MuteStage(()).passes([a, b]) == [a, b]
    assert MuteStage((MuteStage((first,)), second)).mutes(b) == "two"  # a stage is a Muter itself


# --- one moment, from the store -------------------------------------------------------------------------


def test_muting_reads_the_store_once_for_a_moment(tmp_path: Path, store: Store) -> None:
    cfg = config(
        tmp_path,
        INHIBIT
        + """
[[routes]]
receivers = ["cs-team"]
mute = ["09:00-11:00"]
""",
    )
    alerts = Alerts(store, cfg.tz)
    src = alerts.event("firing", "type-surge", L, "light", T0)
    tgt = alerts.event("firing", "type-channel-surge", L, "light", T0, channel="电话")
    gone = alerts.event("firing", "type-surge", S, "light", T0)
    alerts.event("resolved", "type-surge", S, "light", T0 + timedelta(minutes=1))
    later = T0 + timedelta(minutes=2)
    with store.transaction() as conn:
        silences.add(conn, (SilenceMatcher("channel", "电话"),), NOW, NOW + HOUR, "ops", "line down", NOW)
        acknowledge(conn, src.instance, "zhangsan", "api", NOW)
    with store.reading() as conn:
        muting = Policy(cfg).muting(conn, Router(cfg), from_datetime(later))
    assert [a.instance for a in muting.open_alerts] == [src.instance, tgt.instance]  # not the resolved one
    [source, target] = muting.open_alerts
    hold = muting.hold(target)
    assert hold.silenced is not None and hold.inhibited == src.instance and not hold.acknowledged and hold.muted
    assert muting.hold(source) == Hold(None, None, True, True)
    assert muting.notify.mutes(source) is None and muting.remind.mutes(source) == "acknowledged by zhangsan"
    assert muting.notify.mutes(target) == src.instance  # inhibition is asked before the silences
    assert gone.instance not in {a.instance for a in muting.open_alerts}
