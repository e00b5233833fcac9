"""Stages that wake each other: a committed poll wakes dispatch, committed messages wake delivery, and
each waker sleeps until its next due time. With every safety interval set to a minute, an alert still
reaches the sink within seconds; group_wait, group_interval and mute windows still decide exactly when
a group goes; idle wakers do not spin; a message committed while a drain is finishing is not left for
the safety net; a burst of 300 messages reaches one receiver (and 30 each reach ten) complete, once
each and in order; claims that wait during a commit share the next transaction; a rate-limited or
retrying receiver resumes at its own due time, within its limit."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Connection, update

from sentinel.alerting import silences
from sentinel.clock import SystemClock
from sentinel.config import load_config
from sentinel.daemon import Daemon
from sentinel.delivery_stage import DeliveryStage
from sentinel.dispatch_stage import DispatchStage
from sentinel.model import US, Tier
from sentinel.notify import outbox
from sentinel.notify.group_commit import GroupCommit
from sentinel.notify.worker import DeliveryWorker
from sentinel.service import build
from sentinel.store import Store
from sentinel.store import alerts as alert_store
from sentinel.store.schema import outbox as outbox_table
from sentinel.wake import Waker
from tests.crm import Crm
from tests.delivery.builders import Alert, Pipeline, at, daemon_config, delivery_ids, route
from tests.delivery.conftest import MakePipeline
from tests.delivery.test_isolation import wait_for
from tests.notify.vendors import Answer, FakeWebhook

SAFETY_S = 60.0  # longer than any wait below: what arrives in time arrived through a wake-up
STREAK = "物流配送延误"


def running(p: Pipeline) -> DeliveryWorker:
    """The pipeline's worker driven by its own waker (as in the daemon), safety net a minute away."""
    p.worker.waker.interval_s = SAFETY_S
    p.worker.waker.start()
    return p.worker


def view_message(p: Pipeline, i: int) -> int:
    """One message for receiver "hook" committed straight into the outbox, as the dispatcher does."""
    alert = Alert(f"类型{i:03d}", p.now)
    ev = alert.firing()
    p.record(ev)
    with p.store.reading() as conn:
        stored = alert_store.get_alert(conn, alert.instance)
    assert stored is not None
    view = p.dispatcher.view(stored)
    with p.store.transaction() as conn:
        return outbox.enqueue(
            conn,
            "hook",
            "alert",
            Tier.LIGHT,
            [view],
            event_at_us=p.now,
            now_us=p.now,
            extra={"group_key": f"g{i}", "status": "firing"},
        )


# --- the whole daemon --------------------------------------------------------------------------------


@pytest.fixture
def slow_safety_nets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(DispatchStage, "SAFETY_S", SAFETY_S)
    monkeypatch.setattr(DeliveryStage, "SAFETY_S", SAFETY_S)


@pytest.fixture
def daemon(tmp_path: Path, slow_safety_nets: None) -> Iterator[tuple[Daemon, Crm, FakeWebhook]]:
    """A real daemon (SQLite source and store, real clock) sending to a local webhook; it polls only
    when woken (poll_interval is a minute too), so each test decides when a poll happens."""
    crm = Crm(tmp_path / "crm.db")
    with FakeWebhook() as hook:
        receivers = f"""
[[receivers]]
name = "hook"
kind = "webhook"
url = "{hook.url}"

[[routes]]
receivers = ["hook"]
group_by = ["rule", "type"]
group_wait = "0s"
group_interval = "0s"
"""
        path = daemon_config(tmp_path, crm.path, receivers, poll_interval="60s", lateness="1s")
        d = build(load_config(path), config_path=str(path))
        d.start()
        try:
            assert wait_for(lambda: d.state is not None and d.state.backfill_done, 15.0), "first start's backfill"
            yield d, crm, hook
        finally:
            d.stop()


