"""The receiving end of `sentinel bench latency`: one local webhook for every system, where the clock stops.

It guarantees that an arrival is stamped with `time.time()` as soon as waitress has the whole request (the
same clock the tables stamp their COMMIT with), that each system is kept apart by its URL path, and that
only the first firing message per (path, rule, type) counts: a repeat or a resolved message never moves a
figure. Standard library and `sentinel.http` only, as the CLI imports the benchmark modules to build options.
"""

from __future__ import annotations

import json
import threading
import time

from sentinel.http import CHAT_PEER, App, Request, Response, Server


class Sink:
    """Records the arrival time of the first firing message per (path, rule, type), and counts the bodies
    per path.

    Both Sentinel's `webhook` receiver and Alertmanager's `webhook_config` send the Alertmanager format, so
    one parser serves all systems: an alert names a surge by its `rule` and `type` labels (the peer's
    alerting rule sets `rule` too). Served by `sentinel.http` (waitress, which sets TCP_NODELAY: no reply
    waits out the sender's 40 ms delayed ACK); the handler runs once waitress has the whole request.
    """

    def __init__(self) -> None:
        self.first: dict[tuple[str, str, str], float] = {}
        self.received: dict[str, int] = {}
        self._lock = threading.Lock()
        app = App()
        app.route("POST", "/<system>", self._post)
        self.server = Server(app, "127.0.0.1:0", limits=CHAT_PEER)

    def _post(self, req: Request) -> Response:
        self.record(time.time(), req.params["system"], req.body)
        return Response()

    def url(self, path: str) -> str:
        return f"{self.server.url}/{path}"

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.stop()

    def record(self, arrived: float, path: str, raw: bytes) -> None:
        try:
            body = json.loads(raw)
        except ValueError:
            body = {}
        alerts = body.get("alerts", []) if isinstance(body, dict) else []
        with self._lock:
            self.received[path] = self.received.get(path, 0) + 1
            for alert in alerts:
                labels = alert.get("labels", {}) if isinstance(alert, dict) else {}
                if alert.get("status") == "firing":
                    key = (path, str(labels.get("rule", "")), str(labels.get("type", "")))
                    self.first.setdefault(key, arrived)

    def arrival(self, path: str, rule: str, type_: str) -> float | None:
        with self._lock:
            return self.first.get((path, rule, type_))

    def count(self, path: str) -> int:
        with self._lock:
            return self.received.get(path, 0)
