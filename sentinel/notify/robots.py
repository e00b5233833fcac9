"""A receiver's robots: which of its webhook URLs takes the next message, and when.

Guarantees:
- rate limits are sliding windows per robot URL (`rate_limit`, default the adapter's `default_limits`,
  the vendor's published limit); a robot never gets more sends in a window than its limits allow;
- a block a vendor imposed (Retry-After, WeCom 45009, DingTalk's 10-minute block) holds that robot for
  every message until it ends; a robot that refused for good is set aside for `BROKEN_ROBOT_HOLD_US`
  while another robot of the receiver can take its messages;
- the robot that can take a message soonest is chosen, round robin on ties;
- the windows and blocks are kept in the store (`save_window`, `load_windows`), so a restart or a new
  leader cannot burst past a robot's limit, and a reload that changes a receiver keeps them
  (`keep_windows_of`); a robot with no limits that no vendor blocked writes nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

from sqlalchemy import Connection

from sentinel.config import ReceiverConfig
from sentinel.model import US
from sentinel.notify import outbox
from sentinel.notify.base import Adapter
from sentinel.units import Rate

BROKEN_ROBOT_HOLD_US = 3600 * US  # a robot that refused for good is tried again after an hour


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


class ReceiverRunner:
    """One configured receiver as the worker runs it: its adapter, a rate limiter per robot URL, the
    in-flight lock (one message in flight per receiver) and when it has work again."""

    def __init__(self, cfg: ReceiverConfig, adapter: Adapter, busy: threading.Lock | None = None) -> None:
        self.cfg = cfg
        self.adapter = adapter
        limits = (cfg.rate_limit,) if cfg.rate_limit is not None else adapter.default_limits
        self.limiters = [RateLimiter(limits) for _ in cfg.all_urls()]
        self.busy = busy or threading.Lock()  # held while a message of this receiver is in flight
        self.next_url = 0
        self.due_s: float | None = None  # after a drain: seconds until it has work again (None: none)

    def keep_windows_of(self, prev: ReceiverRunner) -> None:
        """A reload changed the receiver: its robots keep their recent sends and blocks, to which the
        new limits apply (robot by robot, as far as both have robots)."""
        for new, was in zip(self.limiters, prev.limiters, strict=False):
            new.sent, new.blocked_until, new.dirty = list(was.sent), was.blocked_until, was.dirty

    def other_robot_usable(self, idx: int, now: int) -> bool:
        """Whether another robot URL of this receiver is not set aside as broken."""
        return any(
            i != idx and lim.blocked_until - now < BROKEN_ROBOT_HOLD_US // 2 for i, lim in enumerate(self.limiters)
        )

    def pick_url(self, now: int) -> tuple[int, int]:
        """(url index, µs to wait): the robot that can take a message soonest, round robin on ties."""
        n = len(self.limiters)
        order = [(self.next_url + i) % n for i in range(n)]
        best = min(order, key=lambda i: self.limiters[i].wait_us(now))
        return best, self.limiters[best].wait_us(now)


def load_windows(conn: Connection, runners: Mapping[str, ReceiverRunner]) -> None:
    """The robots' rate windows as the store holds them (written by this instance or a former leader)."""
    for (name, idx), (sent, blocked) in outbox.load_rate(conn).items():
        runner = runners.get(name)
        if runner is not None and idx < len(runner.limiters):
            runner.limiters[idx].sent = list(sent)
            runner.limiters[idx].blocked_until = blocked


def save_window(conn: Connection, runner: ReceiverRunner, idx: int) -> None:
    """Persist a robot's window when it changed (never, for a robot with no limits that no vendor
    blocked: nothing to remember across a restart)."""
    limiter = runner.limiters[idx]
    if limiter.dirty:
        outbox.save_rate(conn, runner.cfg.name, idx, limiter.sent, limiter.blocked_until)
        limiter.dirty = False
