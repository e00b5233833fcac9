"""The delivery worker: takes messages from the outbox and gives them to the chat tools.

- At most one message in flight per receiver; receivers run on their own threads, so a slow or
  failing one never delays another.
- Per receiver, messages go in outbox order: a resolution never overtakes its firing.
- `Delivered` marks the message; `RetryAfter` retries with exponential backoff and jitter, never sooner
  than the vendor asked (Retry-After, WeCom 45009, DingTalk's 10-minute block), and holds that robot
  URL for every message; `Failed` keeps the message as failed, counts it and tells `fallback_receiver`.
- An exception while building or sending a message (a bug) is logged and retried with backoff like a
  network error: the message never stays `sending` with nothing in flight.
- Rate limits are sliding windows per robot URL (`rate_limit`, default the vendor's published limit),
  kept in the store so a restart cannot burst past a robot's limit.
- Every attempt ends within its receiver's `timeout` (the HTTP client's hard deadline), so a robot that
  drips its answer holds its own queue for one timeout per attempt, then retries with backoff.
- Stopping is bounded: `flush` delivers what is due for a while, a send still in flight then gets
  `STOP_GRACE_S` more and is abandoned (its connection cut); its message stays pending and goes after
  the restart (the chat tool may have shown it already: at most that one repeats, as after a crash).
- Each receiver's delivery state (ok / retrying / failing / set aside, `sentinel.notify.health`) is read
  from the outbox; the worker adds what the outbox does not hold (when a retried attempt failed, its
  robots' rate-limit waits) and sets the receiver gauges at each scrape.
- While the state store's lock is lost (PostgreSQL), nothing is claimed or sent: a drain stops before
  its next claim and before its next send, and its writes are fenced; `resume` (the lock re-taken)
  queues what was claimed and not confirmed again, as a restart does.
- In dry run nothing is sent: messages are marked `dry_run` so the status page shows what would have
  gone out.
- A drain starts when the worker is woken (the dispatcher committed messages), at the due time a
  drain asked for (a retry, a rate-limit window), or on the waker's safety interval; nothing polls.
- A burst costs one commit per message or less: a delivered mark shares the transaction of the next
  claim, the claims of receivers draining at the same moment share one, a receiver's next messages
  are read ahead in one query, and a robot with no limits writes no rate state.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

from sentinel.clock import Clock, SystemClock, now_us
from sentinel.config import Config, ReceiverConfig
from sentinel.logs import fields
from sentinel.metrics import Metrics
from sentinel.model import US, Tier
from sentinel.notify import outbox
from sentinel.notify.base import Adapter, Delivered, Failed, Message, Outcome, RetryAfter
from sentinel.notify.health import AttemptErrors, ReceiverHealth, ReceiverState, receiver_health
from sentinel.notify.views import alert_payload, view_from_json
from sentinel.store import LockLost, Store
from sentinel.units import Rate
from sentinel.wake import Waker

log = logging.getLogger("sentinel.deliver")

BACKOFF_BASE_S = 2.0
BROKEN_ROBOT_HOLD_US = 3600 * US  # a robot that refused for good is tried again after an hour
BACKOFF_MAX_S = 600.0

@dataclass(slots=True)
class RateLimiter:
    """Sliding windows over one robot URL's recent sends, plus a block a vendor imposed."""

    limits: tuple[Rate, ...]
    sent: list[int] = field(default_factory=list)
    blocked_until: int = 0
    dirty: bool = False  # changed since it was last saved (a robot with no limits and no block never is)

    def wait_us(self, now: int) -> int:
        wait = max(0, self.blocked_until - now)
        for rate in self.limits:
            window = int(rate.per_seconds * US)
            recent = [t for t in self.sent if t > now - window]
            if len(recent) >= rate.count:
                wait = max(wait, recent[-rate.count] + window - now)
        return wait

    def record(self, now: int) -> None:
        horizon = max((int(r.per_seconds * US) for r in self.limits), default=0)
        if horizon:
            self.sent = [t for t in self.sent if t > now - horizon] + [now]
            self.dirty = True
        elif self.sent:
            self.sent = []
            self.dirty = True

    def block(self, until: int) -> None:
        if until > self.blocked_until:
            self.blocked_until = until
            self.dirty = True


