"""Loading: the file read, `rules_dir` merged in, `${VAR}` expanded, the `SENTINEL_*` overrides checked,
the models built and cross-checked, and every problem turned into a `FILE: KEY: REASON` line.

Loading never prints a secret: `${VAR}` and `secret-file:` values become `Secret` objects whose `repr`
and `str` are masked, and validation errors name the file, the key path and the reason, never the
value of a secret. `load_config` raises `ConfigError` (the CLI turns it into exit status 2) with every
problem it found, not only the first.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, get_args, get_origin

from pydantic import BaseModel, ValidationError

from sentinel.config.rules_dir import load_rules_dir
from sentinel.config.settings import Config
from sentinel.config_common import (
    ENV_PREFIX,
    VAR,
    ConfigError,
    RawValue,
    did_you_mean,
    env_for,
    env_problems,
    expand_tree,
    read_toml,
)

Check = Callable[[Config], Iterable[tuple[str, str]]]
"""A check that a layer above this module adds (`sentinel.loader`): (key path, problem) for each problem it
finds in a configuration that parsed, reported with the file's own problems."""


def load_config(
    path: str | Path,
    environ: Mapping[str, str] | None = None,
    *,
    receiver_secrets: bool = True,
    checks: Sequence[Check] = (),
) -> Config:
    """Read, expand, validate and cross-check a configuration file (and run `checks` on it).

    `receiver_secrets=False` is for the commands that never send (`status`, `ack`, `silence`, `backtest`, `db`):
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
        if isinstance(given := raw.get(key), str):
            raw[key] = str((base / given).resolve()) if not Path(given).is_absolute() else given
    # SENTINEL_RULES_DIR wins over the file like every override, so it is the folder whose rules are read
    # (relative to the working directory: a variable has no file to be relative to)
    from_env = next((v for k, v in env.items() if k.upper() == f"{ENV_PREFIX}RULES_DIR"), None)
    if from_env is not None:
        raw["rules_dir"] = str(Path(from_env).resolve())
    rules_dir = raw.get("rules_dir")
    if isinstance(rules_dir, str):
        loaded = load_rules_dir(Path(rules_dir))
        problems += loaded.problems
        for section, items, files, locs in (
            ("rules", loaded.rules, loaded.rule_files, loaded.rule_locs),
            ("inhibit", loaded.inhibit, loaded.inhibit_files, loaded.inhibit_locs),
        ):
            inline = raw.get(section, [])
            if items and isinstance(inline, list):
                origins.update(
                    {
                        f"{section}[{len(inline) + i}]": (f, loc)
                        for i, (f, loc) in enumerate(zip(files, locs, strict=True))
                    }
                )
                raw[section] = [*inline, *items]

    def where_of(loc: str) -> str:
        """`FILE: KEY` for a key path of the merged configuration: a rule from `rules_dir` is named by
        its own file and its place there, not by its index in the merged list."""
        m = re.match(r"(rules|inhibit)\[\d+\]", loc)
        if m is None or m.group(0) not in origins:
            return f"{path}: {loc or '(top level)'}"
        file, local = origins[m.group(0)]
        rest = loc[m.end() :]
        return f"{file}: {(local + rest) if local else rest.lstrip('.') or '(the rule)'}"

    unread: list[str] = []
    if not receiver_secrets and isinstance(raw.get("receivers"), list):
        raw["receivers"] = _defer_secrets(raw["receivers"], "receivers", env, unread)
    raw = expand_tree(raw, "", problems, where_of, env)
    problems += env_problems(path, env, config_fields())
    if problems:
        raise ConfigError(problems)
    # `Config`'s signature also holds pydantic-settings' own `_`-prefixed arguments, which a table's keys
    # are not: the file's values go in untyped, and the models judge them
    values: dict[str, Any] = raw
    try:
        cfg = Config(**values)
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


def _defer_secrets(node: RawValue, loc: str, env: Mapping[str, str], unread: list[str]) -> RawValue:
    """`node` (under `receivers`) with each value that needs an unset variable or a secret file replaced by
    a placeholder; `unread` collects their key paths."""
    if isinstance(node, dict):
        return {k: _defer_secrets(v, f"{loc}.{k}", env, unread) for k, v in node.items()}
    if isinstance(node, list):
        return [_defer_secrets(v, f"{loc}[{i}]", env, unread) for i, v in enumerate(node)]
    if isinstance(node, str) and (
        node.strip().startswith("secret-file:") or any(m.group(1) not in env for m in VAR.finditer(node))
    ):
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
    return did_you_mean(
        str(loc[-1]), {k for m in models for name, f in m.model_fields.items() for k in (name, f.alias) if k}
    )


def _models_in(annotation: object) -> list[type[BaseModel]]:
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


def _takes_sub_keys(annotation: object) -> bool:
    """A table or a list: pydantic-settings passes `SENTINEL_A__B` on to it, and its model judges `b`."""
    if get_origin(annotation) is list or (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
        return True
    return any(_takes_sub_keys(a) for a in get_args(annotation) if a is not type(None))
