"""What an attempt that did not deliver does to its message: retry with backoff, set a robot aside, or fail.

Guarantees (each in the transaction the caller commits, with the robot's rate window):
- `RetryAfter`: the message is retried with exponential backoff and full jitter in the upper half
  (2 s, 4 s, 8 s ... capped at 10 minutes), never sooner than the vendor asked, and the robot is held
  for what the vendor asked, for every message; the drain learns when the message is due again;
- `RetryAfter` while stopping (abandoned, or failed during a flush): due at once when the daemon runs
  again, with no backoff;
- `Failed` on one robot while another robot of the receiver is usable: that robot is set aside for
  `BROKEN_ROBOT_HOLD_US` and the message is due at once, for another robot of the same group;
- `Failed` otherwise: the message is kept as `failed`, counted, and handed to `fallback_receiver` (when
  it is configured and is not the receiver that failed) with a note saying why;
- every setback is counted in `sentinel_notification_requests_failed_total` and logged, never with a URL.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Container

from sqlalchemy import Connection

from sentinel.config import Config
from sentinel.logs import fields
from sentinel.metrics import Metrics
from sentinel.model import US, Tier
from sentinel.notify import outbox
from sentinel.notify.base import Failed, RetryAfter
from sentinel.notify.robots import BROKEN_ROBOT_HOLD_US, ReceiverRunner
from sentinel.notify.views import views_of

log = logging.getLogger("sentinel.deliver")

BACKOFF_BASE_S = 2.0
BACKOFF_MAX_S = 600.0


def retry_backoff_s(attempts: int, rng: random.Random) -> float:
    """Exponential with full jitter in the upper half: 2 s, 4 s, 8 s ... capped at 10 minutes."""
    base = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2.0 ** max(0, attempts - 1))
    return float(base * (0.5 + rng.random() / 2))


class Setbacks:
    """Records attempts that did not deliver, for one worker (its metrics, its backoff's jitter)."""

    def __init__(self, metrics: Metrics, rng: random.Random) -> None:
        self.metrics = metrics
        self.rng = rng

    def record(
        self,
        conn: Connection,
        cfg: Config,
        receivers: Container[str],
        runner: ReceiverRunner,
        msg: outbox.OutboxMessage,
        idx: int,
        outcome: RetryAfter | Failed,
        done: int,
        *,
        stopping: bool,
    ) -> float | None:
        """Write what `outcome` (robot `idx`'s answer at `done`) means for `msg`; returns the seconds
        until the message is due again when it waits for a backoff, else None. `receivers` are the
        names configured now (a fallback goes only to one of them)."""
        metrics = self.metrics
        name = runner.cfg.name
        limiter = runner.limiters[idx]
        match outcome:
            case RetryAfter(reason=reason) if stopping:
                # abandoned (or failed) while stopping: due at once when the daemon runs again
                outbox.mark_retry(conn, msg.id, done, reason)
                metrics.notification_requests_failed.labels(receiver=name, reason="retry").inc()
                log.warning(
                    "delivery abandoned at shutdown; the message is sent after the restart",
                    extra=fields(receiver=name, reason=reason),
                )
            case RetryAfter(seconds=seconds, reason=reason):
                delay = max(seconds, retry_backoff_s(msg.attempts + 1, self.rng))
                limiter.block(done + int(seconds * US))
                outbox.mark_retry(conn, msg.id, done + int(delay * US), reason)
                metrics.notification_requests_failed.labels(receiver=name, reason="retry").inc()
                log.warning(
                    "delivery will be retried", extra=fields(receiver=name, reason=reason, retry_in_s=round(delay, 1))
                )
                return delay
            case Failed(code=code, reason=reason) if runner.other_robot_usable(idx, done):
                # one robot of several refuses for good (bad key, bot removed): set it aside for a
                # while and give the message to another robot of the same group
                limiter.block(done + BROKEN_ROBOT_HOLD_US)
                outbox.mark_retry(conn, msg.id, done, f"robot #{idx + 1}: {outcome.text}")
                metrics.notification_requests_failed.labels(receiver=name, reason="permanent").inc()
                log.error(
                    "a robot of this receiver refuses messages; using the others",
                    extra=fields(receiver=name, robot=idx + 1, code=code, reason=reason),
                )
            case Failed(code=code, reason=reason):
                outbox.mark_failed(conn, msg.id, done, outcome.text)
                metrics.notification_requests_failed.labels(receiver=name, reason="permanent").inc()
                metrics.notifications.labels(receiver=name, outcome="failed").inc()
                log.error("delivery failed permanently", extra=fields(receiver=name, code=code, reason=reason))
                enqueue_fallback(conn, cfg, receivers, msg, name, f"{code} {reason}", done)
        return None


def enqueue_fallback(
    conn: Connection, cfg: Config, receivers: Container[str], msg: outbox.OutboxMessage, failed: str, why: str, now: int
) -> None:
    """Queue `msg` again for `fallback_receiver`, with a note naming the receiver that failed and why."""
    fb = cfg.fallback_receiver
    if fb is None or fb == failed or fb not in receivers:
        return
    views = views_of(msg.payload, "views", cfg.tz)
    outbox.enqueue(
        conn,
        fb,
        "fallback",
        Tier.parse(msg.tier),
        views,
        event_at_us=msg.event_at_us,
        now_us=now,
        extra={
            **{k: v for k, v in msg.payload.items() if k != "views"},
            "note": f"receiver {failed} failed permanently: {why}",
            "failed_receiver": failed,
        },
    )
