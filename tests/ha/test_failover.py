"""High availability with real processes: several `sentinel run` on one real PostgreSQL state store.

Exactly one instance leads; a standby takes over when the leader is killed, paused past its lease or cut off
from the store, and continues from what the store holds: every alert is delivered, only messages in flight
at the failover are repeated (the sink counts delivery ids), an old leader that wakes up writes and sends
nothing, and the events equal a backtest of the same rows however often the instances restart."""

from __future__ import annotations

import csv
import json
import random
import signal
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.ha.cluster import TTL_S, TYPES, WAIT_S, Cluster, cluster_fixture, wait_until
from tests.notify.vendors import Answer
from tests.sources.dbs import TcpProxy

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster(tmp_path: Path, pg_url: str) -> Iterator[Cluster]:
    yield from cluster_fixture(tmp_path, pg_url)


@pytest.fixture
def cut_cluster(tmp_path: Path, pg_url: str, proxy: TcpProxy) -> Iterator[Cluster]:
    yield from cluster_fixture(tmp_path, pg_url, proxy)


def history(c: Cluster) -> None:
    """A day of mixed rows before today's stream: no five of a type in a row."""
    start = datetime.now(UTC) - timedelta(days=1)
    c.crm.add_rows([(start + timedelta(minutes=10 * i), TYPES[i % 3], "电话热线") for i in range(60)])


def start_pair(c: Cluster) -> tuple[str, str]:
    """A, then B once A leads and has read its backfill; returns (leader, standby) = ("a", "b")."""
    history(c)
    c.add("a").start()
    assert c.wait_leader() == "a"
    wait_until("A's backfill", c.backfilled, log=c.logs)
    c.add("b").start()
    c.wait_standby("b")
    return "a", "b"


def test_kill_9_of_the_leader_with_messages_in_flight_loses_nothing_and_repeats_only_those(cluster: Cluster) -> None:
    c = cluster
    start_pair(c)
    a, b = c.instances["a"], c.instances["b"]
    assert b.role() == "standby" and c.epoch() == 1
    code, text = b.readyz()
    assert code == 200 and f"the leader is {a.app.removeprefix('sentinel ')} (epoch 1," in text
    status = b.status()
    assert status is not None and status["source"]["up"] is None
    assert status["leadership"]["leader"]["instance"] == a.app.removeprefix("sentinel ")

    c.hook.script(Answer(delay=WAIT_S))  # the first message hangs: in flight when A dies
    for t in TYPES[:4]:
        c.streak(t)
    wait_until("the first send", lambda: len(c.hook.requests) == 1, log=c.logs)
    wait_until("four messages queued", lambda: len(c.outbox()) == 4, log=c.logs)
    in_flight = c.hook.requests[0].headers["x-sentinel-delivery"]
    killed = time.monotonic()
    a.kill()
    took = wait_until("B leads", lambda: b.role() == "leader", log=c.logs) - killed
    c.streak(TYPES[4])  # an alert after the failover, detected by B
    wait_until("every message delivered", lambda: c.all_delivered(5), log=c.logs)
    assert b.terminate() == 0

    counts = c.deliveries()
    assert set(counts) == {d for d, _ in c.outbox()}  # every message arrived
    assert {d: n for d, n in counts.items() if n > 1} == {in_flight: 2}  # only the one in flight, once more
    assert c.senders() == {"a": 1, "b": 5}
    assert c.epoch() == 2 and not b.tracebacks()
    assert "messages in flight at the last stop will be sent again" in b.log()  # B's first lead: as a start
    print(f"\nfigures: kill -9 -> B leads {took:.2f} s (lease_ttl {TTL_S:g} s)")


def test_a_leader_paused_past_its_lease_writes_and_sends_nothing_when_it_wakes(cluster: Cluster) -> None:
    c = cluster
    start_pair(c)
    a, b = c.instances["a"], c.instances["b"]
    c.audit()
    c.streak(TYPES[0])
    wait_until("A's message", lambda: c.all_delivered(1), log=c.logs)
    a.signal(signal.SIGSTOP)
    paused = time.monotonic()
    c.streak(TYPES[1])
    took = wait_until("B leads", lambda: b.role() == "leader", log=c.logs) - paused
    wait_until("B's message", lambda: c.all_delivered(2), log=c.logs)
    time.sleep(1.0)  # longer than lease_ttl in all: the old leader slept through a takeover and a delivery
    woke_db, woke_sink = c.server_now(), time.time()
    a.signal(signal.SIGCONT)
    assert a.daemon is not None
    a.daemon.wait_for("lost the state store's lock")
    a.daemon.wait_for("standing by: another instance leads the state store")
    c.wait_standby("a")
    c.streak(TYPES[2])
    wait_until("the third message", lambda: c.all_delivered(3), log=c.logs)
    time.sleep(1.0)

    assert c.senders(since=woke_sink) == {"b": 1}  # A sent nothing after it woke up
    assert c.sql("SELECT count(*) FROM audit WHERE app = %s AND at >= %s", (a.app, woke_db)) == [(0,)]
    assert c.sql("SELECT count(*) FROM audit WHERE app = %s AND at >= %s", (b.app, woke_db))[0][0] > 0
    assert a.role() == "standby" and b.role() == "leader" and c.epoch() == 2
    assert set(c.deliveries().values()) == {1}
    assert not a.tracebacks() and not b.tracebacks()
    print(f"\nfigures: SIGSTOP -> B leads {took:.2f} s (lease_ttl {TTL_S:g} s)")


