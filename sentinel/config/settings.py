"""`Config`, the whole file: its top-level keys, the `SENTINEL_*` overrides, and the checks that need more
than one section (a route's receiver must exist, a rule name must be unique).

The environment wins over the file: pydantic-settings reads `SENTINEL_A__B` as key `a.b`, and the file's
tables are passed as init values below it. A configuration that constructed and cross-checked clean is
one the daemon can run; `sentinel.config.loading` turns what fails into `FILE: KEY: REASON` lines.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from pydantic import BeforeValidator, PrivateAttr, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from sentinel.config.receivers import InhibitConfig, MatchValue, ReceiverConfig, RouteConfig
from sentinel.config.rules import RuleConfig, StreakRuleConfig
from sentinel.config.source import SourceConfig, StateConfig
from sentinel.config.values import Duration, Locale, Model, SecretValue, Zone
from sentinel.config_common import (
    DEFAULT_LISTEN,
    DEFAULT_LOCALE,
    DEFAULT_TIMEZONE,
    ENV_PREFIX,
    check_listen,
    check_table,
)


class ApiConfig(Model):
    """`[api]`: the bearer token of the HTTP API, and the secret and lifetime of signed acknowledgement links."""

    token: SecretValue | None = None
    ack_secret: SecretValue | None = None
    ack_ttl: Duration = timedelta(days=7)


def _api_table(value: object) -> ApiConfig | dict[str, object]:
    """`[api]` given as other than a table reads "must be a table of keys", as in the light reader."""
    return value if isinstance(value, ApiConfig) else check_table(value)


# --- the whole file --------------------------------------------------------------------------------


class Config(BaseSettings):
    """The whole configuration; environment variables `SENTINEL_A__B` override file keys `a.b`.

    A `SENTINEL_*` variable that names no key is a configuration error like an unknown key in the file
    (`config_common.env_problems`), except the test suite's `SENTINEL_TEST_*`.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        arbitrary_types_allowed=True,
        case_sensitive=False,
        populate_by_name=True,
    )
    # key paths of receiver secrets left unread (`load_config(receiver_secrets=False)`)
    _unread_receiver_secrets: tuple[str, ...] = PrivateAttr(default=())

    timezone: Zone = DEFAULT_TIMEZONE
    state_url: SecretValue | None = None
    listen: Annotated[str, BeforeValidator(check_listen)] = DEFAULT_LISTEN
    external_url: str | None = None
    rules_dir: Path | None = None
    history_start: date | datetime | None = None
    notify: bool = True
    fallback_receiver: str | None = None
    locale: Locale = DEFAULT_LOCALE
    templates_dir: Path | None = None
    holidays: str | None = None
    api: Annotated[ApiConfig, BeforeValidator(_api_table)] = ApiConfig()
    state: StateConfig = StateConfig()
    source: SourceConfig | None = None
    rules: list[RuleConfig] = []
    receivers: list[ReceiverConfig] = []
    routes: list[RouteConfig] = []
    inhibit: list[InhibitConfig] = []

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment wins over the file (the file is passed as init values).
        return (env_settings, init_settings)

    @field_validator("holidays")
    @classmethod
    def _holidays(cls, v: str | None) -> str | None:
        if v is not None:
            from sentinel.days import parse_holiday_code

            parse_holiday_code(v)
        return v

    @field_validator("external_url")
    @classmethod
    def _external(cls, v: str | None) -> str | None:
        if v is not None:
            parts = urlsplit(v)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(f"{v!r} is not an http(s) URL")
            return v.rstrip("/")
        return v

    # convenience ---------------------------------------------------------------------------------
    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def source_tz(self) -> ZoneInfo:
        return ZoneInfo(self.source.timezone if self.source and self.source.timezone else self.timezone)

    @property
    def base_url(self) -> str:
        return self.external_url or f"http://{self.listen}"

    @property
    def unread_receiver_secrets(self) -> tuple[str, ...]:
        """The receiver keys whose secrets were not read (empty unless loaded for a command that never sends),
        so nothing can send with a placeholder without it being seen."""
        return self._unread_receiver_secrets

    def receiver(self, name: str) -> ReceiverConfig:
        for r in self.receivers:
            if r.name == name:
                return r
        raise KeyError(name)

    def cross_check(self, origin: Callable[[int], str] | None = None) -> Iterator[tuple[str, str]]:
        """Problems no single key can see: references between sections.

        `origin(i)` names the file and key of rule `i` (the config file or one in `rules_dir`), so a name
        defined twice says where both are.
        """
        seen: dict[str, int] = {}
        for i, rule in enumerate(self.rules):
            if rule.name in seen:
                first = seen[rule.name]
                also = origin(first) if origin is not None else f"rules[{first}]"
                yield f"rules[{i}].name", f"duplicate rule name {rule.name!r} (also {also})"
            seen.setdefault(rule.name, i)
            if (
                isinstance(rule, StreakRuleConfig)
                and rule.distinct == "customer"
                and self.source is not None
                and self.source.table is not None
                and self.source.columns.customer is None
            ):
                yield (
                    f"rules[{i}].distinct",
                    'distinct = "customer" needs source.columns.customer (the customer column)',
                )
        names: dict[str, int] = {}
        for i, rec in enumerate(self.receivers):
            if rec.name in names:
                yield f"receivers[{i}].name", f"duplicate receiver name {rec.name!r}"
            names.setdefault(rec.name, i)
        for i, route in enumerate(self.routes):
            for j, r in enumerate(route.receivers):
                if r not in names:
                    yield f"routes[{i}].receivers[{j}]", f"unknown receiver {r!r}"
            for j, r in enumerate(route.escalate_to):
                if r not in names:
                    yield f"routes[{i}].escalate_to[{j}]", f"unknown receiver {r!r}"
            yield from _rule_refs(f"routes[{i}].match", route.match, seen)
        for i, inh in enumerate(self.inhibit):
            yield from _rule_refs(f"inhibit[{i}].source", inh.source, seen)
            yield from _rule_refs(f"inhibit[{i}].target", inh.target, seen)
        if self.fallback_receiver is not None and self.fallback_receiver not in names:
            yield "fallback_receiver", f"unknown receiver {self.fallback_receiver!r}"


def _rule_refs(where: str, matchers: Mapping[str, MatchValue], rules: Mapping[str, int]) -> Iterator[tuple[str, str]]:
    value = matchers.get("rule")
    if value is None:
        return
    for v in [value] if isinstance(value, str) else value:
        if not v.startswith("~") and v not in rules:
            yield f"{where}.rule", f"unknown rule {v!r}"
