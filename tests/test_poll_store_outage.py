"""The poll stage while its PostgreSQL state store is cut off at a TCP proxy of this test: one error line
when the outage begins (the driver's reason, the state URL's password masked), nothing but debug lines
over the failed polls after it, one line when the store is back with how long it was out."""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from sentinel.clock import ManualClock
from sentinel.config import load_config
from sentinel.metrics import Metrics
from sentinel.model import Vocab
from sentinel.pipeline import Pipeline
from sentinel.poll import PollCycle, store_reason
from sentinel.service import make_source
from sentinel.store import Store
from tests.conftest import PG_HOST, PG_PORT, PG_USER
from tests.crm import NOW, Crm
from tests.sources.dbs import TcpProxy
from tests.test_daemon import config, history

SECRET = "s3cret-pw-9431"  # in the state URL; trust authentication never asks for it
FAILED_POLLS = 40


def poll_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.module == "poll"]


def test_a_store_outage_is_logged_once_and_its_end_once(
    tmp_path: Path, pg_url: str, proxy: TcpProxy, caplog: pytest.LogCaptureFixture
) -> None:
    crm = Crm(tmp_path / "crm.db")
    history(crm)
    via = pg_url.replace(f"{PG_USER}@{PG_HOST}:{PG_PORT}/", f"{PG_USER}:{SECRET}@127.0.0.1:{proxy.port}/")
    assert via != pg_url
    path = config(tmp_path, crm)
    path.write_text(path.read_text(encoding="utf-8").replace(f"sqlite:///{tmp_path}/state.db", via), encoding="utf-8")
    cfg = load_config(path)
    store = Store(via)
    store.upgrade()
    clock, metrics, vocab, source, stopping = ManualClock(NOW), Metrics(), Vocab(), make_source(cfg), threading.Event()
    pipeline = Pipeline.build(
        cfg, store, clock, metrics, source=source, vocab=vocab, leading=lambda: True, stopping=stopping
    )
    poll = PollCycle(cfg, store, clock, metrics, source=source, pipeline=pipeline, vocab=vocab, stopping=stopping)
    try:
        poll.load()
        while poll.cycle():  # the first start's backfill
            pass
        caplog.set_level(logging.DEBUG, logger="sentinel")

        def tick() -> None:
            clock.set(clock.now() + timedelta(seconds=1))
            poll.restore_retry_monotonic = 0.0  # no backoff: every poll asks the store

        # outage 1: rows keep arriving, so each poll fails looking them up in the store's ledger (a read);
        # outage 2: no new rows, so the poll fails at its commit, then at every reload from the store
        for rows in (True, False):
            caplog.clear()
            proxy.stop()
            cut = time.monotonic()
            for i in range(FAILED_POLLS):
                if rows and i % 3 == 0:
                    crm.add(NOW - timedelta(minutes=10) + timedelta(seconds=i), n=2)
                tick()
                assert not poll.cycle()
                if i == 0:
                    first_failed = time.monotonic()  # the outage began before this
            failed = poll_lines(caplog)
            errors = [r for r in failed if r.levelno >= logging.WARNING]
            assert len(errors) == 1, [r.getMessage() for r in errors]
            assert errors[0].levelno == logging.ERROR
            assert "OperationalError" in str(errors[0].__dict__["fields"]["error"])  # the driver's reason
            assert len([r for r in failed if r.levelno == logging.DEBUG]) >= FAILED_POLLS - 1  # the rest: debug
            if not rows:
                assert errors[0].getMessage().startswith("poll cycle could not be committed")
                assert poll.restore_error is not None  # detection holds meanwhile (readyz says so)

            still_out = time.monotonic()  # and lasts at least until here
            proxy.start()
            for _ in range(5):
                tick()
                poll.cycle()
            out_s = time.monotonic() - cut
            back = [r for r in poll_lines(caplog) if "state store is back" in r.getMessage()]
            assert len(back) == 1, [r.getMessage() for r in poll_lines(caplog)]
            assert still_out - first_failed - 0.001 <= back[0].__dict__["fields"]["outage_s"] <= out_s + 0.001
            assert back[0].__dict__["fields"]["failures"] >= FAILED_POLLS
            assert poll.restore_error is None and poll.store_error is None
            assert len([r for r in poll_lines(caplog) if r.levelno >= logging.WARNING]) == 1  # still the one
            assert not [r for r in caplog.records if SECRET in r.getMessage() or SECRET in str(r.__dict__)]
    finally:
        pipeline.stop()
        source.close()
        store.close()


def test_the_reason_masks_the_state_urls_password() -> None:
    """Drivers do not print passwords, but a message quoting the URL would: the reason masks it."""
    url = f"postgresql+psycopg://sentinel:{SECRET}@db.internal:5432/state"
    exc = OperationalError("SELECT 1", None, Exception(f"could not connect to {url}\nretry later"))
    reason = store_reason(exc, url)
    assert (
        reason == "Exception: could not connect to postgresql+psycopg://sentinel:***@db.internal:5432/state; retry "
        "later"
    )
