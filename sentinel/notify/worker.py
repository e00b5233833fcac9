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
- In dry run nothing is sent: messages are marked `dry_run` so the status page shows what would have
  gone out.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sentinel.clock import Clock, SystemClock, now_us
from sentinel.config import Config, ReceiverConfig
from sentinel.logs import fields
from sentinel.metrics import Metrics
from sentinel.model import US, Tier
from sentinel.notify import outbox
from sentinel.notify.base import Adapter, AlertPayload, Delivered, Failed, Message, Outcome, RetryAfter
from sentinel.notify.views import AlertView
from sentinel.store import Store
from sentinel.units import Rate

log = logging.getLogger("sentinel.deliver")

BACKOFF_BASE_S = 2.0
BROKEN_ROBOT_HOLD_US = 3600 * US  # a robot that refused for good is tried again after an hour
BACKOFF_MAX_S = 600.0

DEFAULT_LIMITS: dict[str, tuple[Rate, ...]] = {
    "wecom": (Rate(20, 60),),
    "dingtalk": (Rate(20, 60),),
    "feishu": (Rate(100, 60), Rate(5, 1)),
    "lark": (Rate(100, 60), Rate(5, 1)),
    "slack": (Rate(1, 1),),
    "teams": (Rate(4, 1),),
    "discord": (Rate(5, 2),),
    "webhook": (),
}


@dataclass(slots=True)
class RateLimiter:
    """Sliding windows over one robot URL's recent sends, plus a block a vendor imposed."""

    limits: tuple[Rate, ...]
    sent: list[int] = field(default_factory=list)
    blocked_until: int = 0

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
        self.sent = [t for t in self.sent if t > now - horizon] + [now] if horizon else []

    def block(self, until: int) -> None:
        self.blocked_until = max(self.blocked_until, until)


def backoff_s(attempts: int, rng: random.Random) -> float:
    """Exponential with full jitter in the upper half: 2 s, 4 s, 8 s ... capped at 10 minutes."""
    base = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2.0 ** max(0, attempts - 1))
    return float(base * (0.5 + rng.random() / 2))


class ReceiverRunner:
    def __init__(self, cfg: ReceiverConfig, adapter: Adapter, busy: threading.Lock | None = None) -> None:
        self.cfg = cfg
        self.adapter = adapter
        limits = (cfg.rate_limit,) if cfg.rate_limit is not None else DEFAULT_LIMITS.get(cfg.kind, ())
        self.limiters = [RateLimiter(limits) for _ in cfg.all_urls()]
        self.busy = busy or threading.Lock()  # held while a message of this receiver is in flight
        self.next_url = 0

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


