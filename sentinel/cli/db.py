"""`sentinel db`: the state store's migrations (`upgrade`) and the PostgreSQL source's NOTIFY trigger
(`notify-trigger`, printed or with `--apply` installed), both judged against the configuration file.

Exit statuses as `sentinel.cli.common` says: a store or source the configuration gets wrong is 2, a
database that fails while the trigger is looked up or installed is 1.
"""

from __future__ import annotations

import argparse
import sys

from sentinel.cli.common import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, load_or_exit


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from sentinel.store import StoreError, open_store

    cfg = load_or_exit(args.config, receiver_secrets=False)  # a DBA runs it: the chat robots are not its business
    if cfg.state_url is None:
        print(f"error: {args.config}: state_url: not set", file=sys.stderr)
        return EXIT_CONFIG
    try:
        store = open_store(cfg.state_url.get(), upgrade=False)
    except StoreError as exc:
        print(f"error: {args.config}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        before, after = store.upgrade()
    except StoreError as exc:
        print(f"error: {args.config}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    finally:
        store.close()
    print(f"state store {store.description}: {before or 'empty'} -> {after}")
    return EXIT_OK


def cmd_db_notify_trigger(args: argparse.Namespace) -> int:
    """Print (or install) the trigger that makes inserts wake the daemon; see docs/sources.md."""
    from sqlalchemy.engine import make_url

    cfg = load_or_exit(args.config, receiver_secrets=False)  # a DBA runs it: the chat robots are not its business
    src = cfg.source
    if src is None:
        print(f"error: {args.config}: source: no [source] section to put a trigger on", file=sys.stderr)
        return EXIT_CONFIG
    backend = make_url(src.url.get()).get_backend_name()
    if backend != "postgresql":
        print(
            f"error: {args.config}: source.url: LISTEN/NOTIFY needs a PostgreSQL source, this one is {backend}; "
            "the daemon wakes by poll_interval alone",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    if src.table is None:
        print(
            f"error: {args.config}: source.query: a query source names no table to put the trigger on; set "
            "source.table, or install your own trigger calling pg_notify('<channel>', '') and set "
            "source.notify_channel",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    import psycopg

    from sentinel.sources.pg_notify import (
        ListenSetupError,
        Target,
        channel_for,
        install_trigger,
        resolve_table,
        trigger_script,
    )

    channel = channel_for(src.table, src.notify_channel)
    assert channel is not None
    target = Target.from_url(src.url.get(), "sentinel-notify-trigger")
    try:
        with target.connect() as conn:
            ref = resolve_table(conn, src.table)  # the stored name, exactly quoted
            print(trigger_script(ref, channel), end="")
            if args.apply:
                install_trigger(conn, ref, channel)
                print(f"installed: INSERT statements on {ref} now notify {channel!r}", file=sys.stderr)
    except ListenSetupError as exc:
        print(f"error: {args.config}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except psycopg.Error as exc:
        doing = "installing the trigger" if args.apply else "looking up the table"
        print(f"error: {args.config}: source.url: {doing} failed: {target.explain(exc)}", file=sys.stderr)
        return EXIT_FAILURE
    if not src.listen_notify:
        print(f"note: {args.config}: source.listen_notify is false, so the daemon does not LISTEN", file=sys.stderr)
    return EXIT_OK
