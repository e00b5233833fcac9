"""Is a receiver getting its messages? One state per receiver, derived from the outbox.

A receiver whose webhook refuses connections must look failing on the status page, in `sentinel status`,
in `/api/v1/status` and in the metrics, not show its last success. Everything here is read from the
outbox rows, which already hold each message's attempts, last error and next attempt, so the state is
the same after a restart and the same in every process that reads the store:

- `ok` — the receiver's last attempt was delivered, or nothing has been attempted yet (a receiver
  waiting only for a rate-limit window is ok: its oldest pending message's age still shows);
- `retrying` — the message at the head of its queue failed an attempt the worker will retry (refused,
  timeout, 5xx, a vendor's "too fast"), fewer than `FAILING_AFTER` attempts in a row have failed, and
  its oldest unfinished message has waited less than `FAILING_AGE_S`;
- `failing` — the same, but `FAILING_AFTER` or more attempts in a row have failed (about 10 to 15 s of
  refused connections with the worker's 5 s network delay and backoff), or the oldest unfinished
  message has waited `FAILING_AGE_S` or more while attempts fail: alerts are not reaching people;
- `set_aside` ("set aside") — the chat tool refused the last message for good (bad key, bot removed,
  a 4xx other than 408/429): the message was kept as `failed` and handed to `fallback_receiver`, and
  nothing has been delivered since. The next message is still tried; its first delivery makes the
  receiver ok again.

Consecutive failures are the failed attempts since the receiver's last delivered message: those of
messages given up since (within `outbox.DELIVERED_KEEP_US`, the horizon past which delivered rows are
pruned, so an old failure is never taken as the latest) plus those of the message at the head of the
queue. The one thing the outbox does not hold is when a retried attempt failed: the delivery worker
remembers that in memory (`AttemptErrors`), so after a restart `last_error_at` is unknown (None) for a
retried error until the next attempt; for a message given up it is the time it was given up.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import BindParameter, Connection, bindparam, case, func, select

from sentinel.model import US
from sentinel.notify import outbox as ob
from sentinel.store.schema import outbox

FAILING_AFTER = 3
"""Failed attempts in a row at which a retrying receiver counts as failing."""
FAILING_AGE_S = 300.0
"""Age of the oldest unfinished message at which a receiver whose attempts fail counts as failing."""


class ReceiverState(StrEnum):
    OK = "ok"
    RETRYING = "retrying"
    FAILING = "failing"
    SET_ASIDE = "set_aside"

    @property
    def text(self) -> str:
        """For people: "set aside", not the API's `set_aside`."""
        return self.value.replace("_", " ")


@dataclass(frozen=True, slots=True)
class AttemptError:
    """The latest failed attempt of one receiver, as the worker saw it (in memory)."""

    message_id: int
    at_us: int
    error: str


