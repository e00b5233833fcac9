"""What every `sentinel` command shares: the exit statuses, and reading the configuration or exiting 2 with
its problems, one `error:` line each, as `sentinel check` prints them.

Exit statuses: 0 success, 1 runtime failure, 2 bad configuration or usage (130 on Ctrl-C, from `main`).
Nothing heavy at the top: `--help` loads no pydantic, no numpy.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # each command imports what it needs when it runs
    from sentinel.client_config import ClientConfig
    from sentinel.config import Config

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2


def load_or_exit(path: str, *, receiver_secrets: bool = True) -> Config:
    """The configuration, or exit 2 with its problems. Commands that never send pass
    `receiver_secrets=False`, so an unset `${VAR}` of a chat robot does not stop them."""
    from sentinel.loader import ConfigError, load

    try:
        return load(path, receiver_secrets=receiver_secrets)
    except ConfigError as exc:
        for line in exc.problems:
            print(f"error: {line}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


def load_client_or_exit(path: str) -> ClientConfig:
    """What `status`, `ack` and `silence` need (the API's address and token, the person's language and
    time zone), read without the full configuration's pydantic models, or exit 2 as `load_or_exit` does with
    the same lines for those keys. The daemon, `check` and `run` judge the rest of the file."""
    from sentinel.client_config import load_client_config
    from sentinel.config_common import ConfigError

    try:
        return load_client_config(path)
    except ConfigError as exc:
        for line in exc.problems:
            print(f"error: {line}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None
