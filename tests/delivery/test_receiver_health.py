"""Each receiver's delivery state (ok / retrying / failing / set aside) as `sentinel.notify.health`
defines it, read from the outbox on a real SQLite store with real local webhooks and a moved clock: it
survives a restart (only the time of a retried error is the worker's memory), a message refused for
good sets the receiver aside until a delivery, a vendor's long block turns failing by the oldest
message's age, and a backlog that only waits for a rate-limit window is ok with its next attempt."""

from __future__ import annotations

from datetime import timedelta

import pytest

from sentinel.model import US, Tier
from sentinel.notify import outbox
from sentinel.notify.health import FAILING_AFTER, FAILING_AGE_S, ReceiverHealth, ReceiverState, receiver_health
from sentinel.store import Store
from sentinel.units import Rate
from tests.delivery.builders import Alert, Pipeline, at, route
from tests.delivery.conftest import MakePipeline
from tests.delivery.relay import Relay
from tests.notify.vendors import Answer, FakeWebhook

REFUSED = "connection refused"


def health(p: Pipeline, name: str = "hook") -> ReceiverHealth:
    return p.worker.health()[name]


def retry_when_due(p: Pipeline, name: str = "hook") -> None:
    """Move the clock to the receiver's next attempt and drain it."""
    nxt = health(p, name).next_attempt_us
    assert nxt is not None
    p.set_time(max(nxt, p.now))
    p.deliver(name)


def test_the_state_survives_a_restart_and_only_the_error_time_is_memory(
    webhook: FakeWebhook, pipeline: MakePipeline
) -> None:
    with Relay(webhook.port) as relay:
        p = pipeline([webhook.receiver(name="hook", url=relay.url(webhook.url))], [route(["hook"])])
        relay.refuse()
        p.record(Alert("物流配送延误", p.now).firing())
        p.dispatch()
        p.deliver()
        first = p.now
        h = health(p)
        assert (h.state, h.consecutive_failures, h.last_error, h.last_error_at_us) == (
            ReceiverState.RETRYING,
            1,
            REFUSED,
            first,
        )
        assert h.next_attempt_us is not None and h.next_attempt_us >= first + 5 * US  # the network delay
        for _ in range(FAILING_AFTER - 1):
            retry_when_due(p)
        h = health(p)
        assert (h.state, h.consecutive_failures, h.last_error) == (ReceiverState.FAILING, FAILING_AFTER, REFUSED)
        failed_at = h.last_error_at_us
        assert failed_at is not None and failed_at > first

        p.restart()
        after = health(p)
        assert (after.state, after.consecutive_failures, after.last_error, after.pending) == (
            ReceiverState.FAILING,
            FAILING_AFTER,
            REFUSED,
            1,
        )
        assert after.last_error_at_us is None  # when it failed is not in the outbox: unknown after a restart
        assert after.next_attempt_us == h.next_attempt_us and after.oldest_pending_age_s == h.oldest_pending_age_s
        with p.store.reading() as conn:  # what a process without a worker reads: the same, from the store
            assert receiver_health(conn, ["hook"], p.now)["hook"] == after

        retry_when_due(p)  # still refused: known again, one more in a row
        h = health(p)
        assert (h.consecutive_failures, h.last_error_at_us) == (FAILING_AFTER + 1, p.now)
        refused_at = p.now

        relay.up()
        retry_when_due(p)
        h = health(p)
        assert (h.state, h.consecutive_failures, h.pending, h.next_attempt_us) == (ReceiverState.OK, 0, 0, None)
        assert (h.last_error, h.last_error_at_us, h.last_delivered_us) == (REFUSED, refused_at, p.now)
        assert len(webhook.requests) == 1


def test_a_message_refused_for_good_sets_the_receiver_aside_until_a_delivery(pipeline: MakePipeline) -> None:
    with FakeWebhook() as hook, FakeWebhook() as fallback:
        p = pipeline(
            [hook.receiver(name="hook"), fallback.receiver(name="fallback")],
            [route(["hook"])],
            fallback_receiver="fallback",
        )
        hook.script(Answer(404, body=b"no such hook"))
        p.record(Alert("物流配送延误", p.now).firing())
        p.dispatch()
        p.deliver("hook")
        h = health(p)
        assert (h.state, h.consecutive_failures, h.pending, h.next_attempt_us) == (ReceiverState.SET_ASIDE, 1, 0, None)
        assert (h.last_error, h.last_error_at_us) == ("HTTP 404: webhook not found: no such hook", p.now)
        p.deliver("fallback")
        assert health(p, "fallback").state is ReceiverState.OK and len(fallback.requests) == 1

        p.restart()  # given up is in the outbox, with its time
        assert health(p) == h

        p.advance(60)
        p.record(Alert("账单争议", p.now).firing())
        p.dispatch()
        p.deliver("hook")  # the next message is still tried, and the robot takes it
        h = health(p)
        assert (h.state, h.consecutive_failures, h.last_delivered_us) == (ReceiverState.OK, 0, p.now)
        assert h.last_error == "HTTP 404: webhook not found: no such hook"


