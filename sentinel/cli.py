"""The `sentinel` command line. Each subcommand is a thin shell around one module.

Exit statuses: 0 success, 1 runtime failure, 2 bad configuration or usage.
"""

from __future__ import annotations

import argparse
import codecs
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


def cmd_backtest(args: argparse.Namespace) -> int:
    from sentinel import backtest
    from sentinel.sources.files import InputError

    cfg = _load(args.config)
    try:
        codecs.lookup(args.encoding)
    except LookupError:
        print(f"error: --encoding: unknown encoding {args.encoding!r}", file=sys.stderr)
        return EXIT_CONFIG
    if not cfg.rules:
        print(f"error: {args.config}: rules: no rules to replay", file=sys.stderr)
        return EXIT_CONFIG
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout  # noqa: SIM115
    size = 0
    try:
        import os

        size = os.path.getsize(args.input)
    except OSError:
        pass
    bar, update = backtest.progress_bar(size)
    try:
        result = backtest.run(cfg, args.input, out, encoding=args.encoding, progress=update,
                              keep_daily=bool(args.plot))
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    finally:
        if bar is not None:
            bar.stop()
        if args.output:
            out.close()
    backtest.print_summary(result, cfg, sys.stdout if args.output else sys.stderr)
    if args.plot:
        from sentinel.plot import plot_backtest

        try:
            n = plot_backtest(result, cfg, args.plot)
        except ImportError:
            print("error: --plot needs matplotlib: pip install 'sentinel-cs[plot]'", file=sys.stderr)
            return EXIT_FAILURE
        print(f"plot: {args.plot} ({n} series)", file=sys.stdout if args.output else sys.stderr)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sentinel", description="Early-warning alerting for complaint streams.")
    p.add_argument("--version", action="version", version=f"sentinel {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    c = sub.add_parser("check", help="validate a configuration file (connects to nothing)")
    c.add_argument("--config", required=True, metavar="FILE")
    c.set_defaults(func=cmd_check)

    b = sub.add_parser("backtest", help="replay a CSV/JSONL file through the rules, event time as clock")
    b.add_argument("--config", required=True, metavar="FILE")
    b.add_argument("--input", required=True, metavar="FILE", help="id,created_at,type,channel[,customer]; .gz ok")
    b.add_argument("--output", metavar="FILE", help="JSON lines, one per event (default: stdout)")
    b.add_argument("--plot", metavar="FILE.png", help="chart each alerted series (needs matplotlib)")
    b.add_argument("--encoding", default="utf-8", help="input text encoding (default utf-8)")
    b.set_defaults(func=cmd_backtest)

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
