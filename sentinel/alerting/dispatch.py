"""The dispatcher: alert events become outbox messages.

It reads new events by a durable cursor and, in the same transaction as that cursor, groups them per
route and writes the messages. Each notification is routed by the alert's current labels and tier;
a resolution goes to every receiver that was told of the alert (the notification log remembers who
was told), and an alert that fired and resolved before anyone was told is not announced at all.

Grouping follows Alertmanager: the first alert of a group waits `group_wait`, later changes are
batched and sent at most every `group_interval`; an upgrade is sent at once. A group with nothing
waiting is forgotten once its interval has passed, so a new wave after a quiet spell waits
`group_wait` like the first one, and a step's cost follows the alerts in flight, not every group ever
seen.

A step is a pipeline in one direction, as Alertmanager's notify stages: new events go into their
groups; the policy (`sentinel.alerting.policy`) is handed the step's facts and returns repeats and
escalations as values, which the step applies; due groups pass the mute stages
(`sentinel.alerting.mute`: a route's mute windows hold whole groups, silences and inhibition single
alerts); what goes out is recorded in the notification log (`sentinel.alerting.nflog`) in the same
transaction as the outbox messages and the event cursor, so a crash never loses or doubles a message.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from sqlalchemy import Connection, delete, insert, select, update

from sentinel.alerting import nflog
from sentinel.alerting.ack import ack_url
from sentinel.alerting.mute import Muting, window_end
from sentinel.alerting.nflog import Told
from sentinel.alerting.policy import Policy, Schedule
from sentinel.alerting.routing import Route, Router, alert_labels, labels_of
from sentinel.config import Config
from sentinel.logs import fields
from sentinel.model import JsonObject, Tier
from sentinel.notify import ADAPTERS, outbox
from sentinel.notify.views import AlertView, view_from_event, view_to_json
from sentinel.store import alerts as alert_store
from sentinel.store.alerts import StoredAlert, StoredEvent, events_after
from sentinel.store.schema import dispatch_groups

log = logging.getLogger("sentinel.dispatch")

CURSOR = "dispatcher"
GROUP_ALERTS_MAX = 1000
"""At most this many of a group's other alerts ride along in one message (the webhook caps its body at
1 MiB anyway, counting what it drops in `truncatedAlerts`)."""


@dataclass(slots=True)
class Group:
    key: str
    route: int
    labels: dict[str, str]
    pending: list[str]
    first_pending_us: int | None
    last_flush_us: int | None
    urgent: bool
    dirty: bool = False


class Dispatcher:
    EVENTS_PER_STEP = 5000
    HELD_RECHECK_US = 1_000_000
    """A group still due after a step is held (a silence, an inhibition): it is looked at again a
    second later, as the old 1 s dispatch tick did, never in a loop."""

    def __init__(self, cfg: Config, *, policy: Policy) -> None:
        self.cfg = cfg
        self.router = Router(cfg)
        self.policy = policy
        self.next_due_us: int | None = None  # after a step: when the next one has something to do
        self._told_due_us: int | None = None  # the first repeat of what this step told

    def reload(self, cfg: Config) -> None:
        self.cfg = cfg
        self.router = Router(cfg)

    # --- one step: new events in, due groups out -----------------------------------------------------
    def step(self, conn: Connection, now_us: int) -> int:
        """Consume new events and flush due groups; returns the number of messages written."""
        self._told_due_us = None
        cursor = outbox.get_cursor(conn, CURSOR) or 0
        groups = self._load_groups(conn)
        events = events_after(conn, cursor, limit=self.EVENTS_PER_STEP)
        for ev in events:
            cursor = ev.seq
            if ev.notify:
                self._on_event(conn, ev, groups, now_us)
        if events:
            outbox.set_cursor(conn, CURSOR, cursor)
        muting = self.policy.muting(conn, self.router, now_us)
        schedule = self.policy.schedule(conn, muting, self.router, now_us)
        self._apply(conn, schedule, groups, now_us)
        written = self._flush(conn, groups, muting, now_us)
        self._forget_settled(conn, groups, now_us)
        self._save_groups(conn, groups)
        if len(events) >= self.EVENTS_PER_STEP:
            self.next_due_us = now_us
        else:
            self.next_due_us = self._next_due(groups, schedule.next_due_us, now_us)
        return written

    def _apply(self, conn: Connection, schedule: Schedule, groups: dict[str, Group], now_us: int) -> None:
        """The policy's decisions: repeats into their groups, escalations straight out (and recorded)."""
        for r in schedule.repeats:
            self._add(groups, r.route, r.group_key, r.group_labels, r.instance, now_us, urgent=False)
        for e in schedule.escalations:
            view = self.view(e.alert)
            rows = {e.alert.instance: e.alert}
            for name in e.receivers:
                self._enqueue(conn, name, "escalation", [view], rows, now_us, {"escalated_after_s": e.after_s})
                self._log(conn, name, view, e.route, nflog.ESCALATION_GROUP, now_us)
            nflog.record_escalation(conn, e.alert.instance, e.alert.tier.label, now_us)

    def _next_due(self, groups: Mapping[str, Group], policy_due_us: int | None, now_us: int) -> int | None:
        """The earliest time a step would write something without a new event: a group's
        group_wait/group_interval, a mute window's end, the policy's repeats and escalations. The
        daemon sleeps until then instead of stepping every second."""
        due = policy_due_us
        if self._told_due_us is not None:
            due = self._told_due_us if due is None else min(due, self._told_due_us)
        for g in groups.values():
            route = self.router.get(g.route)
            at = self._due_at(g, route, now_us) if route is not None else (now_us if g.pending else None)
            if at is None:
                continue
            if route is not None:
                held = window_end(route, self.cfg.tz, max(at, now_us))
                if held is not None:
                    at = max(at, held)
            if at <= now_us:
                at = now_us + self.HELD_RECHECK_US
            due = at if due is None else min(due, at)
        return due

    def _on_event(self, conn: Connection, ev: StoredEvent, groups: dict[str, Group], now_us: int) -> None:
        instance, state, payload = ev.instance, ev.state, ev.payload
        labels = alert_labels(ev.text("rule"), ev.text("kind"), ev.text("tier"), ev.labels)
        at = payload.get("at_us", now_us)  # group_wait counts from the event itself
        when = min(now_us, int(at) if isinstance(at, int | float | str) else now_us)
        if state == "resolved":
            # to everyone who was told of it, through the group that told them; straight to those no
            # current route reaches (escalation receivers, a route a reload removed or changed)
            direct: list[Told] = []
            for t in nflog.told(conn, instance):
                if not t.owed_resolution:
                    continue
                route = self.router.get(t.route)
                if route is None or t.receiver not in route.cfg.receivers:
                    direct.append(t)
                    continue
                if t.group_key in groups and groups[t.group_key].route == route.index:
                    key, glabels = t.group_key, groups[t.group_key].labels
                else:
                    key, glabels = route.group_key(labels)
                self._add(groups, route, key, glabels, instance, when, urgent=False)
            self._resolve_directly(conn, instance, direct, now_us)
            return
        for route in self.router.route(labels):
            key, glabels = route.group_key(labels)
            self._add(groups, route, key, glabels, instance, when, urgent=state == "upgraded")

    def _resolve_directly(self, conn: Connection, instance: str, whom: Sequence[Told], now_us: int) -> None:
        """A resolution, ungrouped, to receivers told of the alert outside its route's receivers."""
        rows = alert_store.alerts_by_instance(conn, [instance]) if whom else {}
        if instance not in rows:
            return
        known = {r.name for r in self.cfg.receivers}
        view = self.view(rows[instance])
        for t in whom:
            if t.receiver not in known:
                continue  # the receiver itself is gone
            self._enqueue(conn, t.receiver, "alert", [view], rows, now_us, {"group_key": t.group_key})
            self._log(conn, t.receiver, view, t.route, t.group_key, now_us)

    def _add(
        self,
        groups: dict[str, Group],
        route: Route,
        key: str,
        glabels: dict[str, str],
        instance: str,
        now_us: int,
        urgent: bool,
    ) -> None:
        g = groups.get(key)
        if g is None:
            g = groups[key] = Group(key, route.index, glabels, [], None, None, False, True)
        if instance not in g.pending:
            g.pending.append(instance)
        if g.first_pending_us is None:
            g.first_pending_us = now_us
        g.urgent = g.urgent or urgent
        g.dirty = True

    # --- flushing ----------------------------------------------------------------------------------
    def _due(self, g: Group, route: Route, now_us: int) -> bool:
        due = self._due_at(g, route, now_us)
        return due is not None and now_us >= due

    def _due_at(self, g: Group, route: Route, now_us: int) -> int | None:
        """When the group goes out (None: nothing waiting). Urgent at once; else `group_wait` after the
        first waiting alert, and never within `group_interval` of the last message (a wave after a
        quiet spell is gathered like the first)."""
        if not g.pending:
            return None
        if g.urgent:
            return now_us
        first = g.first_pending_us if g.first_pending_us is not None else now_us
        due = first + int(route.cfg.group_wait.total_seconds() * 1_000_000)
        if g.last_flush_us is not None:
            due = max(due, g.last_flush_us + int(route.cfg.group_interval.total_seconds() * 1_000_000))
        return due

    def _forget_settled(self, conn: Connection, groups: dict[str, Group], now_us: int) -> None:
        """Drop groups with nothing waiting whose interval has passed: they would act as new ones."""
        gone = []
        for key, g in groups.items():
            if g.pending or g.urgent:
                continue
            route = self.router.get(g.route)
            interval = int(route.cfg.group_interval.total_seconds() * 1_000_000) if route is not None else 0
            if g.last_flush_us is None or now_us >= g.last_flush_us + interval:
                gone.append(key)
        for key in gone:
            del groups[key]
        for i in range(0, len(gone), 500):
            conn.execute(delete(dispatch_groups).where(dispatch_groups.c.group_key.in_(gone[i : i + 500])))

    def _flush(self, conn: Connection, groups: dict[str, Group], muting: Muting, now_us: int) -> int:
        written = 0
        # receivers whose payload lists the whole group (the generic webhook, in Alertmanager's format);
        # chat tools get only what changed
        whole_group = {r.name for r in self.cfg.receivers if ADAPTERS[r.kind].lists_group}
        for g in groups.values():
            route = self.router.get(g.route)
            if route is None:  # the route went away in a reload: hand its alerts to the current routes
                self._reroute(conn, g, groups, now_us)
                continue
            if not self._due(g, route, now_us) or muting.windows.holds(route):
                continue
            rows = alert_store.alerts_by_instance(conn, g.pending)
            # open alerts a silence or an inhibition holds stay in their group, so they are told at the
            # group's next interval after the silence expires or the inhibiting alert resolves
            held = [i for i, row in rows.items() if row.is_open and muting.notify.mutes(row) is not None]
            held_set = set(held)
            told = nflog.told_about(conn, rows)
            for receiver in route.cfg.receivers:
                views = self._views_for(receiver, rows, told, held_set)
                if not views:
                    continue
                repeat = all(_reminds(told.get((receiver, v.instance)), v) for v in views)
                kind = "repeat" if repeat else "alert" if len(views) == 1 else "digest"
                extra: dict[str, object] = {"group_key": g.key, "group_labels": g.labels}
                if receiver in whole_group:
                    extra["group_alerts"] = self._rest_of_group(conn, receiver, g, views, muting)
                self._enqueue(conn, receiver, kind, views, rows, now_us, extra)
                for v in views:
                    self._log(conn, receiver, v, route.index, g.key, now_us)
                written += 1
            g.pending = held
            g.first_pending_us = now_us if held else None
            g.last_flush_us = now_us
            g.urgent = False
            g.dirty = True
        return written

    def _reroute(self, conn: Connection, g: Group, groups: dict[str, Group], now_us: int) -> None:
        rows = alert_store.alerts_by_instance(conn, g.pending)
        for inst, row in rows.items():
            labels = labels_of(row)
            for route in self.router.route(labels):
                key, glabels = route.group_key(labels)
                if key != g.key:
                    self._add(groups, route, key, glabels, inst, now_us, urgent=False)
        g.pending = []
        g.dirty = True

    def _views_for(
        self, receiver: str, rows: Mapping[str, StoredAlert], told: Mapping[tuple[str, str], Told], held: set[str]
    ) -> list[AlertView]:
        out = []
        for inst, row in rows.items():
            t = told.get((receiver, inst))
            if not row.is_open:
                if t is None or not t.owed_resolution:
                    continue  # never told of it (or told already): nothing to resolve for these people
            elif inst in held:
                continue
            v = self.view(row)
            if t is None and v.state == "upgraded":
                v = replace(v, state="firing")  # the first these people hear of it: a new alert at its tier
            out.append(v)
        return sorted(out, key=lambda v: (-int(v.tier), v.state == "resolved", -v.at.timestamp()))

    def _rest_of_group(
        self, conn: Connection, receiver: str, g: Group, views: Sequence[AlertView], muting: Muting
    ) -> list[JsonObject]:
        """The group's other open alerts this receiver was told of and may still hear about (not silenced
        or inhibited now), oldest first, as JSON views: with the message's own, every alert of the group
        with its current status, as Alertmanager's webhook lists them."""
        shown = {v.instance for v in views}
        told = nflog.firing_in_group(receiver, g.key)
        out = []
        for r in alert_store.open_alerts(conn, among=told, limit=GROUP_ALERTS_MAX + len(shown)):
            if r.instance in shown or muting.notify.mutes(r) is not None:
                continue
            out.append(view_to_json(self.view(r)))
        return out[:GROUP_ALERTS_MAX]

    def view(self, alert: StoredAlert) -> AlertView:
        """The alert as its last event left it, with an acknowledgement link while it is open."""
        secret = self.cfg.api.ack_secret.get() if self.cfg.api.ack_secret is not None else None
        link = None
        if alert.is_open:
            link = ack_url(self.cfg.base_url, secret, alert.instance, self.cfg.api.ack_ttl.total_seconds())
        record_url = self.cfg.source.record_url if self.cfg.source is not None else None
        return view_from_event(alert.last_event, self.cfg.tz, record_url=record_url, ack_url=link)

    def _enqueue(
        self,
        conn: Connection,
        receiver: str,
        kind: str,
        views: Sequence[AlertView],
        rows: Mapping[str, StoredAlert],
        now_us: int,
        extra: Mapping[str, object],
    ) -> None:
        tier = max((v.tier for v in views), default=Tier.LIGHT)
        event_at = min(rows[v.instance].last_event_at_us for v in views)
        status = "resolved" if all(v.state == "resolved" for v in views) else "firing"
        outbox.enqueue(
            conn,
            receiver,
            kind,
            tier,
            views,
            event_at_us=min(event_at, now_us),
            now_us=now_us,
            extra={**extra, "status": status},
        )
        log.info("message queued", extra=fields(receiver=receiver, kind=kind, alerts=len(views), tier=tier.label))

    def _log(self, conn: Connection, receiver: str, v: AlertView, route: int, group_key: str, now_us: int) -> None:
        """Record in the notification log that `receiver` was told `v`; an open alert's repeat becomes a
        due time of this step."""
        nflog.record(conn, receiver, v, route, group_key, now_us)
        r = self.router.get(route)
        if v.state != "resolved" and r is not None:
            repeat = now_us + int(r.cfg.repeat_interval.total_seconds() * 1_000_000)
            self._told_due_us = repeat if self._told_due_us is None else min(self._told_due_us, repeat)

    # --- persistence of groups -----------------------------------------------------------------------
    def _load_groups(self, conn: Connection) -> dict[str, Group]:
        out = {}
        for r in conn.execute(select(dispatch_groups)):
            out[r.group_key] = Group(
                r.group_key,
                r.route,
                json.loads(r.labels),
                json.loads(r.pending),
                r.first_pending_us,
                r.last_flush_us,
                bool(r.urgent),
            )
        return out

    def _save_groups(self, conn: Connection, groups: Mapping[str, Group]) -> None:
        for g in groups.values():
            if not g.dirty:
                continue
            values = {
                "route": g.route,
                "labels": json.dumps(g.labels, ensure_ascii=False),
                "pending": json.dumps(g.pending),
                "first_pending_us": g.first_pending_us,
                "last_flush_us": g.last_flush_us,
                "urgent": g.urgent,
            }
            n = conn.execute(
                update(dispatch_groups).where(dispatch_groups.c.group_key == g.key).values(**values)
            ).rowcount
            if n == 0:
                conn.execute(insert(dispatch_groups).values(group_key=g.key, **values))
            g.dirty = False

    def forget_resolved(self, conn: Connection, before_us: int) -> None:
        """Housekeeping: notification-log entries of alerts resolved long ago."""
        nflog.forget_resolved(conn, before_us)


def _reminds(told: Told | None, v: AlertView) -> bool:
    """Told before at this tier and still open: the message is a reminder."""
    return told is not None and told.reminds(v)
