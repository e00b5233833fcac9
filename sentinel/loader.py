"""Loading the configuration as the daemon and the commands take it.

`sentinel.config` parses, validates and cross-checks the file on its own; what it cannot judge without
knowing the chat tools (the templates a receiver renders with) is checked here by `sentinel.notify`, and
reported with the file's other problems, `FILE: KEY: REASON`. Only this module sits above both, so the
configuration never imports the notifiers that import it.

The commands that never send (`receiver_secrets=False`: `status`, `ack`, `silence`, `backtest`) skip those
checks as they skip the receivers' secrets: they build no receiver and render no template, and they start
without importing the chat tools.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from sentinel.config import Config, ConfigError, load_config

__all__ = ["ConfigError", "load"]


def load(path: str | Path, environ: Mapping[str, str] | None = None, *, receiver_secrets: bool = True) -> Config:
    """The configuration at `path`, or `ConfigError` with every problem found (see `load_config`)."""
    if not receiver_secrets:
        return load_config(path, environ, receiver_secrets=False)
    from sentinel.notify.checks import config_problems  # the chat tools, only for the commands that use them

    return load_config(path, environ, checks=(config_problems,))
