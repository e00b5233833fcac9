"""The engine: the configured rules, their states, and the one feed that drives them all.

The daemon and the backtest both call `Engine.feed(batch, horizon)`; the daemon also snapshots the
states into the poll's transaction and restores them at start. Restoring rebuilds every threshold
series from the raw hourly buckets (so a new or edited rule has its full history at once) and takes
the rest (open alerts, runs, pending records) from the snapshot; stopping at any point and starting
again gives exactly the events of one uninterrupted run.

The engine knows the kinds of rule in one place, `make_slot`; everything else it does through the
`Rule` protocol (`sentinel.detect.base`), on a `Slot` that keeps each rule with its own state.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Generic

from sentinel.config import Config, QuietRuleConfig, RuleConfig, StreakRuleConfig, ThresholdRuleConfig
from sentinel.detect import ahead as la
from sentinel.detect.ahead import Told
from sentinel.detect.base import Gauges, OpenAlert, Rule, RuleContext, S, Snapshot, event
from sentinel.detect.feed import feed
from sentinel.detect.quiet import QuietRule, QuietState
from sentinel.detect.streak import StreakRule, StreakState
from sentinel.detect.threshold import ThresholdRule, ThresholdState, lookback_days
from sentinel.model import Batch, Buckets, Event, EventState, JsonValue, Vocab

__all__ = [
    "AnyRule",
    "AnyState",
    "Engine",
    "Snapshot",
    "history_days",
    "make_slot",
    "resolve_removed",
    "rule_hash",
    "sort_events",
]

AnyState = ThresholdState | StreakState | QuietState
AnyRule = Rule[ThresholdState] | Rule[StreakState] | Rule[QuietState]

_STATE_RANK = {EventState.FIRING: 0, EventState.UPGRADED: 1, EventState.RESOLVED: 2}


@dataclass(slots=True)
class Slot(Generic[S]):
    """One rule of the engine with its own kind of state, and the escalations it told ahead. The pair is
    kept together so a rule is only ever handed its own state: the engine speaks to a slot, the slot to
    its rule, through `Rule` alone."""

    rule: Rule[S]
    state: S
    told: list[Told]

    def feed(self, batch: Batch, horizon: int, start: int | None) -> list[Event]:
        return feed(self.rule, self.state, batch, horizon, start=start)

    def fork(self) -> Slot[S]:
        return Slot(self.rule, self.rule.fork(self.state), self.told)

    def ahead(self, start: int | None) -> tuple[Slot[S], list[Event]] | None:
        """A fork run through the records still pending (what is seen, not yet settled), with the events
        that run makes; None when nothing is pending or the rule is told by time alone."""
        pending = self.state.pending
        if not len(pending) or not self.rule.looks_ahead:
            return None
        fork = self.fork()
        return fork, fork.feed(Batch.empty(), int(pending.ts.max()), start)

    def live(self) -> list[tuple[OpenAlert, dict[str, JsonValue]]]:
        return self.rule.live(self.state)

    def gauges(self) -> Gauges:
        return self.rule.gauges(self.state)

    def save(self, config_hash: str, force_series: bool) -> Snapshot:
        core = self.rule.snapshot(self.state)
        series = self.rule.series_snapshot(self.state, force_series)
        return Snapshot(config_hash, core, series, self.state.pending, [t.to_json() for t in self.told])

    def restore_saved(self, snap: Snapshot, buckets: Buckets) -> None:
        self.state = self.rule.restore_saved(snap, buckets)
        self.told = [Told.from_json(t) for t in snap.ahead]

    def restore_edited(self, snap: Snapshot, buckets: Buckets, alerts: list[OpenAlert]) -> None:
        self.state = self.rule.restore_edited(snap, buckets, alerts)

    def rebuild(self, buckets: Buckets, clock: int) -> None:
        self.state = self.rule.rebuilt(buckets, clock)


AnySlot = Slot[ThresholdState] | Slot[StreakState] | Slot[QuietState]


def make_slot(cfg: RuleConfig, ctx: RuleContext) -> AnySlot:
    """The rule a config describes, with a fresh state: the one place that knows the kinds of rule."""
    if isinstance(cfg, ThresholdRuleConfig):
        t = ThresholdRule(cfg, ctx)
        return Slot(t, t.new_state(), [])
    if isinstance(cfg, QuietRuleConfig):
        q = QuietRule(cfg, ctx)
        return Slot(q, q.new_state(), [])
    s = StreakRule(cfg, ctx)
    return Slot(s, s.new_state(), [])


def _days_kept(cfg: RuleConfig) -> int:
    """Full days of history a rule reads at start (a streak's run history exists only in its state, so
    its `history_days` must be replayed too)."""
    return cfg.history_days if isinstance(cfg, StreakRuleConfig) else lookback_days(cfg)


def rule_hash(cfg: RuleConfig, timezone: str) -> str:
    """Identity of a rule's definition: a change means its series must be rebuilt."""
    text = cfg.model_dump_json() + "\x00" + timezone
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def history_days(cfg: Config) -> int:
    """Days the first start backfills: every rule's window plus the day in progress."""
    return max([8] + [_days_kept(r) + 1 for r in cfg.rules])


