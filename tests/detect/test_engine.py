"""The engine as a unit: rules made from configs, batches fed, snapshots saved and restored, edited rules
rebuilt on reload, time alone causing events, gauges. Each test drives `Engine` through its own methods
(the daemon's and the backtest's calls), never a rule directly."""

from __future__ import annotations

import json
from datetime import date, timedelta
from typing import Any

import numpy as np
import pytest

from sentinel.config import QuietRuleConfig
from sentinel.days import Calendar
from sentinel.detect.base import Snapshot
from sentinel.detect.engine import Engine, history_days
from sentinel.detect.quiet import QuietRule, QuietState
from sentinel.detect.streak import StreakRule, StreakState
from sentinel.detect.threshold import ThresholdRule, ThresholdState
from sentinel.detect.threshold.day import DayMode
from sentinel.detect.threshold.pace import PaceMode
from sentinel.detect.threshold.rolling import RollingMode
from sentinel.model import US, Batch, Buckets, Event, EventState, Tier
from sentinel.store.codecs import batch_from_json, batch_to_json, dumps
from sentinel.store.records import bucket_counts
from tests.detect.builders import Rec, at, days, engine, make_batch, spread, streak, threshold

D0 = date(2025, 7, 1)
T, OTHER = "物流配送延误", "服务态度"
WX, PHONE = "微信公众号", "电话热线"
HOUR = 3600 * US


def day(n: int) -> date:
    return D0 + timedelta(days=n)


def quiet(**kw: Any) -> QuietRuleConfig:
    kw.setdefault("name", "quiet")
    kw.setdefault("baseline_by", "all")
    return QuietRuleConfig(kind="quiet", **kw)


def surge_records() -> list[Rec]:
    """Seven days of 100 a day, then 200 from 08:00 on the eighth (2025-07-08): the 151st fires."""
    return days(D0, 7, {T: 100}) + spread(day(7), 200, T, start_h=8, end_h=20)


def started(rules: list[Any], records: list[Rec], **kw: Any) -> tuple[Engine, Batch]:
    """An engine as the backtest builds it (coverage from the first record) and the records' batch."""
    eng = engine(rules, **kw)
    batch = make_batch(records, eng.vocab)
    eng.ctx.coverage_start_us = int(batch.ts[0])
    return eng, batch


def buckets_of(batch: Batch, cal: Calendar) -> Buckets:
    """The raw hourly buckets the store would hold for these records (the same vocab: one process)."""
    return Buckets(*bucket_counts(batch, cal))


def saved(eng: Engine) -> dict[str, Snapshot]:
    """Every rule's snapshot through JSON, as the store writes and reads it."""
    out = {}
    for rule in eng.rules:
        snap = eng.snapshot(rule, force_series=True)
        pending = batch_from_json(json.loads(dumps(batch_to_json(snap.pending, eng.vocab))), eng.vocab)
        out[rule.name] = Snapshot(
            snap.config_hash, json.loads(dumps(snap.core)), snap.series, pending, json.loads(dumps(snap.ahead))
        )
    return out


def reopened(
    eng: Engine, rules: list[Any], snaps: dict[str, Snapshot], buckets: Buckets, horizon: int | None
) -> tuple[Engine, list[Event]]:
    """A new process: a new engine on the same stream (vocab, coverage), restored from `snaps`."""
    new = Engine(rules, eng.ctx, eng.timezone)
    return new, new.restore(snaps, buckets, horizon)


def alerts_of(eng: Engine) -> list[tuple[str, str, str, int, Tier, float]]:
    return sorted((r.name, a.fingerprint, a.instance, a.started, a.tier, a.peak) for r, a in eng.open_alerts())


def deadlines_of(eng: Engine) -> dict[str, int | None]:
    out: dict[str, int | None] = {}
    for rule in eng.rules:
        state: Any = eng.states[rule.name]
        out[rule.name] = rule.deadline(state)
    return out


def counts_of(eng: Engine) -> dict[tuple[str, int, str, int], int]:
    """Every count a rule keeps, by (rule, day, series labels, wall hour or -1 for the day): what restoring
    rebuilds from the buckets, keyed by labels since a rebuilt index may number series differently."""
    out: dict[tuple[str, int, str, int], int] = {}
    for name, state in eng.states.items():
        index = state.shares if isinstance(state, StreakState) else state.series
        assert index is not None
        label = [json.dumps(lab, sort_keys=True) for lab in index.labels]
        daily = state.hourly if isinstance(state, QuietState) else state.counts
        for d, arr in daily.items():
            for x, row in enumerate(np.asarray(arr).reshape(len(arr), -1).tolist()):
                for h, n in enumerate(row):
                    if n:
                        out[(name, d, label[x], h if isinstance(state, QuietState) else -1)] = int(n)
    return out


