"""DingTalk: signature at every attempt on a fresh URL, errcode classification, keyword, mentions."""

from __future__ import annotations

from datetime import timedelta

import pytest
from freezegun import freeze_time

from sentinel.model import Tier
from sentinel.notify.base import Delivered, Failed, RetryAfter
from sentinel.notify.dingtalk import DingTalkAdapter

from .builders import message
from .vendors import Answer, FakeDingTalk, dingtalk_sign

T0 = "2025-07-08 06:00:00"
T0_MS = 1751954400000


def test_signed_request_is_accepted(dingtalk: FakeDingTalk) -> None:
    config = dingtalk.receiver()
    url = config.url.get()  # type: ignore[union-attr]
    with freeze_time(T0):
        assert isinstance(DingTalkAdapter(config).send(message()), Delivered)
    req = dingtalk.last
    assert req.query["timestamp"] == [str(T0_MS)]
    assert req.query["sign"] == [dingtalk_sign(dingtalk.secret or "", str(T0_MS))]
    assert "%25" not in req.raw_query  # encoded exactly once
    assert config.url.get() == url  # type: ignore[union-attr]


def test_signature_is_made_at_every_attempt_never_reused(dingtalk: FakeDingTalk) -> None:
    config = dingtalk.receiver()
    url = config.url.get()  # type: ignore[union-attr]
    with freeze_time(T0) as clock:
        adapter = DingTalkAdapter(config)
        queued = message()  # queued now, sent later
        clock.tick(timedelta(hours=2))
        dingtalk.script(dingtalk.error(130101))
        assert isinstance(adapter.send(queued), RetryAfter)
        clock.tick(timedelta(hours=3))
        assert isinstance(adapter.send(queued), Delivered)  # the server rejects a timestamp over 1 h old
    stamps = [r.query["timestamp"] for r in dingtalk.requests]
    assert stamps == [[str(T0_MS + 2 * 3600_000)], [str(T0_MS + 5 * 3600_000)]]
    assert all(len(r.query["sign"]) == 1 for r in dingtalk.requests)  # no piled-up parameters
    assert config.url.get() == url  # type: ignore[union-attr]


def test_stale_timestamp_is_rejected_by_the_vendor(dingtalk: FakeDingTalk) -> None:
    dingtalk.clock_offset = 2 * 3600  # this host's clock is two hours behind DingTalk's
    out = DingTalkAdapter(dingtalk.receiver()).send(message())
    assert isinstance(out, Failed) and out.code == "310000"
    assert "security check failed" in out.reason and "invalid timestamp" in out.reason


def test_wrong_secret_is_permanent_and_not_shown(dingtalk: FakeDingTalk) -> None:
    out = DingTalkAdapter(dingtalk.receiver(secret="SECwrong000")).send(message())
    assert isinstance(out, Failed) and out.code == "310000"
    assert "SECwrong000" not in out.reason


def test_unsigned_robot_gets_no_signing_parameters() -> None:
    with FakeDingTalk(secret=None) as robot:
        assert isinstance(DingTalkAdapter(robot.receiver()).send(message()), Delivered)
        assert set(robot.last.query) == {"access_token"}


@pytest.mark.parametrize(
    ("answer", "kind", "code", "seconds", "meaning"),
    [
        ((130101,), RetryAfter, None, 600.0, "blocked for 10 minutes"),
        ((310000,), Failed, "310000", None, "security check failed (signature, keyword or IP"),
        ((300001,), Failed, "300001", None, "invalid access token"),
        ((460101,), Failed, "460101", None, "message too large"),
        ((410100,), Failed, "410100", None, "unknown error"),
    ],
)
def test_errcodes(
    dingtalk: FakeDingTalk, answer: tuple[int], kind: type, code: str | None, seconds: float | None, meaning: str
) -> None:
    dingtalk.script(dingtalk.error(*answer))
    out = DingTalkAdapter(dingtalk.receiver()).send(message())
    assert isinstance(out, kind)
    assert meaning in out.reason  # type: ignore[union-attr]
    if isinstance(out, RetryAfter):
        assert out.seconds == seconds
    else:
        assert out.code == code  # type: ignore[union-attr]


def test_throttling_redirect_waits_out_the_block(dingtalk: FakeDingTalk) -> None:
    dingtalk.script(Answer(302, headers={"Location": "https://oapi.example/blocked"}))
    out = DingTalkAdapter(dingtalk.receiver()).send(message())
    assert isinstance(out, RetryAfter) and out.seconds == 600.0


def test_wrong_token(dingtalk: FakeDingTalk) -> None:
    out = DingTalkAdapter(dingtalk.receiver(url=dingtalk.url.replace(dingtalk.token, "tokWRONG99"))).send(message())
    assert isinstance(out, Failed) and out.code == "300001"


def test_keyword_is_added_once_when_missing(dingtalk_keyword: FakeDingTalk) -> None:
    adapter = DingTalkAdapter(dingtalk_keyword.receiver())
    assert isinstance(adapter.send(message(title="物流配送延误 中度")), Delivered)  # the fake checks it
    md = dingtalk_keyword.last.json["markdown"]
    assert md["text"].startswith("#### 预警 物流配送延误 中度\n\n")
    assert md["text"].count("预警") == 1
    assert md["title"] == "预警 物流配送延误 中度"


def test_keyword_is_not_doubled(dingtalk_keyword: FakeDingTalk) -> None:
    adapter = DingTalkAdapter(dingtalk_keyword.receiver())
    adapter.send(message(title="预警：物流配送延误"))
    assert dingtalk_keyword.last.json["markdown"]["text"].count("预警") == 1
    adapter.send(message(title="物流配送延误", body="本条为预警消息"))
    assert dingtalk_keyword.last.json["markdown"]["text"].count("预警") == 1


def test_keyword_survives_truncation(dingtalk_keyword: FakeDingTalk) -> None:
    out = DingTalkAdapter(dingtalk_keyword.receiver()).send(message(title="物流", body="x" * 30_000 + "预警"))
    assert isinstance(out, Delivered)
    text = dingtalk_keyword.last.json["markdown"]["text"]
    assert text.startswith("#### 预警 物流") and text.count("预警") == 1
    assert len(dingtalk_keyword.last.body) <= 20_000


def test_mentions_from_config_only(dingtalk: FakeDingTalk) -> None:
    mention = {"severe": {"all": True, "mobiles": ["13800138000"], "users": ["manager01"]}}
    adapter = DingTalkAdapter(dingtalk.receiver(mention=mention))
    adapter.send(message(tier=Tier.SEVERE))
    body = dingtalk.last.json
    assert body["at"] == {"atMobiles": ["13800138000"], "atUserIds": ["manager01"], "isAtAll": True}
    assert body["markdown"]["text"].endswith("\n\n@13800138000 @manager01")
    for tier, flag in ((Tier.MODERATE, True), (Tier.SEVERE, False)):
        adapter.send(message(tier=tier, mention=flag))
        assert dingtalk.last.json["at"] == {"atMobiles": [], "atUserIds": [], "isAtAll": False}
        assert "@138" not in dingtalk.last.json["markdown"]["text"]
