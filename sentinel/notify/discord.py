"""Discord webhook.

`content` of at most 2000 characters (Discord counts characters, not bytes) and `allowed_mentions`
always set explicitly: `parse` is empty, so no text - ours or the data's - can ping `@everyone`,
`@here` or a role; only user ids from the receiver's configuration are listed in `users`. A tier
configured with `all = true` therefore pings no one on Discord (a warning at start says so).
`?wait=true` makes Discord confirm the message was stored. 429 carries `retry_after` (seconds, float)
in its JSON; 5xx retry; other 4xx are permanent.
"""

from __future__ import annotations

import logging
from typing import ClassVar

from sentinel.config import ReceiverConfig
from sentinel.model import JsonOut, JsonOutObject
from sentinel.notify.adapter import HttpAdapter, with_query
from sentinel.notify.answers import MAX_RETRY_AFTER, RATE_LIMIT_DELAY, Reply
from sentinel.notify.base import Delivered, Message, Outcome, RetryAfter, Syntax, register
from sentinel.notify.escape import escape_markdown, safe_id
from sentinel.tiers import Tier
from sentinel.units import Rate

log = logging.getLogger("sentinel.notify")


@register
class DiscordAdapter(HttpAdapter):
    kind: ClassVar[str] = "discord"
    syntax: ClassVar[Syntax] = Syntax.MARKDOWN
    max_chars: ClassVar[int] = 2000
    max_bytes: ClassVar[int] = 2000  # a byte budget of 2000 never exceeds 2000 characters
    default_limits: ClassVar[tuple[Rate, ...]] = (Rate(5, 2),)

    def __init__(self, config: ReceiverConfig) -> None:
        super().__init__(config)
        for tier in Tier:
            m = config.mention.for_tier(tier)
            if m is not None and m.all:
                log.warning(
                    "receiver %s (discord): mention.%s.all is ignored: Sentinel never pings "
                    "@everyone on Discord; list user ids instead",
                    self.name,
                    tier.label,
                )

    def payload(self, message: Message) -> JsonOutObject:
        m = self.mention(message)
        users = [u for u in (safe_id(u) for u in m.users) if u] if m is not None else []
        content = self.fit_text(
            f"**{escape_markdown(message.title)}**",
            message.body,
            " ".join(f"<@{u}>" for u in users),
            self.max_chars,
            chars=True,
        )
        allowed: dict[str, JsonOut] = {"parse": []}
        if users:
            allowed["users"] = users[:100]  # Discord's maximum
        return {"content": content, "allowed_mentions": allowed}

    def attempt(self, message: Message, url: str) -> Outcome:
        reply = self.post_json(with_query(url, {"wait": "true"}), self.payload(message))
        if not isinstance(reply, Reply):
            return reply
        if reply.status == 429:
            data = reply.json()
            wait = data.get("retry_after") if isinstance(data, dict) else None
            if not isinstance(wait, int | float) or isinstance(wait, bool) or wait < 0:
                wait = reply.retry_after()
            scope = " (global)" if isinstance(data, dict) and data.get("global") else ""
            seconds = min(float(wait), MAX_RETRY_AFTER) if wait is not None else RATE_LIMIT_DELAY
            return RetryAfter(seconds, f"HTTP 429: rate limited{scope}")
        return self.status_outcome(reply) or Delivered()
