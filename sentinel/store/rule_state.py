"""Persistence of the detection stage's state: rule snapshots and the raw buckets rules are rebuilt from.

A snapshot is stored in parts (`core`, `series`, `pending`, `ahead`) so a poll that changed no series
rewrites only the small ones; the pending records are written with their strings (`store.codecs`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import numpy as np
from sqlalchemy import Connection, delete, insert, select, update

from sentinel.detect import Snapshot
from sentinel.model import Buckets, Vocab
from sentinel.store.codecs import batch_from_json, batch_to_json, dumps
from sentinel.store.records import read_buckets
from sentinel.store.schema import rule_state


def load_snapshots(conn: Connection, vocab: Vocab) -> dict[str, Snapshot]:
    """Every rule's last snapshot, its pending records coded in `vocab`."""
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
        pending = batch_from_json(json.loads(p["pending"][1]) if "pending" in p else {}, vocab)
        told = json.loads(p["ahead"][1]) if "ahead" in p else []
        out[rule] = Snapshot(h, json.loads(core), series, pending, told)
    return out


def save_snapshot(conn: Connection, rule: str, snap: Snapshot, now_us: int, vocab: Vocab) -> None:
    rs = rule_state
    parts = {"core": dumps(snap.core), "pending": dumps(batch_to_json(snap.pending, vocab)), "ahead": dumps(snap.ahead)}
    if snap.series is not None:
        parts["series"] = dumps(snap.series)
    for part, data in parts.items():
        n = conn.execute(
            update(rs)
            .where(rs.c.rule == rule, rs.c.part == part)
            .values(config_hash=snap.config_hash, data=data, updated_us=now_us)
        ).rowcount
        if n == 0:
            conn.execute(
                insert(rs).values(rule=rule, part=part, config_hash=snap.config_hash, data=data, updated_us=now_us)
            )


def drop_rule_state(conn: Connection, rules: Iterable[str]) -> None:
    rs = rule_state
    names = list(rules)
    if names:
        conn.execute(delete(rs).where(rs.c.rule.in_(names)))


def load_buckets(conn: Connection, start_us: int, vocab: Vocab) -> Buckets:
    rows = list(read_buckets(conn, start_us))
    if not rows:
        return Buckets.empty()
    hours, types, chans, counts = zip(*rows, strict=True)
    return Buckets(
        np.asarray(hours, dtype=np.int64),
        vocab.encode(list(types)).astype(np.int64),
        vocab.encode(list(chans)).astype(np.int64),
        np.asarray(counts, dtype=np.int64),
    )
