"""`[[receivers]]`, `[[routes]]` and `[[inhibit]]`: who is told, which alerts go where, and which hold
others back.

Matchers are checked once here (label names, regular expressions that compile, tiers that exist), so
routing and inhibition can apply them without failing. What a receiver's chat tool accepts is checked
by its adapter (`sentinel.notify.checks`), and references between sections by `Config.cross_check`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Literal
from urllib.parse import urlsplit

from pydantic import ConfigDict, Field, field_validator, model_validator

from sentinel.config.values import NAME_PATTERN, Duration, Model, RateValue, SecretValue, Window
from sentinel.config_common import Secret
from sentinel.tiers import Tier

ReceiverKind = Literal["wecom", "dingtalk", "feishu", "lark", "slack", "teams", "discord", "webhook"]
"""The chat tools, one adapter each (`sentinel.notify`); what each accepts is checked there."""


class Mention(Model):
    users: list[str] = []
    mobiles: list[str] = []
    all: bool = False


class Mentions(Model):
    light: Mention | None = None
    moderate: Mention | None = None
    severe: Mention | None = None

    def for_tier(self, tier: Tier) -> Mention | None:
        return getattr(self, tier.label)  # type: ignore[no-any-return]


class ReceiverConfig(Model):
    name: str = Field(pattern=NAME_PATTERN)
    kind: ReceiverKind
    url: SecretValue | None = None
    urls: list[SecretValue] | None = None
    secret: SecretValue | None = None
    keyword: str | None = None
    mention: Mentions = Mentions()
    rate_limit: RateValue | None = None
    timeout: Duration = timedelta(seconds=10)
    locale: Literal["zh_CN", "en"] | None = None
    hmac_secret: SecretValue | None = None

    @model_validator(mode="after")
    def _check(self) -> ReceiverConfig:
        if (self.url is None) == (self.urls is None):
            raise ValueError("give exactly one of `url` or `urls`")
        if self.urls is not None and not self.urls:
            raise ValueError("urls is empty")
        for u in self.all_urls():
            parts = urlsplit(u.get())
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError("url must be an http(s) URL")
        if self.timeout <= timedelta(0):
            raise ValueError("timeout must be positive")
        return self

    def all_urls(self) -> list[Secret]:
        return list(self.urls) if self.urls is not None else [self.url] if self.url is not None else []


MatchValue = str | list[str]


def _check_matchers(m: Mapping[str, MatchValue]) -> None:
    for key, value in m.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ValueError(f"matcher label {key!r} is not a label name")
        for v in [value] if isinstance(value, str) else value:
            if v.startswith("~"):
                try:
                    re.compile(v[1:])
                except re.error as exc:
                    raise ValueError(f"{key}: bad regular expression {v[1:]!r}: {exc}") from None
            if key == "tier" and not v.startswith("~"):
                Tier.parse(v)


class RouteConfig(Model):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    match: dict[str, MatchValue] = {}
    receivers: list[str] = Field(min_length=1)
    continue_: bool = Field(False, alias="continue")
    group_by: list[str] = ["rule"]
    group_wait: Duration = timedelta(seconds=1)
    group_interval: Duration = timedelta(minutes=1)
    repeat_interval: Duration = timedelta(hours=4)
    mute: list[Window] = []
    escalate_to: list[str] = []
    escalate_after: Duration = timedelta(hours=1)

    @field_validator("match")
    @classmethod
    def _matchers(cls, v: dict[str, MatchValue]) -> dict[str, MatchValue]:
        _check_matchers(v)
        return v


class InhibitConfig(Model):
    source: dict[str, MatchValue]
    target: dict[str, MatchValue]
    equal: list[str] = []

    @field_validator("source", "target")
    @classmethod
    def _matchers(cls, v: dict[str, MatchValue]) -> dict[str, MatchValue]:
        if not v:
            raise ValueError("needs at least one matcher")
        _check_matchers(v)
        return v
