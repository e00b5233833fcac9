"""Delivery while the PostgreSQL store's lock is lost: nothing is claimed or sent; a message whose send was
in flight at the loss cannot be marked delivered (the mark is fenced) and goes again, once, after the lock is
re-taken and `resume` runs, as after a restart. Real PostgreSQL, the fake generic webhook of tests/notify."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psycopg
import pytest

from sentinel.store import LockLost
from sentinel.store.db import Store
from tests.delivery.builders import Alert, Pipeline, at, delivery_ids, make_config, route
from tests.notify.vendors import Answer, FakeWebhook


def lose_lock(store: Store, pg_url: str) -> None:
    """End the lock's session on the server (as a blip or a DBA would) and wait until the heartbeat knows."""
    with psycopg.connect(pg_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
            "WHERE application_name LIKE 'sentinel lock %' AND datname = current_database()"
        )
    deadline = time.monotonic() + 5
    while store.lock_held():
        assert time.monotonic() < deadline
        time.sleep(0.02)


@pytest.fixture
def pg_store(pg_url: str) -> Store:
    store = Store(pg_url)
    store.upgrade()  # first: the lock writes the leader lease, whose table the migration makes
    store.lock()
    return store


def test_nothing_is_sent_while_the_lock_is_lost_and_the_message_in_flight_goes_again_after_it(
    tmp_path: Path, pg_url: str, pg_store: Store, webhook: FakeWebhook
) -> None:
    cfg = make_config(tmp_path, [webhook.receiver(name="hook")], [route(["hook"], group_by=["type"])])
    p = Pipeline(cfg, pg_store)
    try:
        first, second, third = (Alert(f"类型{i}", at(i)) for i in range(3))
        p.set_time(at(5))
        p.record(first.firing(), second.firing())
        assert p.dispatch() == 2
        webhook.script(Answer(delay=1.5))  # the first send is in flight when the lock goes
        errors: list[BaseException] = []

        def drain() -> None:
            try:
                p.deliver()
            except LockLost as exc:
                errors.append(exc)

        sender = threading.Thread(target=drain)
        sender.start()
        deadline = time.monotonic() + 5
        while not webhook.requests:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        lose_lock(pg_store, pg_url)
        sender.join(10)
        assert len(errors) == 1  # the delivered mark rode on a fenced transaction: not committed
        assert len(webhook.requests) == 1  # the second message was neither claimed nor sent
        assert [m.status for m in p.messages("hook")] == ["sending", "pending"]
        assert p.deliver() == 0 and len(webhook.requests) == 1
        with pytest.raises(LockLost):
            p.record(third.firing())

        pg_store.retake_lock()
        p.worker.resume()  # what the daemon runs once the lock is re-taken
        assert [m.status for m in p.messages("hook")] == ["pending", "pending"]
        p.run_until_idle()
        after = p.messages("hook")
        assert [m.status for m in after] == ["delivered", "delivered"]
        ids = delivery_ids(webhook.requests)
        assert ids == [after[0].delivery_id, after[0].delivery_id, after[1].delivery_id]  # only the one in flight twice
    finally:
        p.close()
        pg_store.close()
