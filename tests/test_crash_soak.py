"""Crash soak with real processes: `sentinel run` over a real SQLite CRM while surges and streaks are
written into it, killed with SIGKILL 15 times at seeded random moments and started again each time, with
a state-store outage in the middle (SQLite: another connection holds the write lock for 62 s, past the
30 s busy timeout of two writers in turn; PostgreSQL: the store's connections cut at a TCP proxy for 6 s)
that the running daemon must come through without a restart. A local webhook records every delivery with
its delivery id. Afterwards:

- the store's hourly buckets equal the source's rows grouped by hour, type and channel;
- the recorded events equal the backtest's over the same rows (the engine `sentinel backtest` runs);
- nothing is lost: every outbox message was delivered, and every alert the events tell reached the webhook
  (a resolved one told as resolved);
- the only deliveries received twice are messages that were in flight (`sending`) at a kill or when the
  store went away, each at most once more per such moment.

Rows are written as they happen (created now, committed at once, in id order), so the daemon sees them in
order: that is where the design promises the backtest's events exactly. The figures are printed."""

from __future__ import annotations

import contextlib
import json
import random
import signal
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from sentinel.config import load_config
from sentinel.days import Calendar
from sentinel.detect.engine import sort_events
from sentinel.model import from_datetime
from sentinel.store.schema import hourly_buckets
from tests.crm import Crm
from tests.delivery.test_kill import start, stop, wait_for
from tests.detect.builders import Rec
from tests.detect.test_feed import as_json
from tests.latency_helpers import HISTORY, insert, seed_history
from tests.notify.vendors import Answer, FakeWebhook, Request
from tests.reference import backtest, recorded
from tests.sources.dbs import TcpProxy

SEED = 20251111
KILLS = 15
OUTAGE_AFTER = 7  # kills before the store outage
# The daemon's writers (poll, dispatch, delivery) queue for SQLite's write lock, each waiting out the 30 s busy
# timeout: held this long, the poll's transaction fails whichever writer waits first.
OUTAGE_SQLITE_S = 62.0
LATENESS_S = 3.0
HOLD_S = 6.0
TYPES = list(HISTORY)
CONFIG = """
timezone = "Asia/Shanghai"
state_url = "{state_url}"
listen = "127.0.0.1:0"
locale = "en"

[source]
url = "sqlite:///{crm}"
table = "complaints"
columns = {{ id = "id", created_at = "created_at", type = "category", channel = "channel" }}
timezone = "UTC"
lateness = "{lateness}s"
poll_interval = "250ms"

[[rules]]
name = "type-surge"
kind = "threshold"

[[rules]]
name = "streak"
kind = "streak"
length = 5
hold = "{hold}s"

[[receivers]]
name = "hook"
kind = "webhook"
url = "{url}"
timeout = "30s"

[[routes]]
receivers = ["hook"]
group_by = ["rule", "type"]
group_wait = "0s"
group_interval = "0s"
repeat_interval = "24h"
"""


class SlowWebhook(FakeWebhook):
    """Answers each delivery after 0.15 s, so a kill often finds a message in flight."""

    def ok(self, req: Request) -> Answer:
        return Answer(200, delay=0.15)


