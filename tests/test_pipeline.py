"""The pipeline as the daemon runs it: stages built from the configuration, the store, the clock and the
metrics alone; `lateness` applied by ingest only; a committed poll's events reach the outbox through the
wake-ups; jobs that read the cycle's memory wait for the cycle lock; stop in the documented order."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pytest

from sentinel.clock import ManualClock, now_us
from sentinel.config import load_config
from sentinel.metrics import Metrics
from sentinel.model import US, Vocab
from sentinel.notify import outbox
from sentinel.pipeline import Pipeline
from sentinel.poll import PollCycle
from sentinel.service import build, make_source
from sentinel.store import Store
from tests.test_daemon import NOW, Crm, config, history

ROUTED = """
[[receivers]]
name = "ops"
kind = "webhook"
url = "http://127.0.0.1:9/hook"

[[routes]]
receivers = ["ops"]
group_wait = "0s"
"""


def test_the_stages_need_no_daemon(tmp_path: Path) -> None:
    """Built on a store, a clock and metrics, the pipeline opens, takes a poll's cycle and dispatches its
    events into the outbox: detection's commit woke dispatch, dispatch's commit woke delivery."""
    crm = Crm(tmp_path / "crm.db")
    history(crm)
    cfg = load_config(config(tmp_path, crm, ROUTED))
    assert cfg.state_url is not None and cfg.source is not None
    store = Store(cfg.state_url.get())
    store.upgrade()
    clock, metrics, vocab, source, stopping = ManualClock(NOW), Metrics(), Vocab(), make_source(cfg), threading.Event()
    pipeline = Pipeline.build(
        cfg, store, clock, metrics, source=source, vocab=vocab, leading=lambda: True, stopping=stopping
    )
    poll = PollCycle(cfg, store, clock, metrics, source=source, pipeline=pipeline, vocab=vocab, stopping=stopping)
    try:
        now = now_us(clock)
        lateness = int(cfg.source.lateness.total_seconds() * US)
        assert pipeline.ingest.horizon(now) == now - lateness
        assert pipeline.detection.detector.horizon == pipeline.ingest.horizon  # one owner of `lateness`
        poll.load()  # the store's state (none yet), then every stage opens
        assert pipeline.detection.on_events == pipeline.dispatch.wake  # the wake-ups the pipeline wires
        assert pipeline.dispatch.on_written == pipeline.delivery.wake
        woken: list[str] = []
        dispatch_wake, delivery_wake = pipeline.dispatch.wake, pipeline.delivery.wake
        pipeline.detection.on_events = lambda: (woken.append("dispatch"), dispatch_wake())[-1]
        pipeline.dispatch.on_written = lambda: (woken.append("delivery"), delivery_wake())[-1]
        crm.add(NOW - timedelta(hours=1), n=61, spacing=timedelta(seconds=30))
        while poll.cycle():
            pass
        assert woken == ["dispatch"]
        assert pipeline.dispatch.dispatch() >= 1
        assert woken == ["dispatch", "delivery"]
        with store.reading() as conn:
            assert outbox.pending_counts(conn).get("ops", 0) >= 1
    finally:
        pipeline.delivery.worker.stop()
        source.close()
        store.close()


def test_an_exclusive_job_waits_for_the_running_cycle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    crm = Crm(tmp_path / "crm.db")
    history(crm)
    path = config(tmp_path, crm)
    daemon = build(load_config(path), config_path=str(path), clock=ManualClock(NOW))
    daemon.open()
    try:
        ran = threading.Event()
        monkeypatch.setattr(daemon.pipeline.detection.detector, "refresh_gauges", ran.set)
        gauges = next(j for j in daemon.pipeline.jobs() if j.name == "gauges")
        with daemon.pipeline.cycle_lock:  # a poll's cycle is running
            job = threading.Thread(target=gauges.func)
            job.start()
            assert not ran.wait(0.3), "the gauges ran while the cycle held the engine"
        job.join(10)
        assert ran.is_set()
    finally:
        daemon.stop()


def test_stop_stops_the_listener_then_dispatches_then_delivers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    crm = Crm(tmp_path / "crm.db")
    history(crm)
    path = config(tmp_path, crm, ROUTED)
    daemon = build(load_config(path), config_path=str(path), clock=ManualClock(NOW))
    daemon.open()
    p = daemon.pipeline
    order: list[str] = []

    class Listening:
        def start(self) -> None:
            order.append("listener.start")

        def stop(self) -> None:
            order.append("listener.stop")

    p.listener = Listening()  # type: ignore[assignment]
    for stage in p.stages:
        real = stage.stop
        monkeypatch.setattr(stage, "stop", lambda real=real, name=stage.name: (order.append(name), real())[0])
    daemon.stop()
    assert order == ["listener.stop", "detection", "dispatch", "delivery"]
