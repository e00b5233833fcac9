"""One receiver's drain: claim its next outbox message, send it, record what the chat tool answered.

The caller holds the receiver's in-flight lock (`ReceiverRunner.busy`) for the whole drain. Guarantees:
- per receiver, messages go in outbox order, one in flight: a resolution never overtakes its firing;
- a message is claimed (`sending`, with the robot chosen) in a committed transaction before it is sent,
  and the next one is never sent before the previous one's `delivered` mark is committed: that mark
  rides on the next claim's transaction, so a crash repeats at most the message in flight;
- claims of receivers draining at the same moment share one transaction (`GroupCommit`), a receiver's
  next messages are read `READ_AHEAD` at a time, and an idle receiver costs one read and no write;
- nothing is claimed or sent while the store's lock is lost, after the worker began stopping, after a
  flush's deadline, or once a reload replaced the receiver; a message claimed just before the lock
  was lost is not sent (the worker's `resume` queues it again);
- an exception while building or sending a message (a bug) is logged and retried with backoff like a
  network error: the message never stays `sending` with nothing in flight;
- anything but a delivery is committed at once, with the robot's rate window (`sentinel.notify.retry`);
- in dry run nothing is sent: messages are marked `dry_run`, no robot's window moves;
- the drain ends with when the receiver has work again: a retry or a rate-limit window, at once (more
  is due or the outbox moved under it), or only at the next wake-up.
"""

from __future__ import annotations

import logging
import random
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from sqlalchemy import Connection

from sentinel.clock import Clock, now_us
from sentinel.config import Config
from sentinel.logs import fields
from sentinel.metrics import Metrics
from sentinel.model import US
from sentinel.notify import outbox
from sentinel.notify.base import Delivered, Failed, Outcome, RetryAfter
from sentinel.notify.compose import compose
from sentinel.notify.group_commit import GroupCommit
from sentinel.notify.health import AttemptErrors
from sentinel.notify.retry import Setbacks
from sentinel.notify.robots import ReceiverRunner, save_window
from sentinel.store import Store

log = logging.getLogger("sentinel.deliver")


