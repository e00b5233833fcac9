"""The policy as a unit: repeats and escalations come back as values, with the next due time, from the
notification log, the open alerts and the mute stages of the moment; the policy itself writes nothing."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, select

from sentinel.alerting import nflog, silences
from sentinel.alerting.ack import acknowledge
from sentinel.alerting.policy import Policy, Repeat, Schedule
from sentinel.alerting.routing import Router, labels_of
from sentinel.alerting.silences import SilenceMatcher
from sentinel.config import Config
from sentinel.model import US, Event, from_datetime
from sentinel.notify.views import view_from_event
from sentinel.store import Store
from sentinel.store.alerts import StoredAlert, get_alert
from sentinel.store.schema import dispatch_groups, escalations, notify_log, outbox
from tests.alerting.builders import RECEIVERS, T0, Alerts, config

L = "物流配送延误"
S = "服务态度"
NOW = from_datetime(T0)
HOUR = 3600 * US

REPEATS = (
    RECEIVERS
    + """
[[routes]]
receivers = ["cs-team", "crisis"]
repeat_interval = "4h"
"""
)

ESCALATES = (
    RECEIVERS
    + """
[[routes]]
match = { tier = ["moderate", "severe"] }
receivers = ["cs-team"]
escalate_to = ["crisis"]
escalate_after = "1h"
continue = true

[[routes]]
receivers = ["crisis"]
escalate_to = ["cs-team"]
escalate_after = "2h"
"""
)


class Case:
    """A configuration, a store with alerts, and the policy asked at a given moment."""

    def __init__(self, tmp_path: Path, store: Store, body: str) -> None:
        self.cfg: Config = config(tmp_path, body)
        self.store = store
        self.router = Router(self.cfg)
        self.policy = Policy(self.cfg)
        self.alerts = Alerts(store, self.cfg.tz)

    def alert(self, ev: Event) -> StoredAlert:
        with self.store.reading() as conn:
            a = get_alert(conn, ev.instance)
        assert a is not None
        return a

    def told(self, receiver: str, ev: Event, at_us: int, route: int = 0) -> None:
        """`receiver` was told of the alert at `at_us` through `route`'s group, as the dispatcher records it."""
        a = self.alert(ev)
        view = view_from_event(a.last_event, self.cfg.tz, record_url=None, ack_url=None)
        key = self.router.routes[0].group_key(labels_of(a))[0]
        with self.store.transaction() as conn:
            nflog.record(conn, receiver, view, route, key, at_us)

    def schedule(self, at_us: int) -> Schedule:
        with self.store.reading() as conn:
            return self.policy.schedule(conn, self.policy.muting(conn, self.router, at_us), self.router, at_us)


# --- repeats -----------------------------------------------------------------------------------------------


def test_a_told_alert_comes_back_once_per_group_after_repeat_interval(tmp_path: Path, store: Store) -> None:
    c = Case(tmp_path, store, REPEATS)
    ev = c.alerts.event("firing", "surge", L, "light", T0)
    c.told("cs-team", ev, NOW)
    c.told("crisis", ev, NOW + 60 * US)
    early = c.schedule(NOW + 4 * HOUR - 1)
    assert early == Schedule((), (), NOW + 4 * HOUR)  # the earliest of the two receivers' repeats
    route = c.router.routes[0]
    key, glabels = route.group_key(labels_of(c.alert(ev)))
    due = c.schedule(NOW + 4 * HOUR + 60 * US)
    assert due == Schedule((Repeat(ev.instance, route, key, glabels),), (), None)  # two told, one group


def test_no_repeat_is_ever_due_for_an_acknowledged_resolved_or_unrouted_alert(tmp_path: Path, store: Store) -> None:
    c = Case(tmp_path, store, REPEATS)
    acked = c.alerts.event("firing", "surge", L, "light", T0)
    resolved = c.alerts.event("firing", "surge", S, "light", T0)
    unrouted = c.alerts.event("firing", "surge", "其他", "light", T0)
    for ev in (acked, resolved):
        c.told("cs-team", ev, NOW)
    c.told("cs-team", unrouted, NOW, route=5)  # a route a reload removed
    c.alerts.event("resolved", "surge", S, "light", T0 + timedelta(minutes=1))
    with store.transaction() as conn:
        acknowledge(conn, acked.instance, "zhangsan", "api", NOW)
    assert c.schedule(NOW + HOUR) == Schedule((), (), None)
    assert c.schedule(NOW + 5 * HOUR) == Schedule((), (), None)


