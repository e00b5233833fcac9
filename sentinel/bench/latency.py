"""`sentinel bench latency`: seconds from the commit of the complaint that causes an alert to the chat
message, for Sentinel and for Prometheus + Alertmanager fed the same stream (printed and written as JSON,
never asserted).

Why it exists: Sentinel's purpose is to warn early, so the figure that matters is commit -> message, measured
on real processes the way a user runs them, next to the tool people would otherwise use.

What runs (all on 127.0.0.1, free ports, temporary directories; every process is started in its own
process group and killed with it, also on failure or Ctrl-C):

- a webhook sink in this process (`latency_sink`): it records `time.time()` and the body of every POST, per
  URL path (one path per system, so the systems never mix);
- Sentinel as a real `sentinel run --config FILE` subprocess (this module), in two settings:
  `quickstart` - the README quick-start configuration (SQLite source, the `type-surge` threshold and
  `same-type-streak` streak rules, defaults for everything else) with a `webhook` receiver pointed at the
  sink; `fastest` - the fastest documented path: a PostgreSQL source (a table of its own in database
  `test`), `FASTEST_OVERRIDES` on top (`group_wait = "0s"`, LISTEN/NOTIFY on, which is the default for
  a PostgreSQL source), and `sentinel db notify-trigger --apply` so every insert wakes the poll;
- the peer (`latency_peer`, which says how its rule matches Sentinel's): real `prometheus` and
  `prometheus-alertmanager` at typical settings (scrape 15 s, evaluation 15 s, group_wait 30 s) and
  aggressive ones (1 s, 1 s, 0 s), scraping an exporter in this process.

Two deviations from the bare quick start, the same for every system: `listen` is a free port (other
daemons may hold 9732), and one route `group_by = ["rule", "type"]` (Alertmanager: `[alertname, type]`).
Without it, every surge of the run lands in the one `rule` group and waits `group_interval` behind the
previous one: the benchmark would measure how back-to-back crises are batched, not how soon the first
message about a crisis leaves, which is what a single real crisis sees with the defaults.

The workload (`latency_workload`): 8 days of history (40 complaints a day over 5 types, never the same type
twice in a row) are written before Sentinel starts, so its first start backfills a real baseline. Then
surges and streaks, each of fresh types, so each is a new alert and a new group:
- a surge is a brand-new type: zero baseline, so the threshold rule is floor-decided and fires on the
  `min_count`-th (10th) row. Surges run in pairs of two types whose rows alternate (A B A B ...), so
  neither makes five in a row and trips the streak rule; the 10th row of each is committed on its own and
  its commit time is the start of the clock;
- a streak is five rows of one fresh type with no other row between them; the 5th row starts the clock.
  The peer cannot express "the same type five times in a row" (PromQL sees counts per scrape, not the
  order of rows), so streaks are measured for Sentinel only.
Events are issued on a schedule fixed in advance (gaps jittered around `--spacing`, open loop, so a slow
system cannot slow the workload down) and each waits at most `--timeout` seconds; a miss is reported as a
timeout and counted as infinite in the percentiles (a failure never improves a figure).

Exit status 0 when every alert reached the sink; 1 when one timed out (the figures are still printed and
written) or a process failed (the error says which, with its log); 2 on bad arguments; 130 on Ctrl-C.

Figures (`latency_figures`): p50, p90, p99 and max (seconds, linear interpolation between ranks) per
system, setting and rule, and each Sentinel figure over the peer's in the same run (`quickstart` against
`typical`, `fastest` against `aggressive`). The report also carries delivery throughput and footprint from
`sentinel.bench.delivery` and `sentinel.bench.footprint` (unless `--no-extras`).
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeAlias

from sentinel.bench.common import (
    DEFAULT_PG_URL,
    BenchError,
    ConfigValue,
    Proc,
    Processes,
    SqliteTable,
    Table,
    machine,
    quickstart_config,
    sentinel_command,
    sentinel_env,
    sigterm_unwinds,
    start_sentinel,
    to_toml,
)
from sentinel.bench.latency_figures import Extras, Report, print_report, ratios, results
from sentinel.bench.latency_figures import extras as measure_extras
from sentinel.bench.latency_peer import run_peer
from sentinel.bench.latency_sink import Sink
from sentinel.bench.latency_workload import (
    HISTORY_DAYS,
    HISTORY_TYPES,
    PEER_SETTINGS,
    SENTINEL_SETTINGS,
    SYSTEMS,
    Context,
    Measurement,
    PgTable,
    Stream,
    drive,
    schedule,
    wait_all,
)

Override: TypeAlias = tuple[str | None, str, ConfigValue]
"""`--override [SETTING:]KEY=VALUE`: the setting it is for (None: both), the dotted key, the value."""

# The fastest documented path, on top of the quick start (lateness stays at its default: alerts go out on
# sight whatever it is). `--override fastest:KEY=VALUE` adds to it from the command line.
FASTEST_OVERRIDES: dict[str, ConfigValue] = {
    "source.listen_notify": True,
    "routes.0.group_wait": "0s",
}


# --- Sentinel's configuration ----------------------------------------------------------------------


def apply_override(cfg: dict[str, ConfigValue], dotted: str, value: ConfigValue | None) -> None:
    """Set `a.b.0.c` in a nested dict/list config, creating tables on the way (None removes the key)."""
    parts = dotted.split(".")
    node: ConfigValue = cfg
    for part, nxt in itertools.pairwise(parts):
        if isinstance(node, list):
            node = node[int(part)]
            continue
        if not isinstance(node, dict):
            raise TypeError(f"{dotted}: {part!r} is inside a {type(node).__name__}, not a table")
        if part not in node:
            node[part] = [] if nxt.isdigit() else {}
        node = node[part]
    last = parts[-1]
    if isinstance(node, list):
        if value is None:
            node.pop(int(last))
        else:
            node[int(last)] = value
    elif not isinstance(node, dict):
        raise TypeError(f"{dotted}: {last!r} is inside a {type(node).__name__}, not a table")
    elif value is None:
        node.pop(last, None)
    else:
        node[last] = value


def parse_override(text: str) -> Override:
    """`[SETTING:]KEY=VALUE`; VALUE is read as TOML when it parses (`true`, `3`, `[]`), else as a string."""
    target, key_value = text.split(":", 1) if ":" in text.split("=", 1)[0] else (None, text)
    key, sep, raw = key_value.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not [SETTING:]KEY=VALUE")
    if target is not None and target not in SENTINEL_SETTINGS:
        raise argparse.ArgumentTypeError(f"{target!r} is not one of {', '.join(SENTINEL_SETTINGS)}")
    try:
        value: ConfigValue = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return target, key.strip(), value


def sentinel_config(
    setting: str, table: Table, state_url: str, sink_url: str, overrides: Sequence[Override]
) -> dict[str, ConfigValue]:
    cfg: dict[str, ConfigValue] = quickstart_config(
        table.url, table.name, state_url, {"name": "sink", "kind": "webhook", "url": sink_url}
    )
    cfg["routes"] = [{"receivers": ["sink"], "group_by": ["rule", "type"]}]  # see the module docstring
    if setting == "fastest":
        for key, value in FASTEST_OVERRIDES.items():
            apply_override(cfg, key, value)
    for target, key, value in overrides:
        if target in (None, setting):
            apply_override(cfg, key, value)
    return cfg


# --- Sentinel's phase ------------------------------------------------------------------------------


def _install_notify_trigger(config: Path) -> str:
    """`sentinel db notify-trigger --apply`: every insert wakes the poll (LISTEN/NOTIFY)."""
    done = subprocess.run(
        [*sentinel_command(), "db", "notify-trigger", "--config", str(config), "--apply"],
        capture_output=True,
        text=True,
        timeout=60,
        env=sentinel_env(),
        check=False,
    )
    if done.returncode != 0:
        raise BenchError(f"sentinel db notify-trigger --apply failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return "installed"


def _pg_table(url: str) -> Table:
    import psycopg

    try:
        return PgTable(url)
    except psycopg.Error as exc:
        raise BenchError(
            f"PostgreSQL ({url}) for the fastest setting: {exc}; leave it out with "
            "--systems sentinel-quickstart,peer-typical,peer-aggressive"
        ) from None


def run_sentinel(ctx: Context, setting: str) -> list[Measurement]:
    system = f"sentinel-{setting}"
    here = ctx.workdir / system
    here.mkdir()
    table = SqliteTable(here / "crm.db") if setting == "quickstart" else _pg_table(ctx.args.pg_url)
    proc: Proc | None = None
    try:
        stream = Stream(table)
        seeded = stream.seed_history()
        cfg = sentinel_config(setting, table, f"sqlite:///{here / 'state.db'}", ctx.sink.url(system), ctx.args.override)
        path = here / "sentinel.toml"
        path.write_text(to_toml(cfg), encoding="utf-8")
        info: dict[str, object] = {
            "source": "postgresql" if setting == "fastest" else "sqlite",
            "history_rows": seeded,
            "config": cfg,
        }
        if setting == "fastest":
            info["notify_trigger"] = _install_notify_trigger(path)
        ctx.settings[system] = info
        started = time.monotonic()
        proc = start_sentinel(ctx.procs, system, path, timeout=120)
        info["start_to_backfilled_s"] = round(time.monotonic() - started, 2)
        print(
            f"{system}: backfilled {seeded} rows in {info['start_to_backfilled_s']} s; "
            f"{ctx.surges} surges and {ctx.streaks} streaks, about every {ctx.args.spacing} s",
            flush=True,
        )
        ms = drive(stream, schedule(ctx.surges, ctx.streaks), ctx.args.spacing, setting[0], [system], ctx.rng)
        wait_all(ctx.sink, ms, ctx.args.timeout)
        if proc.popen.poll() is not None:
            raise BenchError(f"{system} exited during the run ({proc.popen.returncode}):\n{proc.tail()}")
        info["messages_received"] = ctx.sink.count(system)
        return ms
    finally:
        if proc is not None:
            ctx.procs.stop(proc)
        table.close()


# --- command line ----------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quick",
        action="store_true",
        help="8 surges and 8 streaks per Sentinel setting, 8 peer surges (under 3 minutes)",
    )
    parser.add_argument("--output", default="bench-results.json", help="JSON report (default bench-results.json)")
    parser.add_argument(
        "--systems", default=",".join(SYSTEMS), help=f"comma-separated subset of {', '.join(SYSTEMS)} (default: all)"
    )
    parser.add_argument("--surges", type=int, default=None, help="surges per Sentinel setting (default 50, quick 8)")
    parser.add_argument("--streaks", type=int, default=None, help="streaks per Sentinel setting (default 50, quick 8)")
    parser.add_argument("--peer-surges", type=int, default=None, help="peer surges (default 50, quick 8)")
    parser.add_argument("--spacing", type=float, default=1.0, help="seconds between Sentinel events (default 1)")
    parser.add_argument(
        "--peer-spacing", type=float, default=3.0, help="seconds between peer surge pairs (default 3; they overlap)"
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the jittered event schedule (default 1)")
    parser.add_argument("--timeout", type=float, default=400.0, help="longest wait for one message (default 400 s)")
    parser.add_argument(
        "--pg-url",
        default=DEFAULT_PG_URL,
        help=f"PostgreSQL database for the fastest setting's table (default {DEFAULT_PG_URL})",
    )
    parser.add_argument(
        "--override",
        action="append",
        type=parse_override,
        default=[],
        metavar="[SETTING:]KEY=VAL",
        help="change Sentinel's config for both settings or one (quickstart:, fastest:), e.g. "
        "source.lateness=2s or fastest:source.poll_interval=200ms; repeatable",
    )
    parser.add_argument("--no-extras", action="store_true", help="skip delivery throughput and footprint")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (configs, logs)")


def run(args: argparse.Namespace) -> int:
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown:
        print(f"error: unknown system {', '.join(unknown)}; choose from {', '.join(SYSTEMS)}", file=sys.stderr)
        return 2
    default = 8 if args.quick else 50
    began = time.time()
    workdir = Path(tempfile.mkdtemp(prefix="sentinel-bench-latency-"))
    procs = Processes(workdir)
    sink = Sink()
    sink.start()
    ctx = Context(
        args,
        workdir,
        procs,
        sink,
        args.surges or default,
        args.streaks or default,
        args.peer_surges or default,
        random.Random(args.seed),
    )
    measurements: list[Measurement] = []
    host = machine()  # before the run: the load average says how busy the shared machine was
    try:
        with sigterm_unwinds():
            for setting in SENTINEL_SETTINGS:
                if f"sentinel-{setting}" in systems:
                    measurements += run_sentinel(ctx, setting)
            peers = [s for s in PEER_SETTINGS if f"peer-{s}" in systems]
            if peers:
                measurements += run_peer(ctx, peers)
            extra: Extras = {} if args.no_extras else measure_extras(args.quick)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: every process the benchmark started has been stopped", file=sys.stderr)
        return 130
    finally:
        procs.stop_all()
        sink.stop()
        if args.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    res = results(measurements)
    from sentinel import __version__

    ctx.notes.append("the peer cannot express a streak (five of one type in a row): streaks are Sentinel only")
    ctx.notes.append(
        "each surge is a brand-new type (zero baseline): Sentinel's threshold is floor-decided and "
        "fires on the 10th row, as does the peer's rule; surges run in alternating pairs"
    )
    ctx.notes.append(
        "deviations from the bare quick start, for every system: a free listen port, and grouping "
        "by rule and type so back-to-back surges are separate groups"
    )
    if args.override:
        ctx.notes.append("overrides: " + ", ".join(f"{t + ':' if t else ''}{k}={v!r}" for t, k, v in args.override))
    report: Report = {
        "benchmark": "latency",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "sentinel_version": __version__,
        "duration_s": round(time.time() - began, 1),
        "machine": host,
        "workload": {
            "surges": ctx.surges,
            "streaks": ctx.streaks,
            "peer_surges": ctx.peer_surges,
            "spacing_s": args.spacing,
            "seed": args.seed,
            "peer_spacing_s": args.peer_spacing,
            "timeout_s": args.timeout,
            "history": f"{HISTORY_DAYS} days x {sum(HISTORY_TYPES.values())} a day over {len(HISTORY_TYPES)} types",
        },
        "settings": ctx.settings,
        "results": res,
        "ratios": ratios(res),
        "notes": ctx.notes,
        **extra,
        "measurements": [asdict(m) for m in measurements],
    }
    print_report(report, sys.stdout)
    Path(args.output).write_text(json.dumps(report, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    print(f"\nwritten {args.output}")
    return 0 if all(s.get("timeouts", 0) == 0 for r in res.values() for s in r.values() if isinstance(s, dict)) else 1
