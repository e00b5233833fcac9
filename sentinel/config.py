"""Configuration: the TOML file of the design, typed, validated and overridable from the environment.

Loading never prints a secret: `${VAR}` and `secret-file:` values become `Secret` objects whose `repr`
and `str` are masked, and validation errors name the file, the key path and the reason, never the
value of a secret. `load_config` raises `ConfigError` (the CLI turns it into exit status 2).
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import date, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from sentinel.config_common import (
    DEFAULT_LISTEN,
    DEFAULT_LOCALE,
    DEFAULT_TIMEZONE,
    ENV_PREFIX,
    VAR,
    Secret,
    check_listen,
    check_locale,
    check_table,
    check_zone,
    did_you_mean,
    env_for,
    env_problems,
    expand_tree,
    read_toml,
    to_secret,
)
from sentinel.config_common import ConfigError as ConfigError  # noqa: PLC0414  # re-exported: load_config raises it
from sentinel.tiers import Tier
from sentinel.units import Rate, TimeWindow, format_duration, parse_duration, parse_rate, parse_window

SecretValue = Annotated[Secret, BeforeValidator(to_secret), PlainSerializer(str)]


# --- units -----------------------------------------------------------------------------------------


def _duration(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, str):
        return parse_duration(value)
    raise ValueError("must be a duration string such as 15s, 5m, 24h")


def _rate(value: Any) -> Rate:
    if isinstance(value, Rate):
        return value
    if isinstance(value, str):
        return parse_rate(value)
    raise ValueError("must be a rate such as 20/min")


def _window(value: Any) -> TimeWindow:
    if isinstance(value, TimeWindow):
        return value
    if isinstance(value, str):
        return parse_window(value)
    raise ValueError("must be a time window such as 22:00-08:00")


Duration = Annotated[timedelta, BeforeValidator(_duration), PlainSerializer(format_duration)]


def _gap(value: Any) -> timedelta | None:
    """A streak's `max_gap`: a duration, or "off" (a run then never ends by time alone)."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "off"):
        return None
    return _duration(value)


def _format_gap(value: timedelta | None) -> str:
    return "off" if value is None else format_duration(value)


Gap = Annotated[timedelta | None, BeforeValidator(_gap), PlainSerializer(_format_gap)]
RateValue = Annotated[Rate, BeforeValidator(_rate), PlainSerializer(str)]
Window = Annotated[TimeWindow, BeforeValidator(_window), PlainSerializer(str)]


Zone = Annotated[str, BeforeValidator(check_zone)]
Locale = Annotated[Literal["zh_CN", "en"], BeforeValidator(check_locale)]


def exact(value: float) -> Fraction:
    """The decimal the user wrote (1.5 -> 3/2), so boundaries compare without float error."""
    return Fraction(str(value))


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


# --- source ----------------------------------------------------------------------------------------


class Columns(Model):
    id: str = "id"
    created_at: str = "created_at"
    type: str = "type"
    channel: str = "channel"
    customer: str | None = None


class SourceConfig(Model):
    url: SecretValue
    table: str | None = None
    query: str | None = None
    columns: Columns = Columns()
    timezone: Zone | None = None
    id_type: Literal["auto", "int", "str"] = "auto"
    poll_interval: Duration = timedelta(seconds=1)
    lateness: Duration = timedelta(minutes=5)
    reconcile_interval: Duration = timedelta(minutes=5)
    batch_size: int = Field(10_000, ge=1, le=1_000_000)
    record_url: str | None = None
    listen_notify: bool = True
    notify_channel: str | None = None

    @model_validator(mode="after")
    def _table_or_query(self) -> SourceConfig:
        if (self.table is None) == (self.query is None):
            raise ValueError("give exactly one of `table` or `query`")
        if self.query is not None:
            missing = [p for p in (":since_ts", ":since_id", ":limit") if p not in self.query]
            if missing:
                raise ValueError(f"query must bind {', '.join(missing)}")
        if self.table is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?",
                                                         self.table):
            raise ValueError(f"table {self.table!r} is not a plain (schema.)table name")
        if self.poll_interval <= timedelta(0):
            raise ValueError("poll_interval must be positive")
        if self.lateness < timedelta(0):
            raise ValueError("lateness must not be negative")
        if self.reconcile_interval <= timedelta(0):
            raise ValueError("reconcile_interval must be positive")
        if self.record_url is not None and "{id}" not in self.record_url:
            raise ValueError("record_url must contain {id}")
        # PostgreSQL silently truncates channel names to 63 bytes, so a longer one would never match the
        # trigger's; identifier characters keep LISTEN and pg_notify() spelling it the same way.
        if self.notify_channel is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$]{0,62}",
                                                                self.notify_channel):
            raise ValueError(f"notify_channel {self.notify_channel!r} must be 1-63 letters, digits, _ or $, "
                             "starting with a letter or _")
        return self


