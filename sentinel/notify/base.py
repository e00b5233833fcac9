"""What every chat-tool adapter takes and answers.

An adapter turns one rendered `Message` into one HTTP call to one robot URL and classifies the answer
as a value: `Delivered`, `RetryAfter(seconds, why)` or `Failed(code, why)`. The outbox worker reads
those three cases in one `match`; it knows nothing of any vendor. Adapters never raise for a vendor's
answer or a network error, never log or return their URL's key, and never follow redirects.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, ClassVar, Protocol, TypeVar

from sentinel.tiers import Tier
from sentinel.units import Rate

if TYPE_CHECKING:
    from sentinel.config import ReceiverConfig


class Syntax(StrEnum):
    """How a receiver formats text; the renderer escapes data for exactly this syntax."""

    TEXT = "text"  # no markup at all (WeCom text, Feishu/Lark text)
    MARKDOWN = "markdown"  # CommonMark-like (WeCom markdown, DingTalk, Discord, Teams TextBlock)
    SLACK = "slack"  # Slack mrkdwn: & < > escaped, *bold*, <url|text>


@dataclass(frozen=True, slots=True)
class AlertPayload:
    """One alert inside a message, structured for receivers that take data (the generic webhook)."""

    status: str  # "firing" | "resolved"
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    starts_at: str  # RFC 3339
    ends_at: str  # RFC 3339, "0001-01-01T00:00:00Z" while firing (Alertmanager's convention)
    fingerprint: str
    generator_url: str = ""


@dataclass(frozen=True, slots=True)
class Message:
    """A notification ready to send.

    `title` is plain text straight from data: an adapter that shows it must escape it for its syntax.
    `body` is already rendered in the adapter's `syntax` with every data-derived string escaped, so an
    adapter adds only what configuration says (mentions, keyword) and caps the size.
    """

    id: str  # delivery id: stable across retries, so receivers can drop duplicates
    title: str
    body: str
    tier: Tier
    status: str  # "firing" | "resolved"
    group_key: str = ""
    group_labels: Mapping[str, str] = field(default_factory=dict)
    alerts: tuple[AlertPayload, ...] = ()
    external_url: str = ""
    mention: bool = True  # False for a message that must not ping anyone (e.g. a resolution)


@dataclass(frozen=True, slots=True)
class Delivered:
    detail: str = "ok"


@dataclass(frozen=True, slots=True)
class RetryAfter:
    seconds: float
    reason: str  # e.g. "wecom 45009: rate limited", "HTTP 503", "timeout"


@dataclass(frozen=True, slots=True)
class Failed:
    code: str  # the vendor's code ("93000", "HTTP 404", ...)
    reason: str  # what it means, for people

    @property
    def text(self) -> str:
        """The failure in one phrase with the code once: "wecom 93000: invalid webhook key", "HTTP 404:
        webhook not found: …" (a vendor's reason already names its code)."""
        return self.reason if self.code in self.reason else f"{self.code}: {self.reason}"


Outcome = Delivered | RetryAfter | Failed


RECEIVER_OPTIONS = ("secret", "keyword", "hmac_secret", "mobiles")
"""Receiver keys that only some chat tools take (each adapter's `accepts` names its own)."""


class Adapter(Protocol):
    """One chat tool: what it is (the facts below, read by the worker, the renderer, the dispatcher and
    the configuration check) and how it sends."""

    kind: ClassVar[str]
    syntax: ClassVar[Syntax]
    max_bytes: ClassVar[int]  # body limit in UTF-8 bytes
    default_limits: ClassVar[tuple[Rate, ...]]  # the vendor's published rate limits per robot (`rate_limit` wins)
    accepts: ClassVar[frozenset[str]]  # which of `RECEIVER_OPTIONS` it takes
    lists_group: ClassVar[bool]  # its payload lists the whole group (Alertmanager's webhook format)

    def __init__(self, config: ReceiverConfig) -> None: ...

    @property
    def max_chars(self) -> int | None:
        """A limit in characters as well (Discord), or None."""

    @property
    def max_text_bytes(self) -> int | None:
        """The smaller limit of a message that mentions everyone or by mobile (WeCom's text messages), or None."""

    def send(self, message: Message, url_index: int = 0) -> Outcome: ...

    def close(self) -> None: ...


ADAPTERS: dict[str, type[Adapter]] = {}
"""kind -> adapter class; each vendor module registers itself with `register`."""

A = TypeVar("A", bound=type[Adapter])


def register(cls: A) -> A:
    """Class decorator: `cls` is the adapter of its `kind` (mypy checks here that it is an `Adapter`)."""
    ADAPTERS[cls.kind] = cls
    return cls
