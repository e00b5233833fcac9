"""What the full configuration (`sentinel.config`, built on pydantic) and the light reading of it for the
commands a person types (`sentinel.client_config`: `status`, `ack`, `silence`) share: the file's reading,
`${VAR}` expansion, secrets, the checks of the keys both read, and the rules of `SENTINEL_*` overrides.

Standard library only: importing pydantic and building the configuration models costs more than the
whole of `sentinel status` may take (issue 15, item 7), so these checks live here as plain functions, the
pydantic models call them as validators, and the light reader calls them directly. One definition of
each check and its message, so a bad value reads the same whichever command finds it.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import date, datetime, time
from pathlib import Path
from typing import Final, NoReturn, TypeAlias, cast, overload

ENV_PREFIX = "SENTINEL_"
# SENTINEL_* variables that are not configuration: the test suite's and the benchmarks' database addresses
# (SENTINEL_TEST_PG_HOST, ...; see tests/conftest.py). Every other SENTINEL_* variable must name a key.
NOT_CONFIG_PREFIXES = ("SENTINEL_TEST_",)
VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

DEFAULT_TIMEZONE = "Asia/Shanghai"
DEFAULT_LISTEN = "127.0.0.1:9732"
DEFAULT_LOCALE: Final = "zh_CN"
LOCALES = ("zh_CN", "en")

TOP_LEVEL_KEYS: Mapping[str, bool] = {
    "timezone": False,
    "state_url": False,
    "listen": False,
    "external_url": False,
    "rules_dir": False,
    "history_start": False,
    "notify": False,
    "fallback_receiver": False,
    "locale": False,
    "templates_dir": False,
    "holidays": False,
    "api": True,
    "state": True,
    "source": True,
    "rules": True,
    "receivers": True,
    "routes": True,
    "inhibit": True,
}
"""The top-level keys, each with whether it holds keys of its own (a table or a list). The light reader
cannot ask the pydantic model for them without importing it; a test holds this to `Config`'s fields."""

API_KEYS = ("token", "ack_secret", "ack_ttl")
"""The keys of `[api]` (held to `ApiConfig`'s fields by the same test)."""

RawValue: TypeAlias = "str | int | float | bool | date | datetime | time | list[RawValue] | dict[str, RawValue] | None"
"""A value as the file gives it before validation: what TOML, YAML (`rules_dir`) and the JSON of a
`SENTINEL_*` variable can hold. The checks below take `object` instead where a pydantic validator hands
them whatever it was given (a model's own value included) and narrow it themselves."""


class ConfigError(Exception):
    """A configuration problem, already phrased for the person who wrote the file."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def read_toml(path: Path) -> dict[str, RawValue]:
    """The file's tables, or `ConfigError` naming the file and what is wrong with it."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError([f"{path}: file not found"]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: not UTF-8 text: {exc.reason} at byte {exc.start}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: TOML syntax error: {exc}"]) from None


# --- secrets ---------------------------------------------------------------------------------------


