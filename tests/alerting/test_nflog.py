"""The notification log as a unit: one entry per receiver and alert, replaced by each message; who is
owed a resolution; what makes a reminder; the escalations made; housekeeping of old resolutions."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from zoneinfo import ZoneInfo

from sentinel.alerting import nflog
from sentinel.alerting.nflog import Told
from sentinel.model import US, Tier, from_datetime
from sentinel.notify.views import AlertView, view_from_event
from sentinel.store import Store
from sentinel.store.alerts import get_alert, open_alerts
from tests.alerting.builders import T0, Alerts

L = "物流配送延误"
S = "服务态度"
TZ = ZoneInfo("Asia/Shanghai")
NOW = from_datetime(T0)
DAY = 86_400 * US


def view_of(store: Store, instance: str) -> AlertView:
    """The alert's view as its last event left it (what a message carries)."""
    with store.reading() as conn:
        a = get_alert(conn, instance)
    assert a is not None
    return view_from_event(a.last_event, TZ, record_url=None, ack_url=None)


def test_one_entry_per_receiver_and_alert_replaced_by_each_message(store: Store) -> None:
    alerts = Alerts(store, TZ)
    a = alerts.event("firing", "surge", L, "light", T0)
    b = alerts.event("firing", "surge", S, "light", T0)
    firing = view_of(store, a.instance)
    with store.transaction() as conn:
        nflog.record(conn, "cs-team", firing, 0, "g1", NOW)
        nflog.record(conn, "crisis", firing, 1, "g2", NOW + 1)
        nflog.record(conn, "cs-team", view_of(store, b.instance), 0, "g1", NOW + 2)
    alerts.event("upgraded", "surge", L, "severe", T0 + timedelta(minutes=5), value=300)
    with store.transaction() as conn:
        nflog.record(conn, "cs-team", view_of(store, a.instance), 0, "g3", NOW + 3)
    with store.reading() as conn:
        assert sorted(nflog.told(conn, a.instance), key=lambda t: t.receiver) == [
            Told("crisis", a.instance, 1, "g2", NOW + 1, "firing", "light"),
            Told("cs-team", a.instance, 0, "g3", NOW + 3, "firing", "severe"),
        ]
        about = nflog.told_about(conn, [a.instance, b.instance, "unknown"])
        assert sorted(about) == sorted([("crisis", a.instance), ("cs-team", a.instance), ("cs-team", b.instance)])
        assert nflog.told_about(conn, []) == {}
        assert sorted(nflog.told_firing(conn)) == sorted(
            [(a.instance, 1, NOW + 1), (a.instance, 0, NOW + 3), (b.instance, 0, NOW + 2)]
        )


def test_a_resolution_is_owed_to_those_told_while_open_and_only_once(store: Store) -> None:
    alerts = Alerts(store, TZ)
    a = alerts.event("firing", "surge", L, "light", T0)
    with store.transaction() as conn:
        nflog.record(conn, "cs-team", view_of(store, a.instance), 0, "g", NOW)
    alerts.event("resolved", "surge", L, "light", T0 + timedelta(minutes=5))
    with store.reading() as conn:
        [told] = nflog.told(conn, a.instance)
    assert told.owed_resolution
    with store.transaction() as conn:
        nflog.record(conn, "cs-team", view_of(store, a.instance), 0, "g", NOW + 5)
    with store.reading() as conn:
        [told] = nflog.told(conn, a.instance)
        assert not told.owed_resolution and told.last_state == "resolved"
        assert nflog.told_firing(conn) == []


def test_a_reminder_is_the_same_open_alert_at_the_same_tier(store: Store) -> None:
    a = Alerts(store, TZ).event("firing", "surge", L, "moderate", T0)
    v = view_of(store, a.instance)
    told = Told("cs-team", a.instance, 0, "g", NOW, "firing", "moderate")
    assert told.reminds(v)
    assert not told.reminds(replace(v, tier=Tier.SEVERE))  # an upgrade is news
    assert not told.reminds(replace(v, state="resolved"))
    assert not replace(told, last_state="resolved").reminds(v)  # told of its end, now open again


def test_the_rest_of_a_group_is_what_one_receiver_was_told_through_it_and_still_firing(store: Store) -> None:
    alerts = Alerts(store, TZ)
    a, b, c = (alerts.event("firing", "surge", t, "light", T0) for t in (L, S, "其他"))
    with store.transaction() as conn:
        nflog.record(conn, "hook", view_of(store, a.instance), 0, "g", NOW)
        nflog.record(conn, "hook", view_of(store, b.instance), 0, "other", NOW)
        nflog.record(conn, "cs-team", view_of(store, c.instance), 0, "g", NOW)
    with store.reading() as conn:
        assert [x.instance for x in open_alerts(conn, among=nflog.firing_in_group("hook", "g"))] == [a.instance]


def test_escalations_are_remembered_per_tier(store: Store) -> None:
    with store.transaction() as conn:
        assert nflog.escalated(conn) == set()
        nflog.record_escalation(conn, "i1", "moderate", NOW)
        nflog.record_escalation(conn, "i1", "severe", NOW + 1)
    with store.reading() as conn:
        assert nflog.escalated(conn) == {("i1", "moderate"), ("i1", "severe")}


def test_housekeeping_forgets_only_alerts_resolved_before_the_cut(store: Store) -> None:
    alerts = Alerts(store, TZ)
    old, recent, still_open = (alerts.event("firing", "surge", t, "light", T0) for t in (L, S, "其他"))
    with store.transaction() as conn:
        for ev in (old, recent, still_open):
            nflog.record(conn, "cs-team", view_of(store, ev.instance), 0, "g", NOW)
    alerts.event("resolved", "surge", L, "light", T0 + timedelta(days=1))
    alerts.event("resolved", "surge", S, "light", T0 + timedelta(days=20))
    with store.transaction() as conn:
        nflog.forget_resolved(conn, NOW + 10 * DAY)
    with store.reading() as conn:
        assert set(nflog.told_about(conn, [old.instance, recent.instance, still_open.instance])) == {
            ("cs-team", recent.instance),
            ("cs-team", still_open.instance),
        }
