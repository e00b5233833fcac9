"""The mute stages: what holds an alert back, as Alertmanager's notify pipeline composes them.

A `Muter` answers one question of one alert, `mutes(alert) -> reason | None`; its implementations are
the silences (`silences.Silencer`), inhibition (`inhibit.Inhibitor`), a route's mute windows
(`MuteWindows`) and acknowledgement (`ack.Acknowledged`). A `MuteStage` composes muters in order, the
first reason winning, and is itself a Muter. `Muting` is one moment's set of them, read from the store
once per dispatcher step (or per API request), so every question of that step sees the same facts.

What the stages guarantee:

- a silenced or inhibited alert is recorded and shown, never sent, repeated or escalated (`notify`
  holds a notification, `remind` a repeat or an escalation);
- an acknowledged alert is never repeated nor escalated, but its changes are still sent;
- a muted route holds its groups, as a whole, while one of its windows contains the local time (in
  the configuration's `timezone`); `window_end` says when the hold ends, so the group goes out then.
  Escalations are never muted by windows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol
from zoneinfo import ZoneInfo

from sqlalchemy import Connection

from sentinel.alerting.ack import Acknowledged
from sentinel.alerting.inhibit import Inhibitor, InhibitRule
from sentinel.alerting.routing import IMPLICIT, Route, Router, labels_of
from sentinel.alerting.silences import Silencer
from sentinel.model import from_datetime, to_datetime
from sentinel.store import alerts as alert_store
from sentinel.store.alerts import StoredAlert
from sentinel.units import TimeWindow


class Muter(Protocol):
    """Whether an alert is held back now, and why (a silence id, the inhibiting alert, a window)."""

    def mutes(self, alert: StoredAlert) -> str | None: ...


@dataclass(frozen=True, slots=True)
class MuteStage:
    """Muters in order: an alert is held by the first that gives a reason."""

    muters: tuple[Muter, ...]

    def mutes(self, alert: StoredAlert) -> str | None:
        for m in self.muters:
            reason = m.mutes(alert)
            if reason is not None:
                return reason
        return None

    def passes(self, alerts: Iterable[StoredAlert]) -> list[StoredAlert]:
        """The alerts no muter holds, in their order."""
        return [a for a in alerts if self.mutes(a) is None]


def window_reason(route: Route, window: TimeWindow) -> str:
    """How a route's mute window is named to people (Alertmanager's `mutedBy`)."""
    return f"route {'default' if route.index == IMPLICIT else route.index + 1} mute {window}"


class MuteWindows:
    """A Muter: the mute windows of the routes an alert takes, at one moment in `tz`'s local time."""

    def __init__(self, tz: ZoneInfo, router: Router | None, now_us: int) -> None:
        self.router = router
        self._local = to_datetime(now_us, tz).time()

    def route_reasons(self, route: Route) -> tuple[str, ...]:
        """Each window of `route` that holds it now."""
        return tuple(window_reason(route, w) for w in route.cfg.mute if w.contains(self._local))

    def holds(self, route: Route) -> bool:
        """The route's groups wait: one of its windows contains the time."""
        return any(w.contains(self._local) for w in route.cfg.mute)

    def reasons(self, alert: StoredAlert) -> tuple[str, ...]:
        """Every window that holds one of the alert's routes now (none without a router)."""
        if self.router is None:
            return ()
        return tuple(r for route in self.router.route(labels_of(alert)) for r in self.route_reasons(route))

    def mutes(self, alert: StoredAlert) -> str | None:
        found = self.reasons(alert)
        return found[0] if found else None


def window_end(route: Route, tz: ZoneInfo, at_us: int) -> int | None:
    """When a group held by the route's mute windows at `at_us` may go (the earliest end of the windows
    that contain it; a window that starts as another ends is seen at that step), else None."""
    local = to_datetime(at_us, tz)
    ends = [from_datetime(w.end_after(local)) for w in route.cfg.mute if w.contains(local.time())]
    return min(ends) if ends else None


@dataclass(frozen=True, slots=True)
class Hold:
    """Everything that holds one alert now, as the API and the status page show it."""

    silenced: str | None  # silence id
    inhibited: str | None  # instance of the inhibiting alert
    acknowledged: bool
    muted: bool  # one of its routes is in a mute window


class Muting:
    """The muters of one moment, from one read of the store."""

    def __init__(
        self,
        now_us: int,
        open_alerts: Sequence[StoredAlert],
        silences: Silencer,
        inhibition: Inhibitor,
        acks: Acknowledged,
        windows: MuteWindows,
    ) -> None:
        self.now_us = now_us
        self.open_alerts = tuple(open_alerts)  # oldest first
        self.silences = silences
        self.inhibition = inhibition
        self.acks = acks
        self.windows = windows
        self.notify = MuteStage((inhibition, silences))
        """What holds a notification of an open alert (the route's windows hold whole groups)."""
        self.remind = MuteStage((acks, inhibition, silences))
        """What holds a repeat or an escalation."""

    @classmethod
    def load(
        cls, conn: Connection, *, rules: Sequence[InhibitRule], tz: ZoneInfo, router: Router | None, now_us: int
    ) -> Muting:
        open_alerts = alert_store.open_alerts(conn)
        return cls(
            now_us,
            open_alerts,
            Silencer.load(conn, now_us),
            Inhibitor(rules, open_alerts),
            Acknowledged.load(conn),
            MuteWindows(tz, router, now_us),
        )

    def hold(self, alert: StoredAlert) -> Hold:
        return Hold(
            self.silences.mutes(alert),
            self.inhibition.mutes(alert),
            self.acks.mutes(alert) is not None,
            self.windows.mutes(alert) is not None,
        )
