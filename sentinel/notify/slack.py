"""Slack incoming webhook.

`{"text": …}` in mrkdwn; mentions `<!channel>` (tier mentions everyone) and `<@U…>` only from the
receiver's configuration, data having `& < >` escaped. Unfurling is off so a message never grows a
preview of some page. Slack answers `200 ok`; 400/403/404/410 are permanent (bad payload, action
prohibited, channel or webhook gone), 429 (with Retry-After) and 5xx are retried.
"""

from __future__ import annotations

from typing import ClassVar

from sentinel.notify.adapter import HttpAdapter
from sentinel.notify.answers import Reply
from sentinel.notify.base import Delivered, Message, Outcome, Syntax, register
from sentinel.notify.escape import escape_slack, safe_id
from sentinel.units import Rate


@register
class SlackAdapter(HttpAdapter):
    kind: ClassVar[str] = "slack"
    syntax: ClassVar[Syntax] = Syntax.SLACK
    max_bytes: ClassVar[int] = 40_000  # Slack truncates `text` past 40,000 characters; bytes are stricter
    default_limits: ClassVar[tuple[Rate, ...]] = (Rate(1, 1),)

    def text(self, message: Message) -> str:
        m = self.mention(message)
        tags = []
        if m is not None:
            tags = [f"<@{safe_id(u)}>" for u in m.users] + (["<!channel>"] if m.all else [])
        return self.fit_text(f"*{escape_slack(message.title)}*", message.body, " ".join(tags), self.max_bytes)

    def attempt(self, message: Message, url: str) -> Outcome:
        reply = self.post_json(url, {"text": self.text(message), "unfurl_links": False, "unfurl_media": False})
        if not isinstance(reply, Reply):
            return reply
        return self.status_outcome(reply) or Delivered(self.scrub(reply.text(), 50) or "ok")
