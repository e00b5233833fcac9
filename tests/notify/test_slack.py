"""Slack: HTTP status classification, mrkdwn escaping of the title, mentions from config."""

from __future__ import annotations

import pytest

from sentinel.model import Tier
from sentinel.notify.base import Delivered, Failed, RetryAfter
from sentinel.notify.slack import SlackAdapter

from .builders import message
from .vendors import Answer, FakeSlack


def test_delivered_with_escaped_title(slack: FakeSlack) -> None:
    assert SlackAdapter(slack.receiver()).send(message(title="A&B <!here>")) == Delivered("ok")
    body = slack.last.json
    assert body["text"] == "*A&amp;B &lt;!here&gt;*\n当前 151 件，基线 100.0 件，1.51 倍"
    assert body["unfurl_links"] is False and body["unfurl_media"] is False


@pytest.mark.parametrize(
    ("status", "word", "meaning"),
    [
        (400, "invalid_payload", "bad request"),
        (403, "action_prohibited", "forbidden"),
        (404, "channel_not_found", "webhook not found"),
        (410, "channel_is_archived", "gone"),
    ],
)
def test_permanent_answers(slack: FakeSlack, status: int, word: str, meaning: str) -> None:
    slack.script(slack.error(status, word))
    out = SlackAdapter(slack.receiver()).send(message())
    assert isinstance(out, Failed)
    assert out.code == f"HTTP {status}"
    assert meaning in out.reason and word in out.reason


def test_revoked_webhook_is_permanent(slack: FakeSlack) -> None:
    out = SlackAdapter(slack.receiver(url=slack.base + "/services/T0/B0/revokedTOKEN123")).send(message())
    assert isinstance(out, Failed) and out.code == "HTTP 404" and "no_service" in out.reason
    assert "revokedTOKEN123" not in out.reason


def test_rate_limit_honours_retry_after(slack: FakeSlack) -> None:
    slack.script(Answer(429, body=b"rate_limited", headers={"Retry-After": "7"}), Answer(429, body=b""))
    adapter = SlackAdapter(slack.receiver())
    assert adapter.send(message()) == RetryAfter(7.0, "HTTP 429: rate limited")
    assert adapter.send(message()) == RetryAfter(30.0, "HTTP 429: rate limited")


def test_server_error_is_retried(slack: FakeSlack) -> None:
    slack.script(Answer(503, body=b"service unavailable"))
    out = SlackAdapter(slack.receiver()).send(message())
    assert isinstance(out, RetryAfter) and "503" in out.reason


def test_mentions_from_config_only(slack: FakeSlack) -> None:
    adapter = SlackAdapter(slack.receiver(mention={"moderate": {"users": ["U024BE7LH"]}, "severe": {"all": True}}))
    adapter.send(message(tier=Tier.MODERATE))
    assert slack.last.json["text"].endswith("\n<@U024BE7LH>")
    adapter.send(message(tier=Tier.SEVERE))
    assert slack.last.json["text"].endswith("\n<!channel>")
    adapter.send(message(tier=Tier.LIGHT))
    assert "<@" not in slack.last.json["text"] and "<!" not in slack.last.json["text"]