# --- rules from configs -----------------------------------------------------------------------------


def test_each_config_makes_its_rule_with_its_own_state_and_mode() -> None:
    rules = [
        threshold(name="day"),
        threshold(name="pace", mode="pace"),
        threshold(name="roll", mode="rolling"),
        streak(name="run"),
        quiet(name="silent"),
    ]
    eng = engine(rules)
    kinds = [(r.name, type(r), type(eng.states[r.name])) for r in eng.rules]
    assert kinds == [
        ("day", ThresholdRule, ThresholdState),
        ("pace", ThresholdRule, ThresholdState),
        ("roll", ThresholdRule, ThresholdState),
        ("run", StreakRule, StreakState),
        ("silent", QuietRule, QuietState),
    ]
    modes = [type(r.mode) for r in eng.rules if isinstance(r, ThresholdRule)]
    assert modes == [DayMode, PaceMode, RollingMode]
    assert eng.order == {"day": 0, "pace": 1, "roll": 2, "run": 3, "silent": 4}
    # a quiet series is told by time alone: it never runs ahead of the horizon
    assert [r.looks_ahead for r in eng.rules] == [True, True, True, True, False]


def test_a_rule_identity_follows_its_definition_and_the_holidays_it_reads() -> None:
    plain, by_kind = threshold(name="plain"), threshold(name="kinds", baseline_by="day_kind")
    cn, none = engine([plain, by_kind], holidays="CN"), engine([plain, by_kind], holidays=None)
    assert cn.hashes["plain"] == none.hashes["plain"]  # the calendar is nothing to a rule of all days
    assert cn.hashes["kinds"] != none.hashes["kinds"]
    edited = engine([threshold(name="plain", factor=1.4)])
    assert edited.hashes["plain"] != cn.hashes["plain"]


def test_history_days_covers_every_rule_window() -> None:
    from sentinel.config import Config

    def of(*rules: Any) -> int:
        return history_days(Config(rules=list(rules)))

    assert of(threshold(baseline_days=3)) == 8  # never less than a week and a day
    assert of(threshold(baseline_days=20)) == 21
    assert of(threshold(baseline_by="weekday", baseline_weeks=3)) == 22
    assert of(streak(history_days=10), quiet(baseline_days=2)) == 11


# --- feeding ------------------------------------------------------------------------------------------


def test_feed_gives_sorted_events_of_every_rule_and_the_alerts_they_open() -> None:
    recs = surge_records() + [Rec(at("2025-07-08 21:00") + i * US, OTHER, WX) for i in range(5)]
    eng, batch = started([threshold(), streak(length=5, where={"channel": [WX]})], recs)
    events = eng.feed(batch, int(batch.ts[-1]))
    assert [(e.rule, e.state, e.value) for e in events] == [
        ("surge", EventState.FIRING, 151),
        ("surge", EventState.UPGRADED, 200),
        ("streak", EventState.FIRING, 5),
    ]
    assert [e.at for e in events] == [recs[700 + 150].ts, recs[700 + 199].ts, recs[-1].ts]
    assert sorted(
        (r.name, a.labels[r.cfg.group_by[0]] if isinstance(r, ThresholdRule) else a.labels["type"])
        for r, a in eng.open_alerts()
    ) == [("streak", OTHER), ("surge", T)]
    live = {r.name: facts for r, _, facts in eng.live_alerts()}
    assert live["surge"]["mode"] == "day" and live["surge"]["projected"] is not None
    assert live["streak"]["run_length"] == 5


def test_feed_in_any_batches_gives_the_events_of_one_feed() -> None:
    rules = [threshold(), threshold(name="pace", mode="pace"), threshold(name="roll", mode="rolling")]
    recs = surge_records()
    eng, batch = started(rules, recs)
    whole = eng.feed(batch, int(batch.ts[-1]))
    assert {e.rule for e in whole} == {"surge", "pace", "roll"}
    eng2, batch2 = started(rules, recs)
    parts: list[Event] = []
    for a, b in [(0, 1), (1, 700), (700, 820), (820, 851), (851, len(batch2))]:
        part = batch2.slice(a, b)
        parts += eng2.feed(part, int(part.ts[-1]))
    assert parts == whole


