"""The detection stage: the pure engine (`sentinel.detect`) fed by each poll, persisted in the poll's
transaction.

Guarantees: a poll's watermark, buckets, rule snapshots and events commit together; on start the
engine is restored from the store (threshold series rebuilt from the raw buckets) so a restart yields
the events of one uninterrupted run; events of the first start's backfill are recorded but not sent,
and the alerts still open when it ends are handed on once, as open since they started. Records are
settled up to ingest's horizon (`lateness` before now; ingest owns it). After a commit that recorded
events to be told, dispatch is woken at once; a standby writes nothing (a reload there builds the new
rules, restored from the store when it leads).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import Connection

from sentinel.clock import Clock
from sentinel.clock import now_us as read_clock
from sentinel.config import Config
from sentinel.days import Calendar
from sentinel.detect import (
    Engine,
    OpenAlert,
    RuleContext,
    history_days,
    resolve_removed,
    sort_events,
    workdays_of,
)
from sentinel.logs import fields
from sentinel.metrics import Metrics
from sentinel.model import Event, EventState, Tier, Vocab
from sentinel.stage import Cycle, Job, Leading
from sentinel.store import Store, rule_state
from sentinel.store import alerts as alert_store
from sentinel.store.records import SourceState
from sentinel.wake import Waker

log = logging.getLogger("sentinel.detect")


Horizon = Callable[[int], int]
"""now (µs) -> the horizon: records at or before it are settled (ingest's look-back owns `lateness`)."""


class Detector:
    def __init__(self, cfg: Config, calendar: Calendar, vocab: Vocab, metrics: Metrics, horizon: Horizon) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.horizon = horizon
        self.ctx = RuleContext(calendar, vocab, None, workdays_of(cfg))
        self.engine = Engine(cfg.rules, self.ctx, cfg.timezone)
        self._late = 0
        self._counted: list[Event] = []
        self._retracted: list[tuple[str, str]] = []
        self._to_tell = False  # events to be told were recorded in the transaction being committed
        self._folded: dict[str, int] = {}

    # --- start / reload ------------------------------------------------------------------------------
    def restore(self, conn: Connection, coverage_us: int | None, now_us: int) -> list[Event]:
        """Rebuild the engine from the store. Returns (and records) the events restoring causes."""
        self.ctx.coverage_start_us = coverage_us
        saved = rule_state.load_snapshots(conn, self.ctx.vocab)
        horizon = self.horizon(now_us)
        start = self.ctx.calendar.day_start(self.ctx.calendar.day_of(horizon) - history_days(self.cfg))
        buckets = rule_state.load_buckets(conn, start, self.ctx.vocab)
        clocks = [s.clock for s in saved.values() if s.clock is not None]
        resume = max(clocks) if clocks else None
        events = self.engine.restore(saved, buckets, resume)
        removed = [name for name in saved if name not in self.engine.order]
        at = resume if resume is not None else horizon
        for name in removed:
            for stored in alert_store.open_alerts(conn, rule=name):
                events.append(resolve_removed(name, stored.kind, _open_alert(stored), at, "rule removed"))
        rule_state.drop_rule_state(conn, removed)
        events = sort_events(events, self.engine.order)
        if events:
            alert_store.record_events(conn, events, notify=True, now_us=now_us, tz=self.cfg.tz)
            log.info("rules changed since the last run", extra=fields(resolved=len(events), removed=removed))
            self._to_tell = True
        self._counted += events
        return events

    def reload(self, cfg: Config, conn: Connection, now_us: int) -> list[Event]:
        """SIGHUP: save the running state, build the new rule set, restore it from the store."""
        self.save(conn, now_us)
        self.cfg = cfg
        self.engine = Engine(cfg.rules, self.ctx, cfg.timezone)
        return self.restore(conn, self.ctx.coverage_start_us, now_us)

    # --- the poll cycle ------------------------------------------------------------------------------
    def on_cycle(self, conn: Connection, cycle: Cycle) -> None:
        """The daemon's cycle hook: feed, then record events and snapshots in the same transaction."""
        if self.ctx.coverage_start_us is None:
            self.ctx.coverage_start_us = cycle.state.coverage_start_us
        horizon = cycle.horizon_us
        live = not cycle.replay  # the backfill's events are recorded, nobody is told of them
        settled = self.engine.settle(cycle.batch, horizon)
        alert_store.record_events(conn, settled, notify=live, now_us=cycle.now_us, tz=self.cfg.tz)
        told: list[Event] = []
        if cycle.backfill_finished:
            told += self.handover(cycle.now_us)
            if told:
                log.info("alerts open at the end of the backfill are handed on", extra=fields(count=len(told)))
        if live or cycle.backfill_finished:
            # fire on sight: records newer than the horizon run ahead at once (sentinel.detect.ahead)
            told += self.engine.look_ahead()
        alert_store.record_events(conn, told, notify=True, now_us=cycle.now_us, tz=self.cfg.tz)
        events = settled + told
        retracted = self.engine.take_retractions()
        if not (cycle.quiet and not events and not retracted):
            # an idle poll only moved the rules' clocks: an older snapshot restores to the same events
            self.save(conn, cycle.now_us)
        # rows reconciliation found were all committed later than lateness, whatever a rule made of them
        self._late += max(self.engine.late_records(), cycle.late_records)
        self._counted += events
        self._retracted += retracted
        self._to_tell = self._to_tell or bool(told) or (live and bool(settled))

    def handover(self, now_us: int) -> list[Event]:
        """Live alerts when the backfill ends (a streak whose run is still going, a surge meeting its
        condition today): one `firing` each, as open since they started, saying for how long (`open_s`).
        The others stay recorded and shown, untold: a person can no longer act on them; one that upgrades
        later is told then, as a new alert at its tier."""
        out = []
        for rule, alert, facts in self.engine.live_alerts():
            out.append(
                Event(
                    at=alert.started,
                    rule=rule.name,
                    kind=rule.kind,
                    state=EventState.FIRING,
                    tier=alert.tier,
                    labels=dict(alert.labels),
                    value=alert.value,
                    baseline=alert.baseline,
                    ratio=round(alert.value / alert.baseline, 4) if alert.baseline else None,
                    fingerprint=alert.fingerprint,
                    instance=alert.instance,
                    started=alert.started,
                    extra={
                        "handover": True,
                        "peak": alert.peak,
                        "open_s": max(0, now_us - alert.started) // 1_000_000,
                        **facts,
                    },
                )
            )
        return sort_events(out, self.engine.order)

    def save(self, conn: Connection, now_us: int) -> None:
        for rule in self.engine.rules:
            rule_state.save_snapshot(conn, rule.name, self.engine.snapshot(rule), now_us, self.ctx.vocab)

    # --- after commit --------------------------------------------------------------------------------
    def committed(self) -> bool:
        """After the transaction committed: count what it recorded. True when it recorded events to be
        told (the dispatcher's cue)."""
        m = self.metrics
        if self._late:
            m.records_late.inc(self._late)
        for e in self._counted:
            if not e.extra.get("handover"):  # a handover re-announces an event already counted
                m.alert_events.labels(rule=e.rule, tier=e.tier.label, state=e.state.value).inc()
        for rule, what in self._retracted:
            m.alert_retractions.labels(rule=rule, what=what).inc()
        told, self._to_tell = self._to_tell, False
        self._late = 0
        self._counted = []
        self._retracted = []
        return told

    def recover(self, store: Store, now_us: int) -> None:
        """The poll's transaction failed: rebuild the engine from what the store holds."""
        self._late = 0
        self._counted = []
        self._retracted = []
        self._to_tell = False
        self.engine = Engine(self.cfg.rules, self.ctx, self.cfg.timezone)
        with store.transaction() as conn:
            self.restore(conn, self.ctx.coverage_start_us, now_us)

    def refresh_gauges(self) -> None:
        """Series and alert gauges (run by a slower job: 10,000 series are many label sets)."""
        m = self.metrics
        firing: dict[tuple[str, str], int] = {(r.name, t.label): 0 for r in self.engine.rules for t in Tier}
        for rule, alert in self.engine.open_alerts():
            firing[(rule.name, alert.tier.label)] += 1
        for (rule_name, tier), n in firing.items():
            m.alerts_firing.labels(rule=rule_name, tier=tier).set(n)
        for rule, gauges in self.engine.gauges():
            folded = gauges.folded - self._folded.get(rule.name, 0)
            if folded > 0:  # combinations past max_series, folded into __other__
                m.series_folded.labels(rule=rule.name).inc(folded)
                self._folded[rule.name] = gauges.folded
            for g in gauges.series:
                lab = m.series_labels(rule.name, g.labels)
                m.series_current.labels(*lab).set(g.current)
                m.series_baseline.labels(*lab).set(g.baseline)
                m.series_threshold.labels(*lab).set(g.threshold)
                m.series_ratio.labels(*lab).set(g.ratio if g.ratio is not None else float("nan"))
            for labels, length in gauges.runs:
                m.streak_length.labels(*m.series_labels(rule.name, labels)).set(length)


class DetectionStage:
    """The `Detector` as a stage of the pipeline.

    After a committed transaction that recorded events to be told it calls `on_events` (the pipeline
    wires it to the dispatcher's wake-up), so an alert is dispatched in the moment its poll commits, not
    at the next tick."""

    name = "detection"
    GAUGES_S = 15.0

    def __init__(
        self,
        cfg: Config,
        store: Store,
        clock: Clock,
        metrics: Metrics,
        *,
        vocab: Vocab,
        horizon: Horizon,
        leading: Leading,
        on_events: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.metrics = metrics
        self.vocab = vocab
        self.horizon = horizon
        self.leading = leading
        self.calendar = Calendar(cfg.tz)
        self.detector = Detector(cfg, self.calendar, vocab, metrics, horizon)
        self.on_events = on_events
        self.fresh = False  # a reload on a standby built a new detector: it starts from the store when it leads

    def open(self, state: SourceState | None, now: int) -> None:
        with self.store.transaction() as conn:
            coverage = state.coverage_start_us if state is not None else None
            self.detector.restore(conn, coverage, now)
        self.committed()

    def on_cycle(self, conn: Connection, cycle: Cycle) -> None:
        self.detector.on_cycle(conn, cycle)

    def committed(self) -> None:
        if self.detector.committed() and self.on_events is not None:
            self.on_events()

    def recover(self, state: SourceState | None, now: int) -> None:
        if self.fresh:
            self.open(state, now)
            self.fresh = False
            return
        self.detector.recover(self.store, now)

    def reload(self, cfg: Config) -> None:
        if not self.leading():  # a standby writes nothing: the new rules start from the store when it leads
            self.detector = Detector(cfg, self.calendar, self.vocab, self.metrics, self.horizon)
            self.fresh = True
            return
        with self.store.transaction() as conn:
            self.detector.reload(cfg, conn, read_clock(self.clock))
        self.committed()

    def refresh(self) -> None:
        if self.leading():  # a standby exports no series gauges (they are the leader's)
            self.detector.refresh_gauges()

    def jobs(self) -> list[Job]:
        return [Job("gauges", self.refresh, self.GAUGES_S, exclusive=True)]

    def wakers(self) -> list[Waker]:
        return []

    def start(self) -> None:
        pass  # detection runs inside the poll's cycle: no thread of its own

    def resume(self) -> None:
        pass  # the poll cycle's `recover` reloads it before the next poll

    def stop(self) -> None:
        pass  # nothing held outside the store: the last poll's transaction has everything


def _open_alert(a: alert_store.StoredAlert) -> OpenAlert:
    return OpenAlert(dict(a.labels), a.fingerprint, a.instance, a.started_us, a.tier, a.peak, a.value, a.baseline)