def test_a_silenced_repeat_is_held_but_still_a_due_time(tmp_path: Path, store: Store) -> None:
    c = Case(tmp_path, store, REPEATS)
    ev = c.alerts.event("firing", "surge", L, "light", T0)
    c.told("cs-team", ev, NOW)
    with store.transaction() as conn:
        silences.add(conn, (SilenceMatcher("type", L),), NOW, NOW + 6 * HOUR, "ops", "known", NOW)
    assert c.schedule(NOW + HOUR).next_due_us == NOW + 4 * HOUR
    assert c.schedule(NOW + 5 * HOUR) == Schedule((), (), None)
    assert len(c.schedule(NOW + 6 * HOUR).repeats) == 1  # the silence ended


# --- escalations -------------------------------------------------------------------------------------------


def test_an_unacknowledged_alert_escalates_per_route_when_each_is_ready(tmp_path: Path, store: Store) -> None:
    c = Case(tmp_path, store, ESCALATES)
    ev = c.alerts.event("firing", "surge", L, "moderate", T0)
    c.alerts.event("firing", "surge", S, "light", T0)  # light: never escalated, never due
    assert c.schedule(NOW + HOUR - 1) == Schedule((), (), NOW + HOUR)
    [first] = c.schedule(NOW + HOUR).escalations
    assert (first.alert.instance, first.receivers, first.route, first.after_s) == (ev.instance, ("crisis",), 0, 3600)
    [both] = c.schedule(NOW + 2 * HOUR).escalations  # a second route is ready too: one escalation to both
    assert (both.receivers, both.route, both.after_s) == (("crisis", "cs-team"), 0, 7200)


def test_an_escalation_is_made_once_per_tier_from_when_the_tier_was_reached(tmp_path: Path, store: Store) -> None:
    c = Case(tmp_path, store, ESCALATES)
    ev = c.alerts.event("firing", "surge", L, "moderate", T0)
    with store.transaction() as conn:
        nflog.record_escalation(conn, ev.instance, "moderate", NOW + HOUR)
    assert c.schedule(NOW + 3 * HOUR) == Schedule((), (), None)  # made already at this tier
    c.alerts.event("upgraded", "surge", L, "severe", T0 + timedelta(hours=3), value=300)
    assert c.schedule(NOW + 4 * HOUR - 1).next_due_us == NOW + 4 * HOUR  # an hour after reaching severe
    [severe] = c.schedule(NOW + 4 * HOUR).escalations
    assert severe.alert.tier.label == "severe" and severe.after_s == 3600


def test_acknowledged_or_silenced_alerts_never_escalate_nor_wait_to(tmp_path: Path, store: Store) -> None:
    c = Case(tmp_path, store, ESCALATES)
    acked = c.alerts.event("firing", "surge", L, "severe", T0)
    c.alerts.event("firing", "surge", S, "severe", T0)
    with store.transaction() as conn:
        acknowledge(conn, acked.instance, "lisi", "link", NOW)
        silences.add(conn, (SilenceMatcher("type", S),), NOW, NOW + 9 * HOUR, "ops", "known", NOW)
    assert c.schedule(NOW + HOUR - 1) == Schedule((), (), None)
    assert c.schedule(NOW + 3 * HOUR) == Schedule((), (), None)


def test_the_policy_writes_nothing(tmp_path: Path, store: Store) -> None:
    c = Case(tmp_path, store, ESCALATES)
    ev = c.alerts.event("firing", "surge", L, "severe", T0)
    c.told("cs-team", ev, NOW)

    def counts() -> list[int]:
        with store.reading() as conn:
            return [
                conn.execute(select(func.count()).select_from(t)).scalar_one()
                for t in (notify_log, escalations, outbox, dispatch_groups)
            ]

    before = counts()
    schedule = c.schedule(NOW + 5 * HOUR)
    assert schedule.repeats and schedule.escalations  # both were due, and only returned
    assert counts() == before == [1, 0, 0, 0]