def test_records_past_the_horizon_wait_and_are_told_ahead_once() -> None:
    recs = surge_records()
    eng, batch = started([threshold()], recs)
    fire_at = recs[700 + 150].ts
    horizon = fire_at - HOUR
    settled = eng.settle(batch, horizon)
    assert settled == [] and eng.open_alerts() == []  # the crossing record waits past the horizon
    assert len(eng.states["surge"].pending) == int((batch.ts > horizon).sum())
    ahead = eng.look_ahead()
    assert [(e.state, e.at) for e in ahead] == [(EventState.FIRING, fire_at), (EventState.UPGRADED, recs[-1].ts)]
    assert eng.open_alerts() == []  # it ran on a fork: the settled state is untouched
    assert eng.look_ahead() == []  # told once
    # the settled run reaches it: confirmed, not told again, and the alert keeps the told instance
    assert eng.settle(Batch.empty(), int(batch.ts[-1])) == []
    assert [(a.instance, a.tier) for _, a in eng.open_alerts()] == [(ahead[0].instance, Tier.MODERATE)]
    assert eng.take_retractions() == []


def test_a_quiet_rule_is_never_run_ahead_of_the_horizon() -> None:
    """A silence is told by time alone: a record waiting past the horizon says nothing of it yet."""
    last = at("2025-07-08 10:00")
    recs = days(D0, 7, {T: 96}, channel=WX) + [r for r in spread(day(7), 96, T, WX) if r.ts <= last]
    eng, batch = started([quiet(max_p=1e-3)], [*recs, Rec(last + 3 * HOUR, T, WX)])
    assert eng.settle(batch, last + HOUR) == []
    assert len(eng.states["quiet"].pending) == 1
    assert eng.look_ahead() == []
    settled = eng.settle(Batch.empty(), last + 4 * HOUR)
    assert [(e.state, e.at) for e in settled] == [
        (EventState.FIRING, last + 6217 * US),
        (EventState.RESOLVED, last + 3 * HOUR),
    ]


def test_late_records_are_counted_once_over_the_rules() -> None:
    eng, batch = started([threshold(), streak()], surge_records())
    eng.feed(batch, int(batch.ts[-1]))
    late = make_batch([Rec(at("2025-07-03 12:00"), T)], eng.vocab, first_id=10_000)
    eng.feed(late, int(batch.ts[-1]))
    assert eng.late_records() == 1
    assert eng.late_records() == 0  # taken


# --- snapshot and restore -----------------------------------------------------------------------------

RULES = [
    threshold(),
    threshold(name="pace", mode="pace", resolve_after="30m"),
    threshold(name="roll", mode="rolling", resolve_after="30m"),
    streak(length=5, hold="2h"),
    quiet(max_p=1e-3, group_by=["channel"]),
]


def mixed_records() -> list[Rec]:
    recs = surge_records() + days(D0, 8, {OTHER: 96}, channel=WX)
    recs += [Rec(at("2025-07-08 21:00") + i * US, "其他", PHONE) for i in range(6)]
    return [r for r in recs if r.ts < at("2025-07-08 22:00")]


@pytest.mark.parametrize("cut_h", [9.5, 17.1, 21.5])  # the surge's 151st record comes at 17:00
def test_snapshot_and_restore_give_the_same_alerts_deadlines_and_later_events(cut_h: float) -> None:
    recs = mixed_records()
    cut = at("2025-07-08 00:00") + int(cut_h * HOUR)
    eng, batch = started(RULES, recs)
    seen = batch.take(np.flatnonzero(batch.ts <= cut))
    horizon = cut - 20 * 60 * US  # the last 20 minutes wait as pending records, run ahead on sight
    before = eng.feed_live(seen, horizon)
    assert eng.open_alerts(), "the cut must fall while alerts are open"
    restored, caused = reopened(eng, RULES, saved(eng), buckets_of(seen, eng.ctx.calendar), horizon)
    assert caused == []
    assert alerts_of(restored) == alerts_of(eng)
    assert deadlines_of(restored) == deadlines_of(eng)
    assert counts_of(restored) == counts_of(eng)  # rebuilt from the buckets, the pending records taken out
    assert {n: len(s.pending) for n, s in restored.states.items()} == {n: len(s.pending) for n, s in eng.states.items()}
    told = {n: [(t.instance, t.tier) for t in ts] for n, ts in eng.told.items()}
    assert {n: [(t.instance, t.tier) for t in ts] for n, ts in restored.told.items()} == told
    if cut_h == 17.1:
        assert told["surge"], "the surge's firing waits past the horizon: told ahead"
    assert restored.look_ahead() == eng.look_ahead() == []  # what was told ahead is not told again
    # and from here on both give the same events
    rest = batch.take(np.flatnonzero(batch.ts > cut))
    until = at("2025-07-10 06:00")
    after = eng.feed_live(rest, until)
    assert restored.feed_live(rest, until) == after
    assert {e.rule for e in before + after} == {r.name for r in RULES}