class Secret:
    """A value that must never be printed, logged, stored or put into an exception."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    def __str__(self) -> str:
        return "********"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> NoReturn:  # pickling would write it somewhere
        raise TypeError("secrets are not picklable")


def read_secret_file(spec: str) -> str:
    """`secret-file:/path` or `secret-file:name` (relative to systemd's $CREDENTIALS_DIRECTORY)."""
    name = spec[len("secret-file:") :].strip()
    path = Path(name)
    if not path.is_absolute():
        creds = os.environ.get("CREDENTIALS_DIRECTORY")
        if not creds:
            raise ValueError(f"secret file {name!r} is relative and $CREDENTIALS_DIRECTORY is not set")
        path = Path(creds) / name
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(f"cannot read secret file {str(path)!r}: {exc.strerror or exc}") from None


def to_secret(value: object) -> Secret:
    """A secret key's value (`${VAR}` expanded, `secret-file:` read) as a `Secret`; `ValueError` saying why not."""
    if isinstance(value, Secret):
        return value
    if not isinstance(value, str):
        raise ValueError("must be a string")
    value = expand_vars(value, strict=True)
    if value.startswith("secret-file:"):
        value = read_secret_file(value)
    if not value:
        raise ValueError("is empty")
    return Secret(value)


def expand_vars(text: str, strict: bool, env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env

    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name in env:
            return env[name]
        if strict:
            raise ValueError(f"environment variable {name} is not set")
        return m.group(0)

    return VAR.sub(sub, text)


@overload
def expand_tree(
    node: dict[str, RawValue], loc: str, problems: list[str], where_of: Callable[[str], str], env: Mapping[str, str]
) -> dict[str, RawValue]: ...


@overload
def expand_tree(
    node: RawValue, loc: str, problems: list[str], where_of: Callable[[str], str], env: Mapping[str, str]
) -> RawValue: ...


def expand_tree(
    node: RawValue, loc: str, problems: list[str], where_of: Callable[[str], str], env: Mapping[str, str]
) -> RawValue:
    """Replace ${VAR} in every string, reporting unset variables by key path."""
    if isinstance(node, dict):
        return {k: expand_tree(v, f"{loc}.{k}" if loc else k, problems, where_of, env) for k, v in node.items()}
    if isinstance(node, list):
        return [expand_tree(v, f"{loc}[{i}]", problems, where_of, env) for i, v in enumerate(node)]
    if isinstance(node, str):
        missing = [m.group(1) for m in VAR.finditer(node) if m.group(1) not in env]
        for name in missing:
            problems.append(f"{where_of(loc)}: environment variable {name} is not set")
        if missing:
            return node
        return VAR.sub(lambda m: env[m.group(1)], node)
    return node


# --- the checks of single keys ---------------------------------------------------------------------


def check_zone(value: object) -> str:
    """An IANA time zone name (`timezone`, `source.timezone`)."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    if not isinstance(value, str):
        raise ValueError("must be a time zone name such as Asia/Shanghai")
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r} (use an IANA name such as Asia/Shanghai)") from None
    return value


def check_listen(value: object) -> str:
    """`listen`: HOST:PORT, the daemon's address and the one the CLI's commands call."""
    if not isinstance(value, str):
        raise ValueError("Input should be a valid string")
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not (0 <= int(port) < 65536) or not host:
        raise ValueError(f"{value!r} is not host:port")
    return value


def check_locale(value: object) -> str:
    """`locale` (and a receiver's): one the status page and the messages speak."""
    if not isinstance(value, str) or value not in LOCALES:
        raise ValueError(f"Input should be {' or '.join(map(repr, LOCALES))}")
    return value


def check_table(value: object) -> dict[str, object]:
    """A key that holds keys of its own (`[api]`), given as something else."""
    if not isinstance(value, dict):
        raise ValueError("must be a table of keys")
    return value


def did_you_mean(name: str, keys: Iterable[str]) -> str:
    """`; did you mean 'table'?` for an unknown key spelled like known ones, or ""."""
    import difflib

    close = difflib.get_close_matches(name, sorted(set(keys)), n=3, cutoff=0.75)
    return f"; did you mean {' or '.join(map(repr, close))}?" if close else ""


# --- SENTINEL_* overrides --------------------------------------------------------------------------


def env_for(loc: str, env: Mapping[str, str]) -> str | None:
    """The variable that set the key at `loc` (or the table holding it), for "(set by VAR)"."""
    parts = [p for p in re.split(r"[.\[\]]+", loc) if p]
    for n in range(len(parts), 0, -1):
        name = ENV_PREFIX + "__".join(parts[:n]).upper()
        for k in env:
            if k.upper() == name:
                return k
    if len(parts) == 1:  # SENTINEL_RULES__X makes the list `rules` a table: the error is at `rules`, the variable below
        deeper = ENV_PREFIX + parts[0].upper() + "__"
        for k in sorted(env):
            if k.upper().startswith(deeper):
                return k
    return None


def config_vars(env: Mapping[str, str]) -> Iterator[tuple[str, list[str]]]:
    """(variable, key path in lower case) for each `SENTINEL_*` variable meant as configuration."""
    for name in sorted(env):
        upper = name.upper()
        if upper.startswith(ENV_PREFIX) and not upper.startswith(NOT_CONFIG_PREFIXES):
            yield name, name[len(ENV_PREFIX) :].lower().split("__")


def env_problems(path: Path, env: Mapping[str, str], fields: Mapping[str, bool]) -> list[str]:
    """`FILE: KEY: REASON (set by VAR)` for each `SENTINEL_*` variable that overrides nothing, or that sets a
    table or list as text that is not JSON. `fields`: the top-level keys, with whether each holds keys.

    pydantic-settings reads only the variables named after a top-level key, so `SENTINEL_BOGUS` and
    `SENTINEL_TIMEZONE__X` would be ignored without a word, while a typo below a table
    (`SENTINEL_SOURCE__BOGUS`) is an unknown key: both kinds are reported here the same way. And it
    reads `SENTINEL_API` as JSON, raising an exception of its own on anything else.
    """
    problems = []
    values = {tuple(parts): name for name, parts in config_vars(env)}  # key path -> the variable setting it
    for name, parts in config_vars(env):
        key = ".".join(parts)
        # `SENTINEL_API__TOKEN` beside `SENTINEL_API__TOKEN__X`: one sets a single value, the other a key in it
        inside = next((values[tuple(parts[:k])] for k in range(2, len(parts)) if tuple(parts[:k]) in values), None)
        if parts[0] not in fields:
            reason = "unknown key"
        elif len(parts) > 1 and not fields[parts[0]]:
            reason = f"unknown key: {parts[0]} is a single value, set as {ENV_PREFIX}{parts[0].upper()}"
        elif inside is not None:
            reason = f"unknown key: {'.'.join(parts[:-1])} is a single value, set by {inside}"
        elif len(parts) == 1 and fields[parts[0]] and (why := _not_json(env[name])) is not None:
            reason = (
                f"not JSON ({why}); set a table or list as JSON, or its keys one by one as "
                f"{ENV_PREFIX}{parts[0].upper()}__KEY"
            )
        else:
            continue
        problems.append(f"{path}: {key or '(top level)'}: {reason} (set by {name})")
    return problems


def _not_json(text: str) -> str | None:
    try:
        json.loads(text)
    except ValueError as exc:
        return exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
    return None


def env_values(env: Mapping[str, str], keys: Iterable[str]) -> dict[str, RawValue]:
    """The values the `SENTINEL_*` variables give the top-level `keys`, as pydantic-settings reads them:
    `SENTINEL_KEY` as the value (JSON for a table), `SENTINEL_KEY__SUB` as a key of the table. Call after
    `env_problems` found none (it rejects a table's value that is not JSON)."""
    wanted = set(keys)
    out: dict[str, RawValue] = {}
    nested: dict[str, dict[str, RawValue]] = {}
    for name, parts in config_vars(env):
        if parts[0] not in wanted:
            continue
        if len(parts) == 1:
            out[parts[0]] = json.loads(env[name]) if TOP_LEVEL_KEYS.get(parts[0]) else env[name]
        else:
            table = nested.setdefault(parts[0], {})
            for part in parts[1:-1]:
                # a key on the way set as text (`SENTINEL_API__TOKEN` beside `SENTINEL_API__TOKEN__X`) is a
                # problem `env_problems` reports, so every key on the way here is a table
                table = cast("dict[str, RawValue]", table.setdefault(part, {}))
            table[parts[-1]] = env[name]
    for key, table in nested.items():
        if key not in out:
            out[key] = table
        elif isinstance(given := out[key], dict):
            out[key] = deep_update(given, table)
        # else `SENTINEL_KEY` set the table to something else, which stands (and is reported as such)
    return out


def deep_update(base: Mapping[str, RawValue], *updates: Mapping[str, RawValue]) -> dict[str, RawValue]:
    """`base` with each of `updates` merged in, table into table (pydantic-settings' merging of the
    environment over the file)."""
    out = dict(base)
    for update in updates:
        for k, v in update.items():
            old = out.get(k)
            out[k] = deep_update(old, v) if isinstance(old, dict) and isinstance(v, dict) else v
    return out
