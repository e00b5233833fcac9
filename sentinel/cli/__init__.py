"""The `sentinel` command line: the parser and `main`, the entry point of the `sentinel` script
(`[project.scripts]`) and of `python -m sentinel.cli`. Each subcommand is a thin shell around one module:

- `sentinel.cli.local`: `check`, `backtest`, `run`, `notify-test`, `demo`, `bench` (the configuration file
  and what it names, no daemon needed);
- `sentinel.cli.db`: `db upgrade`, `db notify-trigger`;
- `sentinel.cli.remote`: `status`, `ack`, `silence` (the running daemon's API);
- `sentinel.cli.common`: the exit statuses and the configuration readers they share.

Exit statuses: 0 success, 1 runtime failure, 2 bad configuration or usage, 130 on Ctrl-C. Building the
parser imports no command's module: `--help` loads no pydantic, no numpy.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from sentinel import __version__
from sentinel.cli.db import cmd_db_notify_trigger, cmd_db_upgrade
from sentinel.cli.local import cmd_backtest, cmd_bench, cmd_check, cmd_demo, cmd_notify_test, cmd_run
from sentinel.cli.remote import cmd_ack, cmd_silence, cmd_status


def _bench_arguments(module_name: str, parser: argparse.ArgumentParser) -> None:
    import importlib

    importlib.import_module(module_name).add_arguments(parser)


def _host_port(value: str) -> str:
    """`HOST:PORT` (`[::1]:PORT` for IPv6), as the configuration's `listen`; argparse reports a bad one."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{value!r} is not HOST:PORT (e.g. 127.0.0.1:9732 or 0.0.0.0:9732)")
    return value


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
    d.add_argument(
        "--listen",
        type=_host_port,
        default=None,
        metavar="HOST:PORT",
        help="the status page, API and /metrics (default: a free port on 127.0.0.1)",
    )
    d.add_argument(
        "--sink-listen",
        type=_host_port,
        default="127.0.0.1:0",
        metavar="HOST:PORT",
        help="the local chat robot that prints the messages (default: a free port on 127.0.0.1)",
    )
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
    trig = dbsub.add_parser(
        "notify-trigger",
        help="print (--apply: install) the PostgreSQL trigger whose NOTIFY wakes the daemon at each insert",
    )
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