class State:
    """The daemon's state store, read from outside while it runs (never written)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = sa.create_engine(url, poolclass=NullPool)

    def rows(self, sql: str) -> list[Any]:
        try:
            with self.engine.connect() as conn:
                return list(conn.execute(sa.text(sql)).all())
        except sa.exc.SQLAlchemyError:
            return []  # not created or migrated yet, or cut off by the outage

    def close(self) -> None:
        self.engine.dispose()


@dataclass
class Writer:
    """Writes the workload into the CRM from a thread: streaks of one type (5 to 13 in a row, then a
    break), surges (bursts of one type among a few others) and a little noise, seeded."""

    crm: Crm
    rng: random.Random
    stop: threading.Event = field(default_factory=threading.Event)
    rows: int = 0
    error: BaseException | None = None

    def run(self) -> None:
        try:
            self._write()
        except BaseException as exc:  # noqa: BLE001 - reported by the test, not lost in the thread
            self.error = exc

    def _write(self) -> None:
        while not self.stop.is_set():
            kind = self.rng.choice(["streak", "streak", "surge", "noise"])
            typ = self.rng.choice(TYPES)
            others = [t for t in TYPES if t != typ]
            if kind == "streak":
                batches = [[typ] for _ in range(self.rng.randint(5, 13))] + [[self.rng.choice(others)]]
            elif kind == "surge":
                batches = [
                    [typ] * self.rng.randint(2, 6) + [self.rng.choice(others)] for _ in range(self.rng.randint(2, 5))
                ]
            else:
                batches = [[self.rng.choice(TYPES)] for _ in range(self.rng.randint(2, 5))]
            for types in batches:
                insert(self.crm, types)
                self.rows += len(types)
                if self.stop.wait(self.rng.uniform(0.03, 0.25)):
                    return
            self.stop.wait(self.rng.uniform(0.5, 2.5))


@dataclass
class Soak:
    """One soak: the daemon's process, its log, and what each kill caught in flight."""

    config: Path
    log: Path
    state: State
    proc: Any = None
    starts: int = 0
    kills: int = 0
    listening: int = 0
    in_flight: list[set[str]] = field(default_factory=list)
    down: list[tuple[int, int]] = field(default_factory=list)  # µs: killed .. restarted, and the outage

    def start(self) -> None:
        self.listening = self._listening()
        self.proc = start(self.config, self.log)
        self.starts += 1
        if self.down and self.down[-1][1] == 0:
            self.down[-1] = (self.down[-1][0], wall_us())

    def _listening(self) -> int:
        return self.log.read_text(errors="replace").count('"msg": "listening"') if self.log.exists() else 0

    def wait_listening(self) -> None:
        self.wait("the daemon listening", lambda: self._listening() > self.listening)

    def kill(self) -> None:
        self.kills += 1
        self.down.append((wall_us(), 0))
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.catch()

    def catch(self) -> None:
        """Remember the messages in flight now (killed, or the store gone: they may be sent again)."""
        self.in_flight.append(
            {d for (d,) in self.state.rows("SELECT delivery_id FROM outbox WHERE status = 'sending'")}
        )

    def committed_after(self, us: int) -> Callable[[], bool]:
        return lambda: any(int(u) > us for (u,) in self.state.rows("SELECT updated_us FROM source_state"))

    def wait(self, what: str, condition: Callable[[], bool], timeout: float = 60.0) -> None:
        wait_for(what, condition, self.proc, self.log, timeout)


def wall_us() -> int:
    return from_datetime(datetime.now(UTC))


@contextlib.contextmanager
def sqlite_write_lock(
    path: Path, seconds: float, until: Callable[[], bool] = lambda: True, longest: float = 240.0
) -> Iterator[None]:
    """Another connection holds the store's write lock for `seconds` (past the daemon's 30 s busy timeout),
    and on until `until()` holds (a poll has failed under it: on a loaded machine the writers' queue may
    put a poll's wait past the first `seconds`), `longest` at most."""
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        began = time.monotonic()
        yield
        time.sleep(max(0.0, seconds - (time.monotonic() - began)))
        while not until() and time.monotonic() - began < longest:
            time.sleep(0.5)
        conn.execute("ROLLBACK")
    finally:
        conn.close()


