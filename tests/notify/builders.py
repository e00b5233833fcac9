"""Messages for adapter tests, and the hostile strings every adapter must neutralise."""

from __future__ import annotations

from typing import Any

from sentinel.model import Tier
from sentinel.notify.base import AlertPayload, Message, Syntax
from sentinel.notify.escape import escape

HOSTILE: list[str] = [
    "@all",
    "@everyone",
    "@here",
    '<at user_id="all">x</at>',
    "[x](http://evil.example/phish)",
    "<!channel>",
    "<@U123ABC>",
    "http://evil.example/x",
    "<@&987654321> <#123> <http://evil.example|click>",
    "**bold** __u__ `code` ~~s~~ # heading\n> quote\n- item",
    "line1\nline2\r\nline3\tTab\x00nul\x1b[31mred\x7f\u2028sep\u0085nel",
    "\u202egnp.exe\u202c \u2066iso\u2069 zero\u200bwidth",
    '<font color="warning">红色</font> <@zhangsan> @138' + "0013800",
    "物流配送延误" * 2000,  # a 12,000-character name
    "N" * 10_000,
]


def message(
    title: str = "预警：物流配送延误 中度",
    body: str = "当前 151 件，基线 100.0 件，1.51 倍",
    tier: Tier = Tier.MODERATE,
    **kw: Any,
) -> Message:
    values: dict[str, Any] = {"id": "d-0001", "title": title, "body": body, "tier": tier, "status": "firing"}
    values.update(kw)
    return Message(**values)


def hostile_message(syntax: Syntax, tier: Tier = Tier.LIGHT, **kw: Any) -> Message:
    """A message whose title is raw hostile data and whose body is every hostile string escaped the
    way the renderer escapes data (one per line)."""
    body = "\n".join(f"类型：{escape(syntax, h)}" for h in HOSTILE)
    return message(title=" ".join(HOSTILE[:13]), body=body, tier=tier, **kw)


def alert(n: int = 0, **labels: str) -> AlertPayload:
    return AlertPayload(
        status="firing",
        labels={"rule": "type-surge", "type": f"t{n}", **labels},
        annotations={"summary": f"surge {n}"},
        starts_at="2025-07-08T06:03:00Z",
        ends_at="0001-01-01T00:00:00Z",
        fingerprint=f"fp{n:04d}",
    )