def backoff_s(attempts: int, rng: random.Random) -> float:
    """Exponential with full jitter in the upper half: 2 s, 4 s, 8 s ... capped at 10 minutes."""
    base = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2.0 ** max(0, attempts - 1))
    return float(base * (0.5 + rng.random() / 2))


class ReceiverRunner:
    def __init__(self, cfg: ReceiverConfig, adapter: Adapter, busy: threading.Lock | None = None) -> None:
        self.cfg = cfg
        self.adapter = adapter
        limits = (cfg.rate_limit,) if cfg.rate_limit is not None else adapter.default_limits
        self.limiters = [RateLimiter(limits) for _ in cfg.all_urls()]
        self.busy = busy or threading.Lock()  # held while a message of this receiver is in flight
        self.next_url = 0
        self.due_s: float | None = None  # after a drain: seconds until it has work again (None: none)

    def other_robot_usable(self, idx: int, now: int) -> bool:
        """Whether another robot URL of this receiver is not set aside as broken."""
        return any(i != idx and lim.blocked_until - now < BROKEN_ROBOT_HOLD_US // 2
                   for i, lim in enumerate(self.limiters))

    def pick_url(self, now: int) -> tuple[int, int]:
        """(url index, µs to wait): the robot that can take a message soonest, round robin on ties."""
        n = len(self.limiters)
        order = [(self.next_url + i) % n for i in range(n)]
        best = min(order, key=lambda i: self.limiters[i].wait_us(now))
        return best, self.limiters[best].wait_us(now)


T = TypeVar("T")


class _Request(Generic[T]):
    __slots__ = ("error", "event", "finished", "fn", "value")

    def __init__(self, fn: Callable[[Connection], T]) -> None:
        self.fn = fn
        self.event = threading.Event()
        self.finished = False
        self.error: BaseException | None = None
        self.value: T | None = None


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
        self._queue: list[_Request[Any]] = []
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
        return req.value  # type: ignore[return-value]

    def _lead(self) -> None:
        with self._lock:
            batch, self._queue = self._queue, []
        try:
            with self.store.transaction() as conn:
                for r in batch:
                    r.value = r.fn(conn)
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


