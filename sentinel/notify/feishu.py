"""Feishu (飞书) and Lark custom bots: the same protocol on two hosts, so one class and two kinds.

Text messages (`msg_type = "text"`); mentions as `<at user_id="all">` / `<at user_id="ou_…">` tags,
which Feishu parses inside text - the reason every data string reaching this adapter has `<` and `>`
escaped (see `escape_text`). The request body is capped at 20 KB.

Signing happens at every attempt: `timestamp` (seconds, a string) and `sign = base64(HMAC-SHA256(
key=timestamp + "\\n" + secret, msg=b""))` go into the JSON body (the key/message order is the
reverse of DingTalk's). A body signed when the message was queued could be hours old and rejected.

Success is `code == 0` (older bots answer `StatusCode`); 11232 (frequency limited) is retried after
60 s, as is the catch-all 9499 when its message says "too many request"; other codes are permanent.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from typing import ClassVar

from sentinel.model import JsonOutObject
from sentinel.notify.adapter import HttpAdapter
from sentinel.notify.answers import Code, Reply
from sentinel.notify.base import Failed, Message, Outcome, RetryAfter, Syntax, register
from sentinel.notify.escape import escape_text, safe_id
from sentinel.units import Rate

THROTTLE_DELAY = 60.0
_THROTTLED = re.compile(r"too many|frequen|rate limit|limit exceed", re.IGNORECASE)

CODES: dict[int, Code] = {
    19021: Code("signature verification failed (wrong secret, or this host's clock is off by over an hour)"),
    19022: Code("IP address not allowed"),
    19024: Code("keyword missing"),
    19007: Code("bot disabled or removed from the group"),
    11232: Code("frequency limited", retry=THROTTLE_DELAY),
    19036: Code("message too large"),
    9499: Code("bad request"),  # unless its message says rate limited: see `attempt`
}


def sign(secret: str, timestamp: str) -> str:
    key = f"{timestamp}\n{secret}".encode()
    return base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()


@register
class FeishuAdapter(HttpAdapter):
    kind: ClassVar[str] = "feishu"
    syntax: ClassVar[Syntax] = Syntax.TEXT
    max_bytes: ClassVar[int] = 19 * 1024  # the text; with signature and JSON the body stays under 20 KB
    max_body_bytes: ClassVar[int] = 20 * 1024
    default_limits: ClassVar[tuple[Rate, ...]] = (Rate(100, 60), Rate(5, 1))  # Lark's are the same
    accepts: ClassVar[frozenset[str]] = frozenset({"secret", "keyword"})

    def signature(self) -> dict[str, str]:
        """`timestamp` and `sign` for this attempt (empty when the bot has no secret)."""
        if self.config.secret is None:
            return {}
        timestamp = str(int(time.time()))
        return {"timestamp": timestamp, "sign": sign(self.config.secret.get(), timestamp)}

    def body(self, message: Message) -> bytes:
        m = self.mention(message)
        tags = []
        if m is not None:
            tags = [f'<at user_id="{safe_id(u)}">{safe_id(u)}</at>' for u in m.users]
            if m.all:
                tags.append('<at user_id="all">所有人</at>' if self.zh else '<at user_id="all">everyone</at>')
        tail = " ".join(tags)
        title = escape_text(message.title)
        keyword = self.config.keyword
        signing = self.signature()

        def build(body: str) -> JsonOutObject:
            text = self.fit_text(title, body, tail, self.max_bytes)
            if keyword and keyword not in text:
                text = self.fit_text(f"{keyword} {title}", body, tail, self.max_bytes)
            return {**signing, "msg_type": "text", "content": {"text": text}}

        return self.fit_payload(build, message.body, self.max_body_bytes)

    def attempt(self, message: Message, url: str) -> Outcome:
        reply = self.http.post(url, self.body(message), {"Content-Type": "application/json; charset=utf-8"})
        if not isinstance(reply, Reply):
            return reply
        out = self.classify_coded(reply, self.kind, CODES, ("code", "StatusCode"), ("msg", "StatusMessage"))
        if isinstance(out, Failed) and out.code == "9499" and _THROTTLED.search(out.reason):
            # 9499 is a catch-all whose message tells: "too many request" is a rate limit, not a bad message.
            return RetryAfter(max(THROTTLE_DELAY, reply.retry_after() or 0.0), f"{out.reason} (rate limited)")
        return out


@register
class LarkAdapter(FeishuAdapter):
    """Lark, Feishu's international edition (open.larksuite.com): same protocol and codes."""

    kind: ClassVar[str] = "lark"
