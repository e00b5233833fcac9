"""The daemon's health endpoints: `/healthz` (the process answers), `/readyz` (it can do its job) and
`/metrics` (Prometheus).

Guarantees: `/readyz` answers 503 with every reason that keeps this instance from being ready, on one
line; a standby is ready when it can serve reads from the store (the leader polls the source), a leader
also needs its source, a committed state and its jobs. Neither endpoint writes anything.
"""

from __future__ import annotations

from collections.abc import Callable

from apscheduler.schedulers.base import BaseScheduler
from sqlalchemy import text

from sentinel.http import App, Request, Response
from sentinel.leadership import Leadership
from sentinel.metrics import Metrics
from sentinel.poll import PollCycle
from sentinel.store import Store


class Probes:
    def __init__(
        self, store: Store, metrics: Metrics, leadership: Leadership, poll: PollCycle, scheduler: BaseScheduler
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.leadership = leadership
        self.poll = poll
        self.scheduler = scheduler

    def register(self, app: App) -> None:
        routes: dict[str, Callable[[Request], Response]] = {
            "/healthz": lambda _r: Response.text("ok\n"),
            "/metrics": self._metrics,
            "/readyz": self._readyz,
        }
        for path, handler in routes.items():
            app.route("GET", path, handler)

    def _metrics(self, _req: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(200, self.metrics.render(), CONTENT_TYPE_LATEST)

    def readiness(self) -> list[str]:
        """What keeps this instance from being ready (empty: ready)."""
        problems = []
        try:
            with self.store.reading() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            problems.append(f"state store unreachable: {type(exc).__name__}")
        lead = self.leadership
        if not lead.leading:
            if problems and lead.lock_error is not None:
                problems.insert(0, lead.lock_error)
            return problems
        poll = self.poll
        if poll.store_error is not None:
            problems.append(f"state store write failed: {poll.store_error}")
        if poll.restore_error is not None:
            problems.append(poll.restore_error)
        if not poll.health.up:
            problems.append(f"source unavailable: {poll.health.last_error or 'not polled yet'}")
        if not self.scheduler.running:
            problems.append("scheduler not running")
        elif not poll.waker.running:
            problems.append("poll loop not running")
        return problems

    def _readyz(self, _req: Request) -> Response:
        problems = self.readiness()
        if problems:
            return Response.text("not ready: " + "; ".join(problems) + "\n", 503)
        if not self.leadership.leading:
            return Response.text(self.leadership.standby_line() + "\n")
        return Response.text("ready\n")