def test_a_rule_never_saved_is_rebuilt_from_the_buckets() -> None:
    recs = surge_records()
    eng, batch = started([threshold()], recs)
    seen = batch.take(np.flatnonzero(batch.ts < at("2025-07-08 12:00")))
    eng.feed(seen, int(seen.ts[-1]))
    new_rule = threshold(name="new")
    restored, caused = reopened(
        eng, [threshold(), new_rule], saved(eng), buckets_of(seen, eng.ctx.calendar), int(seen.ts[-1])
    )
    assert caused == []
    state = restored.states["new"]
    assert isinstance(state, ThresholdState) and state.clock == int(seen.ts[-1])
    x = state.series.admit((T,))
    today = eng.ctx.calendar.day_of(int(seen.ts[-1]))
    assert int(state.counts[today][x]) == len(seen) - 700  # today's records so far, from the buckets
    assert state.base.value(x) == 100.0  # its whole history at once
    assert restored.hashes["new"] not in {s.config_hash for s in saved(eng).values()}


# --- edited rules -------------------------------------------------------------------------------------


def test_an_edited_rule_is_rebuilt_and_keeps_the_alerts_of_series_it_still_has() -> None:
    recs = surge_records()
    eng, batch = started([threshold()], recs)
    eng.feed(batch, int(batch.ts[-1]))
    [(_, alert)] = eng.open_alerts()
    snaps = saved(eng)
    buckets = buckets_of(batch, eng.ctx.calendar)
    # a new factor: the same series, so the alert stays open; counts rebuilt under the new definition
    edited = threshold(factor=1.2, where_not={"channel": [WX]})
    restored, caused = reopened(eng, [edited], snaps, buckets, int(batch.ts[-1]))
    assert caused == []
    assert restored.hashes["surge"] != snaps["surge"].config_hash
    assert [(a.fingerprint, a.instance) for _, a in restored.open_alerts()] == [(alert.fingerprint, alert.instance)]
    state = restored.states["surge"]
    assert isinstance(state, ThresholdState)
    x = state.series.admit((T,))
    assert int(state.counts[state.day or 0][x]) == 200 and int(state.fire_at[x]) == 121  # 1.2 x 100, exclusive


def test_an_edited_rule_resolves_the_alerts_of_series_it_no_longer_has() -> None:
    recs = surge_records()
    eng, batch = started([threshold()], recs)
    eng.feed(batch, int(batch.ts[-1]))
    [(_, alert)] = eng.open_alerts()
    snaps = saved(eng)
    edited = threshold(group_by=["type", "channel"])
    restored, caused = reopened(eng, [edited], snaps, buckets_of(batch, eng.ctx.calendar), int(batch.ts[-1]))
    assert [(e.state, e.instance, e.at, e.extra["reason"]) for e in caused] == [
        (EventState.RESOLVED, alert.instance, snaps["surge"].clock, "rule changed")
    ]
    assert restored.open_alerts() == []
    state = restored.states["surge"]
    assert isinstance(state, ThresholdState)
    assert state.series.labels == [{"type": T, "channel": PHONE}]  # the new series, rebuilt from the buckets


def test_a_rule_that_changed_kind_reads_the_old_kind_alerts() -> None:
    recs = surge_records()
    eng, batch = started([threshold()], recs)
    eng.feed(batch, int(batch.ts[-1]))
    snaps = saved(eng)
    buckets = buckets_of(batch, eng.ctx.calendar)
    # a quiet rule by channel has no series {"type": ...}: the alert resolves, told as the new kind's
    restored, caused = reopened(eng, [quiet(name="surge", group_by=["channel"])], snaps, buckets, int(batch.ts[-1]))
    assert [(e.rule, e.kind, e.state, e.labels) for e in caused] == [
        ("surge", "quiet", EventState.RESOLVED, {"type": T})
    ]
    assert isinstance(restored.states["surge"], QuietState) and restored.open_alerts() == []
    # a streak on `type` has that series: it takes the alert over, to wait out its hold from the saved clock
    restored, caused = reopened(eng, [streak(name="surge")], snaps, buckets, int(batch.ts[-1]))
    assert caused == []
    [(rule, alert)] = restored.open_alerts()
    assert isinstance(rule, StreakRule) and alert.hold_until == snaps["surge"].clock


# --- time -----------------------------------------------------------------------------------------------


