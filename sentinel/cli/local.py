"""The commands that work on the configuration file, its sources and receivers themselves, without a running
daemon: `check`, `backtest`, `run` (the daemon itself), `notify-test`, `demo` and `bench`.

Each is a thin shell around one module and imports it when it runs, so `--help` and the other commands do
not pay for it. Exit statuses as `sentinel.cli.common` says; `run` may also return the daemon's own.
"""

from __future__ import annotations

import argparse
import codecs
import sys

from sentinel.cli.common import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, load_or_exit


def cmd_check(args: argparse.Namespace) -> int:
    from sentinel.config import summary

    cfg = load_or_exit(args.config)
    print(f"{args.config}: OK")
    print(summary(cfg))
    return EXIT_OK


def cmd_backtest(args: argparse.Namespace) -> int:
    from sentinel import backtest
    from sentinel.sources.files import InputError

    cfg = load_or_exit(args.config, receiver_secrets=False)
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
        result = backtest.run(cfg, args.input, out, encoding=args.encoding, progress=update, keep_daily=bool(args.plot))
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


def cmd_run(args: argparse.Namespace) -> int:
    from sentinel.daemon import EXIT_LOCK_TAKEN
    from sentinel.http import ListenError
    from sentinel.logs import setup_logging
    from sentinel.service import build
    from sentinel.sources.sql_connect import missing_sqlite_file
    from sentinel.store import StoreError, StoreLocked, StoreUnreachable

    cfg = load_or_exit(args.config)
    problems = []
    if cfg.source is None:
        problems.append(f"{args.config}: source: a [source] section is required to run")
    elif (missing := missing_sqlite_file(cfg.source.url.get())) is not None:
        problems.append(f"{args.config}: source.url: {missing}")  # a path typo, not an outage to wait out
    if cfg.state_url is None:
        problems.append(f"{args.config}: state_url: required to run (e.g. sqlite:////var/lib/sentinel/state.db)")
    if problems:
        for p in problems:
            print(f"error: {p}", file=sys.stderr)
        return EXIT_CONFIG
    setup_logging(args.log_level)
    try:
        daemon = build(cfg, config_path=args.config, dry_run=args.dry_run)
        with daemon.store.diagnosing():  # a damaged SQLite file is found by whatever reads it first
            code = daemon.run_forever()
    except StoreLocked as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_LOCK_TAKEN
    except StoreUnreachable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except (StoreError, ListenError) as exc:
        print(f"error: {args.config}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    return code


def cmd_bench(args: argparse.Namespace) -> int:
    import importlib

    from sentinel.bench import BENCHES
    from sentinel.bench.common import BenchError

    name = args.bench or "engine"
    module = importlib.import_module(BENCHES[name][0])
    try:
        return int(module.run(args))
    except BenchError as exc:  # says what failed, with the child's own output
        print(f"error: bench {name}: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def cmd_demo(args: argparse.Namespace) -> int:
    from sentinel.demo import run_demo

    return run_demo(args.duration, keep=args.keep, listen=args.listen, sink_listen=args.sink_listen)


def cmd_notify_test(args: argparse.Namespace) -> int:
    from sentinel.notify.sample import send_test

    cfg = load_or_exit(args.config)
    try:
        receiver = cfg.receiver(args.receiver)
    except KeyError:
        names = ", ".join(r.name for r in cfg.receivers) or "none configured"
        print(f"error: {args.config}: receivers: no receiver named {args.receiver!r} ({names})", file=sys.stderr)
        return EXIT_CONFIG
    ok = True
    for index, line in send_test(cfg, receiver):
        print(f"{receiver.name} url #{index + 1}: {line}")
        ok = ok and line.startswith("delivered")
    return EXIT_OK if ok else EXIT_FAILURE
