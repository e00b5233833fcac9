"""The delivery worker: takes messages from the outbox and gives them to the chat tools.

This module owns the threads and the lifecycle; each guarantee names the module that keeps it.
- At most one message in flight per receiver; receivers run on their own threads (a pool as large as
  the receivers, grown by a reload that adds some), so a slow or failing one never delays another.
- Per receiver, messages go in outbox order: a resolution never overtakes its firing (`drain`).
- `Delivered` marks the message; `RetryAfter` retries with exponential backoff and jitter, never sooner
  than the vendor asked (Retry-After, WeCom 45009, DingTalk's 10-minute block), and holds that robot
  URL for every message; `Failed` keeps the message as failed, counts it and tells `fallback_receiver`
  (`retry`).
- An exception while building or sending a message (a bug) is logged and retried with backoff like a
  network error: the message never stays `sending` with nothing in flight (`drain`).
- Rate limits are sliding windows per robot URL (`rate_limit`, default the vendor's published limit),
  kept in the store so a restart cannot burst past a robot's limit (`robots`).
- Every attempt ends within its receiver's `timeout` (the HTTP client's hard deadline, `deadline`), so
  a robot that drips its answer holds its own queue for one timeout per attempt, then retries with
  backoff.
- Stopping is bounded: `flush` delivers what is due for a while, a send still in flight then gets
  `STOP_GRACE_S` more and is abandoned (its connection cut); its message stays pending and goes after
  the restart (the chat tool may have shown it already: at most that one repeats, as after a crash).
- A reload keeps an unchanged receiver as it is; a changed one keeps its in-flight lock (a drain under
  the old configuration and one under the new never overlap) and its robots' windows, and the old
  adapter is closed once no drain sends with it.
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
  A wake-up that finds a receiver's drain running is not lost: that drain runs again when it ends.
- A burst costs one commit per message or less: a delivered mark shares the transaction of the next
  claim, the claims of receivers draining at the same moment share one (`group_commit`), a receiver's
  next messages are read ahead in one query, and a robot with no limits writes no rate state.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy.exc import SQLAlchemyError

from sentinel.clock import Clock, SystemClock, now_us
from sentinel.config import Config, ReceiverConfig
from sentinel.logs import fields
from sentinel.metrics import Metrics
from sentinel.notify import outbox
from sentinel.notify.base import Adapter
from sentinel.notify.drain import Drainer
from sentinel.notify.health import AttemptErrors, ReceiverHealth, ReceiverState, receiver_health
from sentinel.notify.retry import BACKOFF_BASE_S
from sentinel.notify.robots import ReceiverRunner, load_windows
from sentinel.store import LockLost, Store
from sentinel.wake import Waker

log = logging.getLogger("sentinel.deliver")


class DeliveryWorker:
    """Drains each receiver's outbox on a pool thread, one message in flight per receiver.

    A drain starts when the worker is woken (the dispatcher committed messages), at a due time a
    drain asked for (a retry, a rate-limit window), or on the waker's safety interval. What a drain
    does is `sentinel.notify.drain`'s; this class owns the threads, the runners and their lifecycle.
    """

    STOP_GRACE_S = 2.0  # at shutdown, a send in flight gets this long to finish before it is abandoned
    SAFETY_INTERVAL_S = 10.0
    MIN_WAIT_S = 0.005  # a due time never asks for less: a waiting receiver cannot make a busy loop

    def __init__(
        self,
        cfg: Config,
        store: Store,
        metrics: Metrics,
        *,
        clock: Clock | None = None,
        dry_run: bool = False,
        adapter_factory: Callable[[ReceiverConfig], Adapter] | None = None,
        seed: int | None = None,
        safety_interval_s: float | None = None,
    ) -> None:
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
        self.attempt_errors = AttemptErrors()  # when each receiver's latest attempt failed (not in the outbox)
        self._drainer = Drainer(
            self, store, metrics, self.clock, dry_run=dry_run, rng=self.rng, attempt_errors=self.attempt_errors
        )
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
                runner.keep_windows_of(prev)
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
            load_windows(conn, self.runners)
        if n:
            log.warning("messages in flight at the last stop will be sent again", extra=fields(count=n))
        self._pool_size = max(1, len(self.runners))
        self._pool = ThreadPoolExecutor(max_workers=self._pool_size, thread_name_prefix="deliver")
        self.refresh_pending()
        self.wake()  # what the last run left in the outbox goes now, not at the safety interval

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
        until = time.monotonic() + min(
            self.STOP_GRACE_S, max(0.0, self._deadline + self.STOP_GRACE_S - time.monotonic())
        )
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
                load_windows(conn, self.runners)
        finally:
            for r in held:
                r.busy.release()
        if n:
            log.warning(
                "messages claimed and not confirmed before this instance took the lead will be sent again",
                extra=fields(count=n),
            )
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

    def stopping_now(self) -> bool:
        """Whether running drains must stop: the worker is stopping or a flush's deadline passed."""
        return self._stopping.is_set() or time.monotonic() >= self._deadline

    # --- work ------------------------------------------------------------------------------------------
    @property
    def claim_transactions(self) -> int:
        """Transactions the drains' claims committed so far (the benchmark reads it)."""
        return self._drainer.commits.batches

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
                log.warning(
                    "delivery paused: the state store is unavailable",
                    extra=fields(receiver=name, error=type(exc).__name__),
                )
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
        (the next tick drains with the new configuration). The caller holds `runner.busy`."""
        drained = self._drainer.drain(runner, limit)
        runner.due_s = drained.due_s
        self._pending_gauge(runner.cfg.name, drained.empty)
        return drained.sent

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

    def _pending_gauge(self, name: str, empty: bool) -> None:
        """The receiver's unfinished messages after a drain: known to be 0 when it stopped on an empty
        outbox (the common case in a burst's wake), else one indexed count of its own rows."""
        if empty:
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
