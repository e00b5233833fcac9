"""DingTalk (钉钉) custom robot.

Markdown messages; mentions as `at.atMobiles` / `atUserIds` / `isAtAll`, each mobile and user id also
written as `@…` in the text so DingTalk highlights it. The whole request body is capped at 20,000
bytes (DingTalk's 460101). A keyword-protected robot gets its `keyword` in the heading line when the
text does not already contain it, so it appears exactly once without doubling one from the data.

Signing happens at every attempt: `timestamp` (ms) and `sign = base64(HMAC-SHA256(key=secret,
msg=timestamp + "\\n" + secret))` are set as query parameters on a new URL string built from the
configured one and URL-encoded exactly once. An outbox message may be hours old; a signature made
when it was queued would be rejected as stale (310000).

A robot that sends more than 20 messages a minute is blocked for 10 minutes (130101, or a 302 from
the gateway): both are retried after 600 s, never dropped.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import ClassVar

from sentinel.model import JsonOutObject
from sentinel.notify.adapter import HttpAdapter, with_query
from sentinel.notify.answers import Code, Reply
from sentinel.notify.base import Message, Outcome, Syntax, register
from sentinel.notify.escape import escape_markdown, escape_text, safe_id
from sentinel.units import Rate

BLOCK_SECONDS = 600.0

CODES: dict[int, Code] = {
    130101: Code("sent too fast; the robot is blocked for 10 minutes", retry=BLOCK_SECONDS),
    310000: Code(
        "security check failed (signature, keyword or IP allow-list; the signature is made "
        "fresh at every attempt, so a stale timestamp means this host's clock is off)"
    ),
    300001: Code("invalid access token"),
    460101: Code("message too large (over 20,000 bytes)"),
}


def sign(secret: str, timestamp_ms: str) -> str:
    """DingTalk's signature, not yet URL-encoded."""
    digest = hmac.new(secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


@register
class DingTalkAdapter(HttpAdapter):
    kind: ClassVar[str] = "dingtalk"
    syntax: ClassVar[Syntax] = Syntax.MARKDOWN
    max_bytes: ClassVar[int] = 19_000  # the text; with title, mentions and JSON the body stays under 20,000
    max_body_bytes: ClassVar[int] = 20_000
    default_limits: ClassVar[tuple[Rate, ...]] = (Rate(20, 60),)
    accepts: ClassVar[frozenset[str]] = frozenset({"secret", "keyword", "mobiles"})
    redirect_delay: ClassVar[float] = BLOCK_SECONDS  # DingTalk answers throttling with a 302

    def body(self, message: Message) -> bytes:
        m = self.mention(message)
        mobiles = [safe_id(p) for p in m.mobiles] if m is not None else []
        users = [safe_id(u) for u in m.users] if m is not None else []
        tail = " ".join(f"@{x}" for x in (*mobiles, *users))
        title = escape_markdown(message.title)
        preview = escape_text(message.title, 64)  # the notification preview: plain text
        keyword = self.config.keyword

        def build(body: str) -> JsonOutObject:
            short = preview
            text = self.fit_text(f"#### {title}", body, tail, self.max_bytes, "\n\n")
            if keyword and keyword not in text:
                short = f"{keyword} {preview}"
                text = self.fit_text(f"#### {keyword} {title}", body, tail, self.max_bytes, "\n\n")
            return {
                "msgtype": "markdown",
                "markdown": {"title": short, "text": text},
                "at": {"atMobiles": mobiles, "atUserIds": users, "isAtAll": bool(m is not None and m.all)},
            }

        return self.fit_payload(build, message.body, self.max_body_bytes)

    def signed_url(self, url: str) -> str:
        """The URL for this attempt: the configured one, plus a fresh signature when there is a secret."""
        if self.config.secret is None:
            return url
        timestamp = str(int(time.time() * 1000))
        return with_query(url, {"timestamp": timestamp, "sign": sign(self.config.secret.get(), timestamp)})

    def attempt(self, message: Message, url: str) -> Outcome:
        reply = self.http.post(
            self.signed_url(url), self.body(message), {"Content-Type": "application/json; charset=utf-8"}
        )
        if not isinstance(reply, Reply):
            return reply
        return self.classify_coded(reply, "dingtalk", CODES, ("errcode",), ("errmsg",))
