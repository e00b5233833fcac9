"""The few keys `sentinel status`, `ack` and `silence` read, read without pydantic.

These commands are typed by a person on call waiting for the answer. The full configuration
(`sentinel.config`) costs ~150 ms of imports and model building before it reads a line, more than the
whole command may take, and checks sources, rules and receivers these commands never use. So they read
`timezone`, `listen`, `locale` and `api.token` here, with the `SENTINEL_*` overrides, checked by the very
functions the full configuration's validators call (`sentinel.config_common`), in the same order and
with the same `FILE: KEY: REASON` lines. The rest of the file is left to `sentinel check` and the
daemon: a mistake in a rule does not stop anyone acknowledging an alert, nor does a chat robot's secret
or the database's password that the person on call does not hold.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from sentinel.config_common import (
    API_KEYS,
    DEFAULT_LISTEN,
    DEFAULT_LOCALE,
    DEFAULT_TIMEZONE,
    TOP_LEVEL_KEYS,
    ConfigError,
    RawValue,
    Secret,
    check_listen,
    check_locale,
    check_table,
    check_zone,
    deep_update,
    did_you_mean,
    env_for,
    env_problems,
    env_values,
    expand_tree,
    read_toml,
    to_secret,
)

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

READ = ("timezone", "listen", "locale", "api")
"""The top-level keys read here, in the order the full configuration's model checks them."""


@dataclasses.dataclass(frozen=True)
class ClientConfig:
    """Where the daemon's API is and how to speak to the person: what an API client needs."""

    timezone: str = DEFAULT_TIMEZONE
    listen: str = DEFAULT_LISTEN
    locale: str = DEFAULT_LOCALE
    token: Secret | None = None

    @property
    def tz(self) -> ZoneInfo:
        from zoneinfo import ZoneInfo

        return ZoneInfo(self.timezone)


def load_client_config(path: str | Path, environ: Mapping[str, str] | None = None) -> ClientConfig:
    """`timezone`, `listen`, `locale` and `api.token` of a configuration file, as `load_config` would have
    them (the environment over the file), or `ConfigError` with the lines `load_config` gives for them."""
    path = Path(path)
    env = os.environ if environ is None else environ
    raw = read_toml(path)

    def where_of(loc: str) -> str:
        return f"{path}: {loc or '(top level)'}"

    problems: list[str] = []
    picked: dict[str, RawValue] = {k: raw[k] for k in READ if k in raw}
    api_table = picked.get("api")
    if isinstance(api_table, dict):  # the token (and any typo): the daemon's ack secret is not the caller's
        picked["api"] = {k: v for k, v in api_table.items() if k == "token" or k not in API_KEYS}
    picked = expand_tree(picked, "", problems, where_of, env)
    problems += env_problems(path, env, TOP_LEVEL_KEYS)
    if problems:
        raise ConfigError(problems)
    merged = deep_update(picked, env_values(env, READ))

    def problem(loc: str, exc: ValueError) -> None:
        envvar = env_for(loc, env)
        problems.append(f"{where_of(loc)}: {exc}" + (f" (set by {envvar})" if envvar else ""))

    values: dict[str, str] = {}  # timezone, listen, locale
    token: Secret | None = None
    for key, check in (("timezone", check_zone), ("listen", check_listen), ("locale", check_locale)):
        if key in merged:
            try:
                values[key] = check(merged[key])
            except ValueError as exc:
                problem(key, exc)
    if "api" in merged:
        try:
            api = check_table(merged["api"])
        except ValueError as exc:
            problem("api", exc)
        else:
            if "token" in api:
                try:
                    token = to_secret(api["token"])
                except ValueError as exc:
                    problem("api.token", exc)
            for k in api:
                if k not in API_KEYS:
                    problem(f"api.{k}", ValueError("unknown key" + did_you_mean(k, API_KEYS)))
    for k in raw:
        if k not in TOP_LEVEL_KEYS:
            problem(k, ValueError("unknown key" + did_you_mean(k, TOP_LEVEL_KEYS)))
    if problems:
        raise ConfigError(problems)
    return ClientConfig(
        values.get("timezone", DEFAULT_TIMEZONE),
        values.get("listen", DEFAULT_LISTEN),
        values.get("locale", DEFAULT_LOCALE),
        token,
    )
