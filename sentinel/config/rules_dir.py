"""A `rules_dir`: rule files read in name order, each rule remembering the file and key it came from.

Only parsing happens here; the rules are validated with the rest of the configuration, after they are
merged into its `rules` and `inhibit` lists, so a bad rule in a file reads like one in the main file,
but named by its own file and place.
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

from sentinel.config_common import RawValue


@dataclasses.dataclass
class RuleFiles:
    """What a `rules_dir` holds: rules and inhibitions in file-name order, each with the file it came from."""

    rules: list[RawValue] = dataclasses.field(default_factory=list)
    rule_files: list[str] = dataclasses.field(default_factory=list)
    inhibit: list[RawValue] = dataclasses.field(default_factory=list)
    inhibit_files: list[str] = dataclasses.field(default_factory=list)
    rule_locs: list[str] = dataclasses.field(default_factory=list)  # the key path inside its file
    inhibit_locs: list[str] = dataclasses.field(default_factory=list)
    problems: list[str] = dataclasses.field(default_factory=list)


def load_rules_dir(directory: Path) -> RuleFiles:
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
                data: RawValue = tomllib.loads(f.read_text(encoding="utf-8"))
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
