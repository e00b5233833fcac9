"""End to end, as a new user runs it: `sentinel run` with the README quick-start configuration (SQLite
source, 8 days of history backfilled at the first start, a `webhook` receiver to a local sink) tells of
a surge of a new complaint type and of five of one type in a row within seconds of the row that causes
each (waits up to a minute: what is asserted is order and content, not a tight time bound)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.crm import Crm
from tests.latency_helpers import (
    HISTORY,
    bodies,
    insert,
    names,
    quickstart_config,
    seed_history,
    sentinel_run,
    wait_for_body,
)
from tests.notify.vendors import FakeWebhook

pytestmark = pytest.mark.slow

SURGE, STREAK = "物流系统故障", "退款未到账"
WAIT_S = 60.0


def test_quickstart_daemon_tells_a_surge_then_a_streak(tmp_path: Path) -> None:
    crm = Crm(tmp_path / "crm.db")
    seed_history(crm, days=8)
    with FakeWebhook() as sink, sentinel_run(quickstart_config(tmp_path, crm, sink.url)) as daemon:
        daemon.wait_for("backfill finished", timeout=60)

        # A new type arriving in numbers: zero baseline, so the threshold is floor-decided and the 10th row
        # fires (moderate). Known types between its rows keep it from also making five in a row.
        known = list(HISTORY)
        rows = []
        for i in range(10):
            rows.append(SURGE)
            if i < 9:
                rows.append(known[i % len(known)])
        insert(crm, rows)
        surge = wait_for_body(sink, lambda b: names(b, "type-surge", SURGE), WAIT_S)

        # Five of one type with nothing between them: the streak rule's default length.
        insert(crm, [STREAK] * 5)
        streak = wait_for_body(sink, lambda b: names(b, "same-type-streak", STREAK), WAIT_S)
        told = bodies(sink)

    assert surge["status"] == "firing" and surge["tier"] == "moderate"
    assert [a["labels"]["type"] for a in surge["alerts"]] == [SURGE]
    assert SURGE in surge["text"]
    assert streak["status"] == "firing" and streak["tier"] == "light"
    assert [(a["labels"]["rule"], a["labels"]["type"]) for a in streak["alerts"]] == [("same-type-streak", STREAK)]
    assert told.index(surge) < told.index(streak)
    # nothing else was told: the known types stayed inside their baseline, the surge made no streak
    assert len(told) == 2, told
