"""Feishu/Lark: signature in the body at every attempt, code classification, keyword, <at> mentions."""

from __future__ import annotations

from datetime import timedelta

import pytest
from freezegun import freeze_time

from sentinel.model import Tier
from sentinel.notify.base import Delivered, Failed, RetryAfter
from sentinel.notify.feishu import FeishuAdapter, LarkAdapter

from .builders import message
from .vendors import Answer, FakeFeishu, feishu_sign

T0 = "2025-07-08 06:00:00"
T0_S = 1751954400


def test_signature_in_the_body_at_every_attempt(feishu: FakeFeishu) -> None:
    with freeze_time(T0) as clock:
        adapter = FeishuAdapter(feishu.receiver())
        queued = message()
        feishu.script(feishu.error(11232))
        assert isinstance(adapter.send(queued), RetryAfter)
        clock.tick(timedelta(hours=2))
        assert isinstance(adapter.send(queued), Delivered)  # the fake rejects timestamps over 1 h old
    sent = [r.json for r in feishu.requests]
    assert [b["timestamp"] for b in sent] == [str(T0_S), str(T0_S + 7200)]
    assert sent[1]["sign"] == feishu_sign(feishu.secret or "", str(T0_S + 7200))
    assert sent[0]["sign"] != sent[1]["sign"]


def test_stale_timestamp_or_wrong_secret_is_permanent(feishu: FakeFeishu) -> None:
    feishu.clock_offset = -2 * 3600
    out = FeishuAdapter(feishu.receiver()).send(message())
    assert isinstance(out, Failed) and out.code == "19021"
    assert "signature verification failed" in out.reason
    feishu.clock_offset = 0
    out = FeishuAdapter(feishu.receiver(secret="SECwrong1234")).send(message())
    assert isinstance(out, Failed) and out.code == "19021"
    assert "SECwrong1234" not in out.reason


def test_unsigned_bot_gets_no_signature() -> None:
    with FakeFeishu(secret=None) as bot:
        assert isinstance(FeishuAdapter(bot.receiver()).send(message()), Delivered)
        assert "sign" not in bot.last.json and "timestamp" not in bot.last.json


@pytest.mark.parametrize(
    ("code", "kind", "meaning"),
    [
        (19021, Failed, "signature verification failed"),
        (19022, Failed, "IP address not allowed"),
        (19024, Failed, "keyword missing"),
        (19007, Failed, "bot disabled or removed"),
        (11232, RetryAfter, "frequency limited"),
        (19036, Failed, "message too large"),
        (9499, Failed, "bad request (Bad Request: content.text is required)"),
        (19999, Failed, "unknown error"),
    ],
)
def test_codes(feishu: FakeFeishu, code: int, kind: type, meaning: str) -> None:
    feishu.script(feishu.error(code, "Bad Request: content.text is required" if code == 9499 else None))
    out = FeishuAdapter(feishu.receiver()).send(message())
    assert isinstance(out, kind)
    assert meaning in out.reason  # type: ignore[union-attr]
    assert out.reason.startswith(f"feishu {code}: ")  # type: ignore[union-attr]
    if isinstance(out, Failed):
        assert out.code == str(code)
    else:
        assert isinstance(out, RetryAfter) and out.seconds == 60.0


def test_9499_is_read_for_a_rate_limit(feishu: FakeFeishu) -> None:
    feishu.script(feishu.error(9499, "too many request"))
    out = FeishuAdapter(feishu.receiver()).send(message())
    assert out == RetryAfter(60.0, "feishu 9499: bad request (too many request) (rate limited)")


def test_code_in_a_non_200_answer_still_decides(feishu: FakeFeishu) -> None:
    feishu.script(Answer(400, {"code": 9499, "msg": "Bad Request", "data": {}}))
    out = FeishuAdapter(feishu.receiver()).send(message())
    assert isinstance(out, Failed) and out.code == "9499"


def test_legacy_status_code_answer(feishu: FakeFeishu) -> None:
    feishu.script(Answer(200, {"Extra": None, "StatusCode": 0, "StatusMessage": "success"}))
    assert isinstance(FeishuAdapter(feishu.receiver()).send(message()), Delivered)


def test_wrong_hook_token(feishu: FakeFeishu) -> None:
    out = FeishuAdapter(feishu.receiver(url=feishu.url.replace(feishu.token, "0000-wrong-1111"))).send(message())
    assert isinstance(out, Failed) and out.code == "19001"


def test_keyword_added_once() -> None:
    with FakeFeishu(secret=None, keyword="告警") as bot:
        adapter = FeishuAdapter(bot.receiver())
        assert isinstance(adapter.send(message(title="物流配送延误")), Delivered)  # 19024 otherwise
        assert bot.last.json["content"]["text"].startswith("告警 物流配送延误\n")
        adapter.send(message(title="告警：物流配送延误"))
        assert bot.last.json["content"]["text"].count("告警") == 1


def test_mentions_from_config_only(feishu: FakeFeishu) -> None:
    adapter = FeishuAdapter(feishu.receiver(mention={"severe": {"all": True, "users": ["ou_abc123"]}}))
    adapter.send(message(tier=Tier.SEVERE))
    text = feishu.last.json["content"]["text"]
    assert text.endswith('\n<at user_id="ou_abc123">ou_abc123</at> <at user_id="all">所有人</at>')
    adapter.send(message(tier=Tier.MODERATE))
    assert "<at" not in feishu.last.json["content"]["text"]
    adapter.send(message(tier=Tier.SEVERE, mention=False))
    assert "<at" not in feishu.last.json["content"]["text"]


def test_lark_is_the_same_protocol(lark: FakeFeishu) -> None:
    lark.script(lark.error(19007))
    adapter = LarkAdapter(lark.receiver(locale="en", mention={"light": {"all": True}}))
    out = adapter.send(message(tier=Tier.LIGHT))
    assert isinstance(out, Failed) and out.reason.startswith("lark 19007: bot disabled")
    assert isinstance(adapter.send(message(tier=Tier.LIGHT)), Delivered)
    assert lark.last.json["content"]["text"].endswith('<at user_id="all">everyone</at>')


def test_body_stays_under_20_kb(feishu: FakeFeishu) -> None:
    out = FeishuAdapter(feishu.receiver()).send(message(body='物流"配送"\n' * 4000))
    assert isinstance(out, Delivered)  # 19036 from the fake otherwise
    assert len(feishu.last.body) <= 20 * 1024
    assert feishu.last.json["content"]["text"].endswith("…（内容过长，已截断）")
