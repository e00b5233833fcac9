"""Fire on sight, settle behind (`sentinel.detect.ahead`): a settled alert that takes the instance told
ahead carries that alert's start, which a row dated in the future can put ahead of the settled run;
a later alert of the series starting there is another alert, under an instance of its own."""

from __future__ import annotations

from dataclasses import dataclass

from sentinel.detect import ahead as la
from sentinel.detect.ahead import Told
from sentinel.detect.engine import Engine
from sentinel.model import US, Event, EventState, Tier, instance_id
from tests.detect.builders import Rec, at, engine, make_batch, streak
from tests.detect.test_feed import Buckets_, _save, as_json

A, B = "物流配送延误", "服务态度"
LATENESS = 5 * 60 * US
RULE = streak(name="run", length=3, hold="10m", tiers={"moderate": 4, "severe": 6})
FUTURE = at("2025-07-08 10:30")  # the row dated ahead: committed at 10:00, created half an hour later


def rows(*spec: tuple[str, str, int]) -> list[Rec]:
    """(local time, type, id) -> records."""
    return [Rec(at(t), typ, id=i) for t, typ, i in spec]


# committed at each poll (local time): the future row comes with the first two, so the run told on sight
# at 10:00 starts at 10:30; B breaks the settled run at 10:01 (its alert holds until 10:11); the next run,
# C1 C2 and the future row third, starts at 10:30 too
FIRST_RUN = {
    "2025-07-08 10:00": rows(("2025-07-08 10:00", A, 1), ("2025-07-08 10:00", A, 2), ("2025-07-08 10:30", A, 3)),
    "2025-07-08 10:01": rows(("2025-07-08 10:00:30", A, 4)),
    "2025-07-08 10:02": rows(("2025-07-08 10:01", B, 5)),
}


@dataclass
class Polled:
    """What the engine told, poll by poll, and the engine after the last poll."""

    events: list[Event]
    poll_of: dict[int, int]  # id(event) -> the poll that told it
    engine: Engine


def daemon(commits: dict[str, list[Rec]], until: str, restart_every_poll: bool = False) -> Polled:
    """A poll every minute from the first commit to `until`, each feeding the rows committed by then with
    the horizon `poll - lateness`, as the daemon does; optionally a snapshot and restore after each."""
    eng = engine([RULE], coverage=at("2025-07-01 00:00"))
    buckets = Buckets_(eng.ctx.calendar)
    by_poll = {at(t): recs for t, recs in commits.items()}
    events: list[Event] = []
    poll_of: dict[int, int] = {}
    poll = min(by_poll)
    while poll <= at(until):
        batch = make_batch(by_poll.get(poll, []), eng.vocab)
        buckets.add(batch, eng.vocab)
        new = eng.feed_live(batch, poll - LATENESS)
        poll_of.update((id(e), poll) for e in new)
        events += new
        if restart_every_poll:
            restored = engine([RULE], coverage=eng.ctx.coverage_start_us)
            events += restored.restore(_save(eng, restored.vocab), buckets.columns(restored.vocab), poll - LATENESS)
            eng = restored
        poll += 60 * US
    return Polled(events, poll_of, eng)


def firings(told: Polled) -> list[Event]:
    return [e for e in told.events if e.state is EventState.FIRING]


def assert_one_firing_per_instance(events: list[Event]) -> None:
    """Each alert: one firing first, then upgrades, at most one resolution, last."""
    by_instance: dict[str, list[str]] = {}
    for e in events:
        by_instance.setdefault(e.instance, []).append(e.state.value)
    for states in by_instance.values():
        assert states[0] == "firing" and states.count("firing") == 1 and "resolved" not in states[:-1], states


def test_the_settled_alert_takes_the_told_start_of_the_future_row() -> None:
    """The premise: the run told at 10:00 from the future row is settled as the run of 10:00:30, renamed
    to the told instance, and resolves after its hold under it."""
    told = daemon(FIRST_RUN, "2025-07-08 10:17")
    [fired] = firings(told)
    assert fired.instance == instance_id(fired.fingerprint, FUTURE) and fired.started == FUTURE
    assert told.poll_of[id(fired)] == at("2025-07-08 10:00")
    assert [e.state.value for e in told.events] == ["firing", "upgraded", "resolved"]
    assert {e.instance for e in told.events} == {fired.instance}


