"""Persistence of the detection stage: rule snapshots, alert instances and alert events.

Events are appended with a monotonically increasing `seq`; the dispatcher reads them by a durable
cursor. `notify = false` marks events recorded during the first start's backfill: kept and shown,
never sent. Nothing secret is stored here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
from sqlalchemy import Connection, Table, delete, insert, select, update

from sentinel.detect.engine import Snapshot, dumps
from sentinel.detect.threshold import Buckets
from sentinel.model import Event, EventState, Vocab
from sentinel.store.records import read_buckets
from sentinel.store.schema import alert_events, alerts, rule_state


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


def load_snapshots(conn: Connection) -> dict[str, Snapshot]:
    rs = rule_state
    parts: dict[str, dict[str, tuple[str, str]]] = {}
    for rule, part, h, data in conn.execute(select(rs.c.rule, rs.c.part, rs.c.config_hash, rs.c.data)):
        parts.setdefault(rule, {})[part] = (h, data)
    out = {}
    for rule, p in parts.items():
        if "core" not in p:
            continue
        h, core = p["core"]
        series = json.loads(p["series"][1]) if "series" in p else None
        pending = json.loads(p["pending"][1]) if "pending" in p else {}
        told = json.loads(p["ahead"][1]) if "ahead" in p else []
        out[rule] = Snapshot(h, json.loads(core), series, pending, told)
    return out


def save_snapshot(conn: Connection, rule: str, snap: Snapshot, now_us: int) -> None:
    rs = rule_state
    parts = {"core": dumps(snap.core), "pending": dumps(snap.pending), "ahead": dumps(snap.ahead)}
    if snap.series is not None:
        parts["series"] = dumps(snap.series)
    for part, data in parts.items():
        n = conn.execute(update(rs).where(rs.c.rule == rule, rs.c.part == part)
                         .values(config_hash=snap.config_hash, data=data, updated_us=now_us)).rowcount
        if n == 0:
            conn.execute(insert(rs).values(rule=rule, part=part, config_hash=snap.config_hash, data=data,
                                           updated_us=now_us))


def drop_rule_state(conn: Connection, rules: Iterable[str]) -> None:
    rs = rule_state
    names = list(rules)
    if names:
        conn.execute(delete(rs).where(rs.c.rule.in_(names)))


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


def load_buckets(conn: Connection, start_us: int, vocab: Vocab) -> Buckets:
    rows = list(read_buckets(conn, start_us))
    if not rows:
        return Buckets.empty()
    hours, types, chans, counts = zip(*rows, strict=True)
    return Buckets(np.asarray(hours, dtype=np.int64), vocab.encode(list(types)).astype(np.int64),
                   vocab.encode(list(chans)).astype(np.int64), np.asarray(counts, dtype=np.int64))

