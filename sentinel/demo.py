"""`sentinel demo`: the whole product on one machine with nothing configured.

A temporary directory holds an SQLite "CRM" seeded with a week of complaints shaped like the seeds'
operation; a feeder thread writes a live stream into it (normal traffic, then a surge of 物流配送延误
and a five-in-a-row streak of 服务态度); the real daemon polls it, detects both within seconds and
delivers each alert through the real outbox to a local chat sink that prints the message as the chat
tool would show it. `/metrics` is served on a free port, printed at start.
"""

from __future__ import annotations

import json
import math
import random
import re
import sqlite3
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO
from zoneinfo import ZoneInfo

from sentinel.simulate import CHANNELS, TYPES, generate

TZ = ZoneInfo("Asia/Shanghai")
SURGE_TYPE = "物流配送延误"
STREAK_TYPE = "服务态度"
PER_DAY = 400
SURGE_PER_TICK = 10  # at least 20 a second (more when the day is young: see Feeder)
NORMAL_EVERY_TICKS = 4  # one ordinary complaint every 2 s: a live stream that does not itself make surges


class DemoCrm:
    """The demo's complaint table (SQLite, naive UTC timestamps, indexed as the docs ask)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.next_id = 1
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE complaints (id INTEGER PRIMARY KEY, created_at TEXT NOT NULL, "
                       "type TEXT NOT NULL, channel TEXT NOT NULL, customer TEXT)")
            db.execute("CREATE INDEX ix_complaints_created_at_id ON complaints (created_at, id)")

    def insert(self, rows: list[tuple[datetime, str, str, str]]) -> None:
        with self.lock, sqlite3.connect(self.path) as db:
            out = []
            for when, type_, channel, customer in rows:
                out.append((self.next_id, when.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" "),
                            type_, channel, customer))
                self.next_id += 1
            db.executemany("INSERT INTO complaints VALUES (?, ?, ?, ?, ?)", out)

    def seed(self, now: datetime, days: int = 7) -> int:
        """A week of history plus today up to now."""
        start = (now.astimezone(TZ) - timedelta(days=days)).date()
        stream = generate(start, days + 1, PER_DAY, TZ, seed=42)
        now_us = int(now.timestamp() * 1_000_000)
        rows = []
        for i in range(len(stream)):
            ts = int(stream.ts[i])
            if ts >= now_us - 60_000_000:
                break
            rows.append((datetime.fromtimestamp(ts / 1e6, UTC), stream.types[int(stream.type[i])],
                         CHANNELS[int(stream.channel[i])], f"C{int(stream.customer[i]):06d}"))
        self.insert(rows)
        return len(rows)


def rules_dir() -> Path:
    """The seeds' rules as the package ships them (`sentinel/rules` is the top-level `rules/` folder: a
    link in a checkout, files in a wheel), so the demo runs the same rule files a user starts from."""
    return Path(__file__).parent / "rules" / "seeds"


def demo_config(tmp: Path, crm: Path, sink_url: str, listen: str) -> str:
    return f"""
timezone = "Asia/Shanghai"
state_url = "sqlite:///{tmp}/state.db"
listen = "{listen}"
locale = "zh_CN"
rules_dir = {json.dumps(str(rules_dir()))}   # type-surge, same-type-streak, the streak held under its surge

[source]
url = "sqlite:///{crm}"
table = "complaints"
columns = {{ id = "id", created_at = "created_at", type = "type", channel = "channel", customer = "customer" }}
timezone = "UTC"
poll_interval = "1s"
record_url = "https://crm.example.internal/complaints/{{id}}"

[[receivers]]
name = "demo-chat"
kind = "wecom"
url = "{sink_url}"
rate_limit = "20/min"

# One chat message per complaint type: a surge and the five-in-a-row it brings about arrive within
# seconds; waiting 5 s lets them meet in one group, where the streak is held under its surge.
[[routes]]
receivers = ["demo-chat"]
group_by = ["type"]
group_wait = "5s"
group_interval = "10s"
"""


    def counts(self, type_: str, now: datetime, days: int = 7) -> tuple[float, int]:
        """The type's mean over the previous `days` full local days and its count today so far."""
        today = now.astimezone(TZ).date()
        per_day: dict[object, int] = {}
        with self.lock, sqlite3.connect(self.path) as db:
            for (created,) in db.execute("SELECT created_at FROM complaints WHERE type = ?", (type_,)):
                day = datetime.fromisoformat(created).replace(tzinfo=UTC).astimezone(TZ).date()
                per_day[day] = per_day.get(day, 0) + 1
        history = [per_day.get(today - timedelta(days=d), 0) for d in range(1, days + 1)]
        return sum(history) / days, per_day.get(today, 0)


