"""Discord: allowed_mentions always explicit, 2000 characters, 429 retry_after from the JSON."""

from __future__ import annotations

import logging

import pytest

from sentinel.model import Tier
from sentinel.notify.base import Delivered, Failed, RetryAfter
from sentinel.notify.discord import DiscordAdapter

from .builders import message
from .vendors import Answer, FakeDiscord


def test_wait_true_on_a_fresh_url(discord: FakeDiscord) -> None:
    config = discord.receiver()
    assert isinstance(DiscordAdapter(config).send(message()), Delivered)
    assert discord.last.query == {"wait": ["true"]}
    assert config.url.get() == discord.url  # type: ignore[union-attr]


def test_allowed_mentions_always_explicit(discord: FakeDiscord) -> None:
    adapter = DiscordAdapter(discord.receiver(mention={"severe": {"users": ["80351110224678912"]}}))
    adapter.send(message(title="@everyone look", tier=Tier.MODERATE))
    body = discord.last.json
    assert body["allowed_mentions"] == {"parse": []}
    assert body["content"].startswith("**＠everyone look**\n")
    adapter.send(message(tier=Tier.SEVERE))
    body = discord.last.json
    assert body["allowed_mentions"] == {"parse": [], "users": ["80351110224678912"]}
    assert body["content"].endswith("\n<@80351110224678912>")


def test_all_is_refused_with_a_warning(discord: FakeDiscord, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "sentinel.notify"):
        adapter = DiscordAdapter(discord.receiver(mention={"severe": {"all": True}}))
    assert "mention.severe.all is ignored" in caplog.text
    adapter.send(message(tier=Tier.SEVERE))
    assert discord.last.json["allowed_mentions"] == {"parse": []}
    assert "@everyone" not in discord.last.json["content"]


def test_2000_characters_not_bytes(discord: FakeDiscord) -> None:
    out = DiscordAdapter(discord.receiver()).send(message(body="物流配送延误" * 1000))
    assert isinstance(out, Delivered)  # the fake rejects more than 2000 characters
    content = discord.last.json["content"]
    assert len(content) == 2000
    assert len(content.encode()) > 2000


def test_rate_limit_reads_retry_after_from_json(discord: FakeDiscord) -> None:
    discord.script(
        discord.rate_limited(1.25),
        discord.rate_limited(3.5, is_global=True),
        Answer(429, body=b"slow down", headers={"Retry-After": "9"}),
    )
    adapter = DiscordAdapter(discord.receiver())
    assert adapter.send(message()) == RetryAfter(1.25, "HTTP 429: rate limited")
    assert adapter.send(message()) == RetryAfter(3.5, "HTTP 429: rate limited (global)")
    assert adapter.send(message()) == RetryAfter(9.0, "HTTP 429: rate limited")


@pytest.mark.parametrize(
    ("answer", "kind", "code"),
    [
        (Answer(204), Delivered, None),
        (Answer(500), RetryAfter, None),
        (Answer(400, {"code": 50035, "message": "Invalid Form Body"}), Failed, "HTTP 400"),
        (Answer(404, {"code": 10015, "message": "Unknown Webhook"}), Failed, "HTTP 404"),
    ],
)
def test_status_classification(discord: FakeDiscord, answer: Answer, kind: type, code: str | None) -> None:
    discord.script(answer)
    out = DiscordAdapter(discord.receiver()).send(message())
    assert isinstance(out, kind)
    if code is not None:
        assert isinstance(out, Failed) and out.code == code and str(answer.json["code"]) in out.reason


def test_invalid_token_is_permanent(discord: FakeDiscord) -> None:
    out = DiscordAdapter(discord.receiver(url=discord.url.replace(discord.token, "tokWRONG77"))).send(message())
    assert isinstance(out, Failed) and out.code == "HTTP 401" and "Invalid Webhook Token" in out.reason