def test_a_leader_cut_from_the_store_steps_down_and_no_split_brain_after_the_connection_returns(
    cut_cluster: Cluster,
) -> None:
    """A reaches the store through a proxy that is cut: B takes the lead as soon as the server ends A's lock
    session. Until A's heartbeat notices (one beat), A may still believe it leads, but from B's epoch on
    nothing of A commits and nothing more is sent by A; once A noticed, it never claims the lead again, also
    after its connection returns."""
    c = cut_cluster
    assert c.proxy is not None
    history(c)
    a = c.add("a", proxied=True).start()
    assert c.wait_leader() == "a"
    wait_until("A's backfill", c.backfilled, log=c.logs)
    b = c.add("b").start()
    c.wait_standby("b")
    c.audit()
    c.streak(TYPES[0])
    wait_until("A's message", lambda: c.all_delivered(1), log=c.logs)

    both: list[tuple[float, str | None, str | None]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.05):
            ra, rb = a.role(), b.role()
            if ra == rb == "leader":
                both.append((time.monotonic() - cut, ra, rb))

    sampler = threading.Thread(target=sample, daemon=True)
    cut, cut_wall = time.monotonic(), time.time()
    c.proxy.stop()  # every connection of A to the store ends; so does A's lock session on the server
    took = wait_until("B leads", lambda: b.role() == "leader", log=c.logs) - cut
    b_since = c.sql("SELECT to_timestamp(acquired_us / 1e6) FROM leader_lease")[0][0]
    assert a.daemon is not None
    a.daemon.wait_for("lost the state store's lock")
    sampler.start()
    c.streak(TYPES[1])
    wait_until("B's message", lambda: c.all_delivered(2), log=c.logs)
    c.proxy.start()
    a.daemon.wait_for("standing by: another instance leads the state store")
    c.wait_standby("a")
    c.streak(TYPES[2])
    wait_until("the third message", lambda: c.all_delivered(3), log=c.logs)
    time.sleep(2 * TTL_S)  # long enough for any confusion to show
    stop.set()
    sampler.join(10)
    assert both == [], "both instances claimed the lead after A had noticed its loss"
    assert c.sql("SELECT count(*) FROM audit WHERE app = %s AND at >= %s", (a.app, b_since)) == [(0,)]
    assert c.sql("SELECT count(*) FROM audit WHERE app = %s AND at >= %s", (b.app, b_since))[0][0] > 0
    assert c.senders(since=cut_wall) == {"b": 2}
    assert c.leaders() == ["b"] and c.epoch() == 2
    assert c.senders() == {"a": 1, "b": 2} and set(c.deliveries().values()) == {1}
    assert not a.tracebacks() and not b.tracebacks()
    print(f"\nfigures: cut -> B leads {took:.2f} s (lease_ttl {TTL_S:g} s)")


def export_csv(c: Cluster, path: Path) -> Path:
    """The CRM's rows as a backtest reads them."""
    import sqlite3

    with sqlite3.connect(c.crm.path) as db, path.open("w", newline="", encoding="utf-8") as out:
        w = csv.writer(out)
        w.writerow(["id", "created_at", "type", "channel", "customer"])
        w.writerows(db.execute("SELECT id, created_at, category, channel, customer_id FROM complaints ORDER BY id"))
    return path


def event_key(e: dict[str, object]) -> tuple[object, ...]:
    return (
        e["rule"],
        e["state"],
        e["tier"],
        json.dumps(e["labels"], sort_keys=True),
        e["at"],
        e["started"],
        e["value"],
        e["instance"],
    )


def since(events: list[dict[str, object]], start: datetime) -> list[tuple[object, ...]]:
    return sorted((event_key(e) for e in events if datetime.fromisoformat(str(e["at"])) >= start), key=repr)


