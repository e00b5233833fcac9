"""What every adapter guarantees, checked against each fake vendor: hostile data stays inert, sizes stay
within limits, secrets never reach logs, outcomes or reprs, network failures become retries, and the
worker's `url_index` picks the robot."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Any, get_args

import pytest

from sentinel.config import ReceiverConfig, ReceiverKind
from sentinel.model import Tier
from sentinel.notify import ADAPTERS
from sentinel.notify.answers import NETWORK_DELAY
from sentinel.notify.base import RECEIVER_OPTIONS, Adapter, Delivered, Failed, RetryAfter
from sentinel.notify.dingtalk import DingTalkAdapter
from sentinel.notify.discord import DiscordAdapter
from sentinel.notify.feishu import FeishuAdapter, LarkAdapter
from sentinel.notify.robots import ReceiverRunner
from sentinel.notify.slack import SlackAdapter
from sentinel.notify.teams import TeamsAdapter
from sentinel.notify.webhook import WebhookAdapter
from sentinel.notify.wecom import WeComAdapter

from .builders import hostile_message, message
from .vendors import (
    Answer,
    FakeDingTalk,
    FakeDiscord,
    FakeFeishu,
    FakeSlack,
    FakeTeams,
    FakeVendor,
    FakeWebhook,
    FakeWeCom,
    Request,
    closed_port_url,
)

KINDS = ["wecom", "dingtalk", "feishu", "lark", "slack", "teams", "discord", "webhook"]


def make_fake(kind: str) -> FakeVendor:
    match kind:
        case "wecom":
            return FakeWeCom()
        case "dingtalk":
            return FakeDingTalk(keyword="预警")
        case "feishu" | "lark":
            return FakeFeishu(kind=kind, keyword="预警")
        case "slack":
            return FakeSlack()
        case "teams":
            return FakeTeams()
        case "discord":
            return FakeDiscord()
        case _:
            return FakeWebhook(hmac_secret="hmacSECRET-0123456789")


@pytest.fixture(params=KINDS)
def fake(request: pytest.FixtureRequest) -> Iterator[FakeVendor]:
    with make_fake(request.param) as server:
        yield server


def received_text(kind: str, req: Request) -> str:
    """Every piece of text the vendor would show, from what the server actually received."""
    body: Any = req.json
    match kind:
        case "wecom":
            return str(body[body["msgtype"]]["content"])
        case "dingtalk":
            return str(body["markdown"]["text"])
        case "feishu" | "lark":
            return str(body["content"]["text"])
        case "slack":
            return str(body["text"])
        case "teams":
            return "\n".join(b["text"] for b in body["attachments"][0]["content"]["body"])
        case "discord":
            return str(body["content"])
        case _:
            return f"{body['text']}"


def secrets_of(fake: FakeVendor) -> list[str]:
    found = [getattr(fake, a) for a in ("key", "token", "secret", "sig", "hmac_secret") if getattr(fake, a, None)]
    if isinstance(fake, FakeSlack):
        found.append(fake.path.rsplit("/", 1)[-1])
    if isinstance(fake, FakeWebhook):
        found.append("hookTOKEN42abc")
    assert found
    return found


def test_registry_has_every_kind() -> None:
    expected = {
        "wecom": WeComAdapter,
        "dingtalk": DingTalkAdapter,
        "feishu": FeishuAdapter,
        "lark": LarkAdapter,
        "slack": SlackAdapter,
        "teams": TeamsAdapter,
        "discord": DiscordAdapter,
        "webhook": WebhookAdapter,
    }
    assert {k: ADAPTERS[k] for k in expected} == expected
    assert set(ADAPTERS) == set(get_args(ReceiverKind))  # a kind the configuration takes is a chat tool we have
    for cls in expected.values():
        assert cls.max_bytes > 0
        assert cls.syntax is not None
        assert cls.accepts <= set(RECEIVER_OPTIONS)
    assert DiscordAdapter.max_chars == 2000
    assert [k for k, cls in ADAPTERS.items() if cls.lists_group] == ["webhook"]


@pytest.mark.parametrize(
    ("kind", "limits"),
    [
        ("wecom", "20/1m"),
        ("dingtalk", "20/1m"),
        ("feishu", "100/1m 5/1s"),
        ("lark", "100/1m 5/1s"),
        ("slack", "1/1s"),
        ("teams", "4/1s"),
        ("discord", "5/2s"),
        ("webhook", ""),
    ],
)
def test_each_robot_gets_its_vendors_published_limits_unless_rate_limit_says_otherwise(kind: str, limits: str) -> None:
    cfg = ReceiverConfig(name="r", kind=kind, urls=["https://a.example/x", "https://b.example/y"])  # type: ignore[arg-type]
    runner = ReceiverRunner(cfg, ADAPTERS[kind](cfg))
    assert [" ".join(map(str, lim.limits)) for lim in runner.limiters] == [limits, limits]
    own = ReceiverConfig(name="r", kind=kind, url="https://a.example/x", rate_limit="3/min")  # type: ignore[arg-type]
    assert [str(r) for r in ReceiverRunner(own, ADAPTERS[kind](own)).limiters[0].limits] == ["3/1m"]


def test_plain_message_is_delivered(fake: FakeVendor) -> None:
    adapter: Adapter = ADAPTERS[fake.kind](fake.receiver())
    assert isinstance(adapter.send(message()), Delivered)
    assert len(fake.requests) == 1
    assert "基线 100.0 件" in received_text(fake.kind, fake.last)
    adapter.close()


def test_hostile_data_stays_inert(fake: FakeVendor) -> None:
    adapter: Adapter = ADAPTERS[fake.kind](fake.receiver(mention={"severe": {"all": True, "users": ["U0SAFE"]}}))
    out = adapter.send(hostile_message(adapter.syntax, tier=Tier.LIGHT))
    assert isinstance(out, Delivered), out
    req = fake.last
    req.body.decode("utf-8")  # valid UTF-8
    text = received_text(fake.kind, req)
    if fake.kind == "dingtalk":  # and the notification preview
        text += "\n" + req.json["markdown"]["title"]
    if fake.kind == "webhook":  # data, not markup: the structured title is raw, the text escaped
        assert req.json["title"].startswith("@all")
    for needle in ("@all", "@everyone", "@here", "<at", "<!channel>", "<@", "](", "http://evil", "<font"):
        assert needle not in text, (needle, text[:300])
    assert "\u202e" not in text and "\x00" not in text and "\x1b" not in text
    body: Any = req.json
    match fake.kind:
        case "wecom":
            assert body["msgtype"] == "markdown"
        case "dingtalk":
            assert body["at"] == {"atMobiles": [], "atUserIds": [], "isAtAll": False}
        case "slack":
            assert "&lt;!channel&gt;" in text  # shown, as text
        case "discord":
            assert body["allowed_mentions"] == {"parse": []}
        case "teams":
            assert "entities" not in body["attachments"][0]["content"]["msteams"]


def test_huge_message_is_capped_and_says_so(fake: FakeVendor) -> None:
    adapter: Adapter = ADAPTERS[fake.kind](fake.receiver())
    body = "\n".join(f"{i:05d} 物流配送延误 电话渠道 当前 151 件" for i in range(3000))  # ~140 KB
    out = adapter.send(message(body=body))
    assert isinstance(out, Delivered), out  # the fakes reject anything over the vendor's limit
    text = received_text(fake.kind, fake.last)
    assert "已截断" in text
    assert "00000 物流配送延误" in text
    assert "\ufffd" not in text
    size = len(text) if fake.kind == "discord" else len(text.encode())
    assert size <= adapter.max_bytes


def test_secrets_never_reach_logs_outcomes_or_reprs(fake: FakeVendor, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    config = fake.receiver(timeout=timedelta(seconds=0.3))
    adapter: Adapter = ADAPTERS[fake.kind](config)
    secrets = secrets_of(fake)
    echo = " ".join(["rejected", *secrets, fake.url])
    fake.script(
        Answer(200, {"errcode": 93000, "code": 19007, "errmsg": echo, "msg": echo}),
        Answer(403, body=echo.encode()),
        Answer(302, headers={"Location": fake.url}),
        Answer(delay=2),
    )
    outcomes = [adapter.send(message()) for _ in range(4)]
    refused = ADAPTERS[fake.kind](fake.receiver(url=closed_port_url("/x/" + "/".join(secrets))))
    outcomes.append(refused.send(message()))
    assert not any(isinstance(o, Delivered) for o in outcomes[1:]), outcomes
    assert isinstance(outcomes[-1], RetryAfter)
    shown = "\n".join([caplog.text, repr(outcomes), repr(adapter), str(adapter), repr(config), repr(refused)])
    for secret in secrets:
        assert secret not in shown, secret
    assert fake.url not in shown
    assert f"receiver {config.name}" in caplog.text  # the receiver is named instead


@pytest.mark.parametrize("kind", KINDS)
def test_connection_refused_is_a_retry(kind: str) -> None:
    config = ReceiverConfig(name="r", kind=kind, url=closed_port_url())
    out = ADAPTERS[kind](config).send(message())
    assert out == RetryAfter(NETWORK_DELAY, "connection refused")


def test_slow_answer_is_a_retry(fake: FakeVendor) -> None:
    fake.script(Answer(delay=3))
    out = ADAPTERS[fake.kind](fake.receiver(timeout=timedelta(seconds=0.3))).send(message())
    assert isinstance(out, RetryAfter)
    assert out.reason.startswith("timed out after 0.3 s")


def test_server_errors_are_retried_with_retry_after(fake: FakeVendor) -> None:
    fake.script(Answer(503, body=b"busy", headers={"Retry-After": "42"}), Answer(500, body=b"oops"))
    adapter = ADAPTERS[fake.kind](fake.receiver())
    first, second = adapter.send(message()), adapter.send(message())
    assert isinstance(first, RetryAfter) and first.seconds == 42
    assert isinstance(second, RetryAfter) and "500" in second.reason


def test_redirect_is_a_retry_and_not_followed(fake: FakeVendor) -> None:
    fake.script(Answer(302, headers={"Location": f"{fake.base}/elsewhere"}))
    out = ADAPTERS[fake.kind](fake.receiver()).send(message())
    assert isinstance(out, RetryAfter)
    assert "302" in out.reason
    assert [r.path for r in fake.requests if r.path == "/elsewhere"] == []


def test_url_index_picks_the_robot(fake: FakeVendor) -> None:
    with make_fake(fake.kind) as other:
        adapter = ADAPTERS[fake.kind](fake.receiver(urls=[fake.url, other.url]))
        assert isinstance(adapter.send(message(), url_index=1), Delivered)
        assert (len(fake.requests), len(other.requests)) == (0, 1)
        assert isinstance(adapter.send(message(), url_index=0), Delivered)
        assert (len(fake.requests), len(other.requests)) == (1, 1)
        out = adapter.send(message(), url_index=2)
        assert isinstance(out, Failed) and out.code == "config"


def test_bodies_are_compact_utf8_json(fake: FakeVendor) -> None:
    ADAPTERS[fake.kind](fake.receiver()).send(message())
    assert fake.last.headers["content-type"].startswith("application/json")
    assert "物流配送延误".encode() in fake.last.body  # not \\u escapes, which would triple the size
    json.loads(fake.last.body)
