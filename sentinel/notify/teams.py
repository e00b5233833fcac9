"""Microsoft Teams through a Workflows (Power Automate) webhook: an Adaptive Card 1.4.

Office 365 connectors are retired; a Workflows URL takes `{"type": "message", "attachments": [card]}`
and answers 202. The card has a title block and a body block whose lines are separated by blank
lines (TextBlock markdown does not reliably turn a single newline into a line break). Mentions are `msteams.entities`
for the configured users (UPN or Entra id) and nothing else: Teams has no "everyone" for a webhook,
so `all = true` adds no mention here. The request body is capped at 28,000 bytes.
"""

from __future__ import annotations

from typing import ClassVar

from sentinel.model import JsonOutObject
from sentinel.notify.adapter import HttpAdapter
from sentinel.notify.answers import Reply
from sentinel.notify.base import Delivered, Message, Outcome, Syntax, register
from sentinel.notify.escape import escape_markdown, safe_id, truncate_bytes, utf8_len
from sentinel.tiers import Tier
from sentinel.units import Rate

_COLOR = {Tier.LIGHT: "Accent", Tier.MODERATE: "Warning", Tier.SEVERE: "Attention"}


@register
class TeamsAdapter(HttpAdapter):
    kind: ClassVar[str] = "teams"
    syntax: ClassVar[Syntax] = Syntax.MARKDOWN
    max_bytes: ClassVar[int] = 24_000  # the text's budget; the card's JSON must stay under 28 KB
    max_body_bytes: ClassVar[int] = 28_000
    default_limits: ClassVar[tuple[Rate, ...]] = (Rate(4, 1),)

    def body(self, message: Message) -> bytes:
        m = self.mention(message)
        users = [u for u in (safe_id(u) for u in m.users) if u] if m is not None else []
        heading = escape_markdown(message.title)
        tags = " ".join(f"<at>{u}</at>" for u in users)
        title: JsonOutObject = {
            "type": "TextBlock",
            "text": heading,
            "wrap": True,
            "size": "Medium",
            "weight": "Bolder",
            "color": "Good" if message.status == "resolved" else _COLOR.get(message.tier, "Default"),
        }
        entities: list[JsonOutObject] = [
            {"type": "mention", "text": f"<at>{u}</at>", "mentioned": {"id": u, "name": u}} for u in users
        ]
        mentions: list[JsonOutObject] = [{"type": "TextBlock", "wrap": True, "text": tags}] if users else []

        def build(body: str) -> JsonOutObject:
            # TextBlock markdown needs a blank line to break a line.
            budget = self.max_bytes - utf8_len(heading) - utf8_len(tags)
            text = truncate_bytes(
                "\n\n".join(s for s in body.splitlines() if s.strip()), max(budget, 0), self.truncated_marker
            )
            blocks: list[JsonOutObject] = (
                [title, {"type": "TextBlock", "text": text, "wrap": True}] if text else [title]
            )
            card: JsonOutObject = {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": blocks + mentions,
                "msteams": {"width": "Full", **({"entities": entities} if entities else {})},
            }
            return {
                "type": "message",
                "attachments": [
                    {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}
                ],
            }

        return self.fit_payload(build, message.body, self.max_body_bytes)

    def attempt(self, message: Message, url: str) -> Outcome:
        reply = self.http.post(url, self.body(message), {"Content-Type": "application/json; charset=utf-8"})
        if not isinstance(reply, Reply):
            return reply
        return self.status_outcome(reply) or Delivered()