class Feeder(threading.Thread):
    """Writes the live stream: normal traffic, a streak at ~6 s, a surge from ~10 s.

    The surge is sized to pass 1.5 × the type's daily average within about two seconds at any hour (a
    day-mode rule compares today so far with whole days, so at 01:00 it takes more complaints than at
    21:00): the surge and the five-in-a-row it brings about land in one chat group wait, and the
    inhibition of the seed rules tells that crisis once, as the surge.
    """

    def __init__(self, crm: DemoCrm, out: IO[str], stop: threading.Event) -> None:
        super().__init__(name="demo-feeder", daemon=True)
        self.crm, self.out, self.stop_event = crm, out, stop
        self.rng = random.Random(7)

    def normal(self) -> tuple[datetime, str, str, str]:
        t = self.rng.choices(TYPES, weights=(30, 25, 22, 15, 8))[0]
        while t == STREAK_TYPE:  # keep 服务态度 out of normal traffic so the streak below stands out
            t = self.rng.choice(TYPES)
        return datetime.now(UTC), t, self.rng.choice(CHANNELS), f"C{self.rng.randrange(20000):06d}"

    def run(self) -> None:
        start = time.monotonic()
        streak_done = False
        surge_per_tick = 0
        tick = 0
        while not self.stop_event.wait(0.5):
            elapsed = time.monotonic() - start
            tick += 1
            rows = [self.normal()] if tick % NORMAL_EVERY_TICKS == 0 else []
            if elapsed > 6 and not streak_done:
                now = datetime.now(UTC)
                rows += [(now + timedelta(milliseconds=i), STREAK_TYPE, "电话热线", f"C9{i:05d}") for i in range(5)]
                streak_done = True
                print("demo: five 服务态度 complaints in a row just arrived", file=self.out, flush=True)
            if elapsed > 10:
                if not surge_per_tick:
                    baseline, today = self.crm.counts(SURGE_TYPE, datetime.now(UTC))
                    surge_per_tick = max(SURGE_PER_TICK, math.ceil((1.5 * baseline - today + 1) / 4))
                    print(f"demo: a surge of {SURGE_TYPE} starts now ({today} so far today, daily average "
                          f"{baseline:.1f}; {2 * surge_per_tick} more a second)", file=self.out, flush=True)
                rows += [(datetime.now(UTC), SURGE_TYPE, self.rng.choice(CHANNELS),
                          f"C{self.rng.randrange(20000):06d}") for _ in range(surge_per_tick)]
            if rows:
                self.crm.insert(rows)


def free_port() -> int:
    """A port nothing listens on now, so links in messages can name it (port 0 could not)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_demo(duration: float | None, out: IO[str] = sys.stdout, keep: bool = False) -> int:
    from sentinel.config import load_config
    from sentinel.logs import setup_logging
    from sentinel.service import build
    from sentinel.sink import ChatSink

    setup_logging("WARNING", json_logs=False)
    tmp = Path(tempfile.mkdtemp(prefix="sentinel-demo-"))
    crm = DemoCrm(tmp / "crm.db")
    now = datetime.now(UTC)
    n = crm.seed(now)
    sink = ChatSink(out)
    sink.start()
    cfg_path = tmp / "sentinel.toml"
    cfg_path.write_text(demo_config(tmp, crm.path, sink.url, f"127.0.0.1:{free_port()}"), encoding="utf-8")
    cfg = load_config(cfg_path)
    daemon = build(cfg, config_path=str(cfg_path))
    print(f"demo: working directory {tmp}", file=out)
    print(f"demo: seeded {n:,} complaints (a week of history, about {PER_DAY} a day)", file=out)
    daemon.start()
    assert daemon.server is not None
    print(f"demo: metrics at {daemon.server.url}/metrics, status at {daemon.server.url}/", file=out)
    print("demo: watching the live stream (Ctrl-C to stop)", file=out, flush=True)
    stop = threading.Event()
    feeder = Feeder(crm, out, stop)
    feeder.start()
    deadline = None if duration is None else time.monotonic() + duration
    try:
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        feeder.join(timeout=2)
        daemon.stop()
        sink.stop()
    print(f"demo: {sink.count} message(s) delivered to the chat sink", file=out)
    if not keep:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return 0