def backtest_events(c: Cluster, start: datetime) -> list[tuple[object, ...]]:
    from sentinel.backtest import run
    from sentinel.config import load_config

    out = c.tmp / "backtest.jsonl"
    with out.open("w", encoding="utf-8") as f:
        run(load_config(c.instances["a"].config), export_csv(c, c.tmp / "rows.csv"), f)
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    return since([e for e in lines if "summary" not in e], start)


def daemon_events(c: Cluster, start: datetime) -> list[tuple[object, ...]]:
    return since([json.loads(p) for (p,) in c.sql("SELECT payload FROM alert_events ORDER BY seq")], start)


def test_restarting_both_instances_at_random_moments_during_a_surge_gives_the_backtests_events(
    cluster: Cluster,
) -> None:
    c = cluster
    start_pair(c)
    rng = random.Random(12)
    surge_start = datetime.now(UTC)
    done = threading.Event()

    def surge() -> None:  # runs of one type, 1 to 13 long: streaks, upgrades and broken runs
        try:
            for _ in range(60):
                c.crm.add(
                    datetime.now(UTC),
                    type_=rng.choice(TYPES),
                    n=rng.randint(1, 13),
                    spacing=timedelta(microseconds=100),
                )
                time.sleep(rng.uniform(0.05, 0.5))
        finally:
            done.set()

    writer = threading.Thread(target=surge, daemon=True)
    writer.start()
    for _ in range(10):
        time.sleep(rng.uniform(0.3, 2.0))
        victims = rng.choice([["a"], ["b"], ["a", "b"]])
        how = rng.choice([signal.SIGKILL, signal.SIGTERM])
        for name in victims:
            inst = c.instances[name]
            inst.signal(how)
            assert inst.daemon is not None
            inst.daemon.proc.wait(60)
        for name in victims:
            c.instances[name].start()
    writer.join(120)
    assert done.is_set()
    leader = c.wait_leader()
    newest = int(c.last_time().timestamp() * 1e6)

    def caught_up() -> bool:
        rows = c.sql("SELECT watermark_us FROM source_state")
        return bool(rows) and rows[0][0] is not None and rows[0][0] >= newest

    wait_until("the leader read every row", caught_up, log=c.logs)
    time.sleep(2.0)  # past lateness: every row settled
    wait_until("every message delivered", c.all_delivered, log=c.logs)

    ours, replayed = daemon_events(c, surge_start), backtest_events(c, surge_start)
    assert len(replayed) > 10  # firings and upgrades of every type (a type's later runs continue its alert)
    assert ours == replayed
    assert c.epoch() > 2  # the lead changed hands during the surge
    told = {i for (ins,) in c.sql("SELECT instances FROM outbox WHERE status = 'delivered'") for i in json.loads(ins)}
    firing = {
        str(i)
        for (i,) in c.sql(
            "SELECT DISTINCT instance FROM alert_events WHERE notify AND at_us >= %s",
            (int(surge_start.timestamp() * 1e6),),
        )
    }
    assert firing <= told  # every alert of the surge reached the sink
    assert set(c.deliveries()) == {d for d, _ in c.outbox()}
    print(
        f"\nfigures: 10 random restarts, {len(ours)} events, leader at the end {leader}, epoch {c.epoch()}, "
        f"{sum(c.deliveries().values()) - len(c.deliveries())} repeated messages"
    )


def test_three_instances_with_the_leader_killed_twice_in_a_row(cluster: Cluster) -> None:
    c = cluster
    history(c)
    c.add("a").start()
    assert c.wait_leader() == "a"
    wait_until("A's backfill", c.backfilled, log=c.logs)
    for name in ("b", "c"):
        c.add(name).start()
        c.wait_standby(name)
    c.streak(TYPES[0])
    wait_until("the first message", lambda: c.all_delivered(1), log=c.logs)
    c.instances["a"].kill()
    second = c.wait_leader(among=["b", "c"])
    c.streak(TYPES[1])
    wait_until("the second message", lambda: c.all_delivered(2), log=c.logs)
    c.instances[second].kill()
    third = c.wait_leader(among=["b", "c"])
    assert third != second
    c.streak(TYPES[2])
    wait_until("the third message", lambda: c.all_delivered(3), log=c.logs)
    assert c.epoch() == 3
    assert c.senders() == {"a": 1, second: 1, third: 1}
    assert set(c.deliveries().values()) == {1}
    assert c.instances[third].terminate() == 0
    assert not any(i.tracebacks() for i in c.instances.values())
