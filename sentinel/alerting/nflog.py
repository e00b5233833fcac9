"""The notification log: who was told what about which alert, and which escalations were made.

It is the only module that reads or writes the `notify_log` and `escalations` tables. What it
guarantees, as Alertmanager's nflog does for its dedup and set-notifies stages:

- one entry per (receiver, alert instance), holding the last message's state (`firing` or
  `resolved`), tier, time, and the route and group that told it; a later message replaces it;
- a resolution is owed exactly to the receivers whose entry says `firing` (an alert nobody was told of
  is never announced as resolved, and nobody hears of a resolution twice);
- a message is a reminder (`repeat`) when the receiver was last told of the same alert, still open,
  at the same tier;
- an escalation is recorded once per (instance, tier): it is never made twice for the same level.

The dispatcher writes entries in the same transaction as the messages they describe, so the log and
the outbox never disagree after a crash.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Connection, Row, Select, delete, insert, select, update

from sentinel.notify.views import AlertView
from sentinel.store import alerts as alert_store
from sentinel.store.schema import escalations, notify_log

ESCALATION_GROUP = "escalation"
"""The group key entries of escalation messages carry (they go out ungrouped)."""


@dataclass(frozen=True, slots=True)
class Told:
    """What one receiver was last told about one alert."""

    receiver: str
    instance: str
    route: int  # the route whose group told it (a resolution goes back through it)
    group_key: str
    last_sent_us: int
    last_state: str  # "firing" | "resolved"
    last_tier: str

    @property
    def owed_resolution(self) -> bool:
        """Told of it while it was open: the resolution is owed to this receiver."""
        return self.last_state == "firing"

    def reminds(self, view: AlertView) -> bool:
        """Told before at this tier and still open: a message of `view` is a reminder."""
        return view.state != "resolved" and self.last_state == "firing" and self.last_tier == view.tier.label


def _told(r: Row[tuple[str, str, int, str, int, str, str]]) -> Told:
    return Told(r.receiver, r.instance, r.route, r.group_key, r.last_sent_us, r.last_state, r.last_tier)


def told(conn: Connection, instance: str) -> list[Told]:
    """Every receiver told of `instance`."""
    return [_told(r) for r in conn.execute(select(notify_log).where(notify_log.c.instance == instance))]


def told_about(conn: Connection, instances: Iterable[str]) -> dict[tuple[str, str], Told]:
    """Who was told what about these alerts, in one query: (receiver, instance) -> Told."""
    ids = list(instances)
    if not ids:
        return {}
    q = select(notify_log).where(notify_log.c.instance.in_(ids))
    return {(r.receiver, r.instance): _told(r) for r in conn.execute(q)}


def told_firing(conn: Connection) -> list[tuple[str, int, int]]:
    """(instance, route, last sent) of every entry that says `firing`: the candidates for a repeat."""
    q = select(notify_log.c.instance, notify_log.c.route, notify_log.c.last_sent_us).where(
        notify_log.c.last_state == "firing"
    )
    return [(i, int(route), int(sent)) for i, route, sent in conn.execute(q)]


def firing_in_group(receiver: str, group_key: str) -> Select[tuple[str]]:
    """A query of the instances `receiver` was told of, still firing, through group `group_key` (run
    inside the store's own query: the rest of a group a webhook lists)."""
    return select(notify_log.c.instance).where(
        notify_log.c.receiver == receiver, notify_log.c.group_key == group_key, notify_log.c.last_state == "firing"
    )


def record(conn: Connection, receiver: str, view: AlertView, route: int, group_key: str, now_us: int) -> None:
    """`receiver` was told `view` now, through `route`'s group `group_key` (replaces its last entry)."""
    values = {
        "route": route,
        "group_key": group_key,
        "last_sent_us": now_us,
        "last_state": "resolved" if view.state == "resolved" else "firing",
        "last_tier": view.tier.label,
    }
    n = conn.execute(
        update(notify_log)
        .where(notify_log.c.receiver == receiver, notify_log.c.instance == view.instance)
        .values(**values)
    ).rowcount
    if n == 0:
        conn.execute(insert(notify_log).values(receiver=receiver, instance=view.instance, **values))


def escalated(conn: Connection) -> set[tuple[str, str]]:
    """(instance, tier) of every escalation made."""
    return {(i, t) for i, t in conn.execute(select(escalations.c.instance, escalations.c.tier))}


def record_escalation(conn: Connection, instance: str, tier: str, now_us: int) -> None:
    conn.execute(insert(escalations).values(instance=instance, tier=tier, at_us=now_us))


def forget_resolved(conn: Connection, before_us: int) -> None:
    """Housekeeping: entries of alerts resolved before `before_us` (no resolution is owed for them)."""
    conn.execute(delete(notify_log).where(notify_log.c.instance.in_(alert_store.resolved_before(before_us))))