class DeliveryWorker:
    """Drains each receiver's outbox on a pool thread, one message in flight per receiver.

    A drain starts when the worker is woken (the dispatcher committed messages), at a due time a
    drain asked for (a retry, a rate-limit window), or on the waker's safety interval. Per message it
    commits once: the previous message's `delivered` mark and the next one's claim share a
    transaction (the next message is never sent before that commit, so a crash repeats at most the
    one in flight), and the receiver's next messages are read `READ_AHEAD` at a time.
    """

    READ_AHEAD = 32
    STOP_GRACE_S = 2.0  # at shutdown, a send in flight gets this long to finish before it is abandoned
    SAFETY_INTERVAL_S = 10.0
    MIN_WAIT_S = 0.005  # a due time never asks for less: a waiting receiver cannot make a busy loop

    def __init__(self, cfg: Config, store: Store, metrics: Metrics, *, clock: Clock | None = None,
                 dry_run: bool = False, adapter_factory: Callable[[ReceiverConfig], Adapter] | None = None,
                 seed: int | None = None, safety_interval_s: float | None = None) -> None:
        self.cfg = cfg
        self.store = store
        self.metrics = metrics
        self.clock = clock or SystemClock()
        self.dry_run = dry_run
        if adapter_factory is None:
            from sentinel.notify import create

            adapter_factory = create
        self.factory = adapter_factory
        self.rng = random.Random(seed)
        self.runners: dict[str, ReceiverRunner] = {}
        self._retired: list[ReceiverRunner] = []  # replaced by a reload; closed when no drain uses them
        self._retired_lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._pool_size = 0
        self._old_pools: list[ThreadPoolExecutor] = []  # replaced by a larger one, finishing their drains
        self._stopping = threading.Event()
        self._deadline = math.inf  # time.monotonic() at which running drains stop (set by `flush`)
        # Receivers asked to drain again while a drain of theirs held the in-flight lock; by name, so
        # the flag survives a reload that replaces the runner (the lock is shared, the flag must be too).
        self._again: set[str] = set()
        self._again_lock = threading.Lock()
        self.waker = Waker("deliver", self.tick, safety_interval_s or self.SAFETY_INTERVAL_S)
        self._commits = GroupCommit(store)
        self.attempt_errors = AttemptErrors()  # when each receiver's latest attempt failed (not in the outbox)
        self._health_exported: set[str] = set()
        self._build(cfg)
        metrics.collect_hooks["receivers"] = self.refresh_health  # at each scrape: ages grow without events

    def _build(self, cfg: Config) -> None:
        old = self.runners
        runners: dict[str, ReceiverRunner] = {}
        for rc in cfg.receivers:
            prev = old.get(rc.name)
            if prev is not None and prev.cfg == rc:
                runners[rc.name] = prev
                continue
            # A changed receiver keeps its in-flight lock, so a drain still sending under the old
            # configuration and one under the new never overlap (the message in flight would go twice),
            # and its robots' recent sends and blocks, to which the new limits apply.
            runner = ReceiverRunner(rc, self.factory(rc), busy=prev.busy if prev is not None else None)
            if prev is not None:
                for new, was in zip(runner.limiters, prev.limiters, strict=False):
                    new.sent, new.blocked_until, new.dirty = list(was.sent), was.blocked_until, was.dirty
            runners[rc.name] = runner
        self.runners = runners
        with self._retired_lock:
            self._retired += [prev for name, prev in old.items() if runners.get(name) is not prev]
        self._close_retired()

    def _close_retired(self, wait: bool = False) -> None:
        """Close the adapters of runners a reload replaced, once no drain is sending with them."""
        with self._retired_lock:
            keep = []
            for r in self._retired:
                if r.busy.acquire(blocking=wait):
                    try:
                        r.adapter.close()
                    finally:
                        r.busy.release()
                else:
                    keep.append(r)
            self._retired = keep

    # --- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> None:
        """Re-queue the message a crash left in flight and load the robots' rate windows.

        The waker's thread is started by its owner (the daemon starts every stage's waker); without
        it, `tick()` and `drain()` are driven by the caller, as the tests with a manual clock do."""
        with self.store.transaction() as conn:
            n = outbox.reset_in_flight(conn)
            self._load_rates(conn)
        if n:
            log.warning("messages in flight at the last stop will be sent again", extra=fields(count=n))
        self._pool_size = max(1, len(self.runners))
        self._pool = ThreadPoolExecutor(max_workers=self._pool_size, thread_name_prefix="deliver")
        self.refresh_pending()
        self.wake()  # what the last run left in the outbox goes now, not at the safety interval

    def _load_rates(self, conn: Connection) -> None:
        """The robots' rate windows as the store holds them (written by this instance or a former leader)."""
        for (name, idx), (sent, blocked) in outbox.load_rate(conn).items():
            runner = self.runners.get(name)
            if runner is not None and idx < len(runner.limiters):
                runner.limiters[idx].sent = list(sent)
                runner.limiters[idx].blocked_until = blocked

    @property
    def started(self) -> bool:
        return self._pool is not None

    def reload(self, cfg: Config) -> None:
        self.cfg = cfg
        self._build(cfg)
        if self._pool is not None:
            self._grow_pool()
            self.wake()  # a new or changed receiver may have messages waiting

    def _grow_pool(self) -> None:
        """A thread per receiver, so no receiver's drain waits for another's: a reload that added
        receivers hands new drains to a larger pool (a pool's size is fixed); the old one finishes the
        drains it runs, and `stop` waits for it too. A kick that raced the swap is repeated by the wake
        that follows the reload."""
        if self._pool is None or len(self.runners) <= self._pool_size:
            return
        old = self._pool
        self._pool_size = len(self.runners)
        self._pool = ThreadPoolExecutor(max_workers=self._pool_size, thread_name_prefix="deliver")
        self._old_pools.append(old)
        old.shutdown(wait=False)

    def stop(self) -> None:
        """Stop within about `STOP_GRACE_S` (less after a `flush` that used its time): sends in flight
        may finish meanwhile, then they are cut and their messages stay pending."""
        self._stopping.set()
        self.waker.stop()
        until = time.monotonic() + min(self.STOP_GRACE_S, max(0.0, self._deadline + self.STOP_GRACE_S
                                                                   - time.monotonic()))
        for r in list(self.runners.values()):
            if r.busy.acquire(timeout=max(0.0, until - time.monotonic())):
                r.busy.release()
        self._abandon_in_flight()
        for pool in [*self._old_pools, *([self._pool] if self._pool is not None else [])]:
            pool.shutdown(wait=True)  # the drains only record what their cut sends returned
        self._close_retired(wait=True)
        for r in self.runners.values():
            r.adapter.close()

    def resume(self) -> None:
        """This instance leads again after a loss: the messages claimed and not confirmed meanwhile (by it, or
        by another leader) go again (at most those in flight are repeated, with their delivery ids), the
        robots' rate windows are read back from the store, then every receiver drains. Waits for the drains
        still running (each send ends within its `timeout`)."""
        held: list[ReceiverRunner] = []
        try:
            for r in list(self.runners.values()):
                r.busy.acquire()
                held.append(r)
            with self.store.transaction() as conn:
                n = outbox.reset_in_flight(conn)
                self._load_rates(conn)
        finally:
            for r in held:
                r.busy.release()
        if n:
            log.warning("messages claimed and not confirmed before this instance took the lead will be sent again",
                        extra=fields(count=n))
        self.wake()

    def _abandon_in_flight(self) -> None:
        """Close every adapter: a send in flight returns at once (a retry), no new one starts."""
        with self._retired_lock:
            runners = [*self.runners.values(), *self._retired]
        for r in runners:
            try:
                r.adapter.close()
            except Exception:
                log.exception("could not close a receiver's connections", extra=fields(receiver=r.cfg.name))

    def _stopping_now(self) -> bool:
        return self._stopping.is_set() or time.monotonic() >= self._deadline

    # --- work ------------------------------------------------------------------------------------------
    @property
    def claim_transactions(self) -> int:
        """Transactions the drains' claims committed so far (the benchmark reads it)."""
        return self._commits.batches

    def wake(self) -> None:
        """Messages were committed: drain now, on the waker's thread. A waker not started yet runs its
        first step as soon as it starts; callers that drive the worker themselves (`tick`, `drain`)
        never race a drain they did not start."""
        self.waker.wake()

    def tick(self) -> None:
        """The waker's step: a drain for every idle receiver (each posts its own next due time); a busy
        one drains again right after its drain."""
        if self._pool is None or self._stopping.is_set() or not self.store.lock_held():
            return  # (lock lost: `resume` wakes the worker once it is re-taken)
        self._close_retired()
        for runner in list(self.runners.values()):
            self._kick(runner)

    def _kick(self, runner: ReceiverRunner) -> None:
        with self._again_lock:
            self._again.add(runner.cfg.name)  # before trying the lock: a drain ending now sees it
        if self._pool is not None and runner.busy.acquire(blocking=False):
            try:
                self._pool.submit(self._drain_released, runner)
            except RuntimeError:  # the pool shut down meanwhile (stop, or replaced by a larger one: see `_grow_pool`)
                runner.busy.release()

    def _drain_released(self, runner: ReceiverRunner) -> None:
        """Drain under the in-flight lock, release it, and drain again if a wake-up came meanwhile.

        The again-flag is cleared before the drain reads the outbox and re-checked after the lock is
        released: a message committed while the drain was finishing (it had found nothing) was
        followed by a wake-up that either saw the lock free (and started a drain itself) or left the
        flag for this loop; either way it goes now, not at the safety interval."""
        name = runner.cfg.name
        while True:
            with self._again_lock:
                self._again.discard(name)
            due: float | None = None
            try:
                self.drain(runner)
                due = runner.due_s
            except LockLost:
                due = None  # reported by the daemon; `resume` wakes the worker once the lock is re-taken
            except SQLAlchemyError as exc:  # the store is down: the drain is tried again, no traceback
                log.warning("delivery paused: the state store is unavailable",
                            extra=fields(receiver=name, error=type(exc).__name__))
                due = BACKOFF_BASE_S
            except Exception:
                log.exception("delivery failed unexpectedly", extra=fields(receiver=name))
                due = BACKOFF_BASE_S
            finally:
                runner.busy.release()
            if due is not None:
                self.waker.wake_in(max(due, self.MIN_WAIT_S) if due > 0 else 0.0)
            with self._again_lock:
                again = name in self._again
            current = self.runners.get(name)
            if not again or self._stopping.is_set() or current is None or not current.busy.acquire(blocking=False):
                return
            runner = current

    def drain(self, runner: ReceiverRunner, limit: int = 1000) -> int:
        """Send the receiver's due messages, in order, until it is idle, rate-limited or retrying;
        returns how many were delivered (or given up as failed). `runner.due_s` says when it has work
        again: None when it has nothing, else the seconds until its next message or robot is due.

        Stops early when the worker stops, a flush's deadline passes, or a reload replaced the runner
        (the next tick drains with the new configuration)."""
        d = _Drain()
        sent = 0
        name = runner.cfg.name
        try:
            while True:
                if sent >= limit or self.runners.get(name) is not runner:
                    d.due_s = 0.0
                    break
                if self._stopping_now() or not self.store.lock_held():
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
                self._commits.run(lambda conn: self._mark_delivered(conn, runner, done))
                d.delivered = None
        runner.due_s = d.due_s
        self._pending_gauge(name, d)
        return sent

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
        claimed = self._commits.run(lambda conn: self._claim_in(conn, runner, d, now))
        d.delivered = None  # committed: only now is the previous message's mark durable
        return claimed

    def _claim_in(self, conn: Connection, runner: ReceiverRunner, d: _Drain,
                  now: int) -> tuple[outbox.OutboxMessage, int] | None:
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
        self._save_rate(conn, runner, done.url_index)

    def _save_rate(self, conn: Any, runner: ReceiverRunner, idx: int) -> None:
        """Persist a robot's window when it changed (never, for a robot with no limits that no vendor
        blocked: nothing to remember across a restart)."""
        limiter = runner.limiters[idx]
        if limiter.dirty:
            outbox.save_rate(conn, runner.cfg.name, idx, limiter.sent, limiter.blocked_until)
            limiter.dirty = False

    def _send(self, runner: ReceiverRunner, msg: outbox.OutboxMessage, idx: int, d: _Drain) -> bool:
        """One attempt of a claimed message. Delivered: its mark waits in `d` for the next claim.
        Anything else is committed here. Returns False when the drain must stop (a retry is due)."""
        name = runner.cfg.name
        try:
            message = self.message(msg, runner)
            self.metrics.notification_requests.labels(receiver=name).inc()
            outcome: Outcome = runner.adapter.send(message, idx)
        except Exception as exc:  # a bug must not leave the message "sending" and retried at every tick
            log.exception("could not build or send a message", extra=fields(receiver=name, kind=msg.kind))
            outcome = RetryAfter(0.0, f"internal error ({type(exc).__name__}); see the log")
        done = now_us(self.clock)
        limiter = runner.limiters[idx]
        limiter.record(done)
        runner.next_url = (idx + 1) % len(runner.limiters)
        if isinstance(outcome, Delivered):
            d.delivered = _Delivered(msg, done, idx)
            self.metrics.notifications.labels(receiver=name, outcome="delivered").inc()
            self.metrics.notification_delay.labels(receiver=name).observe(max(0.0, (done - msg.event_at_us) / US))
            log.info("message delivered", extra=fields(receiver=name, kind=msg.kind, attempts=msg.attempts + 1))
            return True
        d.ahead.clear()  # the head stays unfinished (retry) or the outbox grew (fallback): read again
        self.attempt_errors.record(name, msg.id, done, outcome.reason if isinstance(outcome, RetryAfter)
                                   else outcome.text)
        with self.store.transaction() as conn:
            match outcome:
                case RetryAfter(reason=reason) if self._stopping_now():
                    # abandoned (or failed) while stopping: due at once when the daemon runs again
                    outbox.mark_retry(conn, msg.id, done, reason)
                    self.metrics.notification_requests_failed.labels(receiver=name, reason="retry").inc()
                    log.warning("delivery abandoned at shutdown; the message is sent after the restart",
                                extra=fields(receiver=name, reason=reason))
                case RetryAfter(seconds=seconds, reason=reason):
                    delay = max(seconds, backoff_s(msg.attempts + 1, self.rng))
                    limiter.block(done + int(seconds * US))
                    outbox.mark_retry(conn, msg.id, done + int(delay * US), reason)
                    d.due_s = delay
                    self.metrics.notification_requests_failed.labels(receiver=name, reason="retry").inc()
                    log.warning("delivery will be retried",
                                extra=fields(receiver=name, reason=reason, retry_in_s=round(delay, 1)))
                case Failed(code=code, reason=reason) if runner.other_robot_usable(idx, done):
                    # one robot of several refuses for good (bad key, bot removed): set it aside for a
                    # while and give the message to another robot of the same group
                    limiter.block(done + BROKEN_ROBOT_HOLD_US)
                    outbox.mark_retry(conn, msg.id, done, f"robot #{idx + 1}: {outcome.text}")
                    self.metrics.notification_requests_failed.labels(receiver=name, reason="permanent").inc()
                    log.error("a robot of this receiver refuses messages; using the others",
                              extra=fields(receiver=name, robot=idx + 1, code=code, reason=reason))
                case Failed(code=code, reason=reason):
                    outbox.mark_failed(conn, msg.id, done, outcome.text)
                    self.metrics.notification_requests_failed.labels(receiver=name, reason="permanent").inc()
                    self.metrics.notifications.labels(receiver=name, outcome="failed").inc()
                    log.error("delivery failed permanently", extra=fields(receiver=name, code=code, reason=reason))
                    self._fallback(conn, msg, name, f"{code} {reason}", done)
            self._save_rate(conn, runner, idx)
        if isinstance(outcome, Failed) and self.cfg.fallback_receiver not in (None, name):
            self.wake()  # the fallback receiver has a message now
        return not isinstance(outcome, RetryAfter)

    def flush(self, timeout_s: float) -> int:
        """On SIGTERM: deliver what is due now, bounded in time; the rest waits in the outbox.

        Drains already running stop at the same deadline; a send still in flight `STOP_GRACE_S` after
        it is abandoned (cut), this one's included, so this returns by then whatever a robot does.
        Only `stop` follows: the adapters are closed for good."""
        deadline = time.monotonic() + timeout_s
        self._deadline = deadline
        cutter = threading.Timer(timeout_s + self.STOP_GRACE_S, self._abandon_in_flight)
        cutter.daemon = True
        cutter.start()
        total = 0
        try:
            for runner in list(self.runners.values()):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                if not runner.busy.acquire(timeout=left):
                    continue  # a drain is sending for this receiver until the deadline
                try:
                    total += self.drain(runner)
                finally:
                    runner.busy.release()
        finally:
            cutter.cancel()
        return total

    def _fallback(self, conn: Any, msg: outbox.OutboxMessage, failed: str, why: str, now: int) -> None:
        fb = self.cfg.fallback_receiver
        if fb is None or fb == failed or fb not in self.runners:
            return
        views = [view_from_json(v, self.cfg.tz) for v in msg.payload.get("views", [])]
        outbox.enqueue(conn, fb, "fallback", Tier.parse(msg.tier), views, event_at_us=msg.event_at_us, now_us=now,
                       extra={**{k: v for k, v in msg.payload.items() if k != "views"},
                              "note": f"receiver {failed} failed permanently: {why}", "failed_receiver": failed})

    # --- building the message ------------------------------------------------------------------------
    def message(self, msg: outbox.OutboxMessage, runner: ReceiverRunner) -> Message:
        from sentinel.notify.render import TemplateError, body_budget, render

        views = [view_from_json(v, self.cfg.tz) for v in msg.payload.get("views", [])]
        adapter = runner.adapter
        kind = {"digest": "alert", "fallback": "alert"}.get(msg.kind, msg.kind)
        max_bytes, max_chars = body_budget(adapter, runner.cfg, Tier.parse(msg.tier))

        def build(templates_dir: Path | None) -> tuple[str, str]:
            return render(views, syntax=adapter.syntax, locale=runner.cfg.locale or self.cfg.locale,
                          max_bytes=max_bytes, max_chars=max_chars, status_url=self.cfg.base_url + "/", kind=kind,
                          note=msg.payload.get("note"), templates_dir=templates_dir)

        try:
            title, body = build(self.cfg.templates_dir)
        except TemplateError as exc:  # edited after the reload check: an alert must still go out
            log.error("template failed; sending with the built-in templates",
                      extra=fields(receiver=runner.cfg.name, error=str(exc)))
            title, body = build(None)
        status = str(msg.payload.get("status", "firing"))
        # the rest of the group (the generic webhook's payload lists every alert of it, as Alertmanager's
        # does): its other open alerts these people were told of, as they were when the message was queued
        rest = [view_from_json(v, self.cfg.tz) for v in msg.payload.get("group_alerts", [])]
        return Message(id=msg.delivery_id, title=title, body=body, tier=Tier.parse(msg.tier), status=status,
                       group_key=str(msg.payload.get("group_key", "")),
                       group_labels=dict(msg.payload.get("group_labels", {})),
                       alerts=tuple(alert_payload(v, self.cfg.base_url) for v in [*views, *rest]),
                       external_url=self.cfg.base_url, mention=status != "resolved")

    def _pending_gauge(self, name: str, d: _Drain) -> None:
        """The receiver's unfinished messages after a drain: known to be 0 when it stopped on an empty
        outbox (the common case in a burst's wake), else one indexed count of its own rows."""
        if d.empty:
            n = 0
        else:
            with self.store.reading() as conn:
                n = outbox.pending_count(conn, name)
        self.metrics.outbox_pending.labels(receiver=name).set(n)

    def health(self) -> dict[str, ReceiverHealth]:
        """Each configured receiver's delivery state (see `sentinel.notify.health`), with the retry
        times this worker remembers and its robots' rate-limit waits."""
        now = now_us(self.clock)
        runners = dict(self.runners)
        waits = {} if self.dry_run else {name: r.pick_url(now)[1] for name, r in runners.items()}
        with self.store.reading() as conn:
            return receiver_health(conn, runners, now, self.attempt_errors, waits)

    def refresh_health(self) -> None:
        """Set the receiver gauges (state, consecutive failures, oldest pending age) from the outbox;
        a receiver a reload removed loses its series."""
        found = self.health()
        m = self.metrics
        for name, h in found.items():
            for state in ReceiverState:
                m.receiver_state.labels(receiver=name, state=state.value).set(1 if h.state is state else 0)
            m.receiver_consecutive_failures.labels(receiver=name).set(h.consecutive_failures)
            m.receiver_oldest_pending.labels(receiver=name).set(h.oldest_pending_age_s or 0.0)
        for gone in self._health_exported - set(found):
            for state in ReceiverState:
                m.receiver_state.remove(gone, state.value)
            m.receiver_consecutive_failures.remove(gone)
            m.receiver_oldest_pending.remove(gone)
        self._health_exported = set(found)

    def refresh_pending(self) -> None:
        with self.store.reading() as conn:
            counts = outbox.pending_counts(conn)
        for name in self.runners:
            self.metrics.outbox_pending.labels(receiver=name).set(counts.get(name, 0))
            for outcome in ("delivered", "failed"):
                self.metrics.notifications.labels(receiver=name, outcome=outcome)