def test_an_event_recorded_by_a_poll_reaches_the_sink_through_the_wakeups(
    daemon: tuple[Daemon, Crm, FakeWebhook],
) -> None:
    d, crm, hook = daemon
    now = datetime.now(UTC)
    crm.add(now, type_=STREAK, n=5, spacing=timedelta(microseconds=100))  # five in a row
    time.sleep(1.2)  # the records are `lateness` (1 s) old: this poll evaluates them
    started = time.monotonic()
    d.wake_poll()
    assert wait_for(lambda: len(hook.requests) >= 1, timeout=15.0), "not delivered before the safety nets"
    assert time.monotonic() - started < SAFETY_S / 2
    body = hook.requests[0].json
    assert body["status"] == "firing"
    assert [(a["labels"]["rule"], a["labels"]["type"]) for a in body["alerts"]] == [("streak", STREAK)]

    def delivered() -> list[str]:
        with d.store.reading() as conn:
            return [m.delivery_id for m in outbox.recent(conn, (outbox.DELIVERED,))]

    # the mark follows the answer (it is committed right after it, with the receiver's next claim)
    assert wait_for(lambda: delivered() == delivery_ids(hook.requests), timeout=5.0)


def test_an_idle_daemon_does_not_spin(daemon: tuple[Daemon, Crm, FakeWebhook]) -> None:
    d, _crm, _hook = daemon
    time.sleep(0.5)  # the start-up runs are over
    before = {w.name: w.runs for w in d.wakers}
    time.sleep(2.0)
    grown = {w.name: w.runs - before[w.name] for w in d.wakers}
    assert set(grown) == {"poll", "dispatch", "deliver"}
    assert all(n <= 2 for n in grown.values()), grown


# --- timing: the dispatcher's next due time ----------------------------------------------------------


def test_group_wait_holds_a_group_exactly_and_the_next_due_time_is_its_end(
    webhook: FakeWebhook, pipeline: MakePipeline
) -> None:
    p = pipeline(
        [webhook.receiver(name="hook")],
        [route(["hook"], group_by=["type"], group_wait=timedelta(seconds=30), group_interval=timedelta(seconds=90))],
    )
    p.record(Alert("物流配送延误", at(0)).firing())
    assert p.dispatch() == 0
    assert p.dispatcher.next_due_us == at(30)
    p.set_time(at(30) - 1)
    assert p.dispatch() == 0 and p.dispatcher.next_due_us == at(30)
    p.set_time(at(30))
    assert p.dispatch() == 1
    repeat = int(p.cfg.routes[0].repeat_interval.total_seconds() * US)
    assert p.dispatcher.next_due_us == at(30) + repeat  # nothing waits but the reminder
    p.set_time(at(40))
    p.record(Alert("物流配送延误", at(40), channel="微信").firing())  # same group, within group_interval
    assert p.dispatch() == 0
    assert p.dispatcher.next_due_us == at(30 + 90)
    p.set_time(at(120) - 1)
    assert p.dispatch() == 0
    p.set_time(at(120))
    assert p.dispatch() == 1


def test_a_group_held_by_a_silence_is_looked_at_again_a_second_later_not_in_a_loop(
    webhook: FakeWebhook, pipeline: MakePipeline
) -> None:
    p = pipeline([webhook.receiver(name="hook")], [route(["hook"], group_by=["type"])])  # group_wait 0 s
    ms, starts, ends, by, comment = silences.parse(
        {
            "matchers": [{"name": "type", "value": "物流配送延误"}],
            "endsAt": "2025-07-08T10:30:00+00:00",
            "createdBy": "ops",
            "comment": "deploy",
        },
        p.now,
    )
    with p.store.transaction() as conn:
        silences.add(conn, ms, starts, ends, by, comment, p.now)
    p.record(Alert("物流配送延误", at(0)).firing())
    assert p.dispatch() == 0
    assert p.dispatcher.next_due_us == at(1)  # held, so not "due now" again (that would spin)


def test_a_muted_group_is_due_when_the_window_ends(webhook: FakeWebhook, pipeline: MakePipeline) -> None:
    # T0 is 18:00 in Shanghai; the window ends at 19:00, an hour later
    p = pipeline(
        [webhook.receiver(name="hook")],
        [route(["hook"], group_by=["type"], mute=["17:00-19:00"])],
        timezone="Asia/Shanghai",
    )
    p.record(Alert("物流配送延误", at(0)).firing())
    assert p.dispatch() == 0
    assert p.dispatcher.next_due_us == at(3600)
    p.set_time(at(3600))
    assert p.dispatch() == 1


