"""Fire on sight, settle behind.

The settled run (`Engine.feed` up to the horizon `now - lateness`) gives exactly the backtest's events,
but only `lateness` after the records that cause them. An early-warning tool cannot wait that long,
so each poll the rules also run *ahead*: over the records still pending (newer than the horizon), on
a fork of the settled state. The escalations found there (`firing`, `upgraded`) are told at once;
what time alone causes (day close, `resolve_after`, `hold`, `max_gap`) is left to the settled run.

What was told ahead is remembered per rule as `Told` entries until the settled run passes them:
- the settled run makes the same escalation (same instance and tier): it is not told again. For rows
  committed in `(created_at, id)` order that is always the case, so the events are exactly the
  backtest's, only earlier;
- the settled run opens the same series' alert under another instance (rows committed out of order
  moved the record that crosses the threshold): the settled alert takes the instance people were told
  of, so its later events reach them; a higher tier is told as an upgrade;
- the settled run passes the escalation's time without making it (a row committed late broke a
  streak): a told firing is closed with a `resolved` event whose reason starts with "retracted:", and
  everyone told of it hears so; a told upgrade stays (tiers never go down while an alert is open) and
  the settled alert is raised to it. Both are counted (`Engine.retractions`).

An instance is a hash of the series and the alert's start, so a settled alert that took a told instance
carries a start that is not its own: the time of the record that crossed in the run ahead, which may lie
after the settled run's clock (a row dated in the future). Once that alert resolves, a later alert of
the series can start at that very time (the same future row crossing again) and would derive the same
instance: two alerts, one instance. So the entry of a resolved alert stays, `spent`, while its start is
ahead of the settled run, and an alert opening under an instance already given is given a fresh one
(`fresh_instance`), ahead or settled alike. The entries are part of the snapshot, so a restart gives
the instances of one uninterrupted run; no alert starts before the settled clock, so a spent entry is
dropped once the settled run passes its start. For rows committed in order no told instance is ever
renamed, and the instances are exactly the backtest's.

Everything here is pure: rules, states and instants in, events out.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass, replace

from sentinel.detect.base import OpenAlert, as_labels
from sentinel.model import US, Event, EventState, JsonValue, Tier, json_float, json_int, json_str

RETRACTED = "retracted: rows committed late changed the order, and the settled order does not reach this alert"


@dataclass(slots=True)
class Told:
    """An escalation told ahead of the settled run."""

    fingerprint: str
    instance: str
    kind: str
    labels: dict[str, str]
    started: int
    tier: Tier  # the highest tier told
    at: int  # the latest escalation told ahead: the settled run must pass it
    value: float
    opened: bool  # told as a new alert (the settled run had not opened it)
    matched: bool  # the settled run holds this instance
    settled_tier: Tier  # the settled alert's tier (once matched)
    spent: bool = False  # the alert resolved: only its instance is kept, while its start is ahead

    @staticmethod
    def of(e: Event, instance: str, *, opened: bool, matched: bool, settled_tier: Tier) -> Told:
        """What people were told by event `e`, under `instance` (a rename may have given it another)."""
        return Told(
            e.fingerprint,
            instance,
            e.kind,
            dict(e.labels),
            e.started,
            e.tier,
            e.at,
            e.value,
            opened=opened,
            matched=matched,
            settled_tier=settled_tier,
        )

    @staticmethod
    def opening(e: Event) -> Told:
        return Told.of(e, e.instance, opened=True, matched=False, settled_tier=Tier.LIGHT)

    def to_json(self) -> dict[str, JsonValue]:
        return {
            "fingerprint": self.fingerprint,
            "instance": self.instance,
            "kind": self.kind,
            "labels": dict(self.labels),
            "started": self.started,
            "tier": int(self.tier),
            "at": self.at,
            "value": self.value,
            "opened": self.opened,
            "matched": self.matched,
            "settled_tier": int(self.settled_tier),
            "spent": self.spent,
        }

    @staticmethod
    def from_json(d: Mapping[str, JsonValue]) -> Told:
        return Told(
            json_str(d["fingerprint"]),
            json_str(d["instance"]),
            json_str(d["kind"]),
            as_labels(d["labels"]),
            json_int(d["started"]),
            Tier(json_int(d["tier"])),
            json_int(d["at"]),
            json_float(d["value"]),
            bool(d["opened"]),
            bool(d["matched"]),
            Tier(json_int(d["settled_tier"])),
            bool(d.get("spent", False)),
        )


def by_instance(told: list[Told], instance: str) -> Told | None:
    """The entry of the open alert told under `instance` (spent entries belong to no open alert)."""
    return next((t for t in told if t.instance == instance and not t.spent), None)


def unmatched_opening(told: list[Told], fingerprint: str, exclude: Set[str] = frozenset()) -> Told | None:
    """The earliest alert of this series told ahead that the settled run has not opened yet."""
    cands = [
        t
        for t in told
        if t.opened and not t.matched and not t.spent and t.fingerprint == fingerprint and t.instance not in exclude
    ]
    return min(cands, key=lambda t: t.at) if cands else None


def fresh_instance(fingerprint: str, started: int, taken: Set[str]) -> str:
    """An instance for an alert whose derived one (series + start) was already given to another alert:
    the same hash with a counter, the first not taken. Deterministic, so the run ahead, the settled run
    and a restarted daemon all derive the same."""
    n = 1
    while True:
        candidate = hashlib.sha256(f"{fingerprint}\x00{started}\x00{n}".encode()).hexdigest()[:16]
        if candidate not in taken:
            return candidate
        n += 1


def given(told: list[Told]) -> set[str]:
    """Instances an alert of this rule holds or held while its start is still ahead of the settled run."""
    return {t.instance for t in told}


@dataclass(slots=True)
class Settled:
    """What reconciling one settled event did."""

    events: list[Event]
    rename: tuple[str, str, int] | None = None  # (settled instance, told instance, told start)


def settle(e: Event, told: list[Told], renamed: dict[str, tuple[str, int]]) -> Settled:
    """One event of the settled run against what was told ahead. `renamed` maps the instances this
    reconciliation renamed to (told instance, told start): the settled run's later events in the same
    batch were made before the rename, and must reach the same people. What the settled run did to
    that alert before it was told is told as happening when it opened (an alert has no upgrade before
    its firing). A resolved alert's entry stays, spent, until `passed` sees the settled run past its
    start; a settled alert opening under an instance given before takes a fresh one."""
    if e.instance in renamed:
        instance, started = renamed[e.instance]
        e = replace(e, instance=instance, started=started)
    if e.at < e.started:  # only an alert renamed to one told later than the settled run opened it
        e = replace(e, at=e.started)
    if e.state is EventState.RESOLVED:
        t = by_instance(told, e.instance)
        if t is not None:
            t.spent = True
        return Settled([e])
    if e.state is EventState.FIRING:
        t = by_instance(told, e.instance) or unmatched_opening(told, e.fingerprint)
        if t is None:
            if e.instance not in given(told):
                return Settled([e])
            instance = fresh_instance(e.fingerprint, e.started, given(told))
            renamed[e.instance] = (instance, e.started)
            return Settled([replace(e, instance=instance)], (e.instance, instance, e.started))
        rename = None
        if t.instance != e.instance:
            rename = (e.instance, t.instance, t.started)
            renamed[e.instance] = (t.instance, t.started)
            e = replace(e, instance=t.instance, started=t.started, at=max(e.at, t.started))
        t.matched = True
        t.settled_tier = max(t.settled_tier, e.tier)
        if e.tier > t.tier:
            t.tier = e.tier
            return Settled([replace(e, state=EventState.UPGRADED)], rename)
        return Settled([], rename)
    t = by_instance(told, e.instance)  # upgraded
    if t is None:
        return Settled([e])
    t.settled_tier = max(t.settled_tier, e.tier)
    if e.tier > t.tier:
        t.tier = e.tier
        return Settled([e])
    return Settled([])


def passed(rule: str, told: list[Told], horizon: int) -> tuple[list[Event], list[tuple[str, Tier]], list[str]]:
    """Entries the settled run has passed: (retraction events, tiers to keep on settled alerts as
    (instance, tier), what was not confirmed: "firing" or "upgrade" per entry). A spent entry goes once
    the settled run is past its start: no alert can start there any more."""
    events: list[Event] = []
    keep_tier: list[tuple[str, Tier]] = []
    unconfirmed: list[str] = []
    told[:] = [t for t in told if not (t.spent and t.started < horizon)]
    for t in [t for t in told if t.at <= horizon and not t.spent]:
        told.remove(t)
        if t.opened and not t.matched:
            events.append(retraction(rule, t, horizon))
            unconfirmed.append("firing")
        elif t.settled_tier < t.tier:
            keep_tier.append((t.instance, t.tier))
            unconfirmed.append("upgrade")
    return events, keep_tier, unconfirmed


def retraction(rule: str, t: Told, at: int, reason: str = RETRACTED) -> Event:
    return Event(
        at=at,
        rule=rule,
        kind=t.kind,
        state=EventState.RESOLVED,
        tier=t.tier,
        labels=dict(t.labels),
        value=t.value,
        baseline=None,
        ratio=None,
        fingerprint=t.fingerprint,
        instance=t.instance,
        started=t.started,
        extra={"reason": reason, "retracted": True, "peak": t.value, "duration_s": max(0, at - t.started) // US},
    )


def ahead(fork_events: list[Event], told: list[Told], settled_tier: Mapping[str, Tier]) -> list[Event]:
    """Escalations of the run ahead that were not told yet. `settled_tier` gives the tier of each
    alert the settled state holds (an upgrade ahead of one of them is told as an upgrade). A firing
    after the fork resolved the alert of its very instance is another alert (it starts where a renamed
    one was told to start): it is told under a fresh instance, as is one whose instance was given before."""
    out: list[Event] = []
    alias: dict[str, str] = {}  # instance in the fork -> instance told
    gone: set[str] = set()  # told instances the fork resolved in this run
    for e in fork_events:
        if e.state is EventState.RESOLVED:
            gone.add(alias.get(e.instance, e.instance))
            continue
        if e.state is EventState.FIRING:
            same = by_instance(told, e.instance)
            t = (same if same is not None and same.instance not in gone else None) or unmatched_opening(
                told, e.fingerprint, gone
            )
            if t is None:
                opening = e
                if e.instance in given(told):
                    alias[e.instance] = fresh_instance(e.fingerprint, e.started, given(told))
                    opening = replace(e, instance=alias[e.instance])
                told.append(Told.opening(opening))
                out.append(opening)
                continue
            alias[e.instance] = t.instance
            if e.tier > t.tier:
                t.tier, t.at = e.tier, max(t.at, e.at)
                out.append(replace(e, state=EventState.UPGRADED, instance=t.instance, started=t.started))
            continue
        instance = alias.get(e.instance, e.instance)
        t = by_instance(told, instance)
        if t is None:
            t = Told.of(e, instance, opened=False, matched=True, settled_tier=settled_tier.get(instance, Tier.LIGHT))
            told.append(t)
            out.append(e)
        elif e.tier > t.tier:
            t.tier, t.at = e.tier, max(t.at, e.at)
            out.append(replace(e, instance=instance, started=t.started))
    return out


def rename_alert(alerts: Iterable[OpenAlert], old: str, new: str, started: int) -> None:
    """The settled alert takes the instance people were told of."""
    for a in alerts:
        if a.instance == old:
            a.instance, a.started = new, started


def raise_tier(alerts: Iterable[OpenAlert], instance: str, tier: Tier) -> None:
    for a in alerts:
        if a.instance == instance and a.tier < tier:
            a.tier = tier
