"""`sentinel bench latency`: seconds from the commit of the complaint that causes an alert to the chat
message, for Sentinel and for Prometheus + Alertmanager fed the same stream (printed and written as JSON,
never asserted).

Why it exists: Sentinel's purpose is to warn early, so the figure that matters is commit -> message, measured
on real processes the way a user runs them, next to the tool people would otherwise use.

What runs (all on 127.0.0.1, free ports, temporary directories; every process is started in its own
process group and killed with it, also on failure or Ctrl-C):

- a webhook sink in this process: it records `time.time()` and the body of every POST, per URL path
  (one path per system, so the systems never mix);
- Sentinel as a real `sentinel run --config FILE` subprocess, in two settings:
  `quickstart` - the README quick-start configuration (SQLite source, the `type-surge` threshold and
  `same-type-streak` streak rules, defaults for everything else) with a `webhook` receiver pointed at the
  sink; `fastest` - the fastest documented path: a PostgreSQL source (a table of its own in database
  `test`), `FASTEST_OVERRIDES` on top (`group_wait = "0s"`, LISTEN/NOTIFY on, which is the default for
  a PostgreSQL source), and `sentinel db notify-trigger --apply` so every insert wakes the poll;
- the peer: real `prometheus` and `prometheus-alertmanager` at typical settings (scrape 15 s, evaluation
  15 s, group_wait 30 s) and aggressive ones (1 s, 1 s, 0 s), scraping an exporter in this process.

Two deviations from the bare quick start, the same for every system: `listen` is a free port (other
daemons may hold 9732), and one route `group_by = ["rule", "type"]` (Alertmanager: `[alertname, type]`).
Without it, every surge of the run lands in the one `rule` group and waits `group_interval` behind the
previous one: the benchmark would measure how back-to-back crises are batched, not how soon the first
message about a crisis leaves, which is what a single real crisis sees with the defaults.

The workload: 8 days of history (40 complaints a day over 5 types, never the same type twice in a row) are
written before Sentinel starts, so its first start backfills a real baseline. Then surges and streaks, each
of fresh types, so each is a new alert and a new group:
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

The peer's rule. The exporter serves `complaints_total{type}` (a counter, incremented right after each
commit), `complaints_today{type}` (today's count, calendar day in Asia/Shanghai as Sentinel's `timezone`)
and `complaints_baseline_daily_mean{type}` (the mean over the 7 previous full days, empty days 0), and the
alerting rule is `complaints_today >= 10 and complaints_today > 1.5 * complaints_baseline_daily_mean`:
Sentinel's `current >= min_count and current > factor x baseline`. The exporter computes the two gauges
because "today since local midnight" and "the previous 7 calendar days" cannot be written exactly with
`increase()` (it extrapolates within its window and slides instead of following the calendar), so an
`increase()` rule would not become true at the same row as Sentinel's; with the gauges it does, at the
10th row of a fresh type.

Exit status 0 when every alert reached the sink; 1 when one timed out (the figures are still printed and
written) or a process failed (the error says which, with its log); 2 on bad arguments; 130 on Ctrl-C.

Figures: p50, p90, p99 and max (seconds, linear interpolation between ranks) per system, setting and
rule, and each Sentinel figure over the peer's in the same run (`quickstart` against `typical`, `fastest`
against `aggressive`). The report also carries delivery throughput and footprint from
`sentinel.bench.delivery` and `sentinel.bench.footprint` (unless `--no-extras`).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import IO, Any
from zoneinfo import ZoneInfo

from sentinel.bench.common import (
    DEFAULT_PG_URL,
    STREAK_RULE,
    SURGE_RULE,
    BenchError,
    Proc,
    Processes,
    Row,
    SqliteTable,
    Table,
    libpq_url,
    quickstart_config,
    sentinel_command,
    sentinel_env,
    start_sentinel,
    to_toml,
    wait_http,
)
from sentinel.demo import free_port
from sentinel.http import CHAT_PEER, App, Request, Response, Server
from sentinel.simulate import CHANNELS

MIN_COUNT = 10  # threshold defaults of the README quick start
FACTOR = 1.5
BASELINE_DAYS = 7
STREAK_LENGTH = 5  # streak default
HISTORY_DAYS = 8  # baseline_days + 1: what the first start backfills
TZ = ZoneInfo("Asia/Shanghai")
# 40 a day, in the seeds' proportions (系统操作错误 30.7 %, 服务态度, 物流配送延误, 产品相关, 其他)
HISTORY_TYPES: dict[str, int] = {"系统操作错误": 12, "服务态度": 10, "物流配送延误": 9, "产品相关": 5, "其他": 4}

SENTINEL_SETTINGS = ("quickstart", "fastest")
PEER_SETTINGS = ("typical", "aggressive")
SYSTEMS = tuple(f"sentinel-{s}" for s in SENTINEL_SETTINGS) + tuple(f"peer-{s}" for s in PEER_SETTINGS)
PAIRED = {"sentinel-quickstart": "peer-typical", "sentinel-fastest": "peer-aggressive"}

# The fastest documented path, on top of the quick start (lateness stays at its default: alerts go out on
# sight whatever it is). `--override fastest:KEY=VALUE` adds to it from the command line.
FASTEST_OVERRIDES: dict[str, Any] = {
    "source.listen_notify": True,
    "routes.0.group_wait": "0s",
}
PEER: dict[str, dict[str, str]] = {
    "typical": {"scrape_interval": "15s", "evaluation_interval": "15s", "group_wait": "30s"},
    "aggressive": {"scrape_interval": "1s", "evaluation_interval": "1s", "group_wait": "0s"},
}
PEER_RULE = (f"complaints_today >= {MIN_COUNT} and complaints_today > {FACTOR} * complaints_baseline_daily_mean")


# --- the webhook sink ------------------------------------------------------------------------------


class Sink:
    """Records the arrival time of the first firing message per (path, rule, type), and counts the bodies
    per path.

    Both Sentinel's `webhook` receiver and Alertmanager's `webhook_config` send the Alertmanager format, so
    one parser serves all systems: an alert names a surge by its `rule` and `type` labels (the peer's
    alerting rule sets `rule` too). Served by `sentinel.http` (waitress, which sets TCP_NODELAY: no reply
    waits out the sender's 40 ms delayed ACK); the handler runs once waitress has the whole request.
    """

    def __init__(self) -> None:
        self.first: dict[tuple[str, str, str], float] = {}
        self.received: dict[str, int] = {}
        self._lock = threading.Lock()
        app = App()
        app.route("POST", "/<system>", self._post)
        self.server = Server(app, "127.0.0.1:0", limits=CHAT_PEER)

    def _post(self, req: Request) -> Response:
        self.record(time.time(), req.params["system"], req.body)
        return Response()

    def url(self, path: str) -> str:
        return f"{self.server.url}/{path}"

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.stop()

    def record(self, arrived: float, path: str, raw: bytes) -> None:
        try:
            body = json.loads(raw)
        except ValueError:
            body = {}
        alerts = body.get("alerts", []) if isinstance(body, dict) else []
        with self._lock:
            self.received[path] = self.received.get(path, 0) + 1
            for alert in alerts:
                labels = alert.get("labels", {}) if isinstance(alert, dict) else {}
                if alert.get("status") == "firing":
                    key = (path, str(labels.get("rule", "")), str(labels.get("type", "")))
                    self.first.setdefault(key, arrived)

    def arrival(self, path: str, rule: str, type_: str) -> float | None:
        with self._lock:
            return self.first.get((path, rule, type_))

    def count(self, path: str) -> int:
        with self._lock:
            return self.received.get(path, 0)


# --- the peer's exporter ---------------------------------------------------------------------------


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Exporter:
    """`/metrics` for the peer: the complaint stream as counters, plus today's count and the 7-day daily
    mean per type (why gauges: see the module docstring). `app()` serves it over `sentinel.http`."""

    def __init__(self) -> None:
        self.daily: dict[str, dict[date, int]] = {}
        self._lock = threading.Lock()

    def app(self) -> App:
        app = App()
        app.route("GET", "/metrics", lambda _req: Response(
            200, self.render().encode(), "text/plain; version=0.0.4; charset=utf-8"))
        return app

    def add(self, rows: Sequence[Row]) -> None:
        with self._lock:
            for row in rows:
                day = row.created_at.replace(tzinfo=UTC).astimezone(TZ).date()
                per_day = self.daily.setdefault(row.type, {})
                per_day[day] = per_day.get(day, 0) + 1

    def render(self) -> str:
        today = datetime.now(TZ).date()
        lines = ["# TYPE complaints_total counter", "# TYPE complaints_today gauge",
                 "# TYPE complaints_baseline_daily_mean gauge"]
        with self._lock:
            for type_, per_day in sorted(self.daily.items()):
                lab = f'{{type="{_label(type_)}"}}'
                mean = sum(per_day.get(today - timedelta(days=d), 0) for d in range(1, BASELINE_DAYS + 1))
                lines.append(f"complaints_total{lab} {sum(per_day.values())}")
                lines.append(f"complaints_today{lab} {per_day.get(today, 0)}")
                lines.append(f"complaints_baseline_daily_mean{lab} {mean / BASELINE_DAYS}")
        return "\n".join(lines) + "\n"


# --- the complaint table ---------------------------------------------------------------------------



class PgTable:
    """A table of its own (unique name) in an existing database, dropped by `close`."""

    def __init__(self, url: str) -> None:
        import psycopg

        self.name = f"latbench_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        self.url = url
        self._conn = psycopg.connect(libpq_url(url))
        self._conn.execute(f"CREATE TABLE {self.name} (id BIGINT PRIMARY KEY, created_at TIMESTAMP NOT NULL, "
                           "category TEXT, channel TEXT)")
        self._conn.execute(f"CREATE INDEX {self.name}_created_at_id_idx ON {self.name} (created_at, id)")
        self._conn.commit()

    def insert(self, rows: Sequence[Row]) -> float:
        with self._conn.cursor() as cur:
            cur.executemany(f"INSERT INTO {self.name} VALUES (%s, %s, %s, %s)",
                            [(r.id, r.created_at, r.type, r.channel) for r in rows])
        self._conn.commit()
        return time.time()

    def close(self) -> None:
        try:
            self._conn.rollback()
            self._conn.execute(f"DROP TABLE IF EXISTS {self.name} CASCADE")
            self._conn.commit()
        finally:
            self._conn.close()


class Stream:
    """Writes the workload into one table (and into the exporter, right after each commit)."""

    def __init__(self, table: Table, exporter: Exporter | None = None) -> None:
        self.table = table
        self.exporter = exporter
        self.next_id = 1

    def _rows(self, types: Sequence[str], when: Sequence[datetime] | None = None) -> list[Row]:
        now = datetime.now(UTC).replace(tzinfo=None)
        rows = []
        for i, type_ in enumerate(types):
            rows.append(Row(self.next_id, now if when is None else when[i], type_,
                            CHANNELS[self.next_id % len(CHANNELS)]))
            self.next_id += 1
        return rows

    def insert(self, types: Sequence[str], when: Sequence[datetime] | None = None) -> float:
        rows = self._rows(types, when)
        committed = self.table.insert(rows)
        if self.exporter is not None:
            self.exporter.add(rows)
        return committed

    def seed_history(self) -> int:
        """`HISTORY_DAYS` full local days before today, 40 a day, spread evenly, round-robin over the
        types so that no type comes twice in a row more than the smallest counts force (never 5)."""
        today = datetime.now(TZ).date()
        types: list[str] = []
        when: list[datetime] = []
        for d in range(HISTORY_DAYS, 0, -1):
            day_start = datetime.combine(today - timedelta(days=d), datetime.min.time(), TZ)
            left = dict(HISTORY_TYPES)
            order: list[str] = []
            while any(left.values()):
                for t in HISTORY_TYPES:
                    if left[t]:
                        order.append(t)
                        left[t] -= 1
            step = timedelta(days=1) / (len(order) + 1)
            for i, t in enumerate(order):
                types.append(t)
                when.append((day_start + (i + 1) * step).astimezone(UTC).replace(tzinfo=None))
        self.insert(types, when)
        return len(types)

    def surge_pair(self, a: str, b: str) -> dict[str, float]:
        """Two fresh types, alternating; the `MIN_COUNT`-th row of each is committed alone."""
        self.insert([a, b] * (MIN_COUNT - 1))
        return {a: self.insert([a]), b: self.insert([b])}

    def streak(self, type_: str) -> float:
        """`STREAK_LENGTH` rows of one fresh type with nothing between them; the last one alone."""
        self.insert([type_] * (STREAK_LENGTH - 1))
        return self.insert([type_])


# --- Sentinel's configuration ----------------------------------------------------------------------


def apply_override(cfg: dict[str, Any], dotted: str, value: Any) -> None:
    """Set `a.b.0.c` in a nested dict/list config, creating tables on the way."""
    parts = dotted.split(".")
    node: Any = cfg
    for part, nxt in itertools.pairwise(parts):
        if isinstance(node, list):
            node = node[int(part)]
            continue
        if part not in node:
            node[part] = [] if nxt.isdigit() else {}
        node = node[part]
    last = parts[-1]
    if isinstance(node, list):
        node[int(last)] = value
    elif value is None:
        node.pop(last, None)
    else:
        node[last] = value


def parse_override(text: str) -> tuple[str | None, str, Any]:
    """`[SETTING:]KEY=VALUE`; VALUE is read as TOML when it parses (`true`, `3`, `[]`), else as a string."""
    target, key_value = (text.split(":", 1) if ":" in text.split("=", 1)[0] else (None, text))
    key, sep, raw = key_value.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not [SETTING:]KEY=VALUE")
    if target is not None and target not in SENTINEL_SETTINGS:
        raise argparse.ArgumentTypeError(f"{target!r} is not one of {', '.join(SENTINEL_SETTINGS)}")
    try:
        value: Any = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return target, key.strip(), value


def sentinel_config(setting: str, table: Table, state_url: str, sink_url: str,
                    overrides: Sequence[tuple[str | None, str, Any]]) -> dict[str, Any]:
    cfg = quickstart_config(table.url, table.name, state_url, {"name": "sink", "kind": "webhook", "url": sink_url})
    cfg["routes"] = [{"receivers": ["sink"], "group_by": ["rule", "type"]}]  # see the module docstring
    if setting == "fastest":
        for key, value in FASTEST_OVERRIDES.items():
            apply_override(cfg, key, value)
    for target, key, value in overrides:
        if target in (None, setting):
            apply_override(cfg, key, value)
    return cfg


# --- measurements ----------------------------------------------------------------------------------


@dataclass
class Measurement:
    system: str
    rule: str
    type: str
    committed: float
    arrived: float | None = None

    @property
    def latency(self) -> float:
        return math.inf if self.arrived is None else self.arrived - self.committed


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); infinities stay infinite."""
    xs = sorted(values)
    if not xs:
        return math.nan
    pos = q * (len(xs) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    if lo == hi or xs[hi] == xs[lo]:
        return xs[lo]
    if math.isinf(xs[hi]):
        return math.inf
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarize(ms: Sequence[Measurement]) -> dict[str, Any]:
    lat = [m.latency for m in ms]
    out: dict[str, Any] = {"n": len(ms), "timeouts": sum(1 for x in lat if math.isinf(x))}
    for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0)):
        v = percentile(lat, q)
        out[name] = None if math.isinf(v) or math.isnan(v) else round(v, 4)
    return out