def test_the_next_repeat_is_a_due_time(webhook: FakeWebhook, pipeline: MakePipeline) -> None:
    p = pipeline(
        [webhook.receiver(name="hook")], [route(["hook"], group_by=["type"], repeat_interval=timedelta(hours=4))]
    )
    p.record(Alert("物流配送延误", at(0)).firing())
    assert p.dispatch() == 1
    assert p.dispatcher.next_due_us == at(4 * 3600)
    p.set_time(at(4 * 3600))
    assert p.dispatch() == 1
    assert [m.kind for m in p.messages("hook")] == ["alert", "repeat"]


# --- the delivery worker on its waker ------------------------------------------------------------------


def test_idle_delivery_wakers_do_not_spin_empty_or_waiting(webhook: FakeWebhook, pipeline: MakePipeline) -> None:
    p = pipeline([webhook.receiver(name="hook")], [route(["hook"])])
    worker = running(p)
    time.sleep(0.3)
    empty = worker.waker.runs
    time.sleep(1.0)
    assert worker.waker.runs - empty <= 1
    # a message whose next attempt is 30 s away: the waker sleeps until then, it does not poll for it
    view_message(p, 1)
    with p.store.transaction() as conn:
        conn.execute(update(outbox_table).values(next_attempt_us=p.now + 30 * US))
    worker.wake()
    time.sleep(0.3)
    waiting = worker.waker.runs
    time.sleep(2.0)
    assert worker.waker.runs - waiting <= 2
    assert webhook.requests == []


