"""The alert policy: what brings an alert back, decided as values the dispatcher applies.

The policy reads (the notification log, the open alerts, the mute stages of the moment) and returns a
`Schedule`; it writes nothing and sends nothing. Data flows one way: the dispatcher hands it the
facts of its step, applies the repeats and escalations it gets back, and records them in the
notification log in the same transaction as the messages.

What the schedule guarantees:

- Repeats: an open alert a receiver was told of comes back into its route's group every
  `repeat_interval` after it was last told; an acknowledged one never does, a silenced or inhibited
  one waits (it is due, but held, and comes back once the silence or the inhibition ends).
- Escalation: a `moderate` or `severe` alert not acknowledged within `escalate_after` of reaching that
  tier goes to the route's `escalate_to` receivers, once per tier (the notification log remembers),
  never while it is silenced or inhibited; mute windows do not hold it.
- `next_due_us`: the earliest moment a repeat or an escalation not due yet will be, so the daemon can
  sleep until then.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection

from sentinel.alerting import nflog
from sentinel.alerting.inhibit import inhibit_rules
from sentinel.alerting.mute import Muting
from sentinel.alerting.routing import Route, Router, labels_of
from sentinel.config import Config
from sentinel.model import US, Tier
from sentinel.store import alerts as alert_store
from sentinel.store.alerts import StoredAlert


@dataclass(frozen=True, slots=True)
class Repeat:
    """An open alert told long enough ago: back into its route's group, told at the group's next flush."""

    instance: str
    route: Route
    group_key: str
    group_labels: dict[str, str]


@dataclass(frozen=True, slots=True)
class Escalation:
    """An alert to tell `receivers` at once, ungrouped, as unacknowledged for `after_s` at its tier."""

    alert: StoredAlert
    receivers: tuple[str, ...]
    route: int  # the route whose `escalate_to` it follows (the notification log's entry names it)
    after_s: int


@dataclass(frozen=True, slots=True)
class Schedule:
    """The time-driven notifications of one step, and when the next one not due yet will be."""

    repeats: tuple[Repeat, ...]
    escalations: tuple[Escalation, ...]
    next_due_us: int | None


class Policy:
    """The configuration's inhibition rules and the decisions of each step; long-lived, reloaded."""

    def __init__(self, cfg: Config) -> None:
        self.reload(cfg)

    def reload(self, cfg: Config) -> None:
        self.cfg = cfg
        self.inhibits = inhibit_rules(cfg)

    def muting(self, conn: Connection, router: Router | None, now_us: int) -> Muting:
        """The mute stages at `now_us`, from one read of the store (`router`: for the mute windows of an
        alert's routes; None where no routes apply)."""
        return Muting.load(conn, rules=self.inhibits, tz=self.cfg.tz, router=router, now_us=now_us)

    def schedule(self, conn: Connection, muting: Muting, router: Router, now_us: int) -> Schedule:
        """Repeats and escalations due at `now_us`, given the step's mute stages and routes."""
        open_by_id = {a.instance: a for a in muting.open_alerts}
        repeats, repeat_due = self._repeats(conn, muting, router, open_by_id, now_us)
        escalations, escalation_due = self._escalations(conn, muting, router, now_us)
        dues = [d for d in (repeat_due, escalation_due) if d is not None]
        return Schedule(tuple(repeats), tuple(escalations), min(dues) if dues else None)

    def _repeats(
        self, conn: Connection, muting: Muting, router: Router, open_by_id: dict[str, StoredAlert], now_us: int
    ) -> tuple[list[Repeat], int | None]:
        out: list[Repeat] = []
        seen: set[tuple[str, str]] = set()
        due: int | None = None
        for instance, route_index, last_sent_us in nflog.told_firing(conn):
            alert = open_by_id.get(instance)
            route = router.get(route_index)
            if alert is None or route is None or muting.acks.mutes(alert) is not None:
                continue  # resolved, its route gone, or acknowledged: no reminder is ever due
            repeat_at = last_sent_us + int(route.cfg.repeat_interval.total_seconds() * US)
            if now_us < repeat_at:
                due = repeat_at if due is None else min(due, repeat_at)
                continue
            if muting.notify.mutes(alert) is not None:
                continue  # due, but held: it comes back once the silence or the inhibition ends
            key, glabels = route.group_key(labels_of(alert))
            if (key, instance) not in seen:  # one entry per receiver told: one repeat per group
                seen.add((key, instance))
                out.append(Repeat(instance, route, key, glabels))
        return out, due

    def _escalations(
        self, conn: Connection, muting: Muting, router: Router, now_us: int
    ) -> tuple[list[Escalation], int | None]:
        out: list[Escalation] = []
        due: int | None = None
        done = nflog.escalated(conn)
        for row in muting.open_alerts:
            if row.tier < Tier.MODERATE or (row.instance, row.tier.label) in done:
                continue
            if muting.remind.mutes(row) is not None:
                continue
            targets = [r for r in router.route(labels_of(row)) if r.cfg.escalate_to]
            if not targets:
                continue
            since = self.reached(conn, row.instance, row.tier.label)
            ready = [r for r in targets if now_us >= since + int(r.cfg.escalate_after.total_seconds() * US)]
            if not ready:
                at = since + min(int(r.cfg.escalate_after.total_seconds() * US) for r in targets)
                due = at if due is None else min(due, at)
                continue
            receivers = tuple(sorted({name for r in ready for name in r.cfg.escalate_to}))
            out.append(Escalation(row, receivers, ready[0].index, (now_us - since) // US))
        return out, due

    def reached(self, conn: Connection, instance: str, tier: str) -> int:
        """When the alert first reached `tier` (its firing or upgrade to it)."""
        return alert_store.first_event_at(conn, instance, tier) or 0