def sort_events(events: list[Event], order: dict[str, int]) -> list[Event]:
    """One deterministic order, whatever the batch split: time, rule, series, the older instance first
    (an alert resolving as a new one of its series opens), and within one instance firing, upgraded,
    resolved (a quiet series told at the instant a complaint arrives)."""
    return sorted(
        events, key=lambda e: (e.at, order.get(e.rule, 1 << 30), e.fingerprint, e.started, _STATE_RANK[e.state])
    )


class Engine:
    def __init__(self, rules: Sequence[RuleConfig], ctx: RuleContext, timezone: str) -> None:
        self.ctx = ctx
        self.timezone = timezone
        self.slots: list[AnySlot] = [make_slot(c, ctx) for c in rules]
        self.hashes = {s.rule.name: rule_hash(s.rule.cfg, timezone + _calendar_of(s.rule, ctx)) for s in self.slots}
        self.order = {s.rule.name: i for i, s in enumerate(self.slots)}
        self.retractions: list[tuple[str, str]] = []  # (rule, "firing" | "upgrade") since the last take

    @property
    def vocab(self) -> Vocab:
        return self.ctx.vocab

    @property
    def rules(self) -> list[AnyRule]:
        return [s.rule for s in self.slots]

    @property
    def states(self) -> Mapping[str, AnyState]:
        """Each rule's state by rule name (a view: restoring replaces the states, not this mapping's)."""
        return {s.rule.name: s.state for s in self.slots}

    @property
    def told(self) -> Mapping[str, list[Told]]:
        """What each rule told ahead, not settled yet (see detect.ahead)."""
        return {s.rule.name: s.told for s in self.slots}

    def _slot(self, name: str) -> AnySlot:
        return self.slots[self.order[name]]

    def feed(self, batch: Batch, horizon: int) -> list[Event]:
        """Records (sorted) in, events out, every rule's time moved to `horizon`."""
        events: list[Event] = []
        for slot in self.slots:
            events += slot.feed(batch, horizon, self.ctx.coverage_start_us)
        return sort_events(events, self.order)

    def feed_live(self, batch: Batch, horizon: int) -> list[Event]:
        """The daemon's feed: fire on sight, settle behind (`sentinel.detect.ahead`): `settle`, then
        `look_ahead`, as one sorted list."""
        return sort_events(self.settle(batch, horizon) + self.look_ahead(), self.order)

    def settle(self, batch: Batch, horizon: int) -> list[Event]:
        """The settled run moved to `horizon` as `feed` does, its events reconciled with what was told
        ahead (confirmed ones are not told again; what it passed unconfirmed is retracted or kept)."""
        out: list[Event] = []
        for slot in self.slots:
            name, told = slot.rule.name, slot.told
            settled = slot.feed(batch, horizon, self.ctx.coverage_start_us)
            renamed: dict[str, tuple[str, int]] = {}
            for e in sort_events(settled, self.order):
                done = la.settle(e, told, renamed)
                if done.rename is not None:
                    la.rename_alert(slot.state.alerts.values(), *done.rename)
                out += done.events
            retracted, keep_tier, unconfirmed = la.passed(name, told, horizon)
            for instance, tier in keep_tier:
                la.raise_tier(slot.state.alerts.values(), instance, tier)
            self.retractions += [(name, what) for what in unconfirmed]
            out += retracted
        return sort_events(out, self.order)

    def look_ahead(self) -> list[Event]:
        """The records still pending run on a fork of each rule's state: the escalations found there
        that were not told yet."""
        out: list[Event] = []
        for slot in self.slots:
            if (ran := slot.ahead(self.ctx.coverage_start_us)) is None:
                continue
            _, events = ran
            tiers = {a.instance: a.tier for a in slot.state.alerts.values()}
            out += la.ahead(sort_events(events, self.order), slot.told, tiers)
        return sort_events(out, self.order)

    def take_retractions(self) -> list[tuple[str, str]]:
        out, self.retractions = self.retractions, []
        return out

    def late_records(self) -> int:
        """Records that arrived after their time was closed, since the last call (max over rules)."""
        late = 0
        for slot in self.slots:
            late = max(late, slot.state.late)
            slot.state.late = 0
        return late

    def open_alerts(self) -> list[tuple[AnyRule, OpenAlert]]:
        out: list[tuple[AnyRule, OpenAlert]] = []
        for slot in self.slots:
            out += [(slot.rule, a) for a in slot.state.alerts.values()]
        return out

    def live_alerts(self) -> list[tuple[AnyRule, OpenAlert, dict[str, JsonValue]]]:
        """Open alerts a person can still act on, with what each rule says about them (the first start
        hands on only these: a streak whose run is still going, a surge meeting its condition today)."""
        out: list[tuple[AnyRule, OpenAlert, dict[str, JsonValue]]] = []
        for slot in self.slots:
            out += [(slot.rule, a, facts) for a, facts in slot.live()]
        return out

    def gauges(self) -> list[tuple[AnyRule, Gauges]]:
        """Each rule's gauges (the series it judges, the runs going on), for the metrics, counting the
        records seen as `look_ahead` does: a rule that fires on sight shows the count it fired at, not
        the settled count `lateness` behind it (a quiet rule, told by time alone, shows the settled one)."""
        out: list[tuple[AnyRule, Gauges]] = []
        for slot in self.slots:
            ran = slot.ahead(self.ctx.coverage_start_us)
            out.append((slot.rule, (ran[0] if ran is not None else slot).gauges()))
        return out

    # --- persistence -------------------------------------------------------------------------------
    def snapshot(self, rule: AnyRule, force_series: bool = False) -> Snapshot:
        """What the store keeps of `rule` (its series only when they changed, or `force_series`)."""
        return self._slot(rule.name).save(self.hashes[rule.name], force_series)

    def restore(self, saved: Mapping[str, Snapshot], buckets: Buckets, now_horizon: int | None) -> list[Event]:
        """Put every rule back; returns the events restoring causes (alerts of edited rules that lost
        their series resolve). Rules absent from `saved` start fresh (series rebuilt from buckets)."""
        events: list[Event] = []
        for slot in self.slots:
            name = slot.rule.name
            snap = saved.get(name)
            if snap is not None and snap.config_hash == self.hashes[name]:
                slot.restore_saved(snap, buckets)
            elif snap is not None:
                events += self._restore_edited(slot, snap, buckets)
                # alerts told ahead under the old definition that it never settled: closed with it
                at = snap.clock or 0
                events += [
                    la.retraction(name, t, at, "rule changed")
                    for t in map(Told.from_json, snap.ahead)
                    if t.opened and not t.matched
                ]
            elif now_horizon is not None:
                slot.rebuild(buckets, now_horizon)
        return sort_events(events, self.order)

    def _restore_edited(self, slot: AnySlot, snap: Snapshot, buckets: Buckets) -> list[Event]:
        """An edited rule keeps the open alerts whose fingerprints remain; the others resolve."""
        old_alerts = _alerts_in(snap.core)
        slot.restore_edited(snap, buckets, old_alerts)
        kept = {a.fingerprint for a in slot.state.alerts.values()}
        at = snap.clock if snap.clock is not None else 0
        return [
            resolve_removed(slot.rule.name, slot.rule.kind, a, at, "rule changed")
            for a in old_alerts
            if a.fingerprint not in kept
        ]


