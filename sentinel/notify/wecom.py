"""WeCom (企业微信) group robot.

Markdown by default (mentions as `<@userid>` in the content). A message whose tier mentions everyone
or mentions by mobile number goes as msgtype `text`, because only text messages carry
`mentioned_list` / `mentioned_mobile_list` and `@all` works nowhere else; its markdown is flattened
to plain text. Content is capped before sending (text 2048, markdown 4096 UTF-8 bytes), so the
vendor's "content too long" (40058) never has to happen. No signing.
"""

from __future__ import annotations

from typing import ClassVar

from sentinel.model import JsonOutObject
from sentinel.notify.adapter import HttpAdapter
from sentinel.notify.answers import Code, Reply
from sentinel.notify.base import Message, Outcome, Syntax, register
from sentinel.notify.escape import escape_markdown, escape_text, markdown_to_text, safe_id
from sentinel.units import Rate

CODES: dict[int, Code] = {
    45009: Code("rate limited (20 messages a minute per robot)", retry=60.0),
    -1: Code("system busy", retry=10.0),
    93000: Code("invalid webhook key"),
    40058: Code("content too long (Sentinel caps content before sending: please report this)"),
}


@register
class WeComAdapter(HttpAdapter):
    kind: ClassVar[str] = "wecom"
    syntax: ClassVar[Syntax] = Syntax.MARKDOWN
    max_bytes: ClassVar[int] = 4096
    max_text_bytes: ClassVar[int] = 2048  # a text message: how WeCom mentions everyone or by mobile
    default_limits: ClassVar[tuple[Rate, ...]] = (Rate(20, 60),)
    accepts: ClassVar[frozenset[str]] = frozenset({"mobiles"})

    def payload(self, message: Message) -> JsonOutObject:
        m = self.mention(message)
        if m is not None and (m.all or m.mobiles):
            content = self.fit_text(escape_text(message.title), markdown_to_text(message.body), "", self.max_text_bytes)
            return {
                "msgtype": "text",
                "text": {
                    "content": content,
                    "mentioned_list": [safe_id(u) for u in m.users] + (["@all"] if m.all else []),
                    "mentioned_mobile_list": [safe_id(p) for p in m.mobiles],
                },
            }
        tail = " ".join(f"<@{safe_id(u)}>" for u in m.users) if m is not None else ""
        content = self.fit_text(f"**{escape_markdown(message.title)}**", message.body, tail, self.max_bytes)
        return {"msgtype": "markdown", "markdown": {"content": content}}

    def attempt(self, message: Message, url: str) -> Outcome:
        reply = self.post_json(url, self.payload(message))
        if not isinstance(reply, Reply):
            return reply
        return self.classify_coded(reply, "wecom", CODES, ("errcode",), ("errmsg",))