def test_a_long_vendor_block_turns_failing_by_the_oldest_message_age(
    webhook: FakeWebhook, pipeline: MakePipeline
) -> None:
    p = pipeline([webhook.receiver(name="hook")], [route(["hook"])])
    webhook.script(Answer(429, headers={"Retry-After": "900"}))
    p.record(Alert("物流配送延误", p.now).firing())
    p.dispatch()
    p.deliver()
    h = health(p)
    assert (h.state, h.consecutive_failures, h.last_error) == (ReceiverState.RETRYING, 1, "HTTP 429: rate limited")
    assert h.next_attempt_us is not None and h.next_attempt_us >= p.now + 900 * US
    p.advance(FAILING_AGE_S - 1)
    assert health(p).state is ReceiverState.RETRYING
    p.advance(1)
    h = health(p)
    assert (h.state, h.consecutive_failures) == (ReceiverState.FAILING, 1)  # nothing new tried: only time
    assert h.oldest_pending_age_s == FAILING_AGE_S


def test_a_backlog_waiting_for_a_rate_limit_window_is_ok_with_its_next_attempt(
    webhook: FakeWebhook, pipeline: MakePipeline
) -> None:
    p = pipeline([webhook.receiver(name="hook", rate_limit=Rate(1, 60))], [route(["hook"], group_by=["type"])])
    p.record(Alert("物流配送延误", p.now).firing(), Alert("账单争议", p.now).firing())
    p.dispatch()
    sent_at = p.now
    assert p.deliver() == 1  # the second waits for the window
    p.advance(20)
    h = health(p)
    assert (h.state, h.consecutive_failures, h.pending, h.last_error) == (ReceiverState.OK, 0, 1, None)
    assert h.next_attempt_us == sent_at + 60 * US  # not "due now": the window holds it
    assert h.oldest_pending_age_s == 20.0
    p.advance(timedelta(seconds=40).total_seconds())
    assert p.deliver() == 1
    assert health(p).pending == 0


@pytest.mark.parametrize("state_url", ["sqlite_url", "pg_url"])
def test_the_same_states_on_every_store(state_url: str, request: pytest.FixtureRequest) -> None:
    """The queries behind the states on both state stores (SQLite, PostgreSQL), with rows the outbox
    functions write."""
    store = Store(request.getfixturevalue(state_url))
    store.upgrade()
    try:
        now = at(0)
        with store.transaction() as conn:

            def message(receiver: str, *, created: int = now) -> int:
                return outbox.enqueue(conn, receiver, "alert", Tier.LIGHT, [], event_at_us=created, now_us=created)

            def attempt(msg: int) -> None:
                assert outbox.mark_sending(conn, msg, 0)

            for name in ("aside", "retrying", "failing", "late"):
                done = message(name, created=now - 600 * US)
                attempt(done)
                outbox.mark_delivered(conn, done, now - 590 * US)
            given_up = message("aside")
            attempt(given_up)
            outbox.mark_failed(conn, given_up, now - 10 * US, "HTTP 410: webhook gone (revoked or deleted)")
            for name, failures in (("retrying", 2), ("failing", FAILING_AFTER)):
                head = message(name, created=now - 30 * US)
                for _ in range(failures):
                    attempt(head)
                    outbox.mark_retry(conn, head, now + 5 * US, REFUSED)
                message(name)  # behind the head
            late = message("late", created=now - int(FAILING_AGE_S) * US)
            attempt(late)
            outbox.mark_retry(conn, late, now + 60 * US, "HTTP 503: server error")
            attempt(late)  # in flight: not judged yet
        with store.reading() as conn:
            found = receiver_health(conn, ["aside", "retrying", "failing", "late", "idle"], now)
        assert {n: (h.state.value, h.consecutive_failures, h.pending) for n, h in found.items()} == {
            "aside": ("set_aside", 1, 0),
            "retrying": ("retrying", 2, 2),
            "failing": ("failing", FAILING_AFTER, 2),
            "late": ("failing", 1, 1),
            "idle": ("ok", 0, 0),
        }
        assert (found["aside"].last_error, found["aside"].last_error_at_us) == (
            "HTTP 410: webhook gone (revoked or deleted)",
            now - 10 * US,
        )
        assert found["aside"].last_delivered_us == now - 590 * US
        assert (found["retrying"].last_error, found["retrying"].last_error_at_us) == (REFUSED, None)
        assert found["retrying"].next_attempt_us == now + 5 * US
        assert found["retrying"].oldest_pending_age_s == 30.0
        assert found["late"].oldest_pending_age_s == FAILING_AGE_S
        assert found["idle"] == ReceiverHealth("idle", ReceiverState.OK, 0, 0, None, None, None, None, None)
    finally:
        store.close()


def test_the_gauges_follow_the_receivers_a_reload_keeps(pipeline: MakePipeline) -> None:
    with FakeWebhook() as one, FakeWebhook() as two:
        p = pipeline([one.receiver(name="one"), two.receiver(name="two")])
        text = p.metrics.render().decode()
        assert 'sentinel_receiver_state{receiver="two",state="ok"} 1.0' in text
        assert 'sentinel_receiver_oldest_pending_seconds{receiver="two"} 0.0' in text
        p.worker.reload(p.cfg.model_copy(update={"receivers": [p.cfg.receivers[0]]}))
        text = p.metrics.render().decode()
        assert 'sentinel_receiver_state{receiver="one",state="ok"} 1.0' in text
        assert 'receiver="two"' not in "".join(line for line in text.splitlines() if "sentinel_receiver_" in line)
