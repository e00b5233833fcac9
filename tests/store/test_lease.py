"""The leader lease in this process, against a real PostgreSQL: two stores on one database play two instances.

A leader's write that passed the epoch fence before a takeover either commits before the new epoch exists
(the takeover waits for it) or is ended by the takeover, never committed after it; a write that begins after
the takeover is refused by the epoch; a leader that stops renewing (its connection stalls: a paused process
looks the same from the server) is taken over after the lease's TTL."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from sentinel.store import LockLost, StoreLocked
from sentinel.store import lock as lock_mod
from sentinel.store.db import Store
from sentinel.store.lease import FENCE_WAIT_S
from tests.conftest import PG_HOST, PG_PORT
from tests.sources.dbs import TcpProxy
from tests.store.test_lock import admin, lock_pids


def instance(url: str, ttl_s: float = 15.0) -> Store:
    store = Store(url, lease_ttl_s=ttl_s)
    store.upgrade()
    return store


def take(store: Store) -> None:
    with contextlib.suppress(StoreLocked):
        store.retake_lock()


@pytest.fixture
def stores() -> Iterator[list[Store]]:
    made: list[Store] = []
    yield made
    for s in made:
        s.close()


def writes(pg_url: str) -> list[str]:
    with admin(pg_url) as conn:
        return [str(r[0]) for r in conn.execute("SELECT who FROM writes ORDER BY who")]


def test_a_second_instance_is_refused_with_the_leaders_lease_and_leads_after_it(
    pg_url: str, stores: list[Store]
) -> None:
    a = instance(pg_url)
    b = instance(pg_url)
    stores += [a, b]
    a.lock()
    assert a.lock_held() and a.epoch == 1
    with pytest.raises(StoreLocked, match=r"holds the advisory lock .*, epoch 1, lease renewed") as refused:
        b.lock()
    assert refused.value.lease is not None and refused.value.lease.holder == lock_mod.instance_name()
    assert not b.lock_held()
    a.close()
    deadline = time.monotonic() + 10
    while True:  # the server frees the lock with A's session
        try:
            b.retake_lock()
            break
        except StoreLocked:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert b.lock_held() and b.epoch == 2
    row = b.lease()
    assert row is not None and row.epoch == 2 and not row.expired and row.ttl_us == 15_000_000


def test_a_write_begun_before_a_takeover_commits_before_it_or_never(
    pg_url: str, stores: list[Store], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three writes of A are open when its lock session ends (a blip) and B takes the lead at once. One had
    passed both of its checks and only its COMMIT was left: it commits while B waits, so B's epoch comes
    after it. One reaches its COMMIT now: its check finds the lock session gone and it rolls back. One stays
    open (A paused before its COMMIT): B ends its session after `FENCE_WAIT_S`; it never commits."""
    monkeypatch.setattr(lock_mod, "HEARTBEAT_S", 60.0)  # A does not notice anything by itself
    monkeypatch.setattr(lock_mod, "STALE_S", 120.0)
    a, b = instance(pg_url, ttl_s=600.0), instance(pg_url)
    stores += [a, b]
    a.lock()
    with a.transaction() as conn:
        conn.execute(text("CREATE TABLE writes (who text)"))
    assert a._lock is not None
    checked = a.engine.connect()  # a write that passed both fences by hand, as `Store.transaction` does them
    checked.begin()
    a._lock.begin_fence(checked)
    checked.execute(text("INSERT INTO writes VALUES ('a checked')"))
    a._lock.fence(checked)
    late, paused = a.transaction(), a.transaction()
    late.__enter__().execute(text("INSERT INTO writes VALUES ('a late')"))
    paused.__enter__().execute(text("INSERT INTO writes VALUES ('a paused')"))
    with admin(pg_url) as conn:
        conn.execute("SELECT pg_terminate_backend(%s, 5000)", (lock_pids(pg_url)[0],))
    took: list[float] = []

    def takeover() -> None:
        started = time.monotonic()
        b.retake_lock()
        took.append(time.monotonic() - started)

    taker = threading.Thread(target=takeover)
    taker.start()
    time.sleep(0.2)
    assert not took  # B waits for A's open writes
    checked.commit()
    checked.close()
    with pytest.raises(LockLost):
        late.__exit__(None, None, None)
    taker.join(10)
    assert took and took[0] >= FENCE_WAIT_S  # the paused write was ended, then B took the lead
    assert b.lock_held() and b.epoch == 2
    with pytest.raises(OperationalError):
        paused.__exit__(None, None, None)  # A wakes up: its session was ended, its write rolled back
    assert writes(pg_url) == ["a checked"]
    with (
        pytest.raises(LockLost, match=r"no longer the leader \(its epoch 1\): .* leads with epoch 2"),
        a.transaction() as conn,
    ):
        conn.execute(text("INSERT INTO writes VALUES ('a after the takeover')"))
    with b.transaction() as conn:
        conn.execute(text("INSERT INTO writes VALUES ('b')"))
    assert writes(pg_url) == ["a checked", "b"]


