"""Receivers run on their own threads (`DeliveryWorker.tick()`): one that answers slowly keeps its own
message in flight and delays nobody else; a receiver never has two messages in flight."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from tests.delivery.builders import Alert, Pipeline, make_config, route
from tests.delivery.conftest import MakePipeline
from tests.notify.vendors import Answer, FakeWebhook, FakeWeCom


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll `condition` until it holds or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def ticked(p: Pipeline) -> bool:
    """The scheduler's deliver job, as it runs every second."""
    p.worker.tick()
    return True


def statuses(p: Pipeline, receiver: str) -> list[str]:
    return [m.status for m in p.messages(receiver)]


def test_a_slow_receiver_does_not_delay_another(wecom: FakeWeCom, pipeline: MakePipeline) -> None:
    with FakeWebhook() as slow:
        slow.script(Answer(delay=3))  # the first answer takes 3 s
        p = pipeline(
            [slow.receiver(name="slow", timeout=timedelta(seconds=60)), wecom.receiver(name="fast")],
            [route(["slow", "fast"], group_by=["type"])],
        )
        p.record(*(Alert(t, p.now).firing() for t in ("物流配送延误", "服务态度", "系统操作错误")))
        assert p.dispatch() == 6
        started = time.monotonic()
        p.worker.tick()
        assert wait_for(lambda: statuses(p, "fast") == ["delivered"] * 3)
        assert time.monotonic() - started < 2  # well before the slow answer
        assert len(wecom.requests) == 3
        # the slow one is still busy with its first message, the others wait behind it
        assert p.worker.runners["slow"].busy.locked()
        # (its request may reach the server after the fast ones were all answered, on a loaded machine)
        assert wait_for(lambda: len(slow.requests) == 1) and statuses(p, "slow") == ["sending", "pending", "pending"]
        p.worker.tick()  # a tick while it is busy starts no second drain for it
        assert wait_for(lambda: ticked(p) and statuses(p, "slow") == ["delivered"] * 3, timeout=15)
        p.worker.stop()  # every drain has finished: what the server saw is final
        assert [r.headers["x-sentinel-delivery"] for r in slow.requests] == [
            m.delivery_id for m in p.messages("slow")
        ]  # each once, in order


def test_reload_during_a_send_does_not_send_the_message_twice(
    tmp_path: Path, wecom: FakeWeCom, pipeline: MakePipeline
) -> None:
    with FakeWebhook() as hook:
        hook.script(Answer(delay=1))
        other = wecom.receiver(name="other")
        p = pipeline(
            [hook.receiver(name="hook", timeout=timedelta(seconds=10)), other], [route(["hook"], group_by=["type"])]
        )
        p.record(Alert("物流配送延误", p.now).firing(), Alert("服务态度", p.now).firing())
        p.dispatch()
        p.worker.tick()
        assert wait_for(lambda: len(hook.requests) == 1)
        # SIGHUP with a changed receiver (a longer timeout) while its message is in flight
        changed = make_config(
            tmp_path,
            [hook.receiver(name="hook", timeout=timedelta(seconds=20)), other],
            [route(["hook"], group_by=["type"])],
        )
        p.worker.reload(changed)
        assert wait_for(lambda: ticked(p) and statuses(p, "hook") == ["delivered"] * 2)
        p.worker.stop()  # every drain has finished: what the server saw is final
        ids = [r.headers.get("x-sentinel-delivery") for r in hook.requests]
        assert ids == [m.delivery_id for m in p.messages("hook")]  # each once, in order


def test_reload_applies_a_changed_rate_limit_and_keeps_the_window(
    tmp_path: Path, webhook: FakeWebhook, pipeline: MakePipeline
) -> None:
    p = pipeline([webhook.receiver(name="hook", rate_limit="3/min")], [route(["hook"], group_by=["type"])])
    p.record(*(Alert(f"类型{i}", p.now).firing() for i in range(3)))
    p.dispatch()
    assert p.deliver() == 2 + 1
    p.worker.reload(
        make_config(tmp_path, [webhook.receiver(name="hook", rate_limit="4/min")], [route(["hook"], group_by=["type"])])
    )
    p.record(*(Alert(f"类型{i}", p.now).firing() for i in range(3, 6)))
    p.dispatch()
    assert p.deliver() == 1  # the new limit, over the window the old one filled
    p.worker.reload(
        make_config(tmp_path, [webhook.receiver(name="hook", rate_limit="2/min")], [route(["hook"], group_by=["type"])])
    )
    p.advance(30)
    assert p.deliver() == 0
    p.advance(30)
    assert p.deliver() == 2
    assert len(webhook.requests) == 6


def test_stop_flush_is_bounded_while_a_drain_is_busy(pipeline: MakePipeline) -> None:
    with FakeWebhook() as hook:
        hook.script(*[Answer(delay=0.5)] * 20)
        p = pipeline([hook.receiver(name="hook")], [route(["hook"], group_by=["type"])])
        p.record(*(Alert(f"类型{i}", p.now).firing() for i in range(20)))
        p.dispatch()
        p.worker.tick()  # the deliver job: a drain of 20 slow messages (10 s) starts
        assert wait_for(lambda: len(hook.requests) == 1)
        started = time.monotonic()
        p.worker.flush(1.0)  # SIGTERM: at most about a second, then the rest waits in the outbox
        p.worker.stop()
        assert time.monotonic() - started < 3.0
        assert 2 <= len(hook.requests) < 10
        assert statuses(p, "hook").count("delivered") == len(hook.requests)


def test_a_receiver_a_reload_adds_gets_a_thread_of_its_own(
    tmp_path: Path, wecom: FakeWeCom, pipeline: MakePipeline
) -> None:
    """The worker started with one receiver (one drain thread); the receiver a reload adds is not queued
    behind the first one's slow send."""
    with FakeWebhook() as slow:
        slow.script(Answer(delay=5))
        hook = slow.receiver(name="slow", timeout=timedelta(seconds=60))
        p = pipeline([hook], [route(["slow"], group_by=["type"])])
        p.record(Alert("物流配送延误", p.now).firing())
        p.dispatch()
        p.worker.tick()
        assert wait_for(lambda: len(slow.requests) == 1)  # in flight for 5 s
        both = make_config(tmp_path, [hook, wecom.receiver(name="fast")], [route(["slow", "fast"], group_by=["type"])])
        p.worker.reload(both)
        p.dispatcher.reload(both)
        p.record(Alert("服务态度", p.now).firing())
        p.dispatch()
        p.worker.tick()
        assert wait_for(lambda: statuses(p, "fast") == ["delivered"])
        assert p.worker.runners["slow"].busy.locked() and statuses(p, "slow")[0] == "sending"  # still in its send
        assert wait_for(lambda: ticked(p) and statuses(p, "slow") == ["delivered"] * 2, timeout=15)
        p.worker.stop()
