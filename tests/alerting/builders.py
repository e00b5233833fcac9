"""Builders for dispatcher tests: a configuration from TOML text, a migrated store, and alert events
written the way the detection stage writes them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from sentinel.alerting.dispatch import Dispatcher
from sentinel.alerting.policy import Policy
from sentinel.config import Config, load_config
from sentinel.model import Event, EventState, Tier, fingerprint, from_datetime, instance_id
from sentinel.store import Store, open_store
from sentinel.store.alerts import record_events
from sentinel.store.schema import outbox

T0 = datetime(2025, 7, 8, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai


def config(tmp_path: Path, body: str) -> Config:
    p = tmp_path / "sentinel.toml"
    p.write_text('timezone = "Asia/Shanghai"\nexternal_url = "https://sentinel.example"\n' + body, encoding="utf-8")
    return load_config(p)


RECEIVERS = """
[[receivers]]
name = "cs-team"
kind = "webhook"
url = "http://127.0.0.1:9/cs"

[[receivers]]
name = "crisis"
kind = "webhook"
url = "http://127.0.0.1:9/crisis"
"""


@dataclass
class Alerts:
    """Writes firing / upgraded / resolved events for named series, as the rules would."""

    store: Store
    tz: Any
    started: dict[tuple[str, str], int] = field(default_factory=dict)

    def event(self, state: str, rule: str, type_: str, tier: str, at: datetime, value: float = 151,
              channel: str | None = None, kind: str = "threshold") -> Event:
        labels = {"type": type_} if channel is None else {"type": type_, "channel": channel}
        fp = fingerprint(rule, labels)
        key = (rule, fp)
        t = from_datetime(at)
        if state == "firing":
            self.started[key] = t
        start = self.started[key]
        ev = Event(at=t, rule=rule, kind=kind, state=EventState(state), tier=Tier.parse(tier), labels=labels,
                   value=value, baseline=100.0, ratio=value / 100, fingerprint=fp, instance=instance_id(fp, start),
                   started=start, extra={"mode": "day", "samples": ["1", "2"]})
        with self.store.transaction() as conn:
            record_events(conn, [ev], notify=True, now_us=t, tz=self.tz)
        return ev


def open_test_store(tmp_path: Path) -> Store:
    return open_store(f"sqlite:///{tmp_path}/state.db")


def dispatcher(cfg: Config) -> Dispatcher:
    return Dispatcher(cfg, policy=Policy(cfg))


def step(d: Dispatcher, store: Store, at: datetime) -> int:
    with store.transaction() as conn:
        return d.step(conn, from_datetime(at))


def messages(store: Store) -> list[dict[str, Any]]:
    with store.reading() as conn:
        rows = conn.execute(select(outbox).order_by(outbox.c.id)).mappings().all()
    out = []
    for r in rows:
        payload = json.loads(r["payload"])
        out.append({"receiver": r["receiver"], "kind": r["kind"], "tier": r["tier"],
                    "instances": json.loads(r["instances"]), "states": [v["state"] for v in payload["views"]],
                    "types": [v["labels"].get("type") for v in payload["views"]], "payload": payload})
    return out


def seconds(n: float) -> timedelta:
    return timedelta(seconds=n)


def times(start: datetime, step_s: float, n: int) -> Iterator[datetime]:
    for i in range(n):
        yield start + timedelta(seconds=i * step_s)