class AttemptErrors:
    """What the outbox does not store: when each receiver's latest failed attempt happened. Kept by the
    delivery worker for its lifetime (shared across reloads); lost at a restart."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latest: dict[str, AttemptError] = {}

    def record(self, receiver: str, message_id: int, at_us: int, error: str) -> None:
        with self._lock:
            self._latest[receiver] = AttemptError(message_id, at_us, error[:500])

    def get(self, receiver: str) -> AttemptError | None:
        with self._lock:
            return self._latest.get(receiver)


@dataclass(frozen=True, slots=True)
class ReceiverHealth:
    name: str
    state: ReceiverState
    consecutive_failures: int
    pending: int
    oldest_pending_age_s: float | None  # None: nothing unfinished
    next_attempt_us: int | None  # the head message's next attempt (None: nothing unfinished)
    last_error: str | None
    last_error_at_us: int | None  # None: no error known, or a retried one that failed before a restart
    last_delivered_us: int | None


@dataclass(frozen=True, slots=True)
class _Head:
    id: int
    status: str
    attempts: int
    last_error: str | None
    next_attempt_us: int

    @property
    def failures(self) -> int:
        """Failed attempts of the head message: a message in flight has one attempt not yet judged."""
        if self.last_error is None:
            return 0
        return max(0, self.attempts - (1 if self.status == ob.SENDING else 0))


_R: BindParameter[str] = bindparam("receiver")
_LAST_OK = select(func.max(outbox.c.id)).where(outbox.c.receiver == _R, outbox.c.status == bindparam("status"))
_ROW = select(
    outbox.c.id, outbox.c.status, outbox.c.attempts, outbox.c.last_error, outbox.c.next_attempt_us, outbox.c.finished_us
).where(outbox.c.id == bindparam("msg_id"))
_GIVEN_UP_SINCE = select(func.count(), func.sum(case((outbox.c.attempts > 0, outbox.c.attempts), else_=1))).where(
    outbox.c.receiver == _R,
    outbox.c.status == ob.FAILED,
    outbox.c.id > bindparam("after"),
    outbox.c.finished_us >= bindparam("horizon"),
)
_HEAD = select(func.min(outbox.c.id), func.count(), func.min(outbox.c.created_us)).where(
    outbox.c.receiver == _R, outbox.c.status.in_((ob.PENDING, ob.SENDING))
)


def receiver_health(
    conn: Connection,
    receivers: Iterable[str],
    now_us: int,
    errors: AttemptErrors | None = None,
    waits_us: Mapping[str, int] | None = None,
) -> dict[str, ReceiverHealth]:
    """The health of each named receiver.

    Each receiver costs a few lookups on the outbox's (receiver, status, id) index - its newest
    delivered and given-up message, what was given up since, the head of its queue - so the cost follows
    the receivers and their backlogs, not the days of delivered messages kept. `waits_us`: per receiver,
    how long its robots' rate limits hold the next send (the worker knows); the next attempt is never
    shown sooner than that."""
    horizon = now_us - ob.DELIVERED_KEEP_US
    out: dict[str, ReceiverHealth] = {}
    for name in receivers:
        ok_ids = [
            conn.execute(_LAST_OK, {"receiver": name, "status": st}).scalar() for st in (ob.DELIVERED, ob.DRY_RUN)
        ]
        ok_id = max((int(i) for i in ok_ids if i is not None), default=None)
        ok_row = conn.execute(_ROW, {"msg_id": ok_id}).first() if ok_id is not None else None
        n_failed, failed_attempts = conn.execute(
            _GIVEN_UP_SINCE, {"receiver": name, "after": ok_id or 0, "horizon": horizon}
        ).one()
        latest_failed = conn.execute(_LAST_OK, {"receiver": name, "status": ob.FAILED}).scalar()
        given_up = None
        if latest_failed is not None:
            row = conn.execute(_ROW, {"msg_id": latest_failed}).first()
            if row is not None and row.finished_us is not None and row.finished_us >= horizon:
                given_up = (row.last_error, int(row.finished_us))
        head_id, pending, oldest = conn.execute(_HEAD, {"receiver": name}).one()
        head = None
        if head_id is not None:
            r = conn.execute(_ROW, {"msg_id": head_id}).first()
            if r is not None:
                head = _Head(int(r.id), r.status, int(r.attempts), r.last_error, int(r.next_attempt_us))
        head_failures = head.failures if head is not None else 0
        consecutive = int(failed_attempts or 0) + head_failures
        age_s = None if oldest is None else max(0.0, (now_us - int(oldest)) / US)
        if head is not None and head_failures:
            late = age_s is not None and age_s >= FAILING_AGE_S
            state = ReceiverState.FAILING if consecutive >= FAILING_AFTER or late else ReceiverState.RETRYING
        elif n_failed:
            state = ReceiverState.SET_ASIDE
        else:
            state = ReceiverState.OK
        error, error_at = _last_error(name, head, given_up, errors)
        nxt = None
        if head is not None:
            wait = (waits_us or {}).get(name, 0)
            nxt = max(head.next_attempt_us, now_us + wait) if wait > 0 else head.next_attempt_us
        delivered_at = None if ok_row is None or ok_row.finished_us is None else int(ok_row.finished_us)
        out[name] = ReceiverHealth(
            name=name,
            state=state,
            consecutive_failures=consecutive,
            pending=int(pending),
            oldest_pending_age_s=age_s,
            next_attempt_us=nxt,
            last_error=error,
            last_error_at_us=error_at,
            last_delivered_us=delivered_at,
        )
    return out


def _last_error(
    name: str, head: _Head | None, given_up: tuple[str | None, int | None] | None, errors: AttemptErrors | None
) -> tuple[str | None, int | None]:
    """The receiver's most recent error and when: the head's retried error (its time from the worker's
    memory, when the worker saw it fail), else the newer of the worker's memory and the latest message
    given up. A receiver that is ok again keeps showing its last error, with its time."""
    seen = errors.get(name) if errors is not None else None
    if head is not None and head.failures:
        at = seen.at_us if seen is not None and seen.message_id == head.id else None
        return head.last_error, at
    candidates: list[tuple[int, str]] = []
    if seen is not None:
        candidates.append((seen.at_us, seen.error))
    if given_up is not None and given_up[0] is not None and given_up[1] is not None:
        candidates.append((int(given_up[1]), given_up[0]))
    if not candidates:
        return None, None
    at_us, error = max(candidates)
    return error, at_us
