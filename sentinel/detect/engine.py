"""The engine: the configured rules, their states, and the one feed that drives them all.

The daemon and the backtest both call `Engine.feed(batch, horizon)`; the daemon also snapshots the
states into the poll's transaction and restores them at start. Restoring rebuilds every threshold
series from the raw hourly buckets (so a new or edited rule has its full history at once) and takes
the rest (open alerts, runs, pending records) from the snapshot; stopping at any point and starting
again gives exactly the events of one uninterrupted run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sentinel.config import Config, QuietRuleConfig, RuleConfig, StreakRuleConfig, ThresholdRuleConfig
from sentinel.detect import ahead as la
from sentinel.detect.ahead import Told
from sentinel.detect.base import OpenAlert, RuleContext, event
from sentinel.detect.feed import feed
from sentinel.detect.quiet import QuietRule, QuietState
from sentinel.detect.streak import StreakRule, StreakState
from sentinel.detect.threshold import ThresholdRule, ThresholdState, lookback_days
from sentinel.model import Batch, Buckets, Event, EventState, Vocab

AnyRule = ThresholdRule | StreakRule | QuietRule
SeriesRule = ThresholdRule | QuietRule  # rules whose series are rebuilt from the raw buckets

_STATE_RANK = {EventState.FIRING: 0, EventState.UPGRADED: 1, EventState.RESOLVED: 2}


def make_rule(cfg: RuleConfig, ctx: RuleContext) -> AnyRule:
    if isinstance(cfg, ThresholdRuleConfig):
        return ThresholdRule(cfg, ctx)
    if isinstance(cfg, QuietRuleConfig):
        return QuietRule(cfg, ctx)
    assert isinstance(cfg, StreakRuleConfig)
    return StreakRule(cfg, ctx)


def rule_hash(cfg: RuleConfig, timezone: str) -> str:
    """Identity of a rule's definition: a change means its series must be rebuilt."""
    text = cfg.model_dump_json() + "\x00" + timezone
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def history_days(cfg: Config) -> int:
    """Days the first start backfills: every rule's window plus the day in progress (a streak rule's run
    history exists only in its state, so its `history_days` must be replayed too)."""
    return max([8] + [lookback_days(r) + 1 if isinstance(r, ThresholdRuleConfig | QuietRuleConfig)
                      else r.history_days + 1 for r in cfg.rules])


def sort_events(events: list[Event], order: dict[str, int]) -> list[Event]:
    """One deterministic order, whatever the batch split: time, rule, series, the older instance first
    (an alert resolving as a new one of its series opens), and within one instance firing, upgraded,
    resolved (a quiet series told at the instant a complaint arrives)."""
    return sorted(events, key=lambda e: (e.at, order.get(e.rule, 1 << 30), e.fingerprint, e.started,
                                         _STATE_RANK[e.state]))


@dataclass(slots=True)
class Snapshot:
    """What the store keeps of one rule between cycles."""

    config_hash: str
    core: dict[str, Any]
    series: list[list[str]] | None
    pending: Batch  # records not settled yet (the store writes them with their strings, not codes)
    ahead: list[dict[str, Any]] = field(default_factory=list)  # escalations told ahead (see detect.ahead)


