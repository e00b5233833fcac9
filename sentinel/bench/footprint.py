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
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

PER_DAY_BUSY = 12_000
PER_DAY_IDLE = 400
HISTORY_DAYS = 8
BUSY_TYPES = 250
CHANNELS = ("官网客服", "微信公众号", "电话热线", "其他渠道")
IDLE_TYPES = ("系统操作错误", "服务态度", "物流配送延误", "产品相关", "其他")
SETTLE_S = 5.0
START_TIMEOUT_S = 180.0


@dataclass(frozen=True, slots=True)
class Scene:
    name: str
    types: tuple[str, ...]
    per_day: int
    group_by: str
    live: bool


IDLE = Scene("idle", IDLE_TYPES, PER_DAY_IDLE, '["type"]', live=False)
BUSY = Scene("busy", tuple(f"问题-{i:03d}" for i in range(BUSY_TYPES)), PER_DAY_BUSY, '["type", "channel"]',
             live=True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=60.0, help="measurement window per scene (default 60)")
    parser.add_argument("--quick", action="store_true", help="a 20 s window per scene")
    parser.add_argument("--output", default="bench-results-footprint.json", metavar="FILE",
                        help="where to write the figures as JSON (default bench-results-footprint.json)")


def run(args: argparse.Namespace) -> int:
    seconds = 20.0 if args.quick else float(args.seconds)
    print(f"footprint of `sentinel run` (quick-start configuration), {seconds:.0f} s window per scene", flush=True)
    figures = measure_footprint(seconds, progress=True)
    print(f"{'scene':<6} {'RSS MB':>8} {'peak MB':>8} {'CPU-s/h':>8} {'threads':>8}")
    for scene in (IDLE, BUSY):
        p = scene.name
        print(f"{p:<6} {figures[p + '_rss_mb']:8.1f} {figures[p + '_peak_rss_mb']:8.1f} "
              f"{figures[p + '_cpu_s_per_h']:8.1f} {figures[p + '_threads']:8.0f}")
    print("goals: idle < 80 MB, busy < 120 MB, idle CPU no higher than before (33-43 CPU-s/h)")
    Path(args.output).write_text(json.dumps({"footprint": figures, "window_s": seconds}, indent=2) + "\n",
                                 encoding="utf-8")
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
        port = _free_port()
        config = tmp / "sentinel.toml"
        config.write_text(quickstart_config(tmp, crm.path, sink.url, port, scene.group_by), encoding="utf-8")
        log_path = tmp / "sentinel.log"
        with open(log_path, "wb") as log_file:
            proc = subprocess.Popen([*_sentinel_command(), "run", "--config", str(config)],
                                    stdout=log_file, stderr=subprocess.STDOUT, cwd=tmp)
        stop = threading.Event()
        try:
            _wait_ready(proc, port, log_path)
            time.sleep(SETTLE_S)
            feeder = None
            if scene.live:
                feeder = threading.Thread(target=crm.live, args=(scene, rng, stop), daemon=True)
                feeder.start()
            cpu0, t0 = _cpu_seconds(proc.pid), time.monotonic()
            time.sleep(seconds)
            cpu1, t1 = _cpu_seconds(proc.pid), time.monotonic()
            status = _proc_status(proc.pid)
            stop.set()
            if feeder is not None:
                feeder.join(timeout=5)
        finally:
            stop.set()
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            sink.stop()
            sink.out.close()
        return {
            "rss_mb": status["VmRSS"] / 1024,
            "peak_rss_mb": status["VmHWM"] / 1024,
            "cpu_s_per_h": (cpu1 - cpu0) / (t1 - t0) * 3600,
            "threads": float(status["Threads"]),
        }


def quickstart_config(tmp: Path, crm: Path, sink_url: str, port: int, group_by: str = '["type"]') -> str:
    """The README's quick start, with this machine's paths and a local chat sink."""
    return f"""
timezone = "Asia/Shanghai"
state_url = "sqlite:///{tmp}/state.db"
listen = "127.0.0.1:{port}"

[source]
url = "sqlite:///{crm}"
table = "complaints"
columns = {{ id = "id", created_at = "created_at", type = "category", channel = "channel" }}
timezone = "UTC"

[[rules]]
name = "type-surge"
kind = "threshold"
group_by = {group_by}

[[rules]]
name = "same-type-streak"
kind = "streak"

[[receivers]]
name = "cs-team"
kind = "wecom"
url = "{sink_url}"
"""


class _Crm:
    """The complaint table as a CRM keeps it: naive UTC text timestamps, indexed on (created_at, id)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.next_id = 1
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE complaints (id INTEGER PRIMARY KEY, created_at TEXT NOT NULL, "
                       "category TEXT, channel TEXT)")
            db.execute("CREATE INDEX ix_complaints_created_at_id ON complaints (created_at, id)")

    def insert(self, rows: list[tuple[datetime, str, str]]) -> None:
        out = []
        for when, type_, channel in rows:
            out.append((self.next_id, when.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds"),
                        type_, channel))
            self.next_id += 1
        with sqlite3.connect(self.path) as db:
            db.executemany("INSERT INTO complaints VALUES (?, ?, ?, ?)", out)

    def history(self, scene: Scene, now: datetime, rng: random.Random) -> None:
        """`HISTORY_DAYS` days up to a minute ago, evenly spread over every (type, channel) series."""
        start = now - timedelta(days=HISTORY_DAYS)
        n = scene.per_day * HISTORY_DAYS
        span = (now - timedelta(minutes=1) - start).total_seconds()
        rows = [(start + timedelta(seconds=span * i / n), rng.choice(scene.types), rng.choice(CHANNELS))
                for i in range(n)]
        self.insert(rows)

    def live(self, scene: Scene, rng: random.Random, stop: threading.Event) -> None:
        """One complaint every 86,400 / per_day seconds, committed as it is created."""
        gap = 86_400 / scene.per_day
        while not stop.wait(gap):
            self.insert([(datetime.now(UTC), rng.choice(scene.types), rng.choice(CHANNELS))])


def _sentinel_command() -> list[str]:
    """The installed `sentinel` script next to this interpreter, as the README runs it."""
    script = Path(sys.executable).with_name("sentinel")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from sentinel.cli import main; sys.exit(main())"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_ready(proc: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
    """Until /readyz answers 200 and the first start's backfill has been committed."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sentinel run exited with {proc.returncode}:\n{log_path.read_text(errors='replace')}")
        if b"backfill finished" in log_path.read_bytes() and _ready(port):
            return
        time.sleep(0.25)
    raise RuntimeError(f"sentinel run did not become ready in {START_TIMEOUT_S:.0f} s")


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp:
            ok: bool = resp.status == 200
            return ok
    except OSError:
        return False


def _cpu_seconds(pid: int) -> float:
    """utime + stime of the process (all its threads), from /proc/PID/stat."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM in kB, and Threads, from /proc/PID/status."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "Threads"):
            out[key] = int(value.split()[0])
    return out


def main(argv: list[str] | None = None) -> Any:
    """`python -m sentinel.bench.footprint` without the rest of the CLI."""
    parser = argparse.ArgumentParser(prog="sentinel bench footprint")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