def test_a_write_while_a_takeover_runs_is_refused_at_once(
    pg_url: str, stores: list[Store], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lock_mod, "HEARTBEAT_S", 60.0)
    monkeypatch.setattr(lock_mod, "STALE_S", 120.0)
    a, b = instance(pg_url, ttl_s=600.0), instance(pg_url)
    stores += [a, b]
    a.lock()
    with a.transaction() as conn:
        conn.execute(text("CREATE TABLE writes (who text)"))
    open_write = a.transaction()
    open_write.__enter__()
    with admin(pg_url) as conn:
        conn.execute("SELECT pg_terminate_backend(%s, 5000)", (lock_pids(pg_url)[0],))
    taker = threading.Thread(target=b.lock)
    taker.start()
    time.sleep(0.3)  # B holds the fence key and waits for the open write
    with pytest.raises(LockLost, match="another instance is taking over"), a.transaction():
        pass
    with pytest.raises(LockLost):  # its lock session is gone: it rolls back, and B goes on
        open_write.__exit__(None, None, None)
    taker.join(10)
    assert b.epoch == 2


def test_a_leader_that_stops_renewing_is_taken_over_after_the_lease_ttl(pg_url: str, stores: list[Store]) -> None:
    """A's connections stall (bytes accepted, none forwarded, no error: what a paused process looks like from
    the server, whose sessions stay). A stops holding by itself within its stale limit; B ends A's lock session
    once the lease is `lease_ttl` old, and leads."""
    proxy = TcpProxy((PG_HOST, PG_PORT))
    proxy.start()
    try:
        ttl = 3.0
        a = instance(pg_url.replace(f":{PG_PORT}/", f":{proxy.port}/"), ttl)
        b = instance(pg_url, ttl)
        stores += [a, b]
        a.lock()
        take(b)
        assert a.lock_held() and not b.lock_held()
        time.sleep(1.0)  # a few renewals
        proxy.pause()
        paused = time.monotonic()
        while a.lock_held():
            time.sleep(0.02)
        a_stopped = time.monotonic() - paused
        while not b.lock_held():
            take(b)
            assert time.monotonic() - paused < ttl + 10, "B did not take over"
            time.sleep(0.1)
        b_led = time.monotonic() - paused
        assert a_stopped < b_led  # the paused leader held no longer than its lease lasted
        assert b_led > ttl - lock_mod.RENEW_S - 1.0  # not before the lease could have run out
        assert b.epoch == 2
        print(f"\nfigures: stall -> A stops {a_stopped:.2f} s, B leads {b_led:.2f} s (lease_ttl {ttl:g} s)")
    finally:
        proxy.resume()
        proxy.stop()


def test_instances_starting_at_once_on_an_empty_store_migrate_one_after_the_other(
    pg_url: str, stores: list[Store]
) -> None:
    from sentinel.store import migrate

    many = [Store(pg_url) for _ in range(3)]
    stores += many
    results: list[tuple[str | None, str]] = []
    errors: list[BaseException] = []
    gate = threading.Barrier(len(many))

    def start(store: Store) -> None:
        gate.wait()
        try:
            results.append(store.upgrade())
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(s,)) for s in many]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    head = migrate.head_revision()
    assert sorted(results, key=repr) == sorted([(None, head), (head, head), (head, head)], key=repr)
    assert migrate.current_revision(many[0].engine) == head
