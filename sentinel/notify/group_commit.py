"""Several receivers' claims in one transaction: what keeps a burst to one commit per message or less.

Guarantees:
- `GroupCommit.run(fn)` returns `fn`'s result (or raises its error) only once the transaction that ran
  it has committed (or failed): a caller never acts on a claim that is not durable;
- the functions waiting when a transaction starts run in it in arrival order, one at a time; no
  caller leads more than its own batch, so no drain waits for more than the commit before its own;
- a failed transaction fails every function in it, with the same error, as each would have failed
  alone (the store is down or full).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from sqlalchemy import Connection

from sentinel.store import Store

T = TypeVar("T")


class _Waiting:
    """A function waiting for its batch, as the leader sees it (whatever it returns)."""

    __slots__ = ("error", "event", "finished")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.finished = False
        self.error: BaseException | None = None

    def run_in(self, conn: Connection) -> None:
        raise NotImplementedError


class _Request(_Waiting, Generic[T]):
    __slots__ = ("fn", "value")

    def __init__(self, fn: Callable[[Connection], T]) -> None:
        super().__init__()
        self.fn = fn
        self.value: T  # set by the batch's transaction; read only when it ran without error

    def run_in(self, conn: Connection) -> None:
        self.value = self.fn(conn)


class GroupCommit:
    """Runs the claims of several receivers' drains in one transaction.

    The store takes one writer at a time and every commit waits for the disk (synchronous=FULL). With
    ten receivers in a burst, each drain's claim would queue behind the others' commits; instead the
    first drain to arrive leads: it takes every claim waiting at that moment, runs them in one
    transaction and commits once. Claims arriving during that commit form the next batch, led by the
    first of them, so no drain leads more than its own batch. A failed transaction fails every claim
    in it, as it would have failed each alone (the store is down or full)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._queue: list[_Waiting] = []
        self._leading = False
        self.batches = 0  # transactions committed (the benchmark and tests read it)

    def run(self, fn: Callable[[Connection], T]) -> T:
        req: _Request[T] = _Request(fn)
        with self._lock:
            self._queue.append(req)
            lead = not self._leading
            self._leading = True
        if not lead:
            req.event.wait()
            if not req.finished:  # promoted: the previous leader left this batch to us
                self._lead()
        else:
            self._lead()
        if req.error is not None:
            raise req.error
        return req.value

    def _lead(self) -> None:
        with self._lock:
            batch, self._queue = self._queue, []
        try:
            with self.store.transaction() as conn:
                for r in batch:
                    r.run_in(conn)
            self.batches += 1
        except Exception as exc:  # noqa: BLE001 - re-raised in every claim's own thread
            for r in batch:
                r.error = exc
        finally:
            with self._lock:
                nxt = self._queue[0] if self._queue else None
                if nxt is None:
                    self._leading = False
            for r in batch:
                r.finished = True
                r.event.set()
            if nxt is not None:
                nxt.event.set()