def wait_all(sink: Sink, ms: Sequence[Measurement], timeout: float) -> None:
    """Until every measurement has its message or has waited `timeout` since its commit."""
    while True:
        now = time.time()
        pending = False
        for m in ms:
            if m.arrived is None:
                m.arrived = sink.arrival(m.system, m.rule, m.type)
                if m.arrived is None and now < m.committed + timeout:
                    pending = True
        if not pending:
            return
        time.sleep(0.05)


def schedule(n_surges: int, n_streaks: int) -> list[str]:
    """Pairs of surges ("pair") and streaks ("streak"), spread evenly through the run."""
    pairs = (n_surges + 1) // 2
    events = [(i / pairs, "pair") for i in range(pairs)] + [(i / max(n_streaks, 1), "streak")
                                                            for i in range(n_streaks)]
    return [kind for _pos, kind in sorted(events, key=lambda e: (e[0], e[1]))]


def drive(stream: Stream, events: Sequence[str], spacing: float, prefix: str, systems: Sequence[str],
          rng: random.Random) -> list[Measurement]:
    """Issue the events on a schedule fixed in advance (open loop: a slow system cannot slow the workload)
    and return one measurement per system and alert.

    The gaps are drawn uniformly from 0.5-1.5 x `spacing`: with a constant gap that is a multiple of a
    poll, scrape or evaluation interval, every event would meet that timer at the same phase and the
    figures would show one point of the distribution instead of all of it.
    """
    out: list[Measurement] = []
    due = time.monotonic()
    for k, kind in enumerate(events):
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        due += spacing * rng.uniform(0.5, 1.5)
        if kind == "pair":
            a, b = f"surge-{prefix}-{k}a", f"surge-{prefix}-{k}b"
            for type_, committed in stream.surge_pair(a, b).items():
                out += [Measurement(s, SURGE_RULE, type_, committed) for s in systems]
        elif kind == "streak":
            type_ = f"streak-{prefix}-{k}"
            committed = stream.streak(type_)
            out += [Measurement(s, STREAK_RULE, type_, committed) for s in systems]
    return out


