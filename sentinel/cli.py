"""The `sentinel` command line. Each subcommand is a thin shell around one module.

Exit statuses: 0 success, 1 runtime failure, 2 bad configuration or usage.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from sentinel import __version__
from sentinel.config import Config, ConfigError, load_config, summary

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2


def _load(path: str) -> Config:
    try:
        return load_config(path)
    except ConfigError as exc:
        for line in exc.problems:
            print(f"error: {line}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


def cmd_check(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    print(f"{args.config}: OK")
    print(summary(cfg))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sentinel", description="Early-warning alerting for complaint streams.")
    p.add_argument("--version", action="version", version=f"sentinel {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    c = sub.add_parser("check", help="validate a configuration file (connects to nothing)")
    c.add_argument("--config", required=True, metavar="FILE")
    c.set_defaults(func=cmd_check)

    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rc: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    return rc


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
