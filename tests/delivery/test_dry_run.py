"""Dry run (`--dry-run`, or `notify = false`): the whole daemon detects, records and dispatches, and
sends nothing: the servers see no request, the outbox marks every message `dry_run`, and
`/api/v1/status` says so."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from sentinel import api
from sentinel.clock import ManualClock
from sentinel.config import load_config
from sentinel.daemon import Daemon
from sentinel.service import build
from tests.delivery.builders import daemon_config
from tests.notify.vendors import FakeWebhook, FakeWeCom
from tests.test_daemon import NOW, Crm, history

RECEIVERS = """
[[receivers]]
name = "ops"
kind = "wecom"
url = "{wecom}"

[[receivers]]
name = "hook"
kind = "webhook"
url = "{hook}"
"""


@pytest.mark.parametrize("how", ["--dry-run", "notify = false"])
def test_dry_run_sends_nothing_and_shows_what_would_have_gone(
    how: str, tmp_path: Path, wecom: FakeWeCom, webhook: FakeWebhook
) -> None:
    crm = Crm(tmp_path / "crm.db")
    history(crm)
    path = daemon_config(
        tmp_path,
        crm.path,
        RECEIVERS.format(wecom=wecom.url, hook=webhook.url),
        top="notify = false" if how == "notify = false" else "",
    )
    clock = ManualClock(NOW)
    daemon: Daemon = build(load_config(path), config_path=str(path), clock=clock, dry_run=how == "--dry-run")
    daemon.open()
    dispatch, delivery = daemon.pipeline.dispatch, daemon.pipeline.delivery
    delivery.start()
    try:
        while daemon.cycle():
            pass
        crm.add(NOW - timedelta(minutes=20), n=61, spacing=timedelta(seconds=10))  # a surge, and a streak
        clock.set(NOW + timedelta(seconds=2))
        daemon.cycle()
        for s in range(3, 10):  # the dispatch and deliver jobs, once a second
            clock.set(NOW + timedelta(seconds=s))
            dispatch.dispatch()
            for runner in delivery.worker.runners.values():
                delivery.worker.drain(runner)

        assert wecom.requests == [] and webhook.requests == []
        status = api.status(daemon)
        assert status["dry_run"] is True
        assert status["outbox"]["pending"] == 0
        for r in status["receivers"]:
            assert r["pending"] == 0
            assert r["last"] is not None and r["last"]["status"] == "dry_run" and r["last"]["error"] is None
        with daemon.store.reading() as conn:
            rows = conn.exec_driver_sql("SELECT receiver, status, attempts FROM outbox ORDER BY id").all()
        assert {r[0] for r in rows} == {"ops", "hook"}
        assert all(r[1] == "dry_run" and r[2] == 0 for r in rows)
        text = daemon.metrics.render().decode()
        assert 'sentinel_notifications_total{outcome="dry_run",receiver="ops"}' in text
        assert 'sentinel_notification_requests_total{receiver="ops"}' not in text
    finally:
        daemon.stop()
    assert wecom.requests == [] and webhook.requests == []  # nor on stop (the flush)
