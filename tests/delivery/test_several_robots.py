"""A receiver with several robot URLs (one group's robots sharing the load): messages spread over them,
and a robot that refuses for good (a revoked key) is set aside while the others carry the messages; only
when every robot refuses does the message fail."""

from __future__ import annotations

from sentinel.config import ReceiverConfig
from tests.delivery.builders import Alert, route
from tests.delivery.conftest import MakePipeline
from tests.notify.vendors import FakeWeCom


def test_messages_spread_over_the_robots(pipeline: MakePipeline) -> None:
    with FakeWeCom(key="k1") as one, FakeWeCom(key="k2") as two:
        rc = ReceiverConfig(name="ops", kind="wecom", urls=[one.url, two.url])
        p = pipeline([rc], [route(["ops"], group_wait="0s", group_interval="0s")])
        for i in range(4):
            p.record(Alert(f"类型{i}", p.now).firing())
            p.dispatch()
        p.deliver("ops")
        assert [m.status for m in p.messages("ops")] == ["delivered"] * 4
        assert len(one.requests) == 2 and len(two.requests) == 2


def test_a_revoked_robot_is_set_aside_and_the_others_carry_on(pipeline: MakePipeline) -> None:
    with FakeWeCom(key="k1") as one, FakeWeCom(key="k2") as two:
        revoked = two.url.replace("k2", "revoked")  # this robot answers 93000 (invalid key)
        rc = ReceiverConfig(name="ops", kind="wecom", urls=[revoked, one.url])
        p = pipeline([rc], [route(["ops"], group_wait="0s", group_interval="0s")])
        for i in range(3):
            p.record(Alert(f"类型{i}", p.now).firing())
            p.dispatch()
        p.deliver("ops")
        assert [m.status for m in p.messages("ops")] == ["delivered"] * 3
        assert len(one.requests) == 3 and len(two.requests) == 1  # tried once, then set aside


def test_when_every_robot_refuses_the_message_fails(pipeline: MakePipeline) -> None:
    with FakeWeCom(key="k1") as one:
        rc = ReceiverConfig(name="ops", kind="wecom", urls=[one.url.replace("k1", "x1"), one.url.replace("k1", "x2")])
        p = pipeline([rc], [route(["ops"], group_wait="0s")])
        p.record(Alert("类型", p.now).firing())
        p.dispatch()
        p.deliver("ops")
        [msg] = p.messages("ops")
        assert msg.status == "failed" and msg.last_error is not None and "93000" in msg.last_error
        assert len(one.requests) == 2
