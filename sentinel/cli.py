"""The `sentinel` command line. Each subcommand is a thin shell around one module.

Exit statuses: 0 success, 1 runtime failure, 2 bad configuration or usage.
"""

from __future__ import annotations

import argparse
import codecs
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sentinel import __version__

if TYPE_CHECKING:  # each command imports what it needs when it runs: `--help` loads no pydantic, no numpy
    from sentinel.client_config import ClientConfig
    from sentinel.config import Config

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2


def _load(path: str, *, receiver_secrets: bool = True) -> Config:
    """The configuration, or exit 2 with its problems. Commands that never send pass
    `receiver_secrets=False`, so an unset `${VAR}` of a chat robot does not stop them."""
    from sentinel.loader import ConfigError, load

    try:
        return load(path, receiver_secrets=receiver_secrets)
    except ConfigError as exc:
        for line in exc.problems:
            print(f"error: {line}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


def _load_client(path: str) -> ClientConfig:
    """What `status`, `ack` and `silence` need (the API's address and token, the person's language and
    time zone), read without the full configuration's pydantic models, or exit 2 as `_load` does with
    the same lines for those keys. The daemon, `check` and `run` judge the rest of the file."""
    from sentinel.client_config import load_client_config
    from sentinel.config_common import ConfigError

    try:
        return load_client_config(path)
    except ConfigError as exc:
        for line in exc.problems:
            print(f"error: {line}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


def cmd_check(args: argparse.Namespace) -> int:
    from sentinel.config import summary

    cfg = _load(args.config)
    print(f"{args.config}: OK")
    print(summary(cfg))
    return EXIT_OK


def cmd_backtest(args: argparse.Namespace) -> int:
    from sentinel import backtest
    from sentinel.sources.files import InputError

    cfg = _load(args.config, receiver_secrets=False)
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


def cmd_run(args: argparse.Namespace) -> int:
    from sentinel.daemon import EXIT_LOCK_TAKEN
    from sentinel.http import ListenError
    from sentinel.logs import setup_logging
    from sentinel.service import build
    from sentinel.sources.sql_connect import missing_sqlite_file
    from sentinel.store import StoreError, StoreLocked, StoreUnreachable

    cfg = _load(args.config)
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


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from sentinel.store import StoreError, open_store

    cfg = _load(args.config)
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

    cfg = _load(args.config)
    src = cfg.source
    if src is None:
        print(f"error: {args.config}: source: no [source] section to put a trigger on", file=sys.stderr)
        return EXIT_CONFIG
    backend = make_url(src.url.get()).get_backend_name()
    if backend != "postgresql":
        print(f"error: {args.config}: source.url: LISTEN/NOTIFY needs a PostgreSQL source, this one is {backend}; "
              "the daemon wakes by poll_interval alone", file=sys.stderr)
        return EXIT_CONFIG
    if src.table is None:
        print(f"error: {args.config}: source.query: a query source names no table to put the trigger on; set "
              "source.table, or install your own trigger calling pg_notify('<channel>', '') and set "
              "source.notify_channel", file=sys.stderr)
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
        print(f"note: {args.config}: source.listen_notify is false, so the daemon does not LISTEN",
              file=sys.stderr)
    return EXIT_OK


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


def _bench_arguments(module_name: str, parser: argparse.ArgumentParser) -> None:
    import importlib

    importlib.import_module(module_name).add_arguments(parser)


def cmd_demo(args: argparse.Namespace) -> int:
    from sentinel.demo import run_demo

    return run_demo(args.duration, keep=args.keep, listen=args.listen, sink_listen=args.sink_listen)


def _host_port(value: str) -> str:
    """`HOST:PORT` (`[::1]:PORT` for IPv6), as the configuration's `listen`; argparse reports a bad one."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{value!r} is not HOST:PORT (e.g. 127.0.0.1:9732 or 0.0.0.0:9732)")
    return value


def cmd_status(args: argparse.Namespace) -> int:
    """The daemon's state in the configured `locale`, times in the configured `timezone`."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from sentinel.client import ApiError, call
    from sentinel.web.catalogue import Text

    cfg = _load_client(args.config)
    try:
        data = call(cfg, "GET", "/api/v1/status")
    except ApiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    if args.json:
        import json

        print(json.dumps(data, ensure_ascii=False, indent=2))
        return EXIT_OK
    t = Text(cfg.locale)
    console = Console(highlight=False)
    src = data["source"]
    if src["up"] is None:
        state = t("standby_source")
    else:
        state = t("up") if src["up"] else f"{t('down')}{t('colon')}{src['last_error']}"
    console.print(escape(t("cli.head", version=data["version"], dry=t("cli.dry") if data["dry_run"] else "",
                           source=src["description"], state=state, newest=local_time(src["newest_record"], cfg),
                           lag=src["lag_seconds"])))
    delay_warning = (src.get("commit_delay") or {}).get("warning")
    if delay_warning:
        console.print(f"[bold yellow]{escape(t('cli.warning'))}[/] {escape(delay_warning)}")
    console.print(escape(leadership_line(data.get("leadership") or {}, t)))
    lock = data.get("lock") or {}
    if lock.get("error"):
        console.print(f"[bold red]{escape(t('cli.lock_lost'))}[/] {escape(lock['error'])}")
    elif lock.get("losses"):
        last = lock.get("last_loss") or {}
        console.print(escape(t("cli.lock_losses", losses=lock["losses"], at=local_time(last.get("at"), cfg),
                               reason=last.get("reason"), after=last.get("retaken_after_s"))))
    console.print(escape(t("cli.open", open=data["alerts"]["open"] or t("none"), pending=data["outbox"]["pending"])))
    table = Table(title=f"{t('cli.receivers')} ({t('cli.times', tz=cfg.timezone)})")
    for col in ("name", "kind", "state", "fails", "pending_oldest", "next", "delivered"):
        table.add_column(t("col." + col), no_wrap=col in ("name", "state", "delivered"))
    errors = []
    for r in data["receivers"]:
        row, error = receiver_lines(r, data["now"], t, cfg)
        table.add_row(*row)
        if error is not None:
            errors.append(error)
    console.print(table)
    for line in errors:
        console.print(line)
    if data["failed"]:
        failed = Table(title=t("cli.failed"))
        for col in ("id", "receiver", "created", "error"):
            failed.add_column(t("col." + col))
        for f in data["failed"]:
            failed.add_row(str(f["id"]), escape(f["receiver"]), local_time(f["created"], cfg),
                           escape(f["error"] or ""))
        console.print(failed)
    return EXIT_OK


def leadership_line(lead: dict[str, Any], t: Any) -> str:
    """Who leads, as `sentinel status` says it: this instance or which other one, its epoch and lease age."""
    me, leader = lead.get("instance", "?"), lead.get("leader")
    if lead.get("kind") == "file":
        return str(t("cli.single", me=me))
    if leader is None:
        return str(t("cli.standby_none", me=me))
    key = "cli.leader" if lead.get("role") == "leader" else "cli.standby"
    return str(t(key, me=me, leader=leader["instance"], epoch=leader["epoch"], age=leader["lease_age_seconds"],
                 ttl=f"{leader['lease_ttl_seconds']:g}"))


STATE_STYLE = {"ok": "green", "retrying": "yellow", "failing": "bold red", "set_aside": "red"}


def local_time(iso: str | None, cfg: ClientConfig, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    """An API timestamp (ISO 8601 with its offset) in the configured timezone."""
    from datetime import datetime

    return "-" if iso is None else datetime.fromisoformat(iso).astimezone(cfg.tz).strftime(fmt)


def receiver_lines(r: dict[str, Any], now: str, t: Any = None, cfg: ClientConfig | None = None
                   ) -> tuple[list[str], str | None]:
    """One receiver of `/api/v1/status` as a row of `sentinel status` and its last error as a line below
    the table (an error is too long for a column on an 80-column terminal). The state comes first, so a
    webhook that refuses connections reads "failing … connection refused", never its last success.
    Words from `t` (a `sentinel.web.catalogue.Text`, English without one), times in `cfg`'s timezone."""
    from datetime import datetime, timedelta

    from rich.markup import escape

    from sentinel.units import format_duration
    from sentinel.web.catalogue import Text

    t = t or Text("en")

    def when(iso: str | None) -> str:
        if iso is None:
            return "-"
        return local_time(iso, cfg, "%m-%d %H:%M:%S") if cfg is not None else \
            datetime.fromisoformat(iso).strftime("%m-%d %H:%M:%S")

    def seconds(value: float) -> str:
        return format_duration(timedelta(seconds=int(value)))

    state = str(r.get("state", "-"))
    words = escape(t.get("state." + state, state))
    styled = f"[{STATE_STYLE[state]}]{words}[/]" if state in STATE_STYLE else words
    age = r.get("oldest_pending_age_seconds")
    pending = str(r["pending"]) + ("" if age is None else f" ({seconds(float(age))})")
    nxt = r.get("next_attempt")
    if nxt is None:
        next_text = "-"
    else:
        wait = (datetime.fromisoformat(nxt) - datetime.fromisoformat(now)).total_seconds()
        next_text = t("in", d=seconds(wait)) if wait >= 1 else t("due_now")
    row = [escape(r["name"]), escape(r["kind"]), styled, str(r.get("consecutive_failures", "-")), pending,
           escape(next_text), when(r.get("last_delivered"))]
    error = r.get("last_error")
    if not error:
        return row, None
    at = r.get("last_error_at")
    at_text = when(at) if at else t("before_restart") if state in ("retrying", "failing") else t("time_unknown")
    return row, escape(t("cli.last_error", name=r["name"], at=at_text, error=str(error)))


def cmd_ack(args: argparse.Namespace) -> int:
    import getpass

    from sentinel.client import ApiError, call

    cfg = _load_client(args.config)
    try:
        data = call(cfg, "POST", "/api/v1/ack", {"instance": args.instance, "by": args.by or getpass.getuser()})
    except ApiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"{args.instance}: {data['status']}")
    return EXIT_OK


def cmd_silence(args: argparse.Namespace) -> int:
    import getpass
    from datetime import UTC, datetime

    from sentinel.client import ApiError, call, parse_matcher, unknown_label
    from sentinel.units import parse_duration

    cfg = _load_client(args.config)
    try:
        if args.silence_command == "add":
            try:
                matchers = [parse_matcher(m) for m in args.matchers]
                duration = parse_duration(args.duration)
            except ValueError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return EXIT_CONFIG
            unknown = [why for m in matchers if (why := unknown_label(m)) is not None]
            if unknown and not args.force:  # such a silence holds nothing, or everything: a typo
                for why in unknown:
                    print(f"error: silence add: {why}; --force adds it anyway", file=sys.stderr)
                return EXIT_CONFIG
            now = datetime.now(UTC)
            # no startsAt: the silence starts when the daemon receives it
            body = {"matchers": matchers, "endsAt": (now + duration).isoformat(),
                    "createdBy": args.by or getpass.getuser(), "comment": args.comment}
            data = call(cfg, "POST", "/api/v1/silences", body)
            print(data["silenceID"])
        elif args.silence_command == "expire":
            call(cfg, "DELETE", f"/api/v1/silences/{args.id}")
            print(f"{args.id}: expired")
        else:
            from rich.console import Console
            from rich.table import Table

            items = call(cfg, "GET", "/api/v1/silences")
            table = Table(title="Silences")
            for col in ("id", "state", "matchers", "until", "by", "comment"):
                table.add_column(col, no_wrap=col in ("id", "state", "until"))
            for s in items:
                if s["status"]["state"] == "expired" and not args.all:
                    continue
                ms = ", ".join(f"{m['name']}{'' if m['isEqual'] else '!'}{'=~' if m['isRegex'] else '='}{m['value']}"
                               for m in s["matchers"])
                table.add_row(s["id"], s["status"]["state"], ms, s["endsAt"], s["createdBy"], s["comment"])
            Console(highlight=False, width=max(120, Console().width)).print(table)
    except ApiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def cmd_notify_test(args: argparse.Namespace) -> int:
    from sentinel.notify.sample import send_test

    cfg = _load(args.config)
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


def build_parser(*, bench_options: bool = True) -> argparse.ArgumentParser:
    """The whole command line. Each benchmark's options come from importing its module, which pulls in
    the benchmark harness (demo, simulator, sinks); `main` asks for them only when the command is `bench`,
    so the daemon that runs for months does not carry them."""
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

    r = sub.add_parser("run", help="run the daemon (systemd Type=notify; SIGHUP reloads, SIGTERM stops)")
    r.add_argument("--config", required=True, metavar="FILE")
    r.add_argument("--dry-run", action="store_true", help="detect and record everything, send nothing")
    r.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    r.set_defaults(func=cmd_run)

    d = sub.add_parser("demo", help="the whole product on a temporary database with a local chat sink")
    d.add_argument("--duration", type=float, default=None, metavar="SECONDS", help="stop after this long")
    d.add_argument("--keep", action="store_true", help="keep the temporary directory")
    d.add_argument("--listen", type=_host_port, default=None, metavar="HOST:PORT",
                   help="the status page, API and /metrics (default: a free port on 127.0.0.1)")
    d.add_argument("--sink-listen", type=_host_port, default="127.0.0.1:0", metavar="HOST:PORT",
                   help="the local chat robot that prints the messages (default: a free port on 127.0.0.1)")
    d.set_defaults(func=cmd_demo)

    be = sub.add_parser("bench", help="measured figures: engine (default), and the others listed below")
    bsub = be.add_subparsers(dest="bench", metavar="NAME")
    from sentinel.bench import BENCHES

    for name, (module_name, help_text) in BENCHES.items():
        bp = bsub.add_parser(name, help=help_text)
        if bench_options:
            _bench_arguments(module_name, bp)
    if bench_options:
        _bench_arguments(BENCHES["engine"][0], be)  # plain `sentinel bench` takes the engine's options
    be.set_defaults(func=cmd_bench, bench=None)

    st = sub.add_parser("status", help="receivers, outbox and source, from the running daemon's API")
    st.add_argument("--config", required=True, metavar="FILE")
    st.add_argument("--json", action="store_true", help="print the raw JSON")
    st.set_defaults(func=cmd_status)

    a = sub.add_parser("ack", help="acknowledge an alert instance (stops repeats and escalation)")
    a.add_argument("instance")
    a.add_argument("--config", required=True, metavar="FILE")
    a.add_argument("--by", help="who acknowledges (default: your user name)")
    a.set_defaults(func=cmd_ack)

    si = sub.add_parser("silence", help="add, list or expire silences")
    sisub = si.add_subparsers(dest="silence_command", metavar="ACTION")
    sisub.required = True
    sa = sisub.add_parser("add", help="silence alerts matching the matchers for a while")
    sa.add_argument("matchers", nargs="+", metavar="MATCHER", help="type=物流配送延误, channel=~电话.*, rule!=x")
    sa.add_argument("--config", required=True, metavar="FILE")
    sa.add_argument("--duration", default="2h", help="how long (default 2h)")
    sa.add_argument("--comment", required=True, help="why, for the next person on call")
    sa.add_argument("--by", help="who (default: your user name)")
    sa.add_argument("--force", action="store_true", help="add it even if a matcher names a label no alert has")
    sl = sisub.add_parser("list", help="active and pending silences")
    sl.add_argument("--config", required=True, metavar="FILE")
    sl.add_argument("--all", action="store_true", help="include expired ones")
    se = sisub.add_parser("expire", help="end a silence now")
    se.add_argument("id")
    se.add_argument("--config", required=True, metavar="FILE")
    si.set_defaults(func=cmd_silence)

    nt = sub.add_parser("notify-test", help="send a sample message to a receiver and print its answer")
    nt.add_argument("--config", required=True, metavar="FILE")
    nt.add_argument("--receiver", required=True, metavar="NAME")
    nt.set_defaults(func=cmd_notify_test)

    db = sub.add_parser("db", help="state store maintenance; the source's NOTIFY trigger")
    dbsub = db.add_subparsers(dest="db_command", metavar="ACTION")
    dbsub.required = True
    up = dbsub.add_parser("upgrade", help="apply migrations (also done at start)")
    up.add_argument("--config", required=True, metavar="FILE")
    up.set_defaults(func=cmd_db_upgrade)
    trig = dbsub.add_parser("notify-trigger", help="print (--apply: install) the PostgreSQL trigger whose NOTIFY "
                                                 "wakes the daemon at each insert")
    trig.add_argument("--config", required=True, metavar="FILE")
    trig.add_argument("--apply", action="store_true", help="install it (idempotent: replaces what is there)")
    trig.set_defaults(func=cmd_db_notify_trigger)

    return p


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(bench_options=words[:1] == ["bench"])
    args = parser.parse_args(words)
    try:
        rc: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    return rc


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
