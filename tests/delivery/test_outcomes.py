"""Each vendor answer, through dispatcher -> outbox -> worker, as the stored message shows it:
delivered; retried (pending, never sooner than the vendor asked, then delivered); or failed (kept,
with the vendor's code and meaning, counted, and told to the fallback receiver)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import select

from sentinel.config import ReceiverConfig
from sentinel.model import US
from sentinel.notify import create, outbox
from sentinel.notify.base import Adapter, Message, Outcome
from sentinel.store.schema import rate_state
from tests.delivery.builders import Alert, Pipeline, route
from tests.delivery.conftest import MakePipeline
from tests.notify.vendors import (
    Answer,
    FakeDingTalk,
    FakeDiscord,
    FakeFeishu,
    FakeSlack,
    FakeTeams,
    FakeVendor,
    FakeWebhook,
    FakeWeCom,
    closed_port_url,
)

FAKES: dict[str, Callable[[], FakeVendor]] = {
    "wecom": FakeWeCom,
    "dingtalk": FakeDingTalk,
    "feishu": FakeFeishu,
    "slack": FakeSlack,
    "teams": FakeTeams,
    "discord": FakeDiscord,
    "webhook": FakeWebhook,
}


def counter(p: Pipeline, name: str, **labels: str) -> float:
    return p.metrics.registry.get_sample_value(name, labels) or 0.0


def one_alert(p: Pipeline, type_: str = "物流配送延误") -> Alert:
    a = Alert(type_, p.now)
    p.record(a.firing())
    assert p.dispatch() >= 1
    return a


@pytest.mark.parametrize("kind", sorted(FAKES))
def test_delivered(kind: str, pipeline: MakePipeline) -> None:
    with FAKES[kind]() as fake:
        p = pipeline([fake.receiver(name="ops")], [route(["ops"])])
        one_alert(p)
        assert p.deliver() == 1
        [msg] = p.messages("ops")
        assert (msg.status, msg.attempts, msg.last_error) == ("delivered", 1, None)
        assert len(fake.requests) == 1
        assert counter(p, "sentinel_notifications_total", receiver="ops", outcome="delivered") == 1
        assert p.deliver() == 0 and len(fake.requests) == 1  # nothing is sent twice


RETRIES: list[tuple[str, str, Callable[[FakeVendor], Answer | None], float, str]] = [
    # (id, kind, answer, at least this many seconds, in last_error)
    ("wecom-45009", "wecom", lambda f: f.error(45009), 60, "45009"),
    ("wecom-busy", "wecom", lambda f: f.error(-1), 10, "system busy"),
    ("feishu-11232", "feishu", lambda f: f.error(11232), 60, "11232"),
    ("feishu-9499-throttled", "feishu", lambda f: f.error(9499, "too many request"), 60, "rate limited"),
    ("slack-429", "slack", lambda f: Answer(429, body=b"rate_limited", headers={"Retry-After": "7"}), 7, "429"),
    ("discord-429", "discord", lambda f: f.rate_limited(3.5), 3.5, "429"),  # type: ignore[attr-defined]
    ("teams-429", "teams", lambda f: Answer(429, headers={"Retry-After": "30"}), 30, "429"),
    ("webhook-503", "webhook", lambda f: Answer(503, body=b"down"), 10, "HTTP 503"),
    ("webhook-500-retry-after", "webhook", lambda f: Answer(500, headers={"Retry-After": "42"}), 42, "HTTP 500"),
    ("dingtalk-302", "dingtalk", lambda f: Answer(302, headers={"Location": "/elsewhere"}), 600, "302"),
    ("timeout", "webhook", lambda f: Answer(delay=6), 5, "timed out after 1.5 s"),
    ("connection-refused", "wecom", lambda f: None, 5, "connection refused"),
]


@pytest.mark.parametrize(
    ("kind", "answer", "min_delay", "error"), [r[1:] for r in RETRIES], ids=[r[0] for r in RETRIES]
)
def test_retry_answer_keeps_the_message_pending_for_at_least_the_vendors_delay(
    kind: str, answer: Callable[[FakeVendor], Answer | None], min_delay: float, error: str, pipeline: MakePipeline
) -> None:
    with FAKES[kind]() as fake:
        scripted = answer(fake)
        # 1.5 s: room for the retry's quick answer on a loaded machine, still well short of the 6 s delay.
        receiver = fake.receiver(name="ops", timeout=timedelta(seconds=1.5))
        if scripted is None:  # nothing listens at the receiver's URL
            receiver = fake.receiver(name="ops", url=closed_port_url())
        else:
            fake.script(scripted)
        p = pipeline([receiver], [route(["ops"])])
        one_alert(p)
        sent_at = p.now
        assert p.deliver() == 0
        [msg] = p.messages("ops")
        assert (msg.status, msg.attempts) == ("pending", 1)
        assert msg.next_attempt_us >= sent_at + int(min_delay * US)
        assert msg.last_error is not None and error in msg.last_error
        assert counter(p, "sentinel_notification_requests_failed_total", receiver="ops", reason="retry") == 1
        assert counter(p, "sentinel_notifications_total", receiver="ops", outcome="failed") == 0

        requests = len(fake.requests)
        p.set_time(msg.next_attempt_us - 1)
        assert p.deliver() == 0 and len(fake.requests) == requests  # not a microsecond sooner
        if scripted is None:
            return
        p.set_time(msg.next_attempt_us)
        assert p.deliver() == 1
        [msg] = p.messages("ops")
        assert (msg.status, msg.attempts, msg.last_error) == ("delivered", 2, None)


def test_retry_after_is_honoured_exactly_not_stretched(slack: FakeSlack, pipeline: MakePipeline) -> None:
    slack.script(Answer(429, body=b"rate_limited", headers={"Retry-After": "7"}))
    p = pipeline([slack.receiver(name="ops")], [route(["ops"])])
    one_alert(p)
    p.deliver()
    [msg] = p.messages("ops")
    assert msg.next_attempt_us == p.now + 7 * US  # the first backoff (1-2 s) is shorter than what Slack asked


def test_dingtalk_block_holds_the_robot_for_ten_minutes_even_across_a_restart(
    dingtalk: FakeDingTalk, pipeline: MakePipeline
) -> None:
    p = pipeline([dingtalk.receiver(name="ding")], [route(["ding"], group_by=["type"])])
    alerts = [Alert(t, p.now) for t in ("物流配送延误", "服务态度", "系统操作错误")]
    p.record(*(a.firing() for a in alerts))
    assert p.dispatch() == 3
    dingtalk.script(dingtalk.error(130101))
    blocked_at = p.now
    assert p.deliver() == 0
    first = p.messages("ding")[0]
    assert first.status == "pending" and first.next_attempt_us >= blocked_at + 600 * US
    assert first.last_error is not None and "130101" in first.last_error
    with p.store.reading() as conn:
        [(blocked_until,)] = conn.execute(select(rate_state.c.blocked_until_us)).all()
    assert blocked_until >= blocked_at + 600 * US

    for seconds in (1, 60, 300, 599):  # every message waits, even one queued meanwhile; nothing reaches the robot
        p.set_time(blocked_at + seconds * US)
        if seconds == 300:
            alerts.append(Alert("其他", p.now))
            p.record(alerts[-1].firing())
            assert p.dispatch() == 1
        p.deliver()
        assert len(dingtalk.requests) == 1
    p.restart()  # the block is in the store, not only in memory
    p.set_time(blocked_at + 599 * US + 999_999)
    assert p.deliver() == 0 and len(dingtalk.requests) == 1

    p.set_time(max(first.next_attempt_us, blocked_until))
    assert p.deliver() == 4
    assert [m.status for m in p.messages("ding")] == ["delivered"] * 4
    got = [r.json["markdown"]["text"] for r in dingtalk.requests[1:]]
    order = [next(i for i, a in enumerate(alerts) if a.type in text) for text in got]
    assert order == [0, 1, 2, 3]


def _wrong(fake: FakeVendor, **overrides: object) -> ReceiverConfig:
    return fake.receiver(name="ops", **overrides)


def _scripted(fake: FakeVendor, answer: Answer) -> ReceiverConfig:
    fake.script(answer)
    return fake.receiver(name="ops")


FAILURES: list[tuple[str, str, Callable[[FakeVendor], ReceiverConfig], str, str]] = [
    # (id, kind, receiver (misconfigured or scripted), code, meaning)
    (
        "wecom-93000",
        "wecom",
        lambda f: _wrong(f, url=f.url.replace("wecom-KEY-7f3a9c21", "wecom-KEY-revoked1")),
        "93000",
        "invalid webhook key",
    ),
    (
        "dingtalk-300001",
        "dingtalk",
        lambda f: _wrong(f, url=f.url.replace("ding-TOKEN-5b1e0d44", "ding-TOKEN-deleted9")),
        "300001",
        "invalid access token",
    ),
    (
        "dingtalk-310000",
        "dingtalk",
        lambda f: _wrong(f, secret="SECnot-the-robots-secret1"),
        "310000",
        "security check failed",
    ),
    (
        "feishu-19021",
        "feishu",
        lambda f: _wrong(f, secret="SECnot-the-bots-secret22"),
        "19021",
        "signature verification failed",
    ),
    ("feishu-19007", "feishu", lambda f: _scripted(f, f.error(19007)), "19007", "bot disabled"),
    ("slack-410", "slack", lambda f: _scripted(f, f.error(410, "invalid_token")), "HTTP 410", "webhook gone"),
    (
        "slack-404",
        "slack",
        lambda f: _wrong(f, url=f.base + "/services/T0/B0/revokedTOKEN123"),
        "HTTP 404",
        "webhook not found",
    ),
    (
        "discord-401",
        "discord",
        lambda f: _wrong(f, url=f.url.replace("discordTOKEN-abc123XYZ", "badTOKEN99")),
        "HTTP 401",
        "unauthorized",
    ),
    (
        "teams-401",
        "teams",
        lambda f: _wrong(f, url=f.url.replace("teamsSIG0123456789abcdef", "expiredSIG12345")),
        "HTTP 401",
        "unauthorized",
    ),
    ("webhook-400", "webhook", lambda f: _scripted(f, f.error(400, "schema mismatch")), "HTTP 400", "bad request"),
]


@pytest.mark.parametrize(
    ("kind", "receiver", "code", "meaning"), [f[1:] for f in FAILURES], ids=[f[0] for f in FAILURES]
)
def test_permanent_failure_is_kept_counted_and_told_to_the_fallback(
    kind: str, receiver: Callable[[FakeVendor], ReceiverConfig], code: str, meaning: str, pipeline: MakePipeline
) -> None:
    with FAKES[kind]() as fake, FakeWebhook() as fallback:
        p = pipeline(
            [receiver(fake), fallback.receiver(name="oncall-fallback")],
            [route(["ops"])],
            fallback_receiver="oncall-fallback",
        )
        a = one_alert(p)
        p.deliver("ops")
        [msg] = p.messages("ops")
        assert (msg.status, msg.attempts) == ("failed", 1)
        assert msg.last_error is not None and code in msg.last_error and meaning in msg.last_error
        assert counter(p, "sentinel_notifications_total", receiver="ops", outcome="failed") == 1
        assert counter(p, "sentinel_notifications_total", receiver="ops", outcome="delivered") == 0
        assert counter(p, "sentinel_notification_requests_failed_total", receiver="ops", reason="permanent") == 1

        [fb] = p.messages("oncall-fallback")
        assert (fb.kind, fb.status, fb.instances) == ("fallback", "pending", [a.instance])
        assert fb.payload["failed_receiver"] == "ops"
        assert "receiver ops failed permanently" in fb.payload["note"] and code in fb.payload["note"]

        p.deliver()
        assert p.messages("ops")[0].status == "failed"  # kept for people to see, never retried
        assert p.messages("oncall-fallback")[0].status == "delivered"
        told = fallback.last.json
        assert "receiver ops failed permanently" in told["text"] and code in told["text"]
        assert told["alerts"][0]["labels"]["type"] == "物流配送延误"
        assert len(fake.requests) == 1


def test_a_failed_message_does_not_block_the_next_one(wecom: FakeWeCom, pipeline: MakePipeline) -> None:
    p = pipeline([wecom.receiver(name="ops")], [route(["ops"], group_by=["type"])])
    p.record(Alert("物流配送延误", p.now).firing(), Alert("服务态度", p.now).firing())
    assert p.dispatch() == 2
    wecom.script(wecom.error(40058))
    assert p.deliver() == 2
    assert [m.status for m in p.messages("ops")] == ["failed", "delivered"]


def test_without_a_fallback_receiver_a_failure_is_only_recorded(wecom: FakeWeCom, pipeline: MakePipeline) -> None:
    wecom.script(wecom.error(93000))
    p = pipeline([wecom.receiver(name="ops")], [route(["ops"])])
    one_alert(p)
    p.deliver()
    assert [(m.receiver, m.status) for m in p.messages()] == [("ops", "failed")]


def test_the_fallback_receiver_failing_is_not_told_to_itself(wecom: FakeWeCom, pipeline: MakePipeline) -> None:
    wecom.script(wecom.error(93000))
    p = pipeline([wecom.receiver(name="ops")], [route(["ops"])], fallback_receiver="ops")
    one_alert(p)
    p.deliver()
    assert [(m.receiver, m.status) for m in p.messages()] == [("ops", "failed")]


def test_messages_of_a_retried_receiver_keep_their_delivery_id(webhook: FakeWebhook, pipeline: MakePipeline) -> None:
    webhook.script(Answer(503), Answer(503))
    p = pipeline([webhook.receiver(name="hook")], [route(["hook"])])
    one_alert(p)
    for _ in range(3):
        p.deliver()
        msg = p.messages("hook")[0]
        p.set_time(max(p.now, msg.next_attempt_us))
    assert p.messages("hook")[0].status == outbox.DELIVERED
    ids = {r.headers["x-sentinel-delivery"] for r in webhook.requests}
    assert len(webhook.requests) == 3 and ids == {p.messages("hook")[0].delivery_id}


class Flaky:
    """A real adapter behind a bug that raises on its first `failures` calls."""

    def __init__(self, real: Adapter, failures: int) -> None:
        self.real, self.failures = real, failures
        self.kind, self.syntax, self.max_bytes = real.kind, real.syntax, real.max_bytes
        self.max_chars, self.max_text_bytes = real.max_chars, real.max_text_bytes
        self.default_limits, self.accepts, self.lists_group = real.default_limits, real.accepts, real.lists_group

    def send(self, message: Message, url_index: int = 0) -> Outcome:
        if self.failures > 0:
            self.failures -= 1
            raise RuntimeError("adapter bug")
        return self.real.send(message, url_index)

    def close(self) -> None:
        self.real.close()


def test_an_unexpected_error_is_retried_with_backoff_not_left_sending(
    webhook: FakeWebhook, pipeline: MakePipeline
) -> None:
    p = pipeline(
        [webhook.receiver(name="hook")], [route(["hook"])], adapter_factory=lambda rc: Flaky(create(rc), failures=2)
    )
    one_alert(p)
    p.worker.drain(p.worker.runners["hook"])
    [msg] = p.messages("hook")
    assert (msg.status, msg.attempts) == ("pending", 1)  # not "sending": nothing is in flight
    assert msg.last_error is not None and "RuntimeError" in msg.last_error
    assert msg.next_attempt_us > p.now  # backoff, not a retry at every tick
    p.deliver()
    assert p.messages("hook")[0].attempts == 1
    for _ in range(2):
        p.set_time(p.messages("hook")[0].next_attempt_us)
        p.deliver()
    [msg] = p.messages("hook")
    assert (msg.status, msg.attempts) == ("delivered", 3)
    assert len(webhook.requests) == 1


def test_housekeeping_prunes_old_delivered_rows_and_keeps_failures_longer(
    wecom: FakeWeCom, pipeline: MakePipeline
) -> None:
    p = pipeline([wecom.receiver(name="ops")], [route(["ops"])])
    one_alert(p)
    p.deliver("ops")
    from sentinel.model import Tier

    with p.store.transaction() as conn:
        failed = outbox.enqueue(conn, "ops", "alert", Tier.LIGHT, [], event_at_us=p.now, now_us=p.now)
        outbox.mark_failed(conn, failed, p.now, "93000: invalid webhook key")
    day = 86_400 * US
    with p.store.transaction() as conn:
        assert outbox.prune(conn, p.now - day, p.now - 30 * day) == 0  # nothing old yet
        assert outbox.prune(conn, p.now + day, p.now - 30 * day) == 1  # the delivered one, a week later
        assert [x.status for x in outbox.recent(conn, [outbox.FAILED])] == ["failed"]
        assert outbox.prune(conn, p.now + day, p.now + day) == 1  # failures go after 30 days