def test_time_alone_resolves_a_day_alert_at_the_midnight_ending_a_day_below() -> None:
    eng, batch = started([threshold()], surge_records())
    eng.feed(batch, int(batch.ts[-1]))
    assert eng.feed(Batch.empty(), at("2025-07-09 23:59:59")) == []  # 07-09 is not over yet
    [resolved] = eng.feed(Batch.empty(), at("2025-07-10 08:00"))
    assert resolved.state == EventState.RESOLVED and resolved.at == at("2025-07-10 00:00")
    assert resolved.extra["reason"] == "a full day below the threshold"
    assert eng.open_alerts() == []


def test_time_alone_tells_a_silence_at_its_deadline_whatever_the_horizon() -> None:
    last = at("2025-07-08 10:00")
    recs = days(D0, 7, {T: 96}, channel=WX) + [r for r in spread(day(7), 96, T, WX) if r.ts <= last]
    told = []
    for horizons in ([last + 3 * HOUR], [last + HOUR, last + 6000 * US, last + 2 * HOUR, last + 5 * HOUR]):
        eng, batch = started([quiet(max_p=1e-3)], recs)
        events = eng.feed(batch, last)
        for h in horizons:
            events += eng.feed(Batch.empty(), h)
        told.append([(e.state, e.at, e.labels) for e in events])
    # 4 complaints an hour: -ln(1e-3) expected at the first whole second of 1 h 43 m 37 s
    assert told[0] == told[1] == [(EventState.FIRING, last + 6217 * US, {"channel": WX})]


def test_time_alone_resolves_pace_and_rolling_alerts_after_resolve_after_unmet() -> None:
    rules = [
        threshold(name="pace", mode="pace", resolve_after="1h"),
        threshold(name="roll", mode="rolling", resolve_after="1h"),
    ]
    eng, batch = started(rules, surge_records())
    eng.feed(batch, int(batch.ts[-1]))
    assert {r.name for r, _ in eng.open_alerts()} == {"pace", "roll"}
    nxt = {name: d for name, d in deadlines_of(eng).items()}
    events = eng.feed(Batch.empty(), at("2025-07-10 00:00"))
    resolved = {e.rule: e for e in events if e.state == EventState.RESOLVED}
    assert set(resolved) == {"pace", "roll"} and eng.open_alerts() == []
    for e in resolved.values():
        assert e.extra["reason"] == "condition unmet"
        assert e.at < at("2025-07-10 00:00")  # the deadline's time, not the horizon's
        assert e.at >= (nxt[e.rule] or 0)


# --- gauges ---------------------------------------------------------------------------------------------


def test_gauges_give_each_rule_its_own_figures() -> None:
    recs = surge_records() + [Rec(at("2025-07-08 21:00") + i * US, OTHER, WX) for i in range(3)]
    eng, batch = started([threshold(max_series=1), streak(where={"channel": [WX]}), quiet()], recs)
    eng.feed(batch, int(batch.ts[-1]))
    gauges = {r.name: g for r, g in eng.gauges()}
    surge = gauges["surge"]
    assert surge.folded == 1 and surge.runs == []  # OTHER folded into __other__
    by_type = {g.labels["type"]: g for g in surge.series}
    assert (by_type[T].current, by_type[T].baseline, by_type[T].threshold) == (200.0, 100.0, 151.0)
    assert by_type[T].ratio == 2.0
    assert gauges["streak"].runs == [({"type": OTHER}, 3)] and gauges["streak"].series == []
    assert gauges["quiet"].series == [] and gauges["quiet"].folded == 0


def test_gauges_count_the_records_seen_ahead_of_the_horizon() -> None:
    """The daemon fires on sight: the gauges show the count it fired at, pending records included, while
    the settled state stays `lateness` behind; the quiet rule (told by time alone) stays settled."""
    recs = surge_records() + [Rec(at("2025-07-08 21:00") + i * US, OTHER, WX) for i in range(3)]
    eng, batch = started([threshold(), streak(where={"channel": [WX]}), quiet()], recs)
    horizon = at("2025-07-08 14:00")  # the surge's rows after 14:00 and the run of three still pending
    eng.feed_live(batch, horizon)
    gauges = {r.name: g for r, g in eng.gauges()}
    by_type = {g.labels["type"]: g for g in gauges["surge"].series}
    assert by_type[T].current == 200.0
    assert gauges["streak"].runs == [({"type": OTHER}, 3)]
    assert [r.name for r in eng.rules] == ["surge", "streak", "quiet"]
    settled = {r.name: r.gauges(s) for r, s in zip(eng.rules, eng.states.values(), strict=True)}
    settled_by_type = {g.labels["type"]: g for g in settled["surge"].series}
    assert settled_by_type[T].current < 200.0  # the state itself was not moved
