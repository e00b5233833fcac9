"""Rate limits are sliding windows per robot URL kept in the store: a restart (a new worker on the same
store) cannot burst past a robot's limit."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.delivery.builders import Alert, Pipeline, at, route
from tests.delivery.conftest import MakePipeline
from tests.notify.vendors import FakeWebhook, FakeWeCom


def alerts(p: Pipeline, first: int, n: int) -> None:
    p.record(*(Alert(f"类型{i:03d}", p.now).firing() for i in range(first, first + n)))
    assert p.dispatch() == n


def test_window_survives_a_restart(webhook: FakeWebhook, pipeline: MakePipeline) -> None:
    p = pipeline([webhook.receiver(name="hook", rate_limit="3/min")], [route(["hook"], group_by=["type"])])
    alerts(p, 0, 3)
    assert p.deliver() == 3
    p.advance(10)
    p.restart()
    alerts(p, 3, 1)
    for second in (10, 30, 59):
        p.set_time(at(second))
        assert p.deliver() == 0
    p.set_time(at(60) - 1)
    assert p.deliver() == 0
    assert len(webhook.requests) == 3
    p.set_time(at(60))  # the first three sends leave the window
    assert p.deliver() == 1
    assert [m.status for m in p.messages("hook")] == ["delivered"] * 4


def test_vendor_default_limit_survives_a_restart(wecom: FakeWeCom, pipeline: MakePipeline) -> None:
    """WeCom's published 20 a minute applies without configuration."""
    p = pipeline([wecom.receiver(name="ops")], [route(["ops"], group_by=["type"])])
    for second in range(20):  # an alert a second, each sent at once
        p.set_time(at(second))
        alerts(p, second, 1)
        assert p.deliver() == 1
    p.set_time(at(20))
    alerts(p, 20, 5)
    assert p.deliver() == 0  # the robot's minute is full
    p.restart()
    p.set_time(at(59))
    assert p.deliver() == 0
    p.set_time(at(60))
    assert p.deliver() == 1  # the send at 0 s left the window, and only that one
    p.set_time(at(64))
    assert p.deliver() == 4
    assert len(wecom.requests) == 25


@pytest.fixture
def two_robots() -> Iterator[tuple[FakeWebhook, FakeWebhook]]:
    with FakeWebhook() as a, FakeWebhook() as b:
        yield a, b


def test_each_robot_url_has_its_own_window_across_a_restart(
    two_robots: tuple[FakeWebhook, FakeWebhook], pipeline: MakePipeline
) -> None:
    a, b = two_robots
    p = pipeline(
        [a.receiver(name="hook", urls=[a.url, b.url], rate_limit="2/min")], [route(["hook"], group_by=["type"])]
    )
    alerts(p, 0, 5)
    assert p.deliver() == 4  # two per robot
    assert (len(a.requests), len(b.requests)) == (2, 2)
    p.restart()
    p.set_time(at(59))
    assert p.deliver() == 0
    p.set_time(at(60))
    assert p.deliver() == 1
    assert len(a.requests) + len(b.requests) == 5
    with p.store.reading() as conn:
        rows = conn.exec_driver_sql("SELECT receiver, url_index, sent FROM rate_state ORDER BY url_index").all()
    assert [(r[0], r[1]) for r in rows] == [("hook", 0), ("hook", 1)]  # by name and index, never by URL
    sent = [t for r in rows for t in json.loads(r[2])]
    assert sent and all(at(0) <= t <= at(60) for t in sent)
