"""The workload of `sentinel bench latency`, the same for every system: what is written, when, and what one
run's phases share.

It guarantees that the history is written before a system starts (8 full local days, 40 complaints a day,
never five of a type in a row), that every surge and streak is of types never seen before (a new alert and
a new group each time), that the clock starts at the COMMIT of the row that completes it (`time.time()`
right after it), and that events follow a schedule fixed in advance (open loop: a slow system cannot slow
the workload down). A measurement with no message is infinite, never left out.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol
from zoneinfo import ZoneInfo

from sentinel.bench.common import STREAK_RULE, SURGE_RULE, Processes, Row, Table, libpq_url
from sentinel.bench.latency_sink import Sink
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


# --- the complaint table ---------------------------------------------------------------------------


class PgTable:
    """A table of its own (unique name) in an existing database, dropped by `close`."""

    def __init__(self, url: str) -> None:
        import psycopg

        self.name = f"latbench_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        self.url = url
        self._conn = psycopg.connect(libpq_url(url))
        self._conn.execute(
            f"CREATE TABLE {self.name} (id BIGINT PRIMARY KEY, created_at TIMESTAMP NOT NULL, "
            "category TEXT, channel TEXT)"
        )
        self._conn.execute(f"CREATE INDEX {self.name}_created_at_id_idx ON {self.name} (created_at, id)")
        self._conn.commit()

    def insert(self, rows: Sequence[Row]) -> float:
        with self._conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO {self.name} VALUES (%s, %s, %s, %s)",
                [(r.id, r.created_at, r.type, r.channel) for r in rows],
            )
        self._conn.commit()
        return time.time()

    def close(self) -> None:
        try:
            self._conn.rollback()
            self._conn.execute(f"DROP TABLE IF EXISTS {self.name} CASCADE")
            self._conn.commit()
        finally:
            self._conn.close()


class RowSink(Protocol):
    """What a stream also tells, right after each commit (the peer's exporter)."""

    def add(self, rows: Sequence[Row]) -> None: ...


class Stream:
    """Writes the workload into one table (and into the exporter, right after each commit)."""

    def __init__(self, table: Table, exporter: RowSink | None = None) -> None:
        self.table = table
        self.exporter = exporter
        self.next_id = 1

    def _rows(self, types: Sequence[str], when: Sequence[datetime] | None = None) -> list[Row]:
        now = datetime.now(UTC).replace(tzinfo=None)
        rows = []
        for i, type_ in enumerate(types):
            rows.append(
                Row(self.next_id, now if when is None else when[i], type_, CHANNELS[self.next_id % len(CHANNELS)])
            )
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
    events = [(i / pairs, "pair") for i in range(pairs)] + [(i / max(n_streaks, 1), "streak") for i in range(n_streaks)]
    return [kind for _pos, kind in sorted(events, key=lambda e: (e[0], e[1]))]


def drive(
    stream: Stream, events: Sequence[str], spacing: float, prefix: str, systems: Sequence[str], rng: random.Random
) -> list[Measurement]:
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


# --- what the phases share -------------------------------------------------------------------------


@dataclass
class Context:
    """One run: its options, folder, processes and sink, the event counts, the schedule's random source,
    and what the report says of each system's setting (`settings`, JSON) and of the run (`notes`)."""

    args: argparse.Namespace
    workdir: Path
    procs: Processes
    sink: Sink
    surges: int
    streaks: int
    peer_surges: int
    rng: random.Random
    settings: dict[str, dict[str, object]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
