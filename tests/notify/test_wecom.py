"""WeCom: errcode classification, markdown vs text (for @all and mobiles), caps, mentions from config."""

from __future__ import annotations

import pytest

from sentinel.model import Tier
from sentinel.notify.base import Delivered, Failed, RetryAfter
from sentinel.notify.wecom import WeComAdapter

from .builders import message
from .vendors import Answer, FakeWeCom

MENTIONS = {
    "moderate": {"users": ["zhangsan", "lisi"]},
    "severe": {"all": True, "users": ["wangwu"], "mobiles": ["13800138000"]},
}


@pytest.mark.parametrize(
    ("code", "kind", "seconds", "meaning"),
    [
        (45009, RetryAfter, 60.0, "rate limited"),
        (-1, RetryAfter, 10.0, "system busy"),
        (93000, Failed, None, "invalid webhook key"),
        (40058, Failed, None, "content too long"),
        (40999, Failed, None, "unknown error: mystery"),
    ],
)
def test_errcode_decides_even_with_http_200(
    wecom: FakeWeCom, code: int, kind: type, seconds: float | None, meaning: str
) -> None:
    wecom.script(wecom.error(code, "mystery" if code == 40999 else None))
    out = WeComAdapter(wecom.receiver()).send(message())
    assert isinstance(out, kind)
    if isinstance(out, RetryAfter):
        assert out.seconds == seconds
        assert out.reason.startswith(f"wecom {code}: ")
    else:
        assert isinstance(out, Failed)
        assert out.code == str(code)
    assert meaning in out.reason


def test_rate_limit_is_never_retried_sooner_than_60_s(wecom: FakeWeCom) -> None:
    adapter = WeComAdapter(wecom.receiver())
    wecom.script(
        Answer(200, {"errcode": 45009, "errmsg": "freq"}, headers={"Retry-After": "5"}),
        Answer(200, {"errcode": 45009, "errmsg": "freq"}, headers={"Retry-After": "150"}),
    )
    assert adapter.send(message()) == RetryAfter(60.0, "wecom 45009: rate limited (20 messages a minute per robot)")
    out = adapter.send(message())
    assert isinstance(out, RetryAfter) and out.seconds == 150.0


def test_wrong_key_is_permanent(wecom: FakeWeCom) -> None:
    out = WeComAdapter(wecom.receiver(url=wecom.url.replace(wecom.key, "WRONGkey123"))).send(message())
    assert isinstance(out, Failed) and out.code == "93000"
    assert "WRONGkey123" not in out.reason


def test_200_without_errcode_is_not_delivered(wecom: FakeWeCom) -> None:
    wecom.script(Answer(200, body=b"<html>captive portal</html>"))
    out = WeComAdapter(wecom.receiver()).send(message())
    assert isinstance(out, Failed) and out.code == "no-code"


def test_markdown_with_title_and_body(wecom: FakeWeCom) -> None:
    assert isinstance(WeComAdapter(wecom.receiver()).send(message(title="物流*延误*")), Delivered)
    body = wecom.last.json
    assert body["msgtype"] == "markdown"
    assert body["markdown"]["content"] == "**物流＊延误＊**\n当前 151 件，基线 100.0 件，1.51 倍"


def test_users_are_mentioned_in_markdown_for_their_tier(wecom: FakeWeCom) -> None:
    adapter = WeComAdapter(wecom.receiver(mention=MENTIONS))
    adapter.send(message(tier=Tier.MODERATE))
    content = wecom.last.json["markdown"]["content"]
    assert content.endswith("<@zhangsan> <@lisi>")
    adapter.send(message(tier=Tier.LIGHT))
    assert "<@" not in wecom.last.json["markdown"]["content"]
    adapter.send(message(tier=Tier.MODERATE, mention=False))
    assert "<@" not in wecom.last.json["markdown"]["content"]


def test_all_and_mobiles_go_as_text_with_mention_lists(wecom: FakeWeCom) -> None:
    adapter = WeComAdapter(wecom.receiver(mention=MENTIONS))
    out = adapter.send(message(tier=Tier.SEVERE, body="## **当前** 151 件\n[详情](https://s.example/a/1)"))
    assert isinstance(out, Delivered)
    body = wecom.last.json
    assert body["msgtype"] == "text"
    assert body["text"]["mentioned_list"] == ["wangwu", "@all"]
    assert body["text"]["mentioned_mobile_list"] == ["13800138000"]
    assert body["text"]["content"] == "预警：物流配送延误 中度\n当前 151 件\n详情 (https://s.example/a/1)"


def test_resolution_without_mention_stays_markdown(wecom: FakeWeCom) -> None:
    WeComAdapter(wecom.receiver(mention=MENTIONS)).send(message(tier=Tier.SEVERE, mention=False))
    body = wecom.last.json
    assert body["msgtype"] == "markdown"
    assert "mentioned_list" not in str(body)


@pytest.mark.parametrize(("tier", "limit"), [(Tier.MODERATE, 4096), (Tier.SEVERE, 2048)])
def test_content_is_capped_in_bytes_before_sending(wecom: FakeWeCom, tier: Tier, limit: int) -> None:
    out = WeComAdapter(wecom.receiver(mention=MENTIONS)).send(message(tier=tier, body="物流配送延误" * 2000))
    assert isinstance(out, Delivered)  # the fake answers 40058 past the limit, as WeCom does
    content = wecom.last.json[wecom.last.json["msgtype"]]["content"]
    assert limit - 6 < len(content.encode()) <= limit
    assert "…（内容过长，已截断）" in content
    if tier is Tier.MODERATE:
        assert content.endswith("<@zhangsan> <@lisi>")  # mentions survive the cut


def test_english_marker(wecom: FakeWeCom) -> None:
    WeComAdapter(wecom.receiver(locale="en")).send(message(body="x" * 5000))
    assert wecom.last.json["markdown"]["content"].endswith("… (truncated)")
