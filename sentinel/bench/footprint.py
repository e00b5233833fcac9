"""`sentinel bench footprint`: what a running daemon costs the machine, measured from outside (never asserted).

Starts real `sentinel run` processes with the README's quick-start configuration (SQLite state store, an
SQLite source, one threshold and one streak rule, one WeCom receiver pointing at a local sink) and reads
the kernel's view of them: resident memory (`VmRSS` in /proc/PID/status) at the end of the window and CPU
time (utime + stime in /proc/PID/stat) spent during it, extrapolated to CPU-seconds per hour. Two scenes:

- `idle`: a week of light history (400 complaints a day), nothing new arriving;
- `busy`: 1,000 series (250 types x 4 channels, the threshold rule grouped by both) at 12,000 complaints a
  day: 8 days of history read back at start, then live inserts at 12,000 / 86,400 per second during the
  window.

Measuring starts once the first start's backfill has finished and the daemon has settled, so the figures
are the steady state an operator sees in `top`, not start-up cost. `measure_footprint(seconds)` returns
the same figures for another benchmark to include.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sentinel.bench import common
from sentinel.bench.common import Processes, Row, SqliteTable, start_sentinel, to_toml, wait_http
from sentinel.demo import free_port
from sentinel.simulate import CHANNELS, TYPES

PER_DAY_BUSY = 12_000
PER_DAY_IDLE = 400
HISTORY_DAYS = 8
BUSY_TYPES = 250
SETTLE_S = 5.0
START_TIMEOUT_S = 180.0


@dataclass(frozen=True, slots=True)
class Scene:
    name: str
    types: tuple[str, ...]
    per_day: int
    group_by: tuple[str, ...]
    live: bool


IDLE = Scene("idle", TYPES, PER_DAY_IDLE, ("type",), live=False)
BUSY = Scene("busy", tuple(f"问题-{i:03d}" for i in range(BUSY_TYPES)), PER_DAY_BUSY, ("type", "channel"), live=True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=60.0, help="measurement window per scene (default 60)")
    parser.add_argument("--quick", action="store_true", help="a 20 s window per scene")
    parser.add_argument(
        "--output",
        default="bench-results-footprint.json",
        metavar="FILE",
        help="where to write the figures as JSON (default bench-results-footprint.json)",
    )


def run(args: argparse.Namespace) -> int:
    seconds = 20.0 if args.quick else float(args.seconds)
    print(f"footprint of `sentinel run` (quick-start configuration), {seconds:.0f} s window per scene", flush=True)
    figures = measure_footprint(seconds, progress=True)
    print(f"{'scene':<6} {'RSS MB':>8} {'peak MB':>8} {'CPU-s/h':>8} {'threads':>8}")
    for scene in (IDLE, BUSY):
        p = scene.name
        print(
            f"{p:<6} {figures[p + '_rss_mb']:8.1f} {figures[p + '_peak_rss_mb']:8.1f} "
            f"{figures[p + '_cpu_s_per_h']:8.1f} {figures[p + '_threads']:8.0f}"
        )
    print("goals: idle < 80 MB, busy < 120 MB, idle CPU no higher than before (33-43 CPU-s/h)")
    Path(args.output).write_text(
        json.dumps({"footprint": figures, "window_s": seconds}, indent=2) + "\n", encoding="utf-8"
    )
    print(f"written: {args.output}")
    return 0


def measure_footprint(seconds: float, *, progress: bool = False) -> dict[str, float]:
    """Both scenes, one fresh daemon each: `{idle,busy}_{rss_mb,peak_rss_mb,cpu_s_per_h,threads}`."""
    out: dict[str, float] = {}
    for scene in (IDLE, BUSY):
        if progress:
            print(f"  {scene.name}: starting the daemon ...", flush=True)
        for key, value in measure_scene(scene, seconds).items():
            out[f"{scene.name}_{key}"] = value
    return out


def measure_scene(scene: Scene, seconds: float) -> dict[str, float]:
    from sentinel.sink import ChatSink

    with tempfile.TemporaryDirectory(prefix=f"sentinel-footprint-{scene.name}-") as tmp_name:
        tmp = Path(tmp_name)
        crm = _Crm(tmp / "crm.db")
        now = datetime.now(UTC)
        rng = random.Random(7)
        crm.history(scene, now, rng)
        sink = ChatSink(open(os.devnull, "w", encoding="utf-8"))  # noqa: SIM115 - closed with the sink's life
        sink.start()
        port = free_port()
        config = tmp / "sentinel.toml"
        config.write_text(quickstart_config(tmp, crm.path, sink.url, port, scene.group_by), encoding="utf-8")
        procs = Processes(tmp)
        stop = threading.Event()
        try:
            proc = start_sentinel(procs, "sentinel", config, START_TIMEOUT_S)
            wait_http(f"http://127.0.0.1:{port}/readyz", START_TIMEOUT_S, proc)
            time.sleep(SETTLE_S)
            feeder = None
            if scene.live:
                feeder = threading.Thread(target=crm.live, args=(scene, rng, stop), daemon=True)
                feeder.start()
            pid = proc.popen.pid
            cpu0, t0 = _cpu_seconds(pid), time.monotonic()
            time.sleep(seconds)
            cpu1, t1 = _cpu_seconds(pid), time.monotonic()
            status = _proc_status(pid)
            stop.set()
            if feeder is not None:
                feeder.join(timeout=5)
        finally:
            stop.set()
            procs.stop_all()
            crm.table.close()
            sink.stop()
            sink.out.close()
        return {
            "rss_mb": status["VmRSS"] / 1024,
            "peak_rss_mb": status["VmHWM"] / 1024,
            "cpu_s_per_h": (cpu1 - cpu0) / (t1 - t0) * 3600,
            "threads": float(status["Threads"]),
        }


def quickstart_config(tmp: Path, crm: Path, sink_url: str, port: int, group_by: tuple[str, ...] = ("type",)) -> str:
    """The README's quick start, with this machine's paths and a local chat sink."""
    return to_toml(
        common.quickstart_config(
            f"sqlite:///{crm}",
            "complaints",
            f"sqlite:///{tmp}/state.db",
            {"name": "cs-team", "kind": "wecom", "url": sink_url},
            listen=f"127.0.0.1:{port}",
            surge_group_by=group_by,
        )
    )


class _Crm:
    """The complaint table (`common.SqliteTable`), with this benchmark's history and live stream."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.table = SqliteTable(path)
        self.next_id = 1

    def insert(self, rows: list[tuple[datetime, str, str]]) -> None:
        out = []
        for when, type_, channel in rows:
            out.append(Row(self.next_id, when.replace(tzinfo=None), type_, channel))
            self.next_id += 1
        self.table.insert(out)

    def history(self, scene: Scene, now: datetime, rng: random.Random) -> None:
        """`HISTORY_DAYS` days up to a minute ago, evenly spread over every (type, channel) series."""
        start = now - timedelta(days=HISTORY_DAYS)
        n = scene.per_day * HISTORY_DAYS
        span = (now - timedelta(minutes=1) - start).total_seconds()
        rows = [
            (start + timedelta(seconds=span * i / n), rng.choice(scene.types), rng.choice(CHANNELS)) for i in range(n)
        ]
        self.insert(rows)

    def live(self, scene: Scene, rng: random.Random, stop: threading.Event) -> None:
        """One complaint every 86,400 / per_day seconds, committed as it is created."""
        gap = 86_400 / scene.per_day
        while not stop.wait(gap):
            self.insert([(datetime.now(UTC), rng.choice(scene.types), rng.choice(CHANNELS))])


def _cpu_seconds(pid: int) -> float:
    """utime + stime of the process (all its threads), from /proc/PID/stat."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM in kB, and Threads, from /proc/PID/status."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "Threads"):
            out[key] = int(value.split()[0])
    return out
