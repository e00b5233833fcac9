"""The peer of `sentinel bench latency`: real `prometheus` and `prometheus-alertmanager`, at typical settings
(scrape 15 s, evaluation 15 s, group_wait 30 s) and aggressive ones (1 s, 1 s, 0 s), scraping an exporter in
this process that is fed the same stream as Sentinel, right after each commit.

The peer's rule. The exporter serves `complaints_total{type}` (a counter), `complaints_today{type}` (today's
count, calendar day in Asia/Shanghai as Sentinel's `timezone`) and `complaints_baseline_daily_mean{type}`
(the mean over the 7 previous full days, empty days 0), and the alerting rule is
`complaints_today >= 10 and complaints_today > 1.5 * complaints_baseline_daily_mean`: Sentinel's
`current >= min_count and current > factor x baseline`. The exporter computes the two gauges because "today
since local midnight" and "the previous 7 calendar days" cannot be written exactly with `increase()` (it
extrapolates within its window and slides instead of following the calendar), so an `increase()` rule would
not become true at the same row as Sentinel's; with the gauges it does, at the 10th row of a fresh type.

It guarantees that the clock runs only in the steady state (every target scraped and an Alertmanager known
before the first surge), that Alertmanager groups by `[alertname, type]` as Sentinel's route groups by
`[rule, type]`, and that every process it starts is stopped, also on failure.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from sentinel.bench.common import SURGE_RULE, BenchError, Proc, Row, SqliteTable, wait_http
from sentinel.bench.latency_workload import (
    BASELINE_DAYS,
    FACTOR,
    MIN_COUNT,
    TZ,
    Context,
    Measurement,
    Stream,
    drive,
    schedule,
    wait_all,
)
from sentinel.demo import free_port
from sentinel.http import App, Response, Server

PEER: dict[str, dict[str, str]] = {
    "typical": {"scrape_interval": "15s", "evaluation_interval": "15s", "group_wait": "30s"},
    "aggressive": {"scrape_interval": "1s", "evaluation_interval": "1s", "group_wait": "0s"},
}
PEER_RULE = f"complaints_today >= {MIN_COUNT} and complaints_today > {FACTOR} * complaints_baseline_daily_mean"


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
        app.route(
            "GET",
            "/metrics",
            lambda _req: Response(200, self.render().encode(), "text/plain; version=0.0.4; charset=utf-8"),
        )
        return app

    def add(self, rows: Sequence[Row]) -> None:
        with self._lock:
            for row in rows:
                day = row.created_at.replace(tzinfo=UTC).astimezone(TZ).date()
                per_day = self.daily.setdefault(row.type, {})
                per_day[day] = per_day.get(day, 0) + 1

    def render(self) -> str:
        today = datetime.now(TZ).date()
        lines = [
            "# TYPE complaints_total counter",
            "# TYPE complaints_today gauge",
            "# TYPE complaints_baseline_daily_mean gauge",
        ]
        with self._lock:
            for type_, per_day in sorted(self.daily.items()):
                lab = f'{{type="{_label(type_)}"}}'
                mean = sum(per_day.get(today - timedelta(days=d), 0) for d in range(1, BASELINE_DAYS + 1))
                lines.append(f"complaints_total{lab} {sum(per_day.values())}")
                lines.append(f"complaints_today{lab} {per_day.get(today, 0)}")
                lines.append(f"complaints_baseline_daily_mean{lab} {mean / BASELINE_DAYS}")
        return "\n".join(lines) + "\n"


def _peer_configs(ctx: Context, setting: str, exporter_address: str, am_port: int) -> tuple[Path, Path]:
    import yaml

    s = PEER[setting]
    here = ctx.workdir / f"peer-{setting}"
    here.mkdir()
    rules = {
        "groups": [
            {
                "name": "complaints",
                "rules": [
                    {
                        "alert": "TypeSurge",
                        "expr": PEER_RULE,
                        "labels": {"rule": SURGE_RULE},
                        "annotations": {
                            "summary": "{{ $labels.type }}: {{ $value }} complaints today, over 1.5 x the 7-day mean"
                        },
                    }
                ],
            }
        ]
    }
    (here / "rules.yml").write_text(yaml.safe_dump(rules, allow_unicode=True), encoding="utf-8")
    prom = {
        "global": {"scrape_interval": s["scrape_interval"], "evaluation_interval": s["evaluation_interval"]},
        "rule_files": [str(here / "rules.yml")],
        "scrape_configs": [{"job_name": "complaints", "static_configs": [{"targets": [exporter_address]}]}],
        "alerting": {
            "alertmanagers": [{"api_version": "v2", "static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]
        },
    }
    (here / "prometheus.yml").write_text(yaml.safe_dump(prom), encoding="utf-8")
    am = {
        "route": {
            "receiver": "sink",
            "group_by": ["alertname", "type"],
            "group_wait": s["group_wait"],
            "group_interval": "5m",
            "repeat_interval": "4h",
        },
        "receivers": [
            {"name": "sink", "webhook_configs": [{"url": ctx.sink.url(f"peer-{setting}"), "send_resolved": False}]}
        ],
    }
    (here / "alertmanager.yml").write_text(yaml.safe_dump(am), encoding="utf-8")
    ctx.settings[f"peer-{setting}"] = {**s, "rule": PEER_RULE, "am_group_by": ["alertname", "type"]}
    return here / "prometheus.yml", here / "alertmanager.yml"


def _active(url: str, what: str) -> list[object]:
    """`data.<what>` of a Prometheus API answer. A missing key is a KeyError (the caller waits on), a
    shape that is not JSON objects a TypeError, as indexing the parsed JSON would raise."""
    with urllib.request.urlopen(url, timeout=5) as reply:
        body: object = json.load(reply)
    if not isinstance(body, dict) or not isinstance(body["data"], dict):
        raise TypeError(f"{url}: not a Prometheus API answer")
    items = body["data"][what]
    if not isinstance(items, list):
        raise TypeError(f"{url}: data.{what} is not a list")
    return items


def wait_scraping(prometheus_url: str, timeout: float) -> None:
    """Until Prometheus has scraped the exporter and knows its Alertmanager. Prometheus applies discovered
    targets (scrape and notify) only every 5 s and then scrapes at an offset inside the interval, so a
    surge in its first seconds would measure start-up, not the steady state people live with."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(urllib.error.URLError, OSError, ValueError, KeyError):
            targets = _active(f"{prometheus_url}/api/v1/targets", "activeTargets")
            managers = _active(f"{prometheus_url}/api/v1/alertmanagers", "activeAlertmanagers")
            if managers and targets and all(isinstance(t, dict) and t.get("health") == "up" for t in targets):
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
        raise BenchError(
            "the peer needs `prometheus` and `prometheus-alertmanager` on PATH "
            "(Debian: apt-get install prometheus prometheus-alertmanager), or leave it out "
            "with --systems sentinel-quickstart,sentinel-fastest"
        )
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
        prometheus_urls: dict[str, str] = {}
        for setting in settings:
            am_port, prom_port = free_port(), free_port()
            prom_cfg, am_cfg = _peer_configs(ctx, setting, f"127.0.0.1:{exporter_server.port}", am_port)
            data = ctx.workdir / f"peer-{setting}"
            am = ctx.procs.start(
                f"alertmanager-{setting}",
                [
                    alertmanager,
                    f"--config.file={am_cfg}",
                    f"--storage.path={data / 'am-data'}",
                    f"--web.listen-address=127.0.0.1:{am_port}",
                    "--cluster.listen-address=",
                    "--log.level=warn",
                ],
            )
            prom = ctx.procs.start(
                f"prometheus-{setting}",
                [
                    prometheus,
                    f"--config.file={prom_cfg}",
                    f"--storage.tsdb.path={data / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{prom_port}",
                    "--log.level=warn",
                ],
            )
            started += [am, prom]
            ready += [(f"http://127.0.0.1:{am_port}/-/ready", am), (f"http://127.0.0.1:{prom_port}/-/ready", prom)]
            prometheus_urls[setting] = f"http://127.0.0.1:{prom_port}"
            ctx.settings[f"peer-{setting}"]["prometheus_url"] = prometheus_urls[setting]
        for url, proc in ready:
            wait_http(url, 60, proc)
        for setting in settings:  # steady state: scraping and sending, not the first minutes' discovery
            scrape = float(PEER[setting]["scrape_interval"].rstrip("s"))
            wait_scraping(prometheus_urls[setting], 30 + 2 * scrape)
        systems = [f"peer-{s}" for s in settings]
        print(
            f"peer ({', '.join(settings)}): {ctx.peer_surges} surges, a pair about every {ctx.args.peer_spacing} s",
            flush=True,
        )
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
