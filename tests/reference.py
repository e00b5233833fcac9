"""What a daemon recorded, next to what the backtest makes of the same rows: the recorded events read back
from a state store as `Event`s, the retractions from its metrics, and the backtest's engine run over the
rows (`tests.detect.builders.run`, the engine `sentinel backtest` feeds). Used by the tests that hold a
real daemon to the backtest (`tests/test_ledger_property.py`, `tests/test_crash_soak.py`)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, select

from sentinel.model import Event, EventState, Tier
from sentinel.store.schema import alert_events
from tests.detect.builders import Rec, run

_KEYS = {
    "at",
    "rule",
    "kind",
    "state",
    "tier",
    "labels",
    "value",
    "baseline",
    "ratio",
    "p",
    "fingerprint",
    "instance",
    "started",
    "at_us",
    "started_us",
}


def recorded(conn: Connection) -> list[Event]:
    """Every event the store holds, in the order it was recorded."""
    out = []
    for (payload,) in conn.execute(select(alert_events.c.payload).order_by(alert_events.c.seq)):
        p = json.loads(payload)
        out.append(
            Event(
                at=int(p["at_us"]),
                rule=p["rule"],
                kind=p["kind"],
                state=EventState(p["state"]),
                tier=Tier.parse(p["tier"]),
                labels=p["labels"],
                value=p["value"],
                baseline=p["baseline"],
                ratio=p["ratio"],
                fingerprint=p["fingerprint"],
                instance=p["instance"],
                started=int(p["started_us"]),
                p=p.get("p"),
                extra={k: v for k, v in p.items() if k not in _KEYS},
            )
        )
    return out


def retractions(metrics_text: str) -> list[tuple[str, str]]:
    """(rule, what) once per retraction counted in `sentinel_alert_retractions_total`."""
    out: list[tuple[str, str]] = []
    for line in metrics_text.splitlines():
        if line.startswith("sentinel_alert_retractions_total{"):
            labels, value = line.rsplit(" ", 1)
            parts = dict(kv.split("=", 1) for kv in labels[labels.index("{") + 1 : -1].split(","))
            out += [(parts["rule"].strip('"'), parts["what"].strip('"'))] * int(float(value))
    return out


def backtest(rules: Sequence[Any], rows: Iterable[Rec], coverage: int | None, until: int) -> list[Event]:
    """The backtest's events over `rows`, its time moved on to `until` (the daemon's settled horizon),
    with the daemon's calendar (no holidays configured)."""
    return run(rules, list(rows), coverage=coverage, until=until, holidays=None)


def key(e: Event) -> tuple[Any, ...]:
    """What must be the same in the daemon and the backtest for one event."""
    return (e.rule, e.kind, e.state.value, e.tier.label, tuple(sorted(e.labels.items())), e.instance, e.at)
