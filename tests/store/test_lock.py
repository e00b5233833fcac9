"""The PostgreSQL store lock itself, in this process against a real PostgreSQL: a connection that stalls
without an error is noticed, writes are fenced in the transaction, `retake` ends our own stalled session
and names another daemon that holds the lock, and releasing never hangs or raises."""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import text

from sentinel.store import LockLost, StoreLocked, open_store
from sentinel.store import lock as lock_mod
from sentinel.store.db import Store
from tests.conftest import PG_HOST, PG_PORT
from tests.sources.dbs import TcpProxy
from tests.store.test_store import _hold_lock


@pytest.fixture
def stalling() -> Iterator[TcpProxy]:
    p = TcpProxy((PG_HOST, PG_PORT))
    p.start()
    yield p
    p.resume()
    p.stop()


def admin(pg_url: str) -> psycopg.Connection[object]:
    return psycopg.connect(pg_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)


def lock_pids(pg_url: str) -> list[int]:
    with admin(pg_url) as conn:
        return [
            int(r[0])
            for r in conn.execute(
                "SELECT pid FROM pg_stat_activity "
                "WHERE application_name LIKE 'sentinel lock %' AND datname = current_database()"
            )
        ]


def wait_lost(store: Store, limit_s: float) -> float:
    started = time.monotonic()
    while store.lock_held():
        assert time.monotonic() - started < limit_s, "the loss was not noticed in time"
        time.sleep(0.02)
    return time.monotonic() - started


def test_a_stalled_lock_connection_is_lost_in_seconds_then_retaken_and_released_without_hanging(
    pg_url: str, stalling: TcpProxy
) -> None:
    store = open_store(pg_url.replace(f":{PG_PORT}/", f":{stalling.port}/"), lock=True)
    try:
        assert store.lock_held() and store.lock_kind == "advisory"
        time.sleep(1.5)  # a few heartbeats pass
        assert store.lock_held()
        stalling.pause()
        took = wait_lost(store, lock_mod.STALE_S + lock_mod.HEARTBEAT_S + 1.0)
        assert took > lock_mod.STALE_S - lock_mod.HEARTBEAT_S - 0.5  # a stall is no error: only staleness tells
        assert "not confirmed for 4 s" in str(store.lock_lost_reason)
        with pytest.raises(LockLost), store.transaction():
            pass
        assert len(lock_pids(pg_url)) == 1  # the server still has the stalled session, and its lock
        stalling.resume()
        store.retake_lock()  # ends the former session if the server still holds it, then takes the lock
        assert store.lock_held()
        with store.transaction() as conn:
            conn.execute(text("SELECT 1"))
        stalling.pause()  # stalled again: releasing must neither hang nor raise
        released = time.monotonic()
        store.close()
        assert time.monotonic() - released < lock_mod.RELEASE_WAIT_S + 1.5
    finally:
        stalling.resume()
        store.close()


def test_a_commit_is_refused_in_its_transaction_once_the_lock_session_is_gone(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The heartbeat has not run since the session ended (60 s apart here): the fence right before COMMIT
    asks the server, and the transaction's write is rolled back."""
    monkeypatch.setattr(lock_mod, "HEARTBEAT_S", 60.0)
    monkeypatch.setattr(lock_mod, "STALE_S", 120.0)
    store = open_store(pg_url, lock=True)
    try:
        with store.transaction() as conn:
            conn.execute(text("CREATE TABLE fenced (x int)"))
        [pid] = lock_pids(pg_url)
        with admin(pg_url) as conn:
            conn.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))
        assert store.lock_held()  # the heartbeat does not know yet
        with pytest.raises(LockLost), store.transaction() as conn:
            conn.execute(text("INSERT INTO fenced VALUES (1)"))
        with store.reading() as conn:
            assert conn.execute(text("SELECT count(*) FROM fenced")).scalar() == 0
    finally:
        store.close()


def test_a_lost_lock_that_another_daemon_took_is_refused_naming_it(pg_url: str) -> None:
    store = open_store(pg_url, lock=True)
    holder = None
    try:
        [pid] = lock_pids(pg_url)
        ended = time.monotonic()
        with admin(pg_url) as conn:
            conn.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))
        wait_lost(store, lock_mod.HEARTBEAT_S + 1.0)
        took = time.monotonic() - ended
        assert "its connection failed" in str(store.lock_lost_reason)
        holder = _hold_lock(pg_url)
        with pytest.raises(StoreLocked, match=rf"another sentinel \(\S+ pid {holder.pid}, PostgreSQL backend pid"):
            store.retake_lock()
        assert not store.lock_held()
        holder.kill()
        holder.wait()
        holder = None
        deadline = time.monotonic() + 10
        while True:  # the server ends the killed holder's session at once; retry until it has
            try:
                store.retake_lock()
                break
            except StoreLocked:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert store.lock_held()
        print(f"\nfigures: backend terminated -> loss noticed {took:.2f} s")
    finally:
        if holder is not None:
            holder.kill()
            holder.wait()
        store.close()