def test_a_message_committed_while_a_drain_is_finishing_goes_without_the_safety_net(
    webhook: FakeWebhook, pipeline: MakePipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = pipeline([webhook.receiver(name="hook")], [route(["hook"])])
    worker = running(p)
    assert wait_for(lambda: worker.waker.runs >= 1, timeout=15.0)
    finishing = worker._pending_gauge  # runs at the end of a drain, with the in-flight lock still held
    raced: list[int] = []

    def commit_and_wake_while_finishing(name: str, d: object) -> None:
        if not raced:
            runs = worker.waker.runs
            raced.append(view_message(p, 1))
            worker.wake()
            # the waker's tick has run (and found the receiver busy) before this drain lets go
            assert wait_for(lambda: worker.waker.runs > runs, timeout=5.0)
            assert worker.runners["hook"].busy.locked()
        finishing(name, d)  # type: ignore[arg-type]

    monkeypatch.setattr(worker, "_pending_gauge", commit_and_wake_while_finishing)
    worker.wake()  # a drain that finds nothing, and the commit lands while it finishes
    assert wait_for(lambda: len(webhook.requests) == 1, timeout=10.0), "left for the safety net"
    assert delivery_ids(webhook.requests) == [m.delivery_id for m in p.messages("hook")]


def test_a_burst_of_300_reaches_one_receiver_complete_once_each_and_in_order(pipeline: MakePipeline) -> None:
    with FakeWebhook() as hook:
        p = pipeline([hook.receiver(name="hook")], [route(["hook"], group_by=["type"])])
        p.record(*(Alert(f"类型{i:03d}", p.now).firing() for i in range(300)))
        assert p.dispatch() == 300
        worker = running(p)
        worker.wake()
        assert wait_for(lambda: len(hook.requests) >= 300, timeout=60.0)
        worker.stop()  # every drain has finished: what the server saw is final
        messages = p.messages("hook")
        assert delivery_ids(hook.requests) == [m.delivery_id for m in messages]  # once each, FIFO
        assert {m.status for m in messages} == {outbox.DELIVERED}
        assert [r.json["alerts"][0]["labels"]["type"] for r in hook.requests] == [
            m.payload["views"][0]["labels"]["type"] for m in messages
        ]


def test_waker_runs_a_wake_that_arrives_during_a_step_right_after_it() -> None:
    """The property the again-flag builds on: a wake-up during a step is one more step, not lost."""
    calls: list[float] = []
    woke: list[bool] = []

    def step() -> float | None:
        calls.append(time.monotonic())
        if len(calls) == 1:
            w.wake()
            woke.append(True)
        return None

    w = Waker("t", step, SAFETY_S)
    w.start()
    try:
        assert wait_for(lambda: len(calls) >= 2, timeout=5.0)
        time.sleep(0.3)
        assert len(calls) == 2 and woke
    finally:
        w.stop(5.0)


def test_ten_receivers_in_a_burst_each_get_theirs_complete_once_each_and_in_order(pipeline: MakePipeline) -> None:
    names = [f"hook{i}" for i in range(10)]
    with FakeWebhook() as hook:
        p = pipeline([hook.receiver(name=n) for n in names], [route(names, group_by=["type"])])
        p.record(*(Alert(f"类型{i:03d}", p.now).firing() for i in range(30)))
        assert p.dispatch() == 30 * 10
        worker = running(p)
        worker.wake()
        assert wait_for(lambda: len(hook.requests) >= 300, timeout=60.0)
        worker.stop()
        arrived = delivery_ids(hook.requests)
        assert len(arrived) == len(set(arrived)) == 300
        for name in names:
            mine = [m.delivery_id for m in p.messages(name)]
            assert [d for d in arrived if d in set(mine)] == mine  # FIFO per receiver
        assert {m.status for m in p.messages()} == {outbox.DELIVERED}


def test_claims_waiting_during_a_commit_share_the_next_transaction(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path}/state.db")
    store.upgrade()
    commits = GroupCommit(store)
    inside, release = threading.Event(), threading.Event()
    results: dict[str, object] = {}

    def slow(_conn: Connection) -> str:
        inside.set()
        release.wait(5.0)
        return "a"

    def run(name: str, fn: Callable[[Connection], object]) -> None:
        try:
            results[name] = commits.run(fn)
        except Exception as exc:  # noqa: BLE001 - the test looks at what each caller got
            results[name] = exc

    threads = [threading.Thread(target=run, args=("a", slow))]
    threads[0].start()
    assert inside.wait(5.0)
    for name in ("b", "c"):
        threads.append(threading.Thread(target=run, args=(name, lambda _c, n=name: n)))
        threads[-1].start()
    assert wait_for(lambda: len(commits._queue) == 2, timeout=5.0)  # both wait behind the commit
    release.set()
    for t in threads:
        t.join(5.0)
    assert results == {"a": "a", "b": "b", "c": "c"}
    assert commits.batches == 2  # b and c committed together

    def broken(_conn: Connection) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        commits.run(broken)
    assert commits.run(lambda _c: "after") == "after"  # the next claim leads again
    store.close()


def test_a_rate_limited_receiver_resumes_when_its_window_opens_and_never_exceeds_it(pipeline: MakePipeline) -> None:
    with FakeWebhook() as hook:
        p = pipeline(
            [hook.receiver(name="hook", rate_limit="2/1s")], [route(["hook"], group_by=["type"])], clock=SystemClock()
        )  # real time: the window must really pass
        p.record(*(Alert(f"类型{i:03d}", p.now).firing() for i in range(5)))
        assert p.dispatch() == 5
        worker = running(p)
        worker.wake()
        assert wait_for(lambda: len(hook.requests) >= 5, timeout=15.0), "waited for the safety net"
        worker.stop()
        times = [r.at for r in hook.requests]
        assert all(later - earlier >= 0.99 for earlier, later in zip(times, times[2:], strict=False)), times
        assert delivery_ids(hook.requests) == [m.delivery_id for m in p.messages("hook")]


def test_a_retry_goes_at_its_due_time_not_at_the_safety_net(pipeline: MakePipeline) -> None:
    with FakeWebhook() as hook:
        hook.script(Answer(503, headers={"Retry-After": "1"}))  # the retry is due within about two seconds
        p = pipeline([hook.receiver(name="hook")], [route(["hook"])], clock=SystemClock())
        p.record(Alert("物流配送延误", p.now).firing())
        assert p.dispatch() == 1
        worker = running(p)
        worker.wake()
        assert wait_for(lambda: len(hook.requests) >= 2, timeout=20.0), "waited for the safety net"
        worker.stop()
        assert [m.status for m in p.messages("hook")] == [outbox.DELIVERED]
        assert len(set(delivery_ids(hook.requests))) == 1  # the same message, twice
