"""Hostile complaint types end to end: events -> dispatcher -> outbox -> worker -> render -> adapter ->
the fake WeCom, DingTalk, Feishu, Slack and Discord servers. What the servers received mentions no
one the configuration did not name, links nowhere the configuration did not, fits the vendor's limit
and is valid UTF-8 without control characters."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from typing import Any

import pytest

from sentinel.config import Mentions
from tests.delivery.builders import Alert, Pipeline, route
from tests.delivery.conftest import MakePipeline
from tests.notify.vendors import FakeDingTalk, FakeDiscord, FakeFeishu, FakeSlack, FakeVendor, FakeWeCom, Request

HOSTILE_TYPES = [
    "@all",
    '<at user_id="all">x</at>',
    "[x](http://evil.example/phish)",
    "<!channel>",
    "@everyone",
    "延误" * 5000,  # a 10,000-character name (30,000 UTF-8 bytes)
    "ctl\x00nul\x1b[31mred\x07bell\r\nnew line\u202egnp.exe\u2028sep\x7fdel\tTab",
    "<@U0EVIL> <!here> @here <http://evil.example|click> **b** `c` # h",
]
HOSTILE_CHANNEL = '<!here> @here [y](http://evil.example/y) <at user_id="all">所有人</at>'
NEEDLES = ("@all", "@everyone", "@here", "<at", "<!channel>", "<!here>", "<@", "http://evil", "<font")
BASE_URL = "http://127.0.0.1:9732"
CONFIGURED = {"wecom": "<@zhangsan>", "slack": "<@U0SAFE>", "discord": "<@112233>"}


@pytest.fixture
def fakes() -> Iterator[dict[str, FakeVendor]]:
    with FakeWeCom() as w, FakeDingTalk() as d, FakeFeishu() as f, FakeSlack() as s, FakeDiscord() as c:
        yield {"wecom": w, "dingtalk": d, "feishu": f, "slack": s, "discord": c}


def receivers(fakes: dict[str, FakeVendor]) -> list[Any]:
    mention = {"wecom": "zhangsan", "slack": "U0SAFE", "discord": "112233"}
    out = []
    for kind, fake in fakes.items():
        m = Mentions(light={"users": [mention[kind]]}) if kind in mention else Mentions()
        out.append(fake.receiver(name=kind, mention=m))
    return out


def hostile_alerts(p: Pipeline) -> list[Alert]:
    out = [Alert(t, p.now) for t in HOSTILE_TYPES]
    out.append(Alert(HOSTILE_TYPES[0], p.now, rule="type-channel-surge", channel=HOSTILE_CHANNEL))
    return out


def shown(kind: str, req: Request) -> str:
    """Everything the chat tool would show from this request."""
    body: Any = req.json
    match kind:
        case "wecom":
            return str(body[body["msgtype"]]["content"])
        case "dingtalk":
            return f"{body['markdown']['title']}\n{body['markdown']['text']}"
        case "feishu":
            return str(body["content"]["text"])
        case "slack":
            return str(body["text"])
        case _:
            return str(body["content"])


def check_request(kind: str, req: Request) -> str:
    req.body.decode("utf-8")  # strict: valid UTF-8
    body: Any = req.json
    text = shown(kind, req)
    assert "\ufffd" not in text  # cut on character boundaries
    # no mention fields unless configured, and only what was configured
    match kind:
        case "wecom":
            assert body["msgtype"] == "markdown" and set(body) == {"msgtype", "markdown"}
            assert len(body["markdown"]["content"].encode()) <= 4096
        case "dingtalk":
            assert body["at"] == {"atMobiles": [], "atUserIds": [], "isAtAll": False}
            assert len(req.body) <= 20_000
        case "feishu":
            assert len(req.body) <= 20 * 1024
        case "slack":
            assert len(text.encode()) <= 40_000
        case "discord":
            assert body["allowed_mentions"] == {"parse": [], "users": ["112233"]}
            assert len(text) <= 2000
    configured = CONFIGURED.get(kind)
    if configured is not None:
        assert text.count(configured) == 1, text[-200:]
        text = text.replace(configured, "")
    for needle in NEEDLES:
        assert needle not in text, (kind, needle, text[:300])
    # links only to the configured status page
    targets = re.findall(r"\]\(([^)\s]*)\)", text) + re.findall(r"<([a-z]+://[^|>\s]*)\|", text)
    targets += re.findall(r"https?://[^\s)>|]+", text)
    assert all(t.startswith(BASE_URL) for t in targets), (kind, targets)
    bad = {c for c in text if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") and c != "\n"}
    assert not bad, (kind, bad)
    return text


@pytest.mark.parametrize("grouping", [["rule", "type", "channel"], ["rule"]], ids=["one-per-alert", "digest"])
def test_hostile_types_stay_inert_end_to_end(
    grouping: list[str], fakes: dict[str, FakeVendor], pipeline: MakePipeline
) -> None:
    p = pipeline(receivers(fakes), [route(list(fakes), group_by=grouping)])
    alerts = hostile_alerts(p)
    p.record(*(a.firing() for a in alerts))
    p.run_until_idle()
    per_receiver = len(alerts) if grouping != ["rule"] else 2  # two rules: two digests
    for kind, fake in fakes.items():
        msgs = p.messages(kind)
        assert [m.status for m in msgs] == ["delivered"] * per_receiver, [m.last_error for m in msgs]
        assert len(fake.requests) == per_receiver
        texts = [check_request(kind, r) for r in fake.requests]
        joined = "\n".join(texts)
        assert "延误延误延误" in joined  # the long name is shown, cut
        assert "evil" in joined and "U0EVIL" in joined  # shown, as inert text