class Host(Protocol):
    """What a drain reads from the worker that runs it, at each step: a reload replaces the
    configuration and the runners while a drain runs, and a stop or a flush's deadline ends it."""

    @property
    def cfg(self) -> Config: ...

    @property
    def runners(self) -> Mapping[str, ReceiverRunner]: ...

    def stopping_now(self) -> bool: ...

    def wake(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Drained:
    """How a drain ended."""

    sent: int  # messages delivered (or given up as failed, or marked in dry run)
    due_s: float | None  # seconds until the receiver has work again; None: only a wake-up brings work
    empty: bool  # the outbox held nothing unfinished for the receiver when the drain stopped


@dataclass(slots=True)
class _Delivered:
    """A message the chat tool took whose `delivered` mark rides on the next claim's transaction."""

    msg: outbox.OutboxMessage
    at_us: int
    url_index: int


@dataclass(slots=True)
class _Drain:
    """What one drain carries between its steps: the receiver's messages read ahead (FIFO), the
    delivered mark not yet committed, and why it stopped (the seconds until it has work again)."""

    ahead: deque[outbox.OutboxMessage] = field(default_factory=deque)
    delivered: _Delivered | None = None
    due_s: float | None = None  # None: nothing waiting, only a new message (a wake-up) brings work
    empty: bool = False  # the outbox held nothing unfinished for the receiver when it stopped


class Drainer:
    """Drains receivers for one worker; any number of drains at once, one per receiver."""

    READ_AHEAD = 32

    def __init__(
        self,
        host: Host,
        store: Store,
        metrics: Metrics,
        clock: Clock,
        *,
        dry_run: bool,
        rng: random.Random,
        attempt_errors: AttemptErrors,
    ) -> None:
        self.host = host
        self.store = store
        self.metrics = metrics
        self.clock = clock
        self.dry_run = dry_run
        self.attempt_errors = attempt_errors
        self.setbacks = Setbacks(metrics, rng)
        self.commits = GroupCommit(store)

    def drain(self, runner: ReceiverRunner, limit: int) -> Drained:
        """Send the receiver's due messages, in order, until it is idle, rate-limited or retrying, at
        most `limit` of them."""
        d = _Drain()
        sent = 0
        name = runner.cfg.name
        try:
            while True:
                if sent >= limit or self.host.runners.get(name) is not runner:
                    d.due_s = 0.0
                    break
                if self.host.stopping_now() or not self.store.lock_held():
                    d.due_s = None
                    break
                claimed = self._claim(runner, d)
                if claimed is None:
                    break
                msg, idx = claimed
                if not self.store.lock_held():  # lost since the claim: not sent; `resume` queues it again
                    break
                if self.dry_run:
                    sent += 1
                    continue
                if self._send(runner, msg, idx, d):
                    sent += 1
                else:
                    break
        finally:
            done = d.delivered
            if done is not None:
                self.commits.run(lambda conn: self._mark_delivered(conn, runner, done))
                d.delivered = None
        return Drained(sent, d.due_s, d.empty)

    def _claim(self, runner: ReceiverRunner, d: _Drain) -> tuple[outbox.OutboxMessage, int] | None:
        """Commit the previous delivered mark and claim the receiver's next message in ONE transaction
        (shared with the other receivers' claims waiting at that moment); None (with `d.due_s` set)
        when nothing is due. An idle receiver costs one read, no write."""
        now = now_us(self.clock)
        if d.delivered is None and not d.ahead:
            with self.store.reading() as conn:
                d.ahead.extend(outbox.upcoming(conn, runner.cfg.name, self.READ_AHEAD))
            if self._not_due(runner, d, now):
                return None
        claimed = self.commits.run(lambda conn: self._claim_in(conn, runner, d, now))
        d.delivered = None  # committed: only now is the previous message's mark durable
        return claimed

    def _claim_in(
        self, conn: Connection, runner: ReceiverRunner, d: _Drain, now: int
    ) -> tuple[outbox.OutboxMessage, int] | None:
        name = runner.cfg.name
        if d.delivered is not None:
            self._mark_delivered(conn, runner, d.delivered)
        for _ in range(2):  # a second read only when a row read ahead went stale
            if not d.ahead:
                d.ahead.extend(outbox.upcoming(conn, name, self.READ_AHEAD))
            if self._not_due(runner, d, now):
                return None
            msg = d.ahead[0]
            if self.dry_run:
                outbox.mark_delivered(conn, msg.id, now, status=outbox.DRY_RUN)
                self.metrics.notifications.labels(receiver=name, outcome="dry_run").inc()
                d.ahead.popleft()
                return msg, 0
            idx, _ = runner.pick_url(now)
            if outbox.mark_sending(conn, msg.id, idx):
                d.ahead.popleft()
                return msg, idx
            d.ahead.clear()
        d.due_s = 0.0  # the outbox changed under the read-ahead twice: start over at once
        return None

    def _not_due(self, runner: ReceiverRunner, d: _Drain, now: int) -> bool:
        """Whether the head of the read-ahead cannot go now; sets why in `d`."""
        if not d.ahead:
            d.empty, d.due_s = True, None
            return True
        head = d.ahead[0]
        if head.next_attempt_us > now:
            d.due_s = (head.next_attempt_us - now) / US
            return True
        if not self.dry_run:
            _, wait = runner.pick_url(now)
            if wait > 0:
                d.due_s = wait / US
                return True
        return False

    def _mark_delivered(self, conn: Connection, runner: ReceiverRunner, done: _Delivered) -> None:
        outbox.mark_delivered(conn, done.msg.id, done.at_us)
        save_window(conn, runner, done.url_index)

    def _send(self, runner: ReceiverRunner, msg: outbox.OutboxMessage, idx: int, d: _Drain) -> bool:
        """One attempt of a claimed message. Delivered: its mark waits in `d` for the next claim.
        Anything else is committed here. Returns False when the drain must stop (a retry is due)."""
        name = runner.cfg.name
        try:
            message = compose(self.host.cfg, runner, msg)
            self.metrics.notification_requests.labels(receiver=name).inc()
            outcome: Outcome = runner.adapter.send(message, idx)
        except Exception as exc:  # a bug must not leave the message "sending" and retried at every tick
            log.exception("could not build or send a message", extra=fields(receiver=name, kind=msg.kind))
            outcome = RetryAfter(0.0, f"internal error ({type(exc).__name__}); see the log")
        done = now_us(self.clock)
        runner.limiters[idx].record(done)
        runner.next_url = (idx + 1) % len(runner.limiters)
        if isinstance(outcome, Delivered):
            d.delivered = _Delivered(msg, done, idx)
            self.metrics.notifications.labels(receiver=name, outcome="delivered").inc()
            self.metrics.notification_delay.labels(receiver=name).observe(max(0.0, (done - msg.event_at_us) / US))
            log.info("message delivered", extra=fields(receiver=name, kind=msg.kind, attempts=msg.attempts + 1))
            return True
        d.ahead.clear()  # the head stays unfinished (retry) or the outbox grew (fallback): read again
        self.attempt_errors.record(
            name, msg.id, done, outcome.reason if isinstance(outcome, RetryAfter) else outcome.text
        )
        cfg = self.host.cfg
        with self.store.transaction() as conn:
            due = self.setbacks.record(
                conn, cfg, self.host.runners, runner, msg, idx, outcome, done, stopping=self.host.stopping_now()
            )
            if due is not None:
                d.due_s = due
            save_window(conn, runner, idx)
        if isinstance(outcome, Failed) and cfg.fallback_receiver not in (None, name):
            self.host.wake()  # the fallback receiver has a message now
        return not isinstance(outcome, RetryAfter)
