"""Configuration: the TOML file of the design, typed, validated and overridable from the environment.

This is the face of the package: every name the rest of Sentinel (and a test) uses is imported from
`sentinel.config`, never from the module that defines it, so the modules below can be rearranged
without touching their callers. `load_config` raises `ConfigError` whose lines read `FILE: KEY: REASON`
(the CLI turns it into exit status 2); no secret is ever part of a message.

- `values`: the value types (durations, rates, windows, zones, locales, secrets) and the base model;
- `source`: `[source]` and `[state]`;
- `rules`: the rule kinds of `[[rules]]`;
- `routing`: `[[receivers]]`, `[[routes]]` and `[[inhibit]]`;
- `settings`: `Config`, the whole file, its `SENTINEL_*` overrides and the checks across sections;
- `rules_dir`: the rule files of a `rules_dir`;
- `loading`: `load_config`, the file to a `Config` or to its problems;
- `summary`: what `sentinel check` prints.

What the light reader of `status`, `ack` and `silence` shares with these models (the file's reading,
`${VAR}`, secrets, the checks of single keys, `ConfigError`) lives in `sentinel.config_common`, outside
this package: importing anything in here imports pydantic, which those commands must not wait for.
"""

from sentinel.config.loading import UNREAD_URL, Check, config_fields, load_config
from sentinel.config.receivers import (
    InhibitConfig,
    MatchValue,
    Mention,
    Mentions,
    ReceiverConfig,
    ReceiverKind,
    RouteConfig,
)
from sentinel.config.rules import (
    Field_,
    Filter,
    QuietRuleConfig,
    RuleConfig,
    StreakRuleConfig,
    StreakTiers,
    ThresholdRuleConfig,
    ThresholdTiers,
)
from sentinel.config.rules_dir import RuleFiles
from sentinel.config.settings import ApiConfig, Config
from sentinel.config.source import Columns, SourceConfig, StateConfig
from sentinel.config.summary import redact_url, summary
from sentinel.config.values import (
    Duration,
    Gap,
    Locale,
    Model,
    RateValue,
    SecretValue,
    Window,
    Zone,
    exact,
)
from sentinel.config_common import ConfigError, Secret

__all__ = [
    "UNREAD_URL",
    "ApiConfig",
    "Check",
    "Columns",
    "Config",
    "ConfigError",
    "Duration",
    "Field_",
    "Filter",
    "Gap",
    "InhibitConfig",
    "Locale",
    "MatchValue",
    "Mention",
    "Mentions",
    "Model",
    "QuietRuleConfig",
    "RateValue",
    "ReceiverConfig",
    "ReceiverKind",
    "RouteConfig",
    "RuleConfig",
    "RuleFiles",
    "Secret",
    "SecretValue",
    "SourceConfig",
    "StateConfig",
    "StreakRuleConfig",
    "StreakTiers",
    "ThresholdRuleConfig",
    "ThresholdTiers",
    "Window",
    "Zone",
    "config_fields",
    "exact",
    "load_config",
    "redact_url",
    "summary",
]
