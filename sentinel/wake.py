"""Wake-ups between stages: a committed poll wakes dispatch, committed messages wake delivery.

A `Waker` owns one thread that runs one stage's step when it is woken, when a due time the step
asked for arrives, or after `interval_s` at the latest (the safety net). It never spins: with
nothing to do it sleeps on a `threading.Event`; wake-ups that arrive while the step runs fold into
one more run right after it. Steps never overlap, since only the waker's own thread runs them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from sqlalchemy.exc import SQLAlchemyError

from sentinel.logs import error_line, fields

log = logging.getLogger("sentinel.wake")

Step = Callable[[], float | None]
"""One run of a stage; returns the seconds until it wants to run again (None: only when woken)."""


class Waker:
    def __init__(self, name: str, step: Step, interval_s: float) -> None:
        self.name = name
        self.step = step
        self.interval_s = interval_s
        self._event = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._due = time.monotonic()  # the first run happens at start
        self._thread: threading.Thread | None = None
        self.runs = 0  # steps run so far (tests and the benchmark read it)

    def wake(self) -> None:
        """Run the step as soon as possible (right after the current run, if one is going)."""
        self.wake_in(0.0)

    def wake_in(self, seconds: float) -> None:
        """Run the step within `seconds` (an earlier due time already asked for stays)."""
        due = time.monotonic() + max(0.0, seconds)
        with self._lock:
            self._due = min(self._due, due)
        self._event.set()

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name=f"wake-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float | None = None) -> None:
        """Stop after the running step (if any); waits at most `timeout_s`."""
        self._stop.set()
        self._event.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stop.is_set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                wait = self._due - time.monotonic()
            if wait > 0:
                self._event.wait(wait)
                self._event.clear()
                continue
            with self._lock:
                self._due = time.monotonic() + self.interval_s
            try:
                again = self.step()
            except SQLAlchemyError as exc:  # the store is down or refused the write: one line, retried next time
                log.error("stage step failed", extra=fields(stage=self.name, error=error_line(exc)))
                again = None
            except Exception:
                log.exception("stage step failed", extra=fields(stage=self.name))
                again = None
            self.runs += 1
            if again is not None:
                self.wake_in(again)