def soak(
    tmp_path: Path,
    state_url: str,
    direct_url: str,
    outage: Callable[[], contextlib.AbstractContextManager[None]],
    failed: str,
) -> dict[str, Any]:
    """`outage()` makes the store unavailable while it is entered, until some time after its body; the same
    process goes on afterwards (no restart). `failed` is what the log says when a poll failed meanwhile
    (rather than waited the outage out)."""
    started = time.monotonic()
    rng = random.Random(SEED)
    crm = Crm(tmp_path / "crm.db")
    seed_history(crm)
    log = tmp_path / "sentinel.log"
    state = State(direct_url)
    writer = Writer(crm, random.Random(SEED + 1))
    thread = threading.Thread(target=writer.run, name="writer", daemon=True)
    with SlowWebhook() as hook:
        config = tmp_path / "sentinel.toml"
        config.write_text(
            CONFIG.format(state_url=state_url, crm=crm.path, url=hook.url, lateness=LATENESS_S, hold=HOLD_S),
            encoding="utf-8",
        )
        s = Soak(config, log, state)
        s.start()
        try:
            s.wait(
                "the first start's backfill",
                lambda: [bool(r[0]) for r in state.rows("SELECT backfill_done FROM source_state")] == [True],
            )
            thread.start()
            for k in range(KILLS):
                if rng.random() < 0.2:  # while it starts: migrations, the restore, the first poll
                    time.sleep(rng.uniform(0.0, 1.5))
                else:
                    s.wait_listening()
                    time.sleep(rng.uniform(0.2, 3.0))
                s.kill()
                time.sleep(rng.uniform(0.0, 1.0))
                s.start()
                if k + 1 == OUTAGE_AFTER:
                    s.wait_listening()
                    time.sleep(1.0)
                    began = wall_us()
                    with outage():
                        time.sleep(0.5)  # a send in flight has finished; its delivered mark cannot be written
                        s.catch()
                    back = wall_us()
                    s.down.append((began, back))
                    s.wait("a poll committed after the outage, by the same process", s.committed_after(back))
            time.sleep(rng.uniform(2.0, 4.0))
            writer.stop.set()
            thread.join(10)
            assert writer.error is None, writer.error
            time.sleep(HOLD_S + LATENESS_S + 2.0)  # every streak's hold has run out, and settled
            s.wait(
                "every message delivered",
                lambda: (
                    bool(state.rows("SELECT 1 FROM outbox"))
                    and not state.rows("SELECT 1 FROM outbox WHERE status != 'delivered'")
                ),
                timeout=120,
            )
        finally:
            writer.stop.set()
            code = stop(s.proc)
        assert code == 0, log.read_text(errors="replace")[-4000:]
        requests = list(hook.requests)
    try:
        figures = check(tmp_path, config, crm, state, s, requests)
    finally:
        state.close()
    figures.update(
        outage_failed_a_poll=failed in log.read_text(errors="replace"),
        kills=s.kills,
        starts=s.starts,
        rows=writer.rows,
        seconds=round(time.monotonic() - started, 1),
    )
    print(f"\nfigures: {json.dumps(figures)}")
    return figures


