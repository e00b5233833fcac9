"""The scene of the end-to-end latency test: a CRM table in SQLite (`tests.crm.Crm`) with 8 days of
history, the README quick-start configuration with a `webhook` receiver to a local sink (`FakeWebhook`),
and `sentinel run` as a real process. Kept apart from the test so the test reads as the story it checks;
the benchmark (`sentinel.bench.latency`) has its own copy on purpose, so a bug in one does not hide in
the other."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from tests.crm import Crm
from tests.notify.vendors import FakeWebhook
from tests.test_process import Daemon

TZ = ZoneInfo("Asia/Shanghai")
# 40 a day over the seeds' five types, in their proportions
HISTORY: dict[str, int] = {"系统操作错误": 12, "服务态度": 10, "物流配送延误": 9, "产品相关": 5, "其他": 4}
CHANNELS = ("官网客服", "微信公众号", "电话热线", "其他渠道")


def insert(crm: Crm, types: Sequence[str], when: Sequence[datetime] | None = None) -> None:
    """One transaction; rows created now unless `when` (aware datetimes) says otherwise; the channels
    taken in turn."""
    now = datetime.now(UTC)
    crm.add_rows(
        [
            (now if when is None else when[i], t, CHANNELS[(crm.next_id + i) % len(CHANNELS)])
            for i, t in enumerate(types)
        ]
    )


def seed_history(crm: Crm, days: int = 8) -> None:
    """`days` full local days before today, 40 a day spread evenly, round-robin over the types (so the
    history itself holds no five in a row)."""
    today = datetime.now(TZ).date()
    types: list[str] = []
    when: list[datetime] = []
    for d in range(days, 0, -1):
        start = datetime.combine(today - timedelta(days=d), datetime.min.time(), TZ)
        left = dict(HISTORY)
        order = []
        while any(left.values()):
            for t in HISTORY:
                if left[t]:
                    order.append(t)
                    left[t] -= 1
        step = timedelta(days=1) / (len(order) + 1)
        types += order
        when += [start + (i + 1) * step for i in range(len(order))]
    insert(crm, types, when)


def quickstart_config(tmp_path: Path, crm: Crm, sink_url: str) -> Path:
    """README "Quick start against your own database", word for word except: the source is this SQLite CRM,
    the state store is in `tmp_path`, the receiver is a `webhook` to the sink, and any free port."""
    path = tmp_path / "sentinel.toml"
    path.write_text(
        f"""
timezone = "Asia/Shanghai"
state_url = "sqlite:///{tmp_path / "state.db"}"
listen = "127.0.0.1:0"

[source]
url = "sqlite:///{crm.path}"
table = "complaints"
columns = {{ id = "id", created_at = "created_at", type = "category", channel = "channel" }}
timezone = "UTC"

[[rules]]
name = "type-surge"
kind = "threshold"

[[rules]]
name = "same-type-streak"
kind = "streak"

[[receivers]]
name = "cs-team"
kind = "webhook"
url = "{sink_url}"
""",
        encoding="utf-8",
    )
    return path


def wait_for_body(hook: FakeWebhook, pred: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any]:
    """The first JSON body the webhook received that `pred` accepts, waiting up to `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        for body in bodies(hook):
            if pred(body):
                return body
        if time.monotonic() > deadline:
            raise AssertionError(f"no matching message within {timeout:.0f} s; got {bodies(hook)!r}")
        time.sleep(0.05)


def bodies(hook: FakeWebhook) -> list[dict[str, Any]]:
    """Every JSON body the webhook received, in arrival order."""
    return [req.json for req in list(hook.requests)]


def names(body: dict[str, Any], rule: str, type_: str) -> bool:
    """Whether a webhook body carries a firing alert of `rule` for complaint type `type_`."""
    return any(
        a.get("status") == "firing" and a["labels"].get("rule") == rule and a["labels"].get("type") == type_
        for a in body.get("alerts", [])
    )


@contextmanager
def sentinel_run(config: Path) -> Iterator[Daemon]:
    """`sentinel run --config FILE` as a real process (`tests.test_process.Daemon`), killed afterwards."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SENTINEL_", "NOTIFY_SOCKET", "WATCHDOG_"))}
    daemon = Daemon(["run", "--config", str(config)], env)
    try:
        yield daemon
    finally:
        daemon.stop()
