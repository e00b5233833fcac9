"""What holds an alert back and what brings it back: silences, inhibition, mute times, acknowledgement,
repeats and escalation. The dispatcher asks this module; nothing here sends anything itself.

- Silenced or inhibited alerts are recorded and shown, never sent, repeated or escalated.
- Inhibition: while a `source` alert is open, `target` alerts with the same `equal` label values are
  held (one surge seen at total, type and type x channel level tells people once).
- A muted route holds its groups while the window lasts; they go out as one digest when it ends
  (alerts that resolved meanwhile, never told, are dropped). Escalations are never muted.
- Repeats: an open, unacknowledged alert is told again every `repeat_interval`.
- Escalation: a `moderate` or `severe` alert not acknowledged within `escalate_after` of reaching that
  tier goes to the route's `escalate_to` receivers, once per tier.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from sqlalchemy import Connection, insert, select

from sentinel.alerting import silences as silence_store
from sentinel.alerting.routing import Matcher, Route, compile_matchers, labels_of, matches
from sentinel.config import Config
from sentinel.model import US, Tier, from_datetime, to_datetime
from sentinel.store import alerts as alert_store
from sentinel.store.alerts import StoredAlert
from sentinel.store.schema import acks, escalations, notify_log

if TYPE_CHECKING:
    from sentinel.alerting.dispatch import Dispatcher, Group


@dataclass(frozen=True, slots=True)
class Inhibit:
    source: tuple[Matcher, ...]
    target: tuple[Matcher, ...]
    equal: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Hold:
    silenced: str | None  # silence id
    inhibited: str | None  # instance of the inhibiting alert
    acknowledged: bool
    muted: bool


class Policy:
    def __init__(self, cfg: Config) -> None:
        self.reload(cfg)
        self._silences: list[silence_store.Silence] = []
        self._open: list[tuple[str, dict[str, str]]] = []
        self._open_alerts: dict[str, StoredAlert] = {}  # of this step, oldest first
        self._acked: set[str] = set()
        self.next_due_us: int | None = None  # after `schedule`: the earliest repeat or escalation due

    def reload(self, cfg: Config) -> None:
        self.cfg = cfg
        self.inhibits = [Inhibit(compile_matchers(i.source), compile_matchers(i.target), tuple(i.equal))
                         for i in cfg.inhibit]

    # --- the facts of this step ------------------------------------------------------------------------
    def begin(self, conn: Connection, now_us: int) -> None:
        self._silences = silence_store.load(conn, include_expired_after_us=now_us)
        self._open_alerts = {a.instance: a for a in alert_store.open_alerts(conn)}
        self._open = [(i, labels_of(a)) for i, a in self._open_alerts.items()]
        self._acked = set(conn.execute(select(acks.c.instance)).scalars())
        self.next_due_us = None

    def _due_later(self, at_us: int) -> None:
        self.next_due_us = at_us if self.next_due_us is None else min(self.next_due_us, at_us)

    def hold(self, alert: StoredAlert, now_us: int, routes: Sequence[Route] = ()) -> Hold:
        labels = labels_of(alert)
        s = silence_store.silenced_by(self._silences, labels, now_us)
        return Hold(s.id if s else None, self.inhibited_by(alert.instance, labels), alert.instance in self._acked,
                    any(self.muted(r, now_us) for r in routes))

    def inhibited_by(self, instance: str, labels: Mapping[str, str]) -> str | None:
        for rule in self.inhibits:
            if not matches(rule.target, labels):
                continue
            for other, olabels in self._open:
                if other == instance or not matches(rule.source, olabels):
                    continue
                if all(olabels.get(k, "") == labels.get(k, "") for k in rule.equal):
                    return other
        return None

    def muted(self, route: Route, now_us: int) -> bool:
        if not route.cfg.mute:
            return False
        local = to_datetime(now_us, self.cfg.tz).time()
        return any(w.contains(local) for w in route.cfg.mute)

    # --- the dispatcher's questions ------------------------------------------------------------------
    def may_send(self, conn: Connection, alert: StoredAlert, receiver: str, g: Group, now_us: int) -> bool:
        h = self.hold(alert, now_us)
        return h.silenced is None and h.inhibited is None

    def hold_group(self, g: Group, route: Route, now_us: int) -> bool:
        return self.muted(route, now_us)

    def hold_until_us(self, route: Route, now_us: int) -> int | None:
        """When a group held by the route's mute windows at `now_us` may go (the earliest end of the
        windows that contain it; a window that starts as another ends is seen at that step), else None."""
        local = to_datetime(now_us, self.cfg.tz)
        ends = [from_datetime(w.end_after(local)) for w in route.cfg.mute if w.contains(local.time())]
        return min(ends) if ends else None

    def still_pending(self, conn: Connection, g: Group, rows: Mapping[str, StoredAlert], now_us: int) -> list[str]:
        """Open alerts held back by a silence or an inhibition stay in their group, so they are told at
        the group's next interval after the silence expires or the inhibiting alert resolves."""
        kept = []
        for inst, row in rows.items():
            if not row.is_open:
                continue
            h = self.hold(row, now_us)
            if h.silenced or h.inhibited:
                kept.append(inst)
        return kept

    def schedule(self, conn: Connection, dispatcher: Dispatcher, groups: dict[str, Group], now_us: int) -> None:
        """Time-driven notifications: repeats go into their groups, escalations straight out."""
        self.begin(conn, now_us)
        self._repeats(conn, dispatcher, groups, now_us)
        self._escalate(conn, dispatcher, now_us)

    def _repeats(self, conn: Connection, dispatcher: Dispatcher, groups: dict[str, Group], now_us: int) -> None:
        told = conn.execute(select(notify_log.c.instance, notify_log.c.route, notify_log.c.last_sent_us)
                            .where(notify_log.c.last_state == "firing"))
        for instance, route_index, last_sent_us in told:
            alert = self._open_alerts.get(instance)
            route = dispatcher.router.get(route_index)
            if alert is None or route is None or instance in self._acked:
                continue
            repeat_at = last_sent_us + int(route.cfg.repeat_interval.total_seconds() * US)
            if now_us < repeat_at:
                self._due_later(repeat_at)
                continue
            h = self.hold(alert, now_us)
            if h.silenced or h.inhibited:
                continue
            key, glabels = route.group_key(labels_of(alert))
            g = groups.get(key)
            if g is not None and instance in g.pending:
                continue
            dispatcher.add(groups, route, key, glabels, instance, now_us, urgent=False)

    def _escalate(self, conn: Connection, dispatcher: Dispatcher, now_us: int) -> None:
        rows = [a for a in self._open_alerts.values() if a.tier >= Tier.MODERATE]
        done = {(i, t) for i, t in conn.execute(select(escalations.c.instance, escalations.c.tier))}
        for row in rows:
            inst, tier = row.instance, row.tier.label
            if inst in self._acked or (inst, tier) in done:
                continue
            h = self.hold(row, now_us)
            if h.silenced or h.inhibited:
                continue
            labels = labels_of(row)
            targets = [r for r in dispatcher.router.route(labels) if r.cfg.escalate_to]
            if not targets:
                continue
            since = self.reached(conn, inst, tier)
            due = [r for r in targets if now_us >= since + int(r.cfg.escalate_after.total_seconds() * US)]
            if not due:
                self._due_later(since + min(int(r.cfg.escalate_after.total_seconds() * US) for r in targets))
                continue
            receivers = sorted({name for r in due for name in r.cfg.escalate_to})
            for name in receivers:
                dispatcher.enqueue_views(conn, name, "escalation", {inst: row}, now_us,
                                         {"escalated_after_s": (now_us - since) // US})
                dispatcher.log_view(conn, name, dispatcher.view(row), due[0].index, "escalation", now_us)
            conn.execute(insert(escalations).values(instance=inst, tier=tier, at_us=now_us))

    def reached(self, conn: Connection, instance: str, tier: str) -> int:
        """When the alert first reached `tier` (its firing or upgrade to it)."""
        return alert_store.first_event_at(conn, instance, tier) or 0


AckVia = Literal["api", "link"]  # decided by the server from how the ack arrived: bearer token or signed link


def acknowledge(conn: Connection, instance: str, by: str, via: AckVia, now_us: int) -> str:
    """Record an acknowledgement; returns "acknowledged", "already" or raises KeyError (unknown)."""
    if alert_store.get_alert(conn, instance) is None:
        raise KeyError(instance)
    if conn.execute(select(acks.c.instance).where(acks.c.instance == instance)).first() is not None:
        return "already"
    conn.execute(insert(acks).values(instance=instance, by=by[:200] or "unknown", via=via, at_us=now_us))
    return "acknowledged"


def acked(conn: Connection) -> dict[str, tuple[str, int]]:
    return {i: (b, t) for i, b, t in conn.execute(select(acks.c.instance, acks.c.by, acks.c.at_us))}

