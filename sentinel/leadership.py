"""This instance's part among those sharing one state store: the leader, or a standby ready to take over.

On PostgreSQL several `sentinel run` processes may share one store. Exactly one leads (it holds the
store's advisory lock and the lease's epoch, `sentinel.store.lease`); only the leader polls, detects,
dispatches and sends, and every write of it is fenced by its epoch. The others stand by: they serve
`/healthz`, `/readyz` (ready as a standby), `/metrics`, the status page and both APIs from the shared
store (silences and acknowledgements written there take effect on the leader), and try to take the lead
every `standby_retry_s`: at once when the leader's lock session ends (it died, its connection ended), and
after the lease's TTL when the leader stopped renewing it (paused, hung).

A leader that loses the lead stops at once (every stage checks `store.lock_held()` before it polls,
claims or sends, and its writes are refused by the fence), keeps nothing it had in memory, and stands by.
Whenever an instance takes the lead, every stage reloads its state from the store before the first poll,
exactly as after a restart: the committed watermark, ledger, rule state, dispatch cursor and outbox; the
messages the former leader had claimed and not confirmed are sent again (with their delivery ids).

SQLite has one instance per store (a file lock that cannot be lost): that instance leads from its start.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from sentinel.logs import error_line, fields
from sentinel.metrics import Metrics
from sentinel.model import US, JsonObject, to_datetime
from sentinel.store import Store, StoreLocked
from sentinel.store.lease import LeaseRow
from sentinel.store.lock import instance_name
from sentinel.wake import Waker

log = logging.getLogger("sentinel.daemon")

LOCK_WATCH_S = 0.25  # how often the leader looks whether the store's lock is still held
LOCK_RETRY_FIRST_S = 0.5  # the store unreachable: first retry, doubling up to LOCK_RETRY_MAX_S
LOCK_RETRY_MAX_S = 10.0
STANDBY_RETRY_S = 0.5  # a standby's attempts to take the lead (at most; lease_ttl / 10 when shorter)


class Leadership:
    """Leader or standby, the moves between them, and what status, metrics and `/readyz` say about it.

    The daemon hooks in: `on_lost` runs when the lead is lost (it forgets its memory), `on_lead` when the
    lead is taken while running (the daemon first: its state is reloaded before the first poll; then the
    stages' hooks)."""

    def __init__(
        self, store: Store, metrics: Metrics, stopping: threading.Event, timezone: Callable[[], ZoneInfo]
    ) -> None:
        self.store, self.metrics, self.stopping, self.timezone = store, metrics, stopping, timezone
        self.identity = instance_name()
        self.leading = False
        self.lock_error: str | None = None  # the lead was lost and no other leader is known yet
        self.leader: LeaseRow | None = None  # the other instance leading, as last seen while standing by
        self.losses = 0
        self.last_loss: JsonObject | None = None  # kept after the next take, for `sentinel status`
        self.lost_monotonic = 0.0
        self.retake_failures = 0
        self.retry_monotonic = 0.0
        self.changes = {"acquired": 0, "lost": 0}
        self.leading_since: str | None = None
        self.on_lead: list[Callable[[], None]] = []  # after taking the lead while running, before the first poll
        self.on_lost: list[Callable[[], None]] = []  # right after the lead was lost
        ttl = store.lease_ttl_s
        self.standby_retry_s = min(STANDBY_RETRY_S, ttl / 10)
        self.watch = Waker("store-lock", self.step, LOCK_WATCH_S)

    @property
    def watched(self) -> bool:
        """Whether the lead can change while running (PostgreSQL); a file lock lives as long as the process."""
        return self.store.lock_kind == "advisory"

    # --- at start --------------------------------------------------------------------------------------
    def begin(self) -> bool:
        """Try to lead at start; True when this instance leads. On PostgreSQL, another leader makes this one
        a standby; on SQLite the refusal (`StoreLocked`) propagates: one daemon per file."""
        try:
            self.store.lock()
        except StoreLocked as exc:
            if self.store.lock_kind != "advisory":
                raise
            self._standing_by(exc)
            self.metrics.leader.set(0)
            self.metrics.store_lock_held.set(0)
            return False
        self._took_lead()
        return True

    # --- the watch ---------------------------------------------------------------------------------------
    def step(self) -> float | None:
        """The lock watch's step: notice a loss (step down), or try to lead (a standby, or after a loss).
        Runs on its own thread, never under the cycle lock (a cycle may hang on a dead store)."""
        if self.stopping.is_set():
            return None
        now = time.monotonic()
        if self.leading:
            if self.store.lock_held():
                return LOCK_WATCH_S
            self._step_down(now)
        if now < self.retry_monotonic:
            return self.retry_monotonic - now
        try:
            self.store.retake_lock()
        except StoreLocked as exc:
            self._standing_by(exc)
            self.retry_monotonic = time.monotonic() + self.standby_retry_s
            return self.standby_retry_s
        except Exception as exc:  # noqa: BLE001 - the store is unreachable: retry with backoff
            self.retake_failures += 1
            delay = min(LOCK_RETRY_MAX_S, LOCK_RETRY_FIRST_S * 2.0 ** (self.retake_failures - 1))
            self.retry_monotonic = time.monotonic() + delay
            if self.lock_error is not None:
                self.lock_error = (
                    f"the state store's lock is lost ({self.last_loss_reason()}); taking it again "
                    f"failed {self.retake_failures} time(s), last: {error_line(exc)}"
                )
            log.warning(
                "could not take the state store's lock yet",
                extra=fields(error=error_line(exc), attempt=self.retake_failures, retry_in_s=delay),
            )
            return delay
        self._took_lead()
        self._resume()
        return LOCK_WATCH_S

    def last_loss_reason(self) -> str:
        return str((self.last_loss or {}).get("reason") or "unknown")

    def _step_down(self, now: float) -> None:
        reason = self.store.lock_lost_reason or "unknown"
        self.leading = False
        self.leading_since = None
        self.losses += 1
        self.changes["lost"] += 1
        self.lost_monotonic = now
        self.last_loss = {
            "reason": reason,
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "retaken_after_s": None,
        }
        self.retake_failures = 0
        self.retry_monotonic = now + min(LOCK_RETRY_FIRST_S, self.standby_retry_s)
        self.lock_error = (
            f"the state store's lock is lost ({reason}); detection and delivery hold while this instance stands by"
        )
        m = self.metrics
        m.store_lock_held.set(0)
        m.store_lock_losses.inc()
        m.leader.set(0)
        m.leadership_changes.labels(change="lost").inc()
        m.clear_leader_gauges()
        log.error("lost the state store's lock: detection and delivery hold; standing by", extra=fields(reason=reason))
        for fn in self.on_lost:
            fn()

    def _standing_by(self, exc: StoreLocked) -> None:
        before = self.leader
        self.leader = exc.lease
        if (
            self.lock_error is not None
            or (before is None) != (exc.lease is None)
            or (before is not None and exc.lease is not None and before.epoch != exc.lease.epoch)
        ):
            log.info(
                "standing by: another instance leads the state store",
                extra=fields(
                    leader=str(exc) if exc.lease is None else exc.lease.holder,
                    epoch=None if exc.lease is None else exc.lease.epoch,
                ),
            )
        self.lock_error = None  # a standby, not a failure: another instance does the work

    def _took_lead(self) -> None:
        self.leading = True
        self.leader = None
        self.leading_since = datetime.now(UTC).isoformat(timespec="seconds")
        self.changes["acquired"] += 1
        self.retake_failures = 0
        m = self.metrics
        m.store_lock_held.set(1)
        m.leader.set(1)
        m.leadership_changes.labels(change="lost")  # shows as 0 from the start
        m.leadership_changes.labels(change="acquired").inc()
        epoch = self.store.epoch
        if epoch is not None:
            m.leader_epoch.set(epoch)

    def _resume(self) -> None:
        """Took the lead while running: the `on_lead` hooks (the daemon's first: every stage reloads its state
        from the store before the first poll, as after a restart or a failed cycle; then delivery re-queues
        what was in flight)."""
        if self.last_loss is not None and self.last_loss["retaken_after_s"] is None:
            after = round(time.monotonic() - self.lost_monotonic, 2)
            self.last_loss["retaken_after_s"] = after
            log.info(
                "re-took the state store's lock; reloading state from the store",
                extra=fields(after_s=after, epoch=self.store.epoch),
            )
        else:
            log.info("took over as the leader; loading state from the store", extra=fields(epoch=self.store.epoch))
        self.lock_error = None
        for fn in self.on_lead:
            try:
                fn()
            except Exception:
                log.exception("a stage could not resume after taking the lead")

    # --- what it says ------------------------------------------------------------------------------------
    def lease_now(self) -> LeaseRow | None:
        """The lease as the store holds it now (None on SQLite, or the store unreachable)."""
        try:
            return self.store.lease()
        except Exception:  # noqa: BLE001 - status must answer with what it knows
            return self.leader

    def refresh_gauges(self) -> None:
        """At each scrape: the lease's age and epoch as the store holds them."""
        row = self.store.lease()
        if row is not None:
            self.metrics.leader_lease_age.set(round(row.age_s, 3))
            self.metrics.leader_epoch.set(row.epoch)

    def lock_report(self) -> JsonObject:
        """The lock as `/api/v1/status` and `sentinel status` show it (`lock`)."""
        last = self.last_loss
        return {
            "kind": self.store.lock_kind,
            "held": self.leading and self.store.lock_held(),
            "error": self.lock_error,
            "losses": self.losses,
            "last_loss": None if last is None else dict(last),
        }

    def report(self) -> JsonObject:
        """`leadership` of `/api/v1/status`: this instance's role and the leader's lease as the store holds it."""
        row = self.lease_now() if self.watched else None
        tz = self.timezone()

        def iso(us: int) -> str:
            return to_datetime(us, tz).isoformat()

        leader: JsonObject | None = None
        if row is not None and row.epoch > 0:
            leader = {
                "instance": row.holder,
                "epoch": row.epoch,
                "acquired": iso(row.acquired_us),
                "renewed": iso(row.renewed_us),
                "lease_age_seconds": round(row.age_s, 1),
                "lease_ttl_seconds": row.ttl_us / US,
                "expired": row.expired,
            }
        elif not self.watched and self.leading:
            leader = {
                "instance": self.identity,
                "epoch": None,
                "acquired": self.leading_since,
                "renewed": None,
                "lease_age_seconds": None,
                "lease_ttl_seconds": None,
                "expired": False,
            }
        return {
            "role": "leader" if self.leading else "standby",
            "instance": self.identity,
            "kind": "lease" if self.watched else "file",
            "leader": leader,
            "epoch": self.store.epoch if self.leading else None,
            "leading_since": self.leading_since,
            "lease_ttl_seconds": self.store.lease_ttl_s if self.watched else None,
            "changes": dict(self.changes),
        }

    def standby_line(self) -> str:
        """`/readyz` on a standby: ready, and who leads."""
        row = self.lease_now()
        if row is None or row.epoch == 0:
            return "ready: standby; no instance leads right now (this one tries to take the lead)"
        if row.expired:
            return f"ready: standby; the lease of {row.describe()} expired, taking over"
        return f"ready: standby; the leader is {row.describe()}"