# --- the phases ------------------------------------------------------------------------------------


@dataclass
class Context:
    args: argparse.Namespace
    workdir: Path
    procs: Processes
    sink: Sink
    surges: int
    streaks: int
    peer_surges: int
    rng: random.Random
    settings: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _install_notify_trigger(config: Path) -> str:
    """`sentinel db notify-trigger --apply`: every insert wakes the poll (LISTEN/NOTIFY)."""
    done = subprocess.run([*sentinel_command(), "db", "notify-trigger", "--config", str(config), "--apply"],
                          capture_output=True, text=True, timeout=60, env=sentinel_env(), check=False)
    if done.returncode != 0:
        raise BenchError(f"sentinel db notify-trigger --apply failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return "installed"


def _pg_table(url: str) -> Table:
    import psycopg

    try:
        return PgTable(url)
    except psycopg.Error as exc:
        raise BenchError(f"PostgreSQL ({url}) for the fastest setting: {exc}; leave it out with "
                         "--systems sentinel-quickstart,peer-typical,peer-aggressive") from None


def run_sentinel(ctx: Context, setting: str) -> list[Measurement]:
    system = f"sentinel-{setting}"
    here = ctx.workdir / system
    here.mkdir()
    table = SqliteTable(here / "crm.db") if setting == "quickstart" else _pg_table(ctx.args.pg_url)
    proc: Proc | None = None
    try:
        stream = Stream(table)
        seeded = stream.seed_history()
        cfg = sentinel_config(setting, table, f"sqlite:///{here / 'state.db'}", ctx.sink.url(system),
                              ctx.args.override)
        path = here / "sentinel.toml"
        path.write_text(to_toml(cfg), encoding="utf-8")
        info: dict[str, Any] = {"source": "postgresql" if setting == "fastest" else "sqlite",
                                "history_rows": seeded, "config": cfg}
        if setting == "fastest":
            info["notify_trigger"] = _install_notify_trigger(path)
        ctx.settings[system] = info
        started = time.monotonic()
        proc = start_sentinel(ctx.procs, system, path, timeout=120)
        info["start_to_backfilled_s"] = round(time.monotonic() - started, 2)
        print(f"{system}: backfilled {seeded} rows in {info['start_to_backfilled_s']} s; "
              f"{ctx.surges} surges and {ctx.streaks} streaks, about every {ctx.args.spacing} s", flush=True)
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


def _peer_configs(ctx: Context, setting: str, exporter_address: str, am_port: int) -> tuple[Path, Path]:
    import yaml

    s = PEER[setting]
    here = ctx.workdir / f"peer-{setting}"
    here.mkdir()
    rules = {"groups": [{"name": "complaints", "rules": [{
        "alert": "TypeSurge", "expr": PEER_RULE, "labels": {"rule": SURGE_RULE},
        "annotations": {"summary": "{{ $labels.type }}: {{ $value }} complaints today, over 1.5 x the 7-day mean"},
    }]}]}
    (here / "rules.yml").write_text(yaml.safe_dump(rules, allow_unicode=True), encoding="utf-8")
    prom = {
        "global": {"scrape_interval": s["scrape_interval"], "evaluation_interval": s["evaluation_interval"]},
        "rule_files": [str(here / "rules.yml")],
        "scrape_configs": [{"job_name": "complaints", "static_configs": [{"targets": [exporter_address]}]}],
        "alerting": {"alertmanagers": [{"api_version": "v2",
                                        "static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]},
    }
    (here / "prometheus.yml").write_text(yaml.safe_dump(prom), encoding="utf-8")
    am = {
        "route": {"receiver": "sink", "group_by": ["alertname", "type"], "group_wait": s["group_wait"],
                  "group_interval": "5m", "repeat_interval": "4h"},
        "receivers": [{"name": "sink", "webhook_configs": [{"url": ctx.sink.url(f"peer-{setting}"),
                                                            "send_resolved": False}]}],
    }
    (here / "alertmanager.yml").write_text(yaml.safe_dump(am), encoding="utf-8")
    ctx.settings[f"peer-{setting}"] = {**s, "rule": PEER_RULE, "am_group_by": ["alertname", "type"]}
    return here / "prometheus.yml", here / "alertmanager.yml"


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as reply:
        return json.load(reply)


def wait_scraping(prometheus_url: str, timeout: float) -> None:
    """Until Prometheus has scraped the exporter and knows its Alertmanager. Prometheus applies discovered
    targets (scrape and notify) only every 5 s and then scrapes at an offset inside the interval, so a
    surge in its first seconds would measure start-up, not the steady state people live with."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(urllib.error.URLError, OSError, ValueError, KeyError):
            targets = _get_json(f"{prometheus_url}/api/v1/targets")["data"]["activeTargets"]
            managers = _get_json(f"{prometheus_url}/api/v1/alertmanagers")["data"]["activeAlertmanagers"]
            if managers and targets and all(t.get("health") == "up" for t in targets):
                return
        time.sleep(0.2)
    raise BenchError(f"{prometheus_url}: not scraping the exporter (or no Alertmanager) within {timeout:.0f} s")


def _version(binary: str) -> str:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30, check=False)
    except OSError as exc:
        return f"unknown ({exc})"
    return (out.stdout or out.stderr).splitlines()[0].strip() if (out.stdout or out.stderr) else "unknown"


def run_peer(ctx: Context, settings: Sequence[str]) -> list[Measurement]:
    """Both peer settings at once, scraping one exporter fed by one stream (their CPU use is small, and
    the typical setting needs ~45 s per alert: overlapped surges keep the run short)."""
    prometheus = shutil.which("prometheus")
    alertmanager = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if prometheus is None or alertmanager is None:
        raise BenchError("the peer needs `prometheus` and `prometheus-alertmanager` on PATH "
                         "(Debian: apt-get install prometheus prometheus-alertmanager), or leave it out "
                         "with --systems sentinel-quickstart,sentinel-fastest")
    ctx.settings["peer_versions"] = {"prometheus": _version(prometheus), "alertmanager": _version(alertmanager)}
    exporter = Exporter()
    exporter_server = Server(exporter.app(), "127.0.0.1:0")
    exporter_server.start()
    table = SqliteTable(ctx.workdir / "peer-crm.db")
    started: list[Proc] = []
    try:
        stream = Stream(table, exporter)
        stream.seed_history()
        ready: list[tuple[str, Proc]] = []
        for setting in settings:
            am_port, prom_port = free_port(), free_port()
            prom_cfg, am_cfg = _peer_configs(ctx, setting, f"127.0.0.1:{exporter_server.port}", am_port)
            data = ctx.workdir / f"peer-{setting}"
            am = ctx.procs.start(f"alertmanager-{setting}", [
                alertmanager, f"--config.file={am_cfg}", f"--storage.path={data / 'am-data'}",
                f"--web.listen-address=127.0.0.1:{am_port}", "--cluster.listen-address=", "--log.level=warn"])
            prom = ctx.procs.start(f"prometheus-{setting}", [
                prometheus, f"--config.file={prom_cfg}", f"--storage.tsdb.path={data / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"])
            started += [am, prom]
            ready += [(f"http://127.0.0.1:{am_port}/-/ready", am), (f"http://127.0.0.1:{prom_port}/-/ready", prom)]
            ctx.settings[f"peer-{setting}"]["prometheus_url"] = f"http://127.0.0.1:{prom_port}"
        for url, proc in ready:
            wait_http(url, 60, proc)
        for setting in settings:  # steady state: scraping and sending, not the first minutes' discovery
            scrape = float(PEER[setting]["scrape_interval"].rstrip("s"))
            wait_scraping(ctx.settings[f"peer-{setting}"]["prometheus_url"], 30 + 2 * scrape)
        systems = [f"peer-{s}" for s in settings]
        print(f"peer ({', '.join(settings)}): {ctx.peer_surges} surges, a pair about every {ctx.args.peer_spacing} s",
              flush=True)
        ms = drive(stream, schedule(ctx.peer_surges, 0), ctx.args.peer_spacing, "p", systems, ctx.rng)
        wait_all(ctx.sink, ms, ctx.args.timeout)
        for system in systems:
            ctx.settings[system]["messages_received"] = ctx.sink.count(system)
        for proc in started:
            if proc.popen.poll() is not None:
                raise BenchError(f"{proc.name} exited during the run ({proc.popen.returncode}):\n{proc.tail()}")
        return ms
    finally:
        for proc in started:
            ctx.procs.stop(proc)
        table.close()
        exporter_server.stop()


# --- delivery throughput and footprint ------------------------------------------------------------


def extras(quick: bool) -> dict[str, Any]:
    from sentinel.bench.delivery import measure_throughput
    from sentinel.bench.footprint import measure_footprint

    messages = 300 if quick else 2000
    seconds = 20.0 if quick else 120.0
    return {"delivery": {"messages": messages, "one_receiver": measure_throughput(1, messages),
                         "ten_receivers": measure_throughput(10, messages)},
            "footprint": {"seconds": seconds, **measure_footprint(seconds)}}


# --- report ----------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "cpu_model": model, "python": platform.python_version(), "platform": platform.platform(),
            "loadavg_at_start": list(os.getloadavg())}


def results(ms: Sequence[Measurement]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for system in SYSTEMS:
        mine = [m for m in ms if m.system == system]
        if not mine:
            continue
        out[system] = {}
        for rule in (SURGE_RULE, STREAK_RULE):
            of_rule = [m for m in mine if m.rule == rule]
            if of_rule:
                out[system][rule] = summarize(of_rule)
            elif system.startswith("peer-") and rule == STREAK_RULE:
                out[system][rule] = "not expressible: PromQL sees counts per scrape, not five in a row"
    return out


def ratios(res: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Sentinel / peer per figure, surges only (the peer has no streaks): below 1 means Sentinel is faster."""
    out: dict[str, dict[str, float | None]] = {}
    for mine, peer in PAIRED.items():
        a, b = res.get(mine, {}).get(SURGE_RULE), res.get(peer, {}).get(SURGE_RULE)
        if not isinstance(a, dict) or not isinstance(b, dict):
            continue
        out[f"{mine} / {peer}"] = {
            k: (round(a[k] / b[k], 4) if a[k] is not None and b[k] else None) for k in ("p50", "p90", "p99", "max")}
    return out


def _fmt(v: Any) -> str:
    return "timeout" if v is None else f"{v:.3f}"


def print_report(report: Mapping[str, Any], out: IO[str]) -> None:
    res, rat = report["results"], report["ratios"]
    print(f"\nlatency from the commit of the row that crosses the threshold to the sink (seconds), "
          f"{report['date']}, {report['machine']['nproc']} CPUs", file=out)
    print(f"{'system':<22}{'rule':<18}{'n':>4}{'p50':>9}{'p90':>9}{'p99':>9}{'max':>9}{'timeouts':>10}"
          f"  ratio to peer (p50/p90/p99/max)", file=out)
    for system, by_rule in res.items():
        for rule, s in by_rule.items():
            if not isinstance(s, dict):
                print(f"{system:<22}{rule:<18}  {s}", file=out)
                continue
            ratio = ""
            if rule == SURGE_RULE and system in PAIRED and f"{system} / {PAIRED[system]}" in rat:
                r = rat[f"{system} / {PAIRED[system]}"]
                ratio = f"  {'/'.join('-' if r[k] is None else f'{r[k]:.3g}' for k in ('p50', 'p90', 'p99', 'max'))}" \
                        f" x {PAIRED[system]}"
            print(f"{system:<22}{rule:<18}{s['n']:>4}{_fmt(s['p50']):>9}{_fmt(s['p90']):>9}{_fmt(s['p99']):>9}"
                  f"{_fmt(s['max']):>9}{s['timeouts']:>10}{ratio}", file=out)
    for name in ("delivery", "footprint"):
        value = report.get(name)
        if isinstance(value, dict):
            print(f"{name}: " + ", ".join(f"{k} {v}" for k, v in value.items()), file=out)
        elif value is not None:
            print(f"{name}: {value}", file=out)
    for note in report["notes"]:
        print(f"note: {note}", file=out)


# --- command line ----------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="8 surges and 8 streaks per Sentinel setting, 8 peer surges (under 3 minutes)")
    parser.add_argument("--output", default="bench-results.json", help="JSON report (default bench-results.json)")
    parser.add_argument("--systems", default=",".join(SYSTEMS),
                        help=f"comma-separated subset of {', '.join(SYSTEMS)} (default: all)")
    parser.add_argument("--surges", type=int, default=None, help="surges per Sentinel setting (default 50, quick 8)")
    parser.add_argument("--streaks", type=int, default=None, help="streaks per Sentinel setting (default 50, quick 8)")
    parser.add_argument("--peer-surges", type=int, default=None, help="peer surges (default 50, quick 8)")
    parser.add_argument("--spacing", type=float, default=1.0, help="seconds between Sentinel events (default 1)")
    parser.add_argument("--peer-spacing", type=float, default=3.0,
                        help="seconds between peer surge pairs (default 3; they overlap)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the jittered event schedule (default 1)")
    parser.add_argument("--timeout", type=float, default=400.0, help="longest wait for one message (default 400 s)")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL,
                        help=f"PostgreSQL database for the fastest setting's table (default {DEFAULT_PG_URL})")
    parser.add_argument("--override", action="append", type=parse_override, default=[], metavar="[SETTING:]KEY=VAL",
                        help="change Sentinel's config for both settings or one (quickstart:, fastest:), e.g. "
                             "source.lateness=2s or fastest:source.poll_interval=200ms; repeatable")
    parser.add_argument("--no-extras", action="store_true", help="skip delivery throughput and footprint")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (configs, logs)")


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so every `finally` runs and every process is stopped."""
    def handler(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


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
    ctx = Context(args, workdir, procs, sink, args.surges or default, args.streaks or default,
                  args.peer_surges or default, random.Random(args.seed))
    measurements: list[Measurement] = []
    host = machine()  # before the run: the load average says how busy the shared machine was
    try:
        with _sigterm_unwinds():
            for setting in SENTINEL_SETTINGS:
                if f"sentinel-{setting}" in systems:
                    measurements += run_sentinel(ctx, setting)
            peers = [s for s in PEER_SETTINGS if f"peer-{s}" in systems]
            if peers:
                measurements += run_peer(ctx, peers)
            extra = {} if args.no_extras else extras(args.quick)
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
    ctx.notes.append("each surge is a brand-new type (zero baseline): Sentinel's threshold is floor-decided and "
                     "fires on the 10th row, as does the peer's rule; surges run in alternating pairs")
    ctx.notes.append("deviations from the bare quick start, for every system: a free listen port, and grouping "
                     "by rule and type so back-to-back surges are separate groups")
    if args.override:
        ctx.notes.append("overrides: " + ", ".join(f"{t + ':' if t else ''}{k}={v!r}" for t, k, v in args.override))
    report = {
        "benchmark": "latency", "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full", "sentinel_version": __version__,
        "duration_s": round(time.time() - began, 1), "machine": host,
        "workload": {"surges": ctx.surges, "streaks": ctx.streaks, "peer_surges": ctx.peer_surges,
                     "spacing_s": args.spacing, "seed": args.seed, "peer_spacing_s": args.peer_spacing,
                     "timeout_s": args.timeout,
                     "history": f"{HISTORY_DAYS} days x {sum(HISTORY_TYPES.values())} a day over "
                                f"{len(HISTORY_TYPES)} types"},
        "settings": ctx.settings, "results": res, "ratios": ratios(res), "notes": ctx.notes, **extra,
        "measurements": [asdict(m) for m in measurements],
    }
    print_report(report, sys.stdout)
    Path(args.output).write_text(json.dumps(report, indent=2, ensure_ascii=False, default=str) + "\n",
                                 encoding="utf-8")
    print(f"\nwritten {args.output}")
    return 0 if all(s.get("timeouts", 0) == 0 for r in res.values() for s in r.values() if isinstance(s, dict)) \
        else 1