class Engine:
    def __init__(self, rules: Sequence[RuleConfig], ctx: RuleContext, timezone: str) -> None:
        self.ctx = ctx
        self.timezone = timezone
        self.rules: list[AnyRule] = [make_rule(c, ctx) for c in rules]
        self.hashes = {r.name: rule_hash(r.cfg, timezone + _calendar_of(r, ctx)) for r in self.rules}
        self.states: dict[str, Any] = {r.name: r.new_state() for r in self.rules}
        self.order = {r.name: i for i, r in enumerate(self.rules)}
        self.told: dict[str, list[Told]] = {r.name: [] for r in self.rules}
        self.retractions: list[tuple[str, str]] = []  # (rule, "firing" | "upgrade") since the last take

    @property
    def vocab(self) -> Vocab:
        return self.ctx.vocab

    def feed(self, batch: Batch, horizon: int) -> list[Event]:
        """Records (sorted) in, events out, every rule's time moved to `horizon`."""
        events: list[Event] = []
        for rule in self.rules:
            events += feed(rule, self.states[rule.name], batch, horizon, start=self.ctx.coverage_start_us)
        return sort_events(events, self.order)

    def feed_live(self, batch: Batch, horizon: int) -> list[Event]:
        """The daemon's feed: fire on sight, settle behind (`sentinel.detect.ahead`): `settle`, then
        `look_ahead`, as one sorted list."""
        return sort_events(self.settle(batch, horizon) + self.look_ahead(), self.order)

    def settle(self, batch: Batch, horizon: int) -> list[Event]:
        """The settled run moved to `horizon` as `feed` does, its events reconciled with what was told
        ahead (confirmed ones are not told again; what it passed unconfirmed is retracted or kept)."""
        out: list[Event] = []
        for rule in self.rules:
            state = self.states[rule.name]
            told = self.told[rule.name]
            settled = feed(rule, state, batch, horizon, start=self.ctx.coverage_start_us)
            renamed: dict[str, tuple[str, int]] = {}
            for e in sort_events(settled, self.order):
                done = la.settle(e, told, renamed)
                if done.rename is not None:
                    la.rename_alert(state.alerts, *done.rename)
                out += done.events
            retracted, keep_tier, unconfirmed = la.passed(rule.name, told, horizon)
            for instance, tier in keep_tier:
                la.raise_tier(state.alerts, instance, tier)
            self.retractions += [(rule.name, what) for what in unconfirmed]
            out += retracted
        return sort_events(out, self.order)

    def look_ahead(self) -> list[Event]:
        """The records still pending run on a fork of each rule's state: the escalations found there
        that were not told yet."""
        out: list[Event] = []
        for rule in self.rules:
            state = self.states[rule.name]
            if not len(state.pending) or isinstance(rule, QuietRule):
                # a quiet series is told by time alone (its records only resolve): that waits for the horizon
                continue
            fork = rule.fork(state)
            end = int(state.pending.ts.max())
            events = feed(rule, fork, Batch.empty(), end, start=self.ctx.coverage_start_us)
            tiers = {a.instance: a.tier for a in state.alerts.values()}
            out += la.ahead(sort_events(events, self.order), self.told[rule.name], tiers)
        return sort_events(out, self.order)

    def take_retractions(self) -> list[tuple[str, str]]:
        out, self.retractions = self.retractions, []
        return out

    def late_records(self) -> int:
        """Records that arrived after their time was closed, since the last call (max over rules)."""
        late = 0
        for st in self.states.values():
            late = max(late, st.late)
            st.late = 0
        return late

    def open_alerts(self) -> list[tuple[AnyRule, OpenAlert]]:
        out: list[tuple[AnyRule, OpenAlert]] = []
        for rule in self.rules:
            out += [(rule, a) for a in self.states[rule.name].alerts.values()]
        return out

    def live_alerts(self) -> list[tuple[AnyRule, OpenAlert, dict[str, Any]]]:
        """Open alerts a person can still act on, with what each rule says about them (the first start
        hands on only these: a streak whose run is still going, a surge meeting its condition today)."""
        out: list[tuple[AnyRule, OpenAlert, dict[str, Any]]] = []
        for rule in self.rules:
            out += [(rule, a, facts) for a, facts in rule.live(self.states[rule.name])]
        return out

    # --- persistence -------------------------------------------------------------------------------
    def snapshot(self, rule: AnyRule, force_series: bool = False) -> Snapshot:
        state = self.states[rule.name]
        series = None
        if isinstance(rule, SeriesRule):
            core = rule.snapshot(state)
            if state.series.changed or force_series:
                series = state.series.snapshot()
                state.series.changed = False
        else:
            core = rule.snapshot(state)
        return Snapshot(self.hashes[rule.name], core, series, state.pending,
                        [t.to_json() for t in self.told[rule.name]])

    def restore(self, saved: dict[str, Snapshot], buckets: Buckets, now_horizon: int | None) -> list[Event]:
        """Put every rule back; returns the events restoring causes (alerts of edited rules that lost
        their series resolve). Rules absent from `saved` start fresh (threshold: rebuilt from buckets)."""
        events: list[Event] = []
        for rule in self.rules:
            snap = saved.get(rule.name)
            if snap is not None and snap.config_hash == self.hashes[rule.name]:
                self.states[rule.name] = self._restore_one(rule, snap, buckets)
                self.told[rule.name] = [Told.from_json(t) for t in snap.ahead]
            elif snap is not None:
                events += self._restore_edited(rule, snap, buckets)
                # alerts told ahead under the old definition that it never settled: closed with it
                at = int(snap.core.get("clock") or 0)
                events += [la.retraction(rule.name, t, at, "rule changed") for t in map(Told.from_json, snap.ahead)
                           if t.opened and not t.matched]
            elif isinstance(rule, ThresholdRule) and now_horizon is not None:
                st = rule.new_state()
                rule.rebuild(st, buckets, now_horizon)
                self.states[rule.name] = st
            elif isinstance(rule, QuietRule) and now_horizon is not None:
                qst = rule.new_state()
                rule.rebuild(qst, buckets, now_horizon)
                self.states[rule.name] = qst
        return sort_events(events, self.order)

    def _restore_one(self, rule: AnyRule, snap: Snapshot, buckets: Buckets) -> Any:
        pending = snap.pending
        if isinstance(rule, ThresholdRule):
            st: ThresholdState = rule.restore(snap.core, snap.series or [], buckets)
            st.pending = pending
            rule.subtract_pending(st)
            return st
        if isinstance(rule, QuietRule):
            qst: QuietState = rule.restore(snap.core, snap.series or [], buckets)
            qst.pending = pending
            rule.subtract_pending(qst)
            return qst
        sst: StreakState = rule.restore(snap.core, buckets)
        sst.pending = pending
        rule.subtract_pending(sst)
        return sst

    def _restore_edited(self, rule: AnyRule, snap: Snapshot, buckets: Buckets) -> list[Event]:
        """An edited rule keeps the open alerts whose fingerprints remain; the others resolve."""
        clock = snap.core.get("clock")
        old_alerts = _alerts_in(snap.core)
        if isinstance(rule, QuietRule):
            qst = rule.new_state()
            if clock is not None:
                rule.rebuild(qst, buckets, int(clock), {k: snap.core.get(k) for k in ("group_by", "last", "acc")})
                qst.pending = snap.pending
                rule.subtract_pending(qst)
            rule.adopt(qst, [a for a in old_alerts if set(a.labels) == set(rule.cfg.group_by)])
            self.states[rule.name] = qst
            kept = {a.fingerprint for a in qst.alerts.values()}
        elif isinstance(rule, ThresholdRule):
            st = rule.new_state()
            if clock is not None:
                rule.rebuild(st, buckets, int(clock))
                # pending records of the old definition are re-fed as new ones
                st.pending = snap.pending
                rule.subtract_pending(st)
            keep = {tuple(lab.get(g, "") for g in rule.cfg.group_by): a for a in old_alerts
                    for lab in [a.labels] if set(lab) == set(rule.cfg.group_by)}
            for key, alert in keep.items():
                st.alerts[st.series.admit(key)] = alert
            rule._fit(st)
            self.states[rule.name] = st
            kept = {a.fingerprint for a in st.alerts.values()}
        else:
            sst = rule.new_state()
            if clock is not None:
                sst.clock, sst.day = int(clock), rule.cal.day_of(int(clock))
                rule.restore_runs(sst, snap.core)  # kept when the edit did not change what a run is
            for alert in old_alerts:
                if set(alert.labels) == {rule.cfg.field, *rule.cfg.scope}:
                    scope = rule.vocab.code(alert.labels[rule.scope_field]) if rule.scope_field else 0
                    alert.hold_until = alert.hold_until or sst.clock
                    sst.alerts[(scope, rule.vocab.code(alert.labels[rule.cfg.field]))] = alert
            rule.rebuild_shares(sst, buckets)
            self.states[rule.name] = sst
            kept = {a.fingerprint for a in sst.alerts.values()}
        at = int(clock) if clock is not None else 0
        return [resolve_removed(rule.name, rule.kind, a, at, "rule changed") for a in old_alerts
                if a.fingerprint not in kept]


def _calendar_of(rule: AnyRule, ctx: RuleContext) -> str:
    """A rule comparing workdays with workdays depends on the holiday calendar too: a change rebuilds it.
    (Nothing for other rules, so their identity is what it always was.)"""
    if isinstance(rule.cfg, ThresholdRuleConfig | QuietRuleConfig) and rule.cfg.baseline_by == "day_kind":
        return "\x00holidays=" + str(ctx.workdays.code if ctx.workdays is not None else None)
    return ""


def resolve_removed(rule: str, kind: str, alert: OpenAlert, at: int, reason: str) -> Event:
    return event(rule, kind, EventState.RESOLVED, alert, at, alert.peak, alert.baseline, None, None,
                 {"reason": reason, "peak": alert.peak, "duration_s": max(0, at - alert.started) // 1_000_000})


def _alerts_in(core: dict[str, Any]) -> list[OpenAlert]:
    raw = core.get("alerts", {})
    items = raw.values() if isinstance(raw, dict) else [a["alert"] for a in raw]
    return [OpenAlert.from_json(a) for a in items]
