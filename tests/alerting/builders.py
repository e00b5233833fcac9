"""Builders for alerting tests: a configuration from TOML text, a migrated store, alert events written
the way the detection stage writes them, stored alerts made up for the mute stages, and `Desk`, the one
setup of every dispatcher test (configuration, store, dispatcher and event writer, stepped with a moved
clock)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select

from sentinel.alerting.dispatch import Dispatcher
from sentinel.alerting.policy import Policy
from sentinel.config import Config, load_config
from sentinel.model import Event, EventState, Tier, fingerprint, from_datetime, instance_id
from sentinel.store import Store, open_store
from sentinel.store.alerts import StoredAlert, record_events
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

INHIBIT = (
    RECEIVERS
    + """
[[rules]]
name = "type-surge"
kind = "threshold"

[[rules]]
name = "type-channel-surge"
kind = "threshold"
group_by = ["type", "channel"]

[[inhibit]]
source = { rule = "type-surge" }
target = { rule = "type-channel-surge" }
equal = ["type"]
"""
)
"""A type surge inhibits the type x channel surges of the same type."""


@dataclass
class Alerts:
    """Writes firing / upgraded / resolved events for named series, as the rules would."""

    store: Store
    tz: ZoneInfo
    started: dict[tuple[str, str], int] = field(default_factory=dict)

    def event(
        self,
        state: str,
        rule: str,
        type_: str,
        tier: str,
        at: datetime,
        value: float = 151,
        channel: str | None = None,
        kind: str = "threshold",
    ) -> Event:
        labels = {"type": type_} if channel is None else {"type": type_, "channel": channel}
        fp = fingerprint(rule, labels)
        key = (rule, fp)
        t = from_datetime(at)
        if state == "firing":
            self.started[key] = t
        start = self.started[key]
        ev = Event(
            at=t,
            rule=rule,
            kind=kind,
            state=EventState(state),
            tier=Tier.parse(tier),
            labels=labels,
            value=value,
            baseline=100.0,
            ratio=value / 100,
            fingerprint=fp,
            instance=instance_id(fp, start),
            started=start,
            extra={"mode": "day", "samples": ["1", "2"]},
        )
        with self.store.transaction() as conn:
            record_events(conn, [ev], notify=True, now_us=t, tz=self.tz)
        return ev


def open_test_store(tmp_path: Path) -> Store:
    return open_store(f"sqlite:///{tmp_path}/state.db")


def dispatcher(cfg: Config) -> Dispatcher:
    """The dispatcher as the delivery stage builds it."""
    return Dispatcher(cfg, policy=Policy(cfg))


def messages(store: Store) -> list[dict[str, Any]]:
    """The outbox in order, each message as the facts tests compare."""
    with store.reading() as conn:
        rows = conn.execute(select(outbox).order_by(outbox.c.id)).mappings().all()
    out = []
    for r in rows:
        payload = json.loads(r["payload"])
        out.append(
            {
                "receiver": r["receiver"],
                "kind": r["kind"],
                "tier": r["tier"],
                "instances": json.loads(r["instances"]),
                "states": [v["state"] for v in payload["views"]],
                "types": [v["labels"].get("type") for v in payload["views"]],
                "payload": payload,
            }
        )
    return out


@dataclass
class Desk:
    """A dispatcher on a migrated store with the events that feed it: stepped at given times, its
    messages read back from the outbox."""

    cfg: Config
    store: Store
    dispatcher: Dispatcher
    alerts: Alerts

    @classmethod
    def build(cls, tmp_path: Path, body: str) -> Desk:
        cfg = config(tmp_path, body)
        store = open_test_store(tmp_path)
        return cls(cfg, store, dispatcher(cfg), Alerts(store, cfg.tz))

    def event(
        self, state: str, rule: str, type_: str, tier: str, at: datetime, value: float = 151, channel: str | None = None
    ) -> Event:
        return self.alerts.event(state, rule, type_, tier, at, value, channel)

    def step(self, at: datetime) -> int:
        """One dispatcher step at `at`; the messages it wrote."""
        with self.store.transaction() as conn:
            return self.dispatcher.step(conn, from_datetime(at))

    def messages(self) -> list[dict[str, Any]]:
        return messages(self.store)


def stored(
    rule: str = "surge",
    labels: Mapping[str, str] | None = None,
    tier: Tier = Tier.LIGHT,
    started_us: int = 0,
    *,
    kind: str = "threshold",
    status: str = "open",
) -> StoredAlert:
    """An alert as the store returns it, for the stages that only read one."""
    series = dict(labels if labels is not None else {"type": "物流配送延误"})
    fp = fingerprint(rule, series)
    return StoredAlert(
        instance_id(fp, started_us),
        fp,
        rule,
        kind,
        series,
        tier,
        status,
        started_us,
        started_us,
        None if status == "open" else started_us,
        151.0,
        100.0,
        151.0,
        {"at_us": started_us},
        False,
    )


def seconds(n: float) -> timedelta:
    return timedelta(seconds=n)
