"""Teams Workflows: an Adaptive Card, 202 accepted, status classification, mention entities."""

from __future__ import annotations

import pytest

from sentinel.model import Tier
from sentinel.notify.base import Delivered, Failed, RetryAfter
from sentinel.notify.teams import TeamsAdapter

from .builders import message
from .vendors import Answer, FakeTeams


def test_adaptive_card_is_accepted(teams: FakeTeams) -> None:
    out = TeamsAdapter(teams.receiver()).send(message(title="物流 [x](y)", body="第一行\n\n第二行\n第三行"))
    assert out == Delivered()
    attachment = teams.last.json["attachments"][0]
    card = attachment["content"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert (card["type"], card["version"]) == ("AdaptiveCard", "1.4")
    title, body = card["body"]
    assert title["text"] == "物流 ［x］（y）" and title["weight"] == "Bolder" and title["color"] == "Warning"
    assert body["text"] == "第一行\n\n第二行\n\n第三行"
    assert card["msteams"] == {"width": "Full"}


def test_resolved_is_green(teams: FakeTeams) -> None:
    TeamsAdapter(teams.receiver()).send(message(status="resolved", tier=Tier.SEVERE))
    assert teams.last.json["attachments"][0]["content"]["body"][0]["color"] == "Good"


@pytest.mark.parametrize(
    ("answer", "kind"),
    [
        (Answer(200), Delivered),
        (Answer(202), Delivered),
        (Answer(429, headers={"Retry-After": "12"}), RetryAfter),
        (Answer(502), RetryAfter),
        (Answer(400, {"error": {"message": "bad card"}}), Failed),
        (Answer(404), Failed),
    ],
)
def test_status_classification(teams: FakeTeams, answer: Answer, kind: type) -> None:
    teams.script(answer)
    out = TeamsAdapter(teams.receiver()).send(message())
    assert isinstance(out, kind)
    if answer.status == 429:
        assert out == RetryAfter(12.0, "HTTP 429: rate limited")
    if answer.status == 400:
        assert isinstance(out, Failed) and out.code == "HTTP 400" and "bad card" in out.reason


def test_wrong_signature_is_permanent(teams: FakeTeams) -> None:
    out = TeamsAdapter(teams.receiver(url=teams.url.replace(teams.sig, "sigWRONG0000"))).send(message())
    assert isinstance(out, Failed) and out.code == "HTTP 401"


def test_mention_entities_only_when_configured(teams: FakeTeams) -> None:
    adapter = TeamsAdapter(
        teams.receiver(mention={"severe": {"users": ["ops@example.com"]}, "moderate": {"all": True}})
    )
    adapter.send(message(tier=Tier.SEVERE))
    card = teams.last.json["attachments"][0]["content"]
    assert card["msteams"]["entities"] == [
        {
            "type": "mention",
            "text": "<at>ops@example.com</at>",
            "mentioned": {"id": "ops@example.com", "name": "ops@example.com"},
        }
    ]
    assert card["body"][-1]["text"] == "<at>ops@example.com</at>"
    for tier in (Tier.MODERATE, Tier.LIGHT):  # `all` has no meaning for a Teams webhook
        adapter.send(message(tier=tier))
        card = teams.last.json["attachments"][0]["content"]
        assert "entities" not in card["msteams"]
        assert "<at>" not in str(card["body"])
