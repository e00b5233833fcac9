"""Persistence of the detection stage's output: alert instances and alert events.

Events are appended with a monotonically increasing `seq`; the dispatcher reads them by a durable
cursor. `notify = false` marks events recorded during the first start's backfill: kept and shown,
never sent. Nothing secret is stored here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Table, insert, select, update

from sentinel.model import Event, EventState
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
    payload: dict[str, Any]
    notify: bool


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
        rows.append({"instance": e.instance, "fingerprint": e.fingerprint, "rule": e.rule, "state": e.state.value,
                     "tier": e.tier.label, "at_us": e.at, "payload": dumps(payload), "notify": notify,
                     "created_us": now_us})
        _upsert_alert(conn, al, e, payload, notify, now_us)
    conn.execute(insert(ev), rows)


def _upsert_alert(conn: Connection, al: Table, e: Event, payload: dict[str, Any], notify: bool,
                  now_us: int) -> None:
    status = "resolved" if e.state == EventState.RESOLVED else "open"
    peak = float(payload.get("peak", e.value) or e.value)
    values = {"tier": e.tier.label, "status": status, "updated_us": now_us, "value": float(e.value),
              "baseline": e.baseline, "last_event": dumps(payload),
              "resolved_us": e.at if status == "resolved" else None}
    row = conn.execute(select(al.c.peak, al.c.replay).where(al.c.instance == e.instance)).first()
    if row is None:
        conn.execute(insert(al).values(instance=e.instance, fingerprint=e.fingerprint, rule=e.rule,
                                       kind=e.kind, labels=dumps(dict(e.labels)), started_us=e.started,
                                       peak=peak, replay=not notify, **values))
    else:
        conn.execute(update(al).where(al.c.instance == e.instance)
                     .values(peak=max(float(row[0]), peak), replay=bool(row[1]) and not notify, **values))


def events_after(conn: Connection, seq: int, limit: int = 1000) -> list[StoredEvent]:
    ev = alert_events
    q = select(ev).where(ev.c.seq > seq).order_by(ev.c.seq).limit(limit)
    return [StoredEvent(r.seq, r.instance, r.fingerprint, r.rule, r.state, r.tier, r.at_us, json.loads(r.payload),
                        bool(r.notify)) for r in conn.execute(q)]


def open_alert_rows(conn: Connection, rule: str | None = None) -> list[dict[str, Any]]:
    al = alerts
    q = select(al).where(al.c.status == "open")
    if rule is not None:
        q = q.where(al.c.rule == rule)
    return [dict(r._mapping) for r in conn.execute(q.order_by(al.c.started_us))]