def test_a_run_that_starts_after_the_settled_resolution_gets_an_instance_of_its_own() -> None:
    """The next run (C1 C2 and the future row) is committed after the settled run resolved the first
    alert: it derives the same instance (series + 10:30) and must be told as another alert."""
    commits = {**FIRST_RUN, "2025-07-08 10:26": rows(("2025-07-08 10:20", A, 6), ("2025-07-08 10:25", A, 7))}
    told = daemon(commits, "2025-07-08 10:40")
    first, second = firings(told)
    assert first.instance != second.instance
    assert second.started == FUTURE and told.poll_of[id(second)] == at("2025-07-08 10:26")  # on sight
    assert_one_firing_per_instance(told.events)


def test_a_run_seen_while_the_first_alert_is_still_held_is_told_on_sight_as_another_alert() -> None:
    """The next run is committed while the settled alert is still held (its hold ends at 10:11, the horizon
    is 10:07): the run ahead resolves it and opens the next under the same derived instance. That is
    another alert, told at once, not mistaken for the one it resolved."""
    commits = {**FIRST_RUN, "2025-07-08 10:12": rows(("2025-07-08 10:11:30", A, 6), ("2025-07-08 10:12", A, 7))}
    told = daemon(commits, "2025-07-08 10:40")
    first, second = firings(told)
    assert first.instance != second.instance
    assert told.poll_of[id(second)] == at("2025-07-08 10:12")
    assert_one_firing_per_instance(told.events)
    # settled at 10:35 as told: nothing more said of it, and the settled alert holds the instance told
    # (the settled run derived the one given before)
    assert [e.state.value for e in told.events if e.instance == second.instance] == ["firing"]
    assert [a.instance for _, a in told.engine.open_alerts()] == [second.instance]


def test_a_restart_after_every_poll_gives_the_same_instances() -> None:
    """The instances given are part of the snapshot: a restarted daemon derives the fresh one again."""
    for later in ("2025-07-08 10:12", "2025-07-08 10:26"):
        commits = {**FIRST_RUN, later: rows(("2025-07-08 10:11:30", A, 6), ("2025-07-08 10:12", A, 7))}
        one = daemon(commits, "2025-07-08 10:40")
        many = daemon(commits, "2025-07-08 10:40", restart_every_poll=True)
        assert as_json(many.events) == as_json(one.events)
        assert len({e.instance for e in firings(one)}) == 2


def _told(instance: str, started: int, **kw: bool) -> Told:
    return Told(
        "fp",
        instance,
        "streak",
        {"type": A},
        started,
        Tier.LIGHT,
        started,
        3.0,
        opened=kw.get("opened", True),
        matched=kw.get("matched", True),
        settled_tier=Tier.LIGHT,
        spent=kw.get("spent", False),
    )


def _firing(instance: str, started: int) -> Event:
    return Event(
        at=started,
        rule="run",
        kind="streak",
        state=EventState.FIRING,
        tier=Tier.LIGHT,
        labels={"type": A},
        value=3.0,
        baseline=None,
        ratio=None,
        fingerprint="fp",
        instance=instance,
        started=started,
    )


def test_a_settled_alert_opening_under_a_spent_instance_is_renamed_to_a_fresh_one() -> None:
    """Nothing was told of it (its rows came too late to be seen ahead), but the instance it derives was
    given to an alert that resolved: it takes the fresh instance, and the settled alert is renamed."""
    spent = instance_id("fp", FUTURE)
    told = [_told(spent, FUTURE, spent=True)]
    renamed: dict[str, tuple[str, int]] = {}
    done = la.settle(_firing(spent, FUTURE), told, renamed)
    fresh = la.fresh_instance("fp", FUTURE, {spent})
    assert fresh != spent and [e.instance for e in done.events] == [fresh]
    assert done.rename == (spent, fresh, FUTURE) and renamed == {spent: (fresh, FUTURE)}


def test_a_spent_entry_is_kept_until_the_settled_run_passes_its_start() -> None:
    told = [_told("x", FUTURE, spent=True)]
    assert la.passed("run", told, FUTURE) == ([], [], []) and told
    assert la.passed("run", told, FUTURE + 1) == ([], [], []) and not told


def test_a_spent_entry_survives_the_snapshot_and_an_older_snapshot_restores() -> None:
    t = _told("x", FUTURE, spent=True)
    assert Told.from_json(t.to_json()) == t
    old = t.to_json()
    del old["spent"]
    assert Told.from_json(old).spent is False


def test_fresh_instances_are_deterministic_and_skip_the_taken_ones() -> None:
    first = la.fresh_instance("fp", FUTURE, {instance_id("fp", FUTURE)})
    assert first == la.fresh_instance("fp", FUTURE, {instance_id("fp", FUTURE)})
    second = la.fresh_instance("fp", FUTURE, {instance_id("fp", FUTURE), first})
    assert len({instance_id("fp", FUTURE), first, second}) == 3