def check(tmp_path: Path, config: Path, crm: Crm, state: State, s: Soak, requests: list[Request]) -> dict[str, Any]:
    cal = Calendar("Asia/Shanghai")
    with sqlite3.connect(crm.path) as db:
        source = db.execute("SELECT id, created_at, category, channel FROM complaints ORDER BY id").fetchall()
    rows = [
        Rec(from_datetime(datetime.fromisoformat(t).replace(tzinfo=UTC)), typ, ch, id=i) for i, t, typ, ch in source
    ]
    # 1. the buckets are the source's rows, by hour, type and channel
    want = Counter((cal.hour_start(r.ts), r.type, r.channel) for r in rows)
    with state.engine.connect() as conn:
        got = Counter(
            {
                (int(h), t, c): int(n)
                for h, t, c, n in conn.execute(
                    sa.select(
                        hourly_buckets.c.hour_us,
                        hourly_buckets.c.type,
                        hourly_buckets.c.channel,
                        hourly_buckets.c.count,
                    )
                )
            }
        )
        events = recorded(conn)
        coverage = conn.execute(sa.text("SELECT coverage_start_us FROM source_state")).scalar_one()
        clocks = [
            json.loads(d).get("clock")
            for (d,) in conn.execute(sa.text("SELECT data FROM rule_state WHERE part = 'core'"))
        ]
        notified = {r[0] for r in conn.execute(sa.text("SELECT DISTINCT instance FROM alert_events WHERE notify"))}
        recorded_at = {
            (i, st): int(c)
            for i, st, c in conn.execute(
                sa.text("SELECT instance, state, MIN(created_us) FROM alert_events GROUP BY instance, state")
            )
        }
        resolved = {
            r[0]
            for r in conn.execute(
                sa.text("SELECT DISTINCT instance FROM alert_events WHERE notify AND state = 'resolved'")
            )
        }
        outbox = [r[0] for r in conn.execute(sa.text("SELECT delivery_id FROM outbox ORDER BY id"))]
    assert got == want
    # 2. the events are the backtest's (compared in event-time order: fire on sight records an escalation
    # before a resolution that time alone caused earlier)
    cfg = load_config(config)
    horizon = min(int(c) for c in clocks if c is not None)
    replay = backtest(cfg.rules, rows, coverage, horizon)
    order = {r.name: i for i, r in enumerate(cfg.rules)}
    assert as_json(sort_events(events, order)) == as_json(replay)
    # 3. nothing lost: every message delivered and received; every alert still open was told, and every
    # alert told was told its resolution. One that opened and closed before the dispatcher saw it is not
    # announced (by design, as in Alertmanager): only while the daemon was down or could not commit.
    received = Counter(r.headers["x-sentinel-delivery"] for r in requests)
    assert set(received) == set(outbox)
    last: dict[str, str] = {}
    for r in requests:
        for a in r.json["alerts"]:
            last[a["annotations"]["instance"]] = a["status"]
    assert notified - resolved <= set(last)
    assert {i for i in resolved if i in last and last[i] != "resolved"} == set()
    slack = 5_000_000  # a restarted daemon polls within seconds
    unseen = notified - set(last)
    for instance in unseen:
        opened, closed = recorded_at[(instance, "firing")], recorded_at[(instance, "resolved")]
        assert opened == closed or any(a <= closed and opened <= b + slack for a, b in s.down), instance
    # 4. duplicates: only messages in flight at a kill or the outage, at most once more per such moment
    caught = Counter(d for ids in s.in_flight for d in ids)
    twice = {d: n for d, n in received.items() if n > 1}
    assert all(n <= 1 + caught[d] for d, n in twice.items()), (twice, caught)
    assert "messages in flight at the last stop will be sent again" in s.log.read_text(errors="replace") or not caught
    return {
        "events": len(events),
        "alerts": len({e.instance for e in events}),
        "messages": len(outbox),
        "deliveries": sum(received.values()),
        "duplicates": sum(n - 1 for n in twice.values()),
        "unannounced_alerts": len(unseen),
        "in_flight_caught": sum(len(x) for x in s.in_flight),
    }


@pytest.mark.slow
def test_kill_9_soak_over_a_sqlite_store_with_its_write_lock_held(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    failed = "poll cycle could not be committed"

    def poll_failed() -> bool:
        return failed in (tmp_path / "sentinel.log").read_text(errors="replace")

    figures = soak(
        tmp_path,
        f"sqlite:///{path}",
        f"sqlite:///{path}",
        lambda: sqlite_write_lock(path, OUTAGE_SQLITE_S, until=poll_failed),
        failed,
    )
    assert figures["kills"] == KILLS and figures["events"] > 20 and figures["outage_failed_a_poll"]


@pytest.mark.slow
def test_kill_9_soak_over_a_postgres_store_cut_at_a_proxy(tmp_path: Path, pg_url: str, proxy: TcpProxy) -> None:
    @contextlib.contextmanager
    def cut() -> Iterator[None]:
        proxy.stop()
        yield
        time.sleep(6.0)
        proxy.start()

    via = pg_url.replace(pg_url.split("@", 1)[1].split("/", 1)[0], f"127.0.0.1:{proxy.port}")
    figures = soak(tmp_path, via, pg_url, cut, "lost the state store's lock")
    assert figures["kills"] == KILLS and figures["events"] > 20 and figures["outage_failed_a_poll"]