# --- rules -----------------------------------------------------------------------------------------

Field_ = Literal["type", "channel"]


class Filter(Model):
    type: list[str] = []
    channel: list[str] = []

    @field_validator("type", "channel")
    @classmethod
    def _normalise(cls, v: list[str]) -> list[str]:
        """Compared with data that is NFC-normalised and stripped, so the values must be too."""
        import unicodedata

        return [unicodedata.normalize("NFC", x).strip() for x in v]


class ThresholdTiers(Model):
    moderate: float = 2.0
    severe: float = 3.0


class StreakTiers(Model):
    moderate: int = 8
    severe: int = 12


_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$"


class ThresholdRuleConfig(Model):
    name: str = Field(pattern=_NAME)
    kind: Literal["threshold"]
    group_by: list[Field_] = ["type"]
    factor: float = Field(1.5, gt=0)
    baseline_days: int = Field(7, ge=1, le=366)
    min_history_days: int = Field(3, ge=0, le=366)
    baseline: Literal["mean", "median"] = "mean"
    mode: Literal["day", "pace", "rolling"] = "day"
    min_count: int = Field(10, ge=1)
    max_p: float | None = Field(None, gt=0, lt=1)
    tiers: ThresholdTiers = ThresholdTiers()
    resolve_below: float | None = Field(None, gt=0)
    resolve_after: Duration = timedelta(hours=1)
    where: Filter = Filter()
    where_not: Filter = Filter()
    max_series: int = Field(10_000, ge=1)
    baseline_by: Literal["all", "day_kind", "weekday"] = "all"
    baseline_weeks: int = Field(4, ge=1, le=52)

    @field_validator("group_by")
    @classmethod
    def _unique_group(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("lists a field twice")
        return v

    @model_validator(mode="after")
    def _tiers_above_factor(self) -> ThresholdRuleConfig:
        f, m, s = exact(self.factor), exact(self.tiers.moderate), exact(self.tiers.severe)
        if m <= f:
            raise ValueError(f"tiers.moderate ({self.tiers.moderate}) must be above factor ({self.factor})")
        if s <= m:
            raise ValueError(f"tiers.severe ({self.tiers.severe}) must be above tiers.moderate "
                             f"({self.tiers.moderate})")
        return self


class StreakRuleConfig(Model):
    name: str = Field(pattern=_NAME)
    kind: Literal["streak"]
    field: Field_ = "type"
    scope: list[Field_] = []
    length: int = Field(5, ge=2)
    tiers: StreakTiers = StreakTiers()
    distinct: Literal["customer"] | None = None
    # a pause this long ends a run: a quiet night is not "in a row", and a run that never ended would keep
    # a dominant type's streak open for days ("off" restores that)
    max_gap: Gap = timedelta(hours=2)
    hold: Duration = timedelta(hours=1)
    max_expected_per_day: float | None = Field(None, gt=0)
    history_days: int = Field(7, ge=1, le=366)
    prior_days: float = Field(7.0, ge=0, le=366)
    where: Filter = Filter()
    where_not: Filter = Filter()

    @model_validator(mode="after")
    def _check(self) -> StreakRuleConfig:
        if self.field in self.scope:
            raise ValueError(f"scope must not contain the streak's own field {self.field!r}")
        if len(set(self.scope)) != len(self.scope):
            raise ValueError("scope lists a field twice")
        if self.tiers.moderate <= self.length:
            raise ValueError(f"tiers.moderate ({self.tiers.moderate}) must be above length ({self.length})")
        if self.tiers.severe <= self.tiers.moderate:
            raise ValueError(f"tiers.severe ({self.tiers.severe}) must be above tiers.moderate "
                             f"({self.tiers.moderate})")
        if self.max_gap is not None and self.max_gap <= timedelta(0):
            raise ValueError("max_gap must be positive")
        return self


class QuietRuleConfig(Model):
    """A series that normally has traffic has had nothing for longer than chance explains (an intake
    channel whose sync broke while the others still flow)."""

    name: str = Field(pattern=_NAME)
    kind: Literal["quiet"]
    group_by: list[Field_] = ["channel"]
    max_p: float = Field(1e-6, gt=0, lt=1)  # Poisson chance of no complaint in the silence, given its profile
    min_expected: float = Field(5.0, gt=0)  # and at least this many expected in it
    baseline_days: int = Field(7, ge=1, le=366)
    min_history_days: int = Field(3, ge=0, le=366)
    # a weekend is not a workday's silence: compared with days of its kind unless told otherwise
    baseline_by: Literal["all", "day_kind", "weekday"] = "day_kind"
    baseline_weeks: int = Field(4, ge=1, le=52)
    tier: Literal["light", "moderate", "severe"] = "moderate"
    where: Filter = Filter()
    where_not: Filter = Filter()
    max_series: int = Field(1_000, ge=1)

    @field_validator("group_by")
    @classmethod
    def _unique_group(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("lists a field twice")
        return v


RuleConfig = Annotated[ThresholdRuleConfig | StreakRuleConfig | QuietRuleConfig, Field(discriminator="kind")]


# --- receivers, routes, inhibition -----------------------------------------------------------------

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
    name: str = Field(pattern=_NAME)
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


class StateConfig(Model):
    """How instances sharing a PostgreSQL state store agree who leads (README: Running two instances)."""

    lease_ttl: Duration = timedelta(seconds=15)  # a standby takes over a leader silent this long

    @field_validator("lease_ttl")
    @classmethod
    def _lease_ttl(cls, v: timedelta) -> timedelta:
        if not timedelta(seconds=2) <= v <= timedelta(minutes=10):
            raise ValueError("lease_ttl must be between 2s and 10m (the leader renews its lease every "
                             "lease_ttl / 5, at most every 3 s; a standby takes over after lease_ttl)")
        return v


class ApiConfig(Model):
    token: SecretValue | None = None
    ack_secret: SecretValue | None = None
    ack_ttl: Duration = timedelta(days=7)


def _api_table(value: Any) -> Any:
    return value if isinstance(value, ApiConfig) else check_table(value)


# --- the whole file --------------------------------------------------------------------------------


class Config(BaseSettings):
    """The whole configuration; environment variables `SENTINEL_A__B` override file keys `a.b`.

    A `SENTINEL_*` variable that names no key is a configuration error like an unknown key in the file
    (`config_common.env_problems`), except the test suite's `SENTINEL_TEST_*`.
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid",
                                      frozen=True, arbitrary_types_allowed=True, case_sensitive=False,
                                      populate_by_name=True)
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
    def settings_customise_sources(cls, settings_cls: type[BaseSettings],
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
            if isinstance(rule, StreakRuleConfig) and rule.distinct == "customer" and self.source is not None \
                    and self.source.table is not None and self.source.columns.customer is None:
                yield (f"rules[{i}].distinct",
                       "distinct = \"customer\" needs source.columns.customer (the customer column)")
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


def _rule_refs(where: str, matchers: Mapping[str, MatchValue], rules: Mapping[str, int]
               ) -> Iterator[tuple[str, str]]:
    value = matchers.get("rule")
    if value is None:
        return
    for v in [value] if isinstance(value, str) else value:
        if not v.startswith("~") and v not in rules:
            yield f"{where}.rule", f"unknown rule {v!r}"


# --- loading ---------------------------------------------------------------------------------------


Check = Callable[["Config"], Iterable[tuple[str, str]]]
"""A check that a layer above this module adds (`sentinel.loader`): (key path, problem) for each problem it
finds in a configuration that parsed, reported with the file's own problems."""


def load_config(path: str | Path, environ: Mapping[str, str] | None = None, *, receiver_secrets: bool = True,
                checks: Sequence[Check] = ()) -> Config:
    """Read, expand, validate and cross-check a configuration file (and run `checks` on it).

    `receiver_secrets=False` is for the commands that never send (`status`, `ack`, `silence`, `backtest`):
    a receiver's `${VAR}` that is not set, or its `secret-file:`, is then not read, and stands as a
    placeholder (`https://unset.invalid/` for a URL) that `Config.unread_receiver_secrets` names, so a
    person on call need not hold the chat robots' tokens to acknowledge an alert.

    Raises `ConfigError` whose lines read `FILE: KEY: REASON`.
    """
    path = Path(path)
    env = os.environ if environ is None else environ
    raw = read_toml(path)

    problems: list[str] = []
    # "rules[i]" / "inhibit[i]" of the merged lists -> (the rule file it came from, its key path in that file)
    origins: dict[str, tuple[str, str]] = {}
    base = path.parent
    for key in ("rules_dir", "templates_dir"):
        if isinstance(raw.get(key), str):
            raw[key] = str((base / raw[key]).resolve()) if not Path(raw[key]).is_absolute() else raw[key]
    # SENTINEL_RULES_DIR wins over the file like every override, so it is the folder whose rules are read
    # (relative to the working directory: a variable has no file to be relative to)
    from_env = next((v for k, v in env.items() if k.upper() == f"{ENV_PREFIX}RULES_DIR"), None)
    if from_env is not None:
        raw["rules_dir"] = str(Path(from_env).resolve())
    rules_dir = raw.get("rules_dir")
    if isinstance(rules_dir, str):
        loaded = _load_rules_dir(Path(rules_dir))
        problems += loaded.problems
        for section, items, files, locs in (("rules", loaded.rules, loaded.rule_files, loaded.rule_locs),
                                            ("inhibit", loaded.inhibit, loaded.inhibit_files, loaded.inhibit_locs)):
            inline = raw.get(section, [])
            if items and isinstance(inline, list):
                origins.update({f"{section}[{len(inline) + i}]": (f, loc)
                                for i, (f, loc) in enumerate(zip(files, locs, strict=True))})
                raw[section] = [*inline, *items]

    def where_of(loc: str) -> str:
        """`FILE: KEY` for a key path of the merged configuration: a rule from `rules_dir` is named by
        its own file and its place there, not by its index in the merged list."""
        m = re.match(r"(rules|inhibit)\[\d+\]", loc)
        if m is None or m.group(0) not in origins:
            return f"{path}: {loc or '(top level)'}"
        file, local = origins[m.group(0)]
        rest = loc[m.end():]
        return f"{file}: {(local + rest) if local else rest.lstrip('.') or '(the rule)'}"

    unread: list[str] = []
    if not receiver_secrets and isinstance(raw.get("receivers"), list):
        raw["receivers"] = _defer_secrets(raw["receivers"], "receivers", env, unread)
    raw = expand_tree(raw, "", problems, where_of, env)
    problems += env_problems(path, env, config_fields())
    if problems:
        raise ConfigError(problems)
    try:
        cfg = Config(**raw)
    except ValidationError as exc:
        for err in exc.errors(include_input=False, include_url=False):
            loc = _loc(err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key" + _close_keys(err["loc"])
            elif err["type"] == "missing":
                msg = "required key is missing"
            envvar = env_for(loc, env)
            suffix = f" (set by {envvar})" if envvar else ""
            problems.append(f"{where_of(loc)}: {msg}{suffix}")
        raise ConfigError(problems) from None
    for loc, msg in cfg.cross_check(lambda i: where_of(f"rules[{i}]")):
        problems.append(f"{where_of(loc)}: {msg}")
    for check in checks:
        for loc, msg in check(cfg):
            envvar = env_for(loc, env)
            problems.append(f"{where_of(loc)}: {msg}" + (f" (set by {envvar})" if envvar else ""))
    if problems:
        raise ConfigError(problems)
    cfg._unread_receiver_secrets = tuple(unread)
    return cfg


UNREAD_URL = "https://unset.invalid/"
"""What an unread receiver URL stands as (`.invalid` never resolves, RFC 2606)."""


def _defer_secrets(node: Any, loc: str, env: Mapping[str, str], unread: list[str]) -> Any:
    """`node` (under `receivers`) with each value that needs an unset variable or a secret file replaced by
    a placeholder; `unread` collects their key paths."""
    if isinstance(node, dict):
        return {k: _defer_secrets(v, f"{loc}.{k}", env, unread) for k, v in node.items()}
    if isinstance(node, list):
        return [_defer_secrets(v, f"{loc}[{i}]", env, unread) for i, v in enumerate(node)]
    if isinstance(node, str) and (node.strip().startswith("secret-file:")
                                  or any(m.group(1) not in env for m in VAR.finditer(node))):
        unread.append(loc)
        return UNREAD_URL if re.search(r"\.urls?(\[\d+\])?$", loc) else "unread"
    return node


def _close_keys(loc: tuple[int | str, ...]) -> str:
    """`; did you mean 'table'?` for an unknown key whose table has keys spelled like it, or ""."""
    models: list[type[BaseModel]] = [Config]
    for part in loc[:-1]:
        if isinstance(part, int):
            continue  # a list's element: the models found for the list already stand for it
        step = [f.annotation for m in models for name, f in m.model_fields.items() if part in (name, f.alias)]
        found = [m for a in step for m in _models_in(a)]
        if not found:  # a discriminated union's tag ("threshold") is in the path but names no field
            continue
        models = found
    return did_you_mean(str(loc[-1]), {k for m in models for name, f in m.model_fields.items()
                                        for k in (name, f.alias) if k})


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The models a field's type holds (through lists, unions, `Optional` and `Annotated`)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for a in get_args(annotation) for m in _models_in(a)]


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    skip_tags = {"threshold", "streak", "quiet"}
    for i, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in skip_tags and i > 0 and isinstance(loc[i - 1], int):
            continue  # the discriminated union's tag is not a key the user wrote
        elif part.startswith("function-") or part in ("list[str]", "str"):
            continue
        else:
            out += ("." if out else "") + part
    return out


def config_fields() -> dict[str, bool]:
    """The top-level keys (and aliases), each with whether it holds keys of its own: what `env_problems`
    judges a `SENTINEL_*` variable by."""
    fields = {name: _takes_sub_keys(f.annotation) for name, f in Config.model_fields.items()}
    fields.update({f.alias: _takes_sub_keys(f.annotation) for f in Config.model_fields.values() if f.alias})
    return fields


def _takes_sub_keys(annotation: Any) -> bool:
    """A table or a list: pydantic-settings passes `SENTINEL_A__B` on to it, and its model judges `b`."""
    if get_origin(annotation) is list or (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
        return True
    return any(_takes_sub_keys(a) for a in get_args(annotation) if a is not type(None))


@dataclasses.dataclass
class RuleFiles:
    """What a `rules_dir` holds: rules and inhibitions in file-name order, each with the file it came from."""

    rules: list[Any] = dataclasses.field(default_factory=list)
    rule_files: list[str] = dataclasses.field(default_factory=list)
    inhibit: list[Any] = dataclasses.field(default_factory=list)
    inhibit_files: list[str] = dataclasses.field(default_factory=list)
    rule_locs: list[str] = dataclasses.field(default_factory=list)  # the key path inside its file
    inhibit_locs: list[str] = dataclasses.field(default_factory=list)
    problems: list[str] = dataclasses.field(default_factory=list)


def _load_rules_dir(directory: Path) -> RuleFiles:
    """Every `*.toml` / `*.yaml` / `*.yml` file directly in `directory`, sorted by name.

    A file is one rule table, or `rules` (and optionally `inhibit`) lists: an inhibition that relates the
    rules of the folder (a type's streak held under its surge) belongs beside them, not in every config
    that uses the folder.
    """
    out = RuleFiles()
    if not directory.is_dir():
        out.problems.append(f"{directory}: rules_dir is not a directory")
        return out
    for f in sorted(directory.iterdir()):
        if f.suffix not in (".toml", ".yaml", ".yml") or not f.is_file():
            continue
        try:
            if f.suffix == ".toml":
                data: Any = tomllib.loads(f.read_text(encoding="utf-8"))
            else:
                import yaml

                data = yaml.safe_load(f.read_text(encoding="utf-8"))
        except Exception as exc:  # noqa: BLE001 - any parse error is reported the same way
            out.problems.append(f"{f}: cannot parse: {exc}")
            continue
        if isinstance(data, dict) and ("rules" in data or "inhibit" in data):
            unknown = sorted(set(data) - {"rules", "inhibit"})
            if unknown:
                out.problems.append(f"{f}: {unknown[0]}: unknown key (a rule file holds `rules` and `inhibit`)")
                continue
            rules, inhibit = data.get("rules", []), data.get("inhibit", [])
        else:
            rules, inhibit = (data if isinstance(data, list) else [data]), []
        if not isinstance(rules, list) or not isinstance(inhibit, list):
            out.problems.append(f"{f}: expected a rule table or `rules` / `inhibit` lists")
            continue
        # where a rule sits in its own file: `rules[i]`, `[i]` (a YAML list) or the whole file (one table)
        in_file = "rules" if isinstance(data, dict) and "rules" in data else "" if isinstance(data, list) else None
        out.rules += rules
        out.rule_files += [str(f)] * len(rules)
        out.rule_locs += [f"{in_file}[{i}]" if in_file is not None else "" for i in range(len(rules))]
        out.inhibit += inhibit
        out.inhibit_files += [str(f)] * len(inhibit)
        out.inhibit_locs += [f"inhibit[{i}]" for i in range(len(inhibit))]
    return out


def summary(cfg: Config) -> str:
    """The few lines `sentinel check` prints on success."""
    kinds: dict[str, int] = {}
    for r in cfg.rules:
        kinds[r.kind] = kinds.get(r.kind, 0) + 1
    rules = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) or "none"
    lines = [
        f"rules: {len(cfg.rules)} ({rules}): {', '.join(r.name for r in cfg.rules)}",
        f"receivers: {len(cfg.receivers)}: {', '.join(f'{r.name} ({r.kind})' for r in cfg.receivers)}",
        f"routes: {len(cfg.routes)}, inhibit rules: {len(cfg.inhibit)}",
        f"timezone: {cfg.timezone}, listen: {cfg.listen}, notify: {'on' if cfg.notify else 'off (dry run)'}",
    ]
    if cfg.source is not None:
        what = f"table {cfg.source.table}" if cfg.source.table else "custom query"
        lines.append(f"source: {redact_url(cfg.source.url.get())} ({what}), poll every "
                     f"{format_duration(cfg.source.poll_interval)}, lateness {format_duration(cfg.source.lateness)}")
    if cfg.state_url is not None:
        lines.append(f"state: {redact_url(cfg.state_url.get())}")
    return "\n".join(lines)


def redact_url(url: str) -> str:
    """A database or webhook URL with its password, query string and path tokens removed."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{host}" if ":" in userinfo else f"{user}@{host}"
    if parts.scheme.startswith(("http", "https")):
        return f"{parts.scheme}://{netloc}/…"
    path = parts.path
    return f"{parts.scheme}://{netloc}{path}"