def _calendar_of(rule: AnyRule, ctx: RuleContext) -> str:
    """A rule comparing workdays with workdays depends on the holiday calendar too: a change rebuilds it.
    (Nothing for other rules, so their identity is what it always was.)"""
    if rule.uses_holidays:
        return "\x00holidays=" + str(ctx.workdays.code if ctx.workdays is not None else None)
    return ""


def resolve_removed(rule: str, kind: str, alert: OpenAlert, at: int, reason: str) -> Event:
    return event(
        rule,
        kind,
        EventState.RESOLVED,
        alert,
        at,
        alert.peak,
        alert.baseline,
        None,
        None,
        {"reason": reason, "peak": alert.peak, "duration_s": max(0, at - alert.started) // 1_000_000},
    )


def _alerts_in(core: Mapping[str, JsonValue]) -> list[OpenAlert]:
    """The open alerts of a saved core, whatever kind of rule saved it (a rule may change kind in an
    edit): by series key (threshold, quiet) or as a list of entries (streak)."""
    raw = core.get("alerts")
    if isinstance(raw, dict):
        items = list(raw.values())
    elif isinstance(raw, list):
        items = [a["alert"] for a in raw if isinstance(a, dict)]
    else:
        items = []
    return [OpenAlert.from_json(a) for a in items if isinstance(a, dict)]
