"""A hard deadline for every webhook attempt, and a way to cut one from another thread.

Guarantees:
- an attempt armed with the `WATCHDOG` ends by its deadline whatever the peer does: connect, request,
  headers and body together. Socket timeouts alone cannot promise that (each byte restarts them: a
  robot that drips one byte every few seconds would hold the attempt for ever), so one watchdog
  thread shuts down the socket the attempt is blocked on when the deadline passes;
- `Attempt.cut` (the watchdog's "deadline", or `close()` at SIGTERM: "stopping") makes the blocked call
  return at once, and an attempt cut before it reached the network never goes on;
- a cut attempt is a retryable `RetryAfter` whose reason says in which phase it stopped and whether
  the message may have arrived all the same;
- this works for the connections of the pools in `POOLS` (direct and through an HTTP proxy), which
  tell the attempt of their thread (`set_current`) which socket they are blocked on.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import socket
import threading
import time
from typing import Any

import urllib3
import urllib3.response
from urllib3.connection import HTTPConnection, HTTPSConnection

from sentinel.notify.answers import NETWORK_DELAY
from sentinel.notify.base import RetryAfter

CONNECTING = "connecting"
SENDING = "sending the message"
WAITING = "waiting for the answer"
READING = "reading the answer"
_MAY_HAVE_ARRIVED = (SENDING, WAITING, READING)


class Attempt:
    """One POST's progress, shared with the thread that may cut it (the watchdog, or `close()`).

    The connection in use is noted at each phase, so cutting it shuts down the socket the attempt is
    blocked on: the blocked call returns at once (EOF or an error) instead of waiting for the peer."""

    __slots__ = ("_lock", "conn", "deadline", "finished", "phase", "seconds", "why")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        self.phase = CONNECTING
        self.conn: HTTPConnection | None = None
        self.why: str | None = None  # set once cut: "deadline" or "stopping"
        self.finished = False
        self._lock = threading.Lock()

    def at(self, phase: str, conn: HTTPConnection) -> None:
        """The attempt reached `phase` on `conn`; an attempt already cut does not go on."""
        with self._lock:
            self.phase, self.conn = phase, conn
            if self.why is not None:
                _shutdown(conn)
                raise ConnectionAbortedError("attempt cut")

    def cut(self, why: str) -> None:
        with self._lock:
            if self.finished or self.why is not None:
                return
            self.why = why
            if self.conn is not None:
                _shutdown(self.conn)

    def finish(self) -> None:
        with self._lock:
            self.finished = True

    def outcome(self) -> RetryAfter:
        """What a cut attempt is: a network error the worker retries with its backoff."""
        maybe = " (the message may have been delivered)" if self.phase in _MAY_HAVE_ARRIVED else ""
        if self.why == "stopping":
            return RetryAfter(NETWORK_DELAY, f"abandoned while {self.phase}: the daemon is stopping{maybe}")
        return RetryAfter(NETWORK_DELAY, f"timed out after {self.seconds:g} s while {self.phase}{maybe}")


def _shutdown(conn: HTTPConnection) -> None:
    """Shut the connection's socket down from another thread: a blocked recv or send returns at once
    (close() alone does not wake it). The plain socket's method, so a TLS socket's state is untouched."""
    sock = conn.sock
    if sock is not None:
        with contextlib.suppress(OSError):  # already closed
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


class Watchdog:
    """One thread that cuts every attempt whose deadline passed (a timer thread per attempt would cost
    a thread start per message in a burst). Finished attempts are dropped lazily."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Attempt]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, attempt: Attempt) -> None:
        with self._cond:
            if len(self._heap) > 1024:
                self._heap = [e for e in self._heap if not e[2].finished]
                heapq.heapify(self._heap)
            heapq.heappush(self._heap, (attempt.deadline, next(self._seq), attempt))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="http-deadlines", daemon=True)
                self._thread.start()
            if self._heap[0][2] is attempt:
                self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    while self._heap and self._heap[0][2].finished:
                        heapq.heappop(self._heap)
                    now = time.monotonic()
                    if self._heap and self._heap[0][0] <= now:
                        due = heapq.heappop(self._heap)[2]
                        break
                    self._cond.wait(self._heap[0][0] - now if self._heap else None)
            due.cut("deadline")


WATCHDOG = Watchdog()
_current = threading.local()  # .attempt: the Attempt this thread is making (urllib3 is synchronous)


def set_current(attempt: Attempt | None) -> None:
    """`attempt` is what this thread's connections are working for now (None: nothing)."""
    _current.attempt = attempt


def _note(phase: str, conn: HTTPConnection) -> None:
    attempt: Attempt | None = getattr(_current, "attempt", None)
    if attempt is not None:
        attempt.at(phase, conn)


class _Connection(HTTPConnection):
    """urllib3's connection, telling the attempt in progress which socket it is blocked on (a reused
    connection is noted at its request, a new one at its connect)."""

    def connect(self) -> None:
        _note(CONNECTING, self)
        super().connect()
        _note(SENDING, self)

    def request(self, *args: Any, **kwargs: Any) -> None:  # Any: passed through as urllib3 2.x gives them
        _note(SENDING, self)
        super().request(*args, **kwargs)

    def getresponse(self) -> urllib3.response.HTTPResponse:  # type: ignore[override]
        _note(WAITING, self)
        return super().getresponse()


class _TlsConnection(_Connection, HTTPSConnection):
    """The same for https (the MRO puts the notes around HTTPSConnection's connect)."""


class _Pool(urllib3.HTTPConnectionPool):
    ConnectionCls = _Connection


class _TlsPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _TlsConnection


POOLS: dict[str, type[urllib3.HTTPConnectionPool]] = {"http": _Pool, "https": _TlsPool}
"""The pool class per scheme whose connections a deadline can cut."""