class DeliveryWorker:
    def __init__(self, cfg: Config, store: Store, metrics: Metrics, *, clock: Clock | None = None,
                 dry_run: bool = False, adapter_factory: Callable[[ReceiverConfig], Adapter] | None = None,
                 seed: int | None = None) -> None:
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
        self._stopping = threading.Event()
        self._deadline = math.inf  # time.monotonic() at which running drains stop (set by `flush`)
        self._build(cfg)

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
                    new.sent, new.blocked_until = list(was.sent), was.blocked_until
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
        """Re-queue the message a crash left in flight and load the robots' rate windows."""
        with self.store.transaction() as conn:
            n = outbox.reset_in_flight(conn)
            rates = outbox.load_rate(conn)
        if n:
            log.warning("messages in flight at the last stop will be sent again", extra=fields(count=n))
        for (name, idx), (sent, blocked) in rates.items():
            runner = self.runners.get(name)
            if runner is not None and idx < len(runner.limiters):
                runner.limiters[idx].sent = list(sent)
                runner.limiters[idx].blocked_until = blocked
        self._pool = ThreadPoolExecutor(max_workers=max(1, len(self.runners)), thread_name_prefix="deliver")
        self.refresh_pending()

    def reload(self, cfg: Config) -> None:
        self.cfg = cfg
        self._build(cfg)
        if self._pool is not None:
            self._pool._max_workers = max(self._pool._max_workers, len(self.runners))

    def stop(self) -> None:
        self._stopping.set()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self._close_retired(wait=True)
        for r in self.runners.values():
            r.adapter.close()

    # --- work ------------------------------------------------------------------------------------------
    def tick(self) -> None:
        """Start a drain for every idle receiver (the scheduler calls this every second)."""
        if self._pool is None or self._stopping.is_set():
            return
        self._close_retired()
        for runner in list(self.runners.values()):
            if runner.busy.acquire(blocking=False):
                self._pool.submit(self._drain_released, runner)

    def _drain_released(self, runner: ReceiverRunner) -> None:
        try:
            self.drain(runner)
        except Exception:
            log.exception("delivery failed unexpectedly", extra=fields(receiver=runner.cfg.name))
        finally:
            runner.busy.release()

    def drain(self, runner: ReceiverRunner, limit: int = 1000) -> int:
        """Send the receiver's due messages, in order, until it is idle, rate-limited or retrying.

        Stops early when the worker stops, a flush's deadline passes, or a reload replaced the runner
        (the next tick drains with the new configuration)."""
        sent = 0
        while (sent < limit and not self._stopping.is_set() and time.monotonic() < self._deadline
               and self.runners.get(runner.cfg.name) is runner and self.send_one(runner)):
            sent += 1
        self._pending_gauge(runner.cfg.name)
        return sent

    def flush(self, timeout_s: float) -> int:
        """On SIGTERM: deliver what is due now, bounded in time; the rest waits in the outbox.

        Drains already running stop at the same deadline; a send in flight then is not cut short
        (its receiver's timeout bounds it)."""
        deadline = time.monotonic() + timeout_s
        self._deadline = deadline
        total = 0
        for runner in list(self.runners.values()):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if not runner.busy.acquire(timeout=left):
                continue  # a drain is sending for this receiver until the deadline
            try:
                while time.monotonic() < deadline and self.send_one(runner):
                    total += 1
            finally:
                runner.busy.release()
        return total

    def send_one(self, runner: ReceiverRunner) -> bool:
        """Send the receiver's next message if it is due and a robot can take it; False when idle."""
        name = runner.cfg.name
        now = now_us(self.clock)
        with self.store.transaction() as conn:
            msg = outbox.head(conn, name)
            if msg is None or msg.next_attempt_us > now:
                return False
            if self.dry_run:
                outbox.mark_delivered(conn, msg.id, now, status=outbox.DRY_RUN)
                self.metrics.notifications.labels(receiver=name, outcome="dry_run").inc()
                return True
            idx, wait = runner.pick_url(now)
            if wait > 0:
                return False
            outbox.mark_sending(conn, msg.id, idx)
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
        with self.store.transaction() as conn:
            match outcome:
                case Delivered():
                    outbox.mark_delivered(conn, msg.id, done)
                    self.metrics.notifications.labels(receiver=name, outcome="delivered").inc()
                    self.metrics.notification_delay.labels(receiver=name).observe(
                        max(0.0, (done - msg.event_at_us) / US))
                    log.info("message delivered", extra=fields(receiver=name, kind=msg.kind, attempts=msg.attempts + 1))
                case RetryAfter(seconds=seconds, reason=reason):
                    delay = max(seconds, backoff_s(msg.attempts + 1, self.rng))
                    limiter.block(done + int(seconds * US))
                    outbox.mark_retry(conn, msg.id, done + int(delay * US), reason)
                    self.metrics.notification_requests_failed.labels(receiver=name, reason="retry").inc()
                    log.warning("delivery will be retried",
                                extra=fields(receiver=name, reason=reason, retry_in_s=round(delay, 1)))
                case Failed(code=code, reason=reason) if runner.other_robot_usable(idx, done):
                    # one robot of several refuses for good (bad key, bot removed): set it aside for a
                    # while and give the message to another robot of the same group
                    limiter.block(done + BROKEN_ROBOT_HOLD_US)
                    outbox.mark_retry(conn, msg.id, done, f"robot #{idx + 1}: {code}: {reason}")
                    self.metrics.notification_requests_failed.labels(receiver=name, reason="permanent").inc()
                    log.error("a robot of this receiver refuses messages; using the others",
                              extra=fields(receiver=name, robot=idx + 1, code=code, reason=reason))
                case Failed(code=code, reason=reason):
                    outbox.mark_failed(conn, msg.id, done, f"{code}: {reason}")
                    self.metrics.notification_requests_failed.labels(receiver=name, reason="permanent").inc()
                    self.metrics.notifications.labels(receiver=name, outcome="failed").inc()
                    log.error("delivery failed permanently", extra=fields(receiver=name, code=code, reason=reason))
                    self._fallback(conn, msg, name, f"{code} {reason}", done)
            outbox.save_rate(conn, name, idx, limiter.sent, limiter.blocked_until)
        return not isinstance(outcome, RetryAfter)

    def _fallback(self, conn: Any, msg: outbox.OutboxMessage, failed: str, why: str, now: int) -> None:
        fb = self.cfg.fallback_receiver
        if fb is None or fb == failed or fb not in self.runners:
            return
        views = [outbox.view_from_json(v, self.cfg.tz) for v in msg.payload.get("views", [])]
        outbox.enqueue(conn, fb, "fallback", Tier.parse(msg.tier), views, event_at_us=msg.event_at_us, now_us=now,
                       extra={**{k: v for k, v in msg.payload.items() if k != "views"},
                              "note": f"receiver {failed} failed permanently: {why}", "failed_receiver": failed})

    # --- building the message ------------------------------------------------------------------------
    def message(self, msg: outbox.OutboxMessage, runner: ReceiverRunner) -> Message:
        from sentinel.notify.render import TemplateError, body_budget, render

        views = [outbox.view_from_json(v, self.cfg.tz) for v in msg.payload.get("views", [])]
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
        return Message(id=msg.delivery_id, title=title, body=body, tier=Tier.parse(msg.tier), status=status,
                       group_key=str(msg.payload.get("group_key", "")),
                       group_labels=dict(msg.payload.get("group_labels", {})),
                       alerts=tuple(alert_payload(v, self.cfg.base_url) for v in views),
                       external_url=self.cfg.base_url, mention=status != "resolved")

    def _pending_gauge(self, name: str) -> None:
        with self.store.reading() as conn:
            counts = outbox.pending_counts(conn)
        self.metrics.outbox_pending.labels(receiver=name).set(counts.get(name, 0))

    def refresh_pending(self) -> None:
        with self.store.reading() as conn:
            counts = outbox.pending_counts(conn)
        for name in self.runners:
            self.metrics.outbox_pending.labels(receiver=name).set(counts.get(name, 0))
            for outcome in ("delivered", "failed"):
                self.metrics.notifications.labels(receiver=name, outcome=outcome)


def alert_payload(v: AlertView, base_url: str) -> AlertPayload:
    """One alert in Alertmanager's webhook shape."""
    labels: Mapping[str, str] = {"alertname": v.rule, **v.labels, "rule": v.rule, "tier": v.tier.label}
    annotations = {"summary": f"{v.rule} {' '.join(f'{k}={x}' for k, x in v.labels.items())}",
                   "value": str(v.value), "baseline": "" if v.baseline is None else str(v.baseline),
                   "instance": v.instance}
    resolved = v.state == "resolved"
    return AlertPayload(status="resolved" if resolved else "firing", labels=dict(labels), annotations=annotations,
                        starts_at=v.started.isoformat(),
                        ends_at=v.at.isoformat() if resolved else "0001-01-01T00:00:00Z",
                        fingerprint=v.fingerprint, generator_url=f"{base_url}/#alert-{v.instance}")
