"""Builders for delivery tests: alert events without running rules, configurations around the fake
vendors, and a `Pipeline` that drives the daemon's own dispatch and delivery stages (dispatcher ->
outbox -> worker) on a real SQLite store with a manual clock. They build data and move time; assertions
stay in the tests."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from sentinel.clock import ManualClock, now_us
from sentinel.config import Config, ReceiverConfig, RouteConfig
from sentinel.delivery_stage import DeliveryStage
from sentinel.dispatch_stage import DispatchStage
from sentinel.metrics import Metrics
from sentinel.model import US, Event, EventState, Tier, fingerprint, from_datetime, instance_id
from sentinel.notify import outbox
from sentinel.notify.base import Adapter
from sentinel.notify.worker import DeliveryWorker
from sentinel.store import Store
from sentinel.store.alerts import record_events
from sentinel.store.schema import outbox as outbox_table

T0 = datetime(2025, 7, 8, 10, 0, tzinfo=UTC)  # 18:00 in Shanghai
RULE = "type-surge"


# --- events ------------------------------------------------------------------------------------------


@dataclass
class Alert:
    """One alert instance of a threshold rule on one complaint type; makes its events in order."""

    type: str
    started: int
    rule: str = RULE
    channel: str | None = None
    tier: Tier = Tier.LIGHT
    value: float = 61.0
    baseline: float = 40.0
    events: list[Event] = field(default_factory=list)

    @property
    def labels(self) -> dict[str, str]:
        return {"type": self.type} if self.channel is None else {"type": self.type, "channel": self.channel}

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.rule, self.labels)

    @property
    def instance(self) -> str:
        return instance_id(self.fingerprint, self.started)

    def _event(self, state: EventState, at: int, extra: dict[str, Any] | None = None) -> Event:
        ev = Event(
            at=at,
            rule=self.rule,
            kind="threshold",
            state=state,
            tier=self.tier,
            labels=self.labels,
            value=self.value,
            baseline=self.baseline,
            ratio=round(self.value / self.baseline, 4),
            fingerprint=self.fingerprint,
            instance=self.instance,
            started=self.started,
            extra={"mode": "day", "peak": self.value, "samples": ["101", "102"], **(extra or {})},
        )
        self.events.append(ev)
        return ev

    def firing(self) -> Event:
        return self._event(EventState.FIRING, self.started)

    def upgraded(self, at: int, tier: Tier, value: float) -> Event:
        self.tier, self.value = tier, value
        return self._event(EventState.UPGRADED, at)

    def resolved(self, at: int) -> Event:
        return self._event(
            EventState.RESOLVED, at, {"duration_s": (at - self.started) // US, "reason": "condition unmet"}
        )


# --- configuration -----------------------------------------------------------------------------------


def route(receivers: Sequence[str], **kw: Any) -> RouteConfig:
    """A route to `receivers`; group_wait and group_interval default to 0 s (one message per step)."""
    kw.setdefault("group_wait", timedelta(0))
    kw.setdefault("group_interval", timedelta(0))
    return RouteConfig(receivers=list(receivers), **kw)


def make_config(
    tmp_path: Path, receivers: Sequence[ReceiverConfig], routes: Sequence[RouteConfig] = (), **kw: Any
) -> Config:
    kw.setdefault("locale", "en")
    return Config(state_url=f"sqlite:///{tmp_path}/state.db", receivers=list(receivers), routes=list(routes), **kw)


def open_store(cfg: Config) -> Store:
    assert cfg.state_url is not None
    store = Store(cfg.state_url.get())
    store.upgrade()
    return store


# --- the pipeline ------------------------------------------------------------------------------------


class Pipeline:
    """The dispatch and delivery stages on one store, driven step by step with a manual clock (their
    wakers are not started: the test is their thread).

        `deliver()` drains every receiver synchronously on the calling thread (the scheduler's `tick()`
        runs the same `drain` on pool threads); `restart()` builds a new worker on the same store.
    """

    def __init__(
        self,
        cfg: Config,
        store: Store,
        clock: ManualClock | None = None,
        *,
        dry_run: bool = False,
        metrics: Metrics | None = None,
        adapter_factory: Callable[[ReceiverConfig], Adapter] | None = None,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.clock = clock or ManualClock(T0)
        self.metrics = metrics or Metrics()
        self.dry_run = dry_run
        self.adapter_factory = adapter_factory
        self.dispatch_stage = DispatchStage(cfg, store, self.clock, self.metrics, leading=lambda: True)
        self.policy = self.dispatch_stage.policy
        self.dispatcher = self.dispatch_stage.dispatcher
        self.worker = self._worker()

    def _worker(self) -> DeliveryWorker:
        stage = DeliveryStage(
            self.cfg,
            self.store,
            self.clock,
            self.metrics,
            leading=lambda: True,
            dry_run=self.dry_run,
            seed=7,
            adapter_factory=self.adapter_factory,
        )
        stage.start()
        self.dispatch_stage.on_written = stage.wake
        return stage.worker

    @property
    def now(self) -> int:
        return now_us(self.clock)

    def advance(self, seconds: float) -> None:
        self.clock.set(self.clock.now() + timedelta(seconds=seconds))

    def set_time(self, us: int) -> None:
        self.clock.set(datetime.fromtimestamp(us / US, UTC))

    def record(self, *events: Event) -> None:
        with self.store.transaction() as conn:
            record_events(conn, list(events), notify=True, now_us=self.now, tz=self.cfg.tz)

    def dispatch(self) -> int:
        return self.dispatch_stage.dispatch()

    def deliver(self, receiver: str | None = None) -> int:
        names = [receiver] if receiver is not None else list(self.worker.runners)
        return sum(self.worker.drain(self.worker.runners[n]) for n in names)

    def step(self) -> int:
        """One second of the daemon: the dispatch job, then the deliver job."""
        self.dispatch()
        return self.deliver()

    def run_until_idle(self, seconds_per_step: float = 1.0, max_steps: int = 10_000) -> int:
        """Step and move the clock until nothing is pending; returns the steps taken."""
        for i in range(max_steps):
            self.step()
            if not self.pending():
                return i
            self.advance(seconds_per_step)
        raise AssertionError(f"outbox still pending after {max_steps} steps: {self.pending()}")

    def messages(self, receiver: str | None = None) -> list[outbox.OutboxMessage]:
        q = select(outbox_table).order_by(outbox_table.c.id)
        if receiver is not None:
            q = q.where(outbox_table.c.receiver == receiver)
        with self.store.reading() as conn:
            return [outbox.OutboxMessage.from_row(r) for r in conn.execute(q).mappings()]

    def pending(self) -> dict[str, int]:
        with self.store.reading() as conn:
            return outbox.pending_counts(conn)

    def restart(self) -> DeliveryWorker:
        """A new worker on the same store, as after a restart (the old one is stopped first)."""
        self.worker.stop()
        self.worker = self._worker()
        return self.worker

    def close(self) -> None:
        self.worker.stop()


def at(seconds: float) -> int:
    """µs of T0 + `seconds`."""
    return from_datetime(T0) + int(seconds * US)


def storm(n: int, started: int, spread_s: float, prefix: str = "类型") -> list[Alert]:
    """`n` alerts on distinct types starting evenly over `spread_s` seconds from `started`."""
    step = int(spread_s * US / max(n, 1))
    return [Alert(f"{prefix}{i:03d}", started + i * step) for i in range(n)]


def delivery_ids(requests: Iterable[Any]) -> list[str]:
    """Delivery ids the generic webhook received, in arrival order."""
    return [r.headers.get("x-sentinel-delivery", "") for r in requests]


def body_json(requests: Iterable[Any]) -> list[Any]:
    return [json.loads(r.body) for r in requests]


# --- the whole daemon --------------------------------------------------------------------------------


def daemon_config(
    tmp_path: Path, crm_path: Path, receivers: str, *, top: str = "", poll_interval: str = "2s", lateness: str = "1s"
) -> Path:
    """A `sentinel run` configuration over the SQLite CRM of `tests/test_daemon.py` (naive UTC times,
    columns id/created_at/category/channel/customer_id): a threshold and a streak rule, `receivers`
    as TOML tables, `top` as extra top-level keys."""
    path = tmp_path / "sentinel.toml"
    path.write_text(
        f"""
timezone = "Asia/Shanghai"
state_url = "sqlite:///{tmp_path}/state.db"
listen = "127.0.0.1:0"
locale = "en"
{top}

[source]
url = "sqlite:///{crm_path}"
table = "complaints"
columns = {{ id = "id", created_at = "created_at", type = "category", channel = "channel", customer = "customer_id" }}
timezone = "UTC"
lateness = "{lateness}"  # records are evaluated once this old: real-time tests keep it short
poll_interval = "{poll_interval}"

[[rules]]
name = "type-surge"
kind = "threshold"
min_count = 10

[[rules]]
name = "streak"
kind = "streak"
length = 5

{receivers}
""",
        encoding="utf-8",
    )
    return path
