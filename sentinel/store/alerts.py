"""Persistence of the detection stage's output: alert instances and alert events.

Events are appended with a monotonically increasing `seq`; the dispatcher reads them by a durable
cursor. `notify = false` marks events recorded during the first start's backfill: kept and shown,
never sent. Nothing secret is stored here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Row, Select, Table, func, insert, or_, select, update

from sentinel.model import Event, EventState, JsonObject, Tier, json_int
from sentinel.store.codecs import dumps
from sentinel.store.schema import alert_events, alerts


@dataclass(frozen=True, slots=True)
class StoredEvent:
    seq: int
    instance: str
    fingerprint: str
    rule: str
    state: str
    tier: str
    at_us: int
    payload: JsonObject  # as `record_events` wrote it: `Event.to_json` with `at_us` and `started_us`
    notify: bool

    def text(self, key: str) -> str:
        """A text field of the payload (`rule`, `kind`, `tier`): always written as a string."""
        value = self.payload[key]
        if not isinstance(value, str):
            raise TypeError(f"event {self.seq}: {key} is a {type(value).__name__}, not text")
        return value

    @property
    def labels(self) -> dict[str, str]:
        """The series labels of the payload (a JSON object of strings)."""
        value = self.payload["labels"]
        labels = {k: v for k, v in value.items() if isinstance(v, str)} if isinstance(value, dict) else {}
        if not isinstance(value, dict) or len(labels) != len(value):
            raise TypeError(f"event {self.seq}: labels are not an object of strings")
        return labels


def record_events(conn: Connection, events: Sequence[Event], *, notify: bool, now_us: int, tz: ZoneInfo) -> None:
    """Append events and keep the `alerts` row of each instance current."""
    if not events:
        return
    al, ev = alerts, alert_events
    rows = []
    for e in events:
        payload = e.to_json(tz)
        payload["at_us"] = e.at
        payload["started_us"] = e.started
        rows.append(
            {
                "instance": e.instance,
                "fingerprint": e.fingerprint,
                "rule": e.rule,
                "state": e.state.value,
                "tier": e.tier.label,
                "at_us": e.at,
                "payload": dumps(payload),
                "notify": notify,
                "created_us": now_us,
            }
        )
        _upsert_alert(conn, al, e, payload, notify, now_us)
    conn.execute(insert(ev), rows)


def _upsert_alert(conn: Connection, al: Table, e: Event, payload: JsonObject, notify: bool, now_us: int) -> None:
    status = "resolved" if e.state == EventState.RESOLVED else "open"
    raw_peak = payload.get("peak", e.value)  # a rule's `extra`: a number, or None when it has none
    peak = float(raw_peak) if isinstance(raw_peak, int | float | str) and raw_peak else float(e.value)
    values = {
        "tier": e.tier.label,
        "status": status,
        "updated_us": now_us,
        "value": float(e.value),
        "baseline": e.baseline,
        "last_event": dumps(payload),
        "resolved_us": e.at if status == "resolved" else None,
    }
    row = conn.execute(select(al.c.peak, al.c.replay).where(al.c.instance == e.instance)).first()
    if row is None:
        conn.execute(
            insert(al).values(
                instance=e.instance,
                fingerprint=e.fingerprint,
                rule=e.rule,
                kind=e.kind,
                labels=dumps(dict(e.labels)),
                started_us=e.started,
                peak=peak,
                replay=not notify,
                **values,
            )
        )
    else:
        conn.execute(
            update(al)
            .where(al.c.instance == e.instance)
            .values(peak=max(float(row[0]), peak), replay=bool(row[1]) and not notify, **values)
        )


def events_after(conn: Connection, seq: int, limit: int = 1000) -> list[StoredEvent]:
    ev = alert_events
    q = select(ev).where(ev.c.seq > seq).order_by(ev.c.seq).limit(limit)
    return [
        StoredEvent(
            r.seq, r.instance, r.fingerprint, r.rule, r.state, r.tier, r.at_us, json.loads(r.payload), bool(r.notify)
        )
        for r in conn.execute(q)
    ]


def instances_with_events_after(conn: Connection, seq: int) -> set[str]:
    """Instances with an event after `seq` (those the dispatcher has not read yet)."""
    ev = alert_events
    return set(conn.execute(select(ev.c.instance).where(ev.c.seq > seq)).scalars())


def first_event_at(conn: Connection, instance: str, tier: str) -> int | None:
    """When the instance first had an event at `tier` (its firing or its upgrade to it), if ever."""
    ev = alert_events
    v = conn.execute(select(func.min(ev.c.at_us)).where(ev.c.instance == instance, ev.c.tier == tier)).scalar()
    return None if v is None else int(v)


# --- alert instances, as the rest of Sentinel reads them ----------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredAlert:
    """One alert instance as the store keeps it, its JSON columns parsed once, here: the dispatcher, the
    policy, the API and the pages read these, never the `alerts` table."""

    instance: str
    fingerprint: str
    rule: str
    kind: str  # "threshold" | "streak" | "quiet"
    labels: dict[str, str]  # the series labels (`type`, `channel`)
    tier: Tier  # the highest reached (never lowered while open)
    status: str  # "open" | "resolved"
    started_us: int
    updated_us: int
    resolved_us: int | None
    value: float  # at the last event
    baseline: float | None
    peak: float
    last_event: JsonObject  # the last event's payload, as `record_events` wrote it
    replay: bool  # opened during the first start's backfill (recorded, never sent)

    @property
    def is_open(self) -> bool:
        return self.status == "open"

    @property
    def last_event_at_us(self) -> int:
        return json_int(self.last_event["at_us"])


def _stored(r: Row[tuple[object, ...]]) -> StoredAlert:  # a row of `select(alerts)`
    return StoredAlert(
        r.instance,
        r.fingerprint,
        r.rule,
        r.kind,
        json.loads(r.labels),
        Tier.parse(r.tier),
        r.status,
        int(r.started_us),
        int(r.updated_us),
        None if r.resolved_us is None else int(r.resolved_us),
        float(r.value),
        r.baseline,
        float(r.peak),
        json.loads(r.last_event),
        bool(r.replay),
    )


Instances = Iterable[str] | Select[tuple[str]]
"""Alert instances: a collection, or a query that selects them (run inside the store's own query)."""


def open_alerts(
    conn: Connection, *, rule: str | None = None, among: Instances | None = None, limit: int | None = None
) -> list[StoredAlert]:
    """Open alerts, oldest first: all of them, a rule's, or those among `among`."""
    al = alerts
    q = select(al).where(al.c.status == "open")
    if rule is not None:
        q = q.where(al.c.rule == rule)
    if among is not None:
        q = q.where(al.c.instance.in_(among if isinstance(among, Select) else list(among)))
    q = q.order_by(al.c.started_us)
    if limit is not None:
        q = q.limit(limit)
    return [_stored(r) for r in conn.execute(q)]


def alerts_by_instance(conn: Connection, instances: Iterable[str]) -> dict[str, StoredAlert]:
    """instance -> alert for those that exist, in the order asked."""
    ids = list(instances)
    if not ids:
        return {}
    by_id = {r.instance: _stored(r) for r in conn.execute(select(alerts).where(alerts.c.instance.in_(ids)))}
    return {i: by_id[i] for i in ids if i in by_id}


def get_alert(conn: Connection, instance: str) -> StoredAlert | None:
    return alerts_by_instance(conn, [instance]).get(instance)


def recent_alerts(conn: Connection, since_us: int) -> list[StoredAlert]:
    """Open alerts and those resolved since `since_us`, newest first (`/api/v1/alerts`)."""
    al = alerts
    q = select(al).where(or_(al.c.status == "open", al.c.resolved_us >= since_us)).order_by(al.c.started_us.desc())
    return [_stored(r) for r in conn.execute(q)]


def resolved_since(conn: Connection, since_us: int, limit: int) -> list[StoredAlert]:
    """Alerts resolved since `since_us`, the latest resolved first, at most `limit`."""
    al = alerts
    q = (
        select(al)
        .where(al.c.status == "resolved", al.c.resolved_us >= since_us)
        .order_by(al.c.resolved_us.desc())
        .limit(limit)
    )
    return [_stored(r) for r in conn.execute(q)]


def alerts_in_order(conn: Connection, *, replay: bool | None = None) -> list[StoredAlert]:
    """Every alert, oldest first; `replay=False` leaves out those of the first start's backfill."""
    q = select(alerts)
    if replay is not None:
        q = q.where(alerts.c.replay == replay)
    return [_stored(r) for r in conn.execute(q.order_by(alerts.c.started_us))]


def open_counts_by_tier(conn: Connection) -> dict[str, int]:
    """tier -> open alerts (tiers with none left out)."""
    al = alerts
    return {
        t: int(n)
        for t, n in conn.execute(select(al.c.tier, func.count()).where(al.c.status == "open").group_by(al.c.tier))
    }


def resolved_before(before_us: int) -> Select[tuple[str]]:
    """A query of the instances resolved before `before_us` (for housekeeping of what refers to them)."""
    return select(alerts.c.instance).where(alerts.c.status == "resolved", alerts.c.resolved_us < before_us)
