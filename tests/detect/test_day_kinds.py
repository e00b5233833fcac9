"""Baselines by kind of day: a workday against workdays, a rest day (weekend or public holiday) against
rest days, with China's adjusted working weekends (调休) counted as workdays; or the same weekday of the
last weeks. Around China's 2025 National Day holiday (Oct 1-8 off; Sunday Sep 28 and Saturday Oct 11
worked) and on Boston's calendar (US-MA: Patriots' Day)."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest

from sentinel.config import ConfigError, ThresholdRuleConfig
from sentinel.detect.workdays import Workdays
from sentinel.model import EventState
from tests.detect.builders import Rec, engine, make_batch, run, spread, threshold

CN = Workdays("CN")
WORK, REST = 100, 20  # a business stream: busy on workdays, quiet on rest days
A = "物流配送延误"


def test_the_calendars() -> None:
    adjusted = [date(2025, 9, 28), date(2025, 10, 11)]  # Sunday and Saturday worked for National Day
    assert all(d.weekday() >= 5 and CN.is_workday(d) for d in adjusted)
    assert not any(CN.is_workday(date(2025, 10, d)) for d in range(1, 9))  # Oct 1-8: a Wednesday to a Wednesday
    assert CN.is_workday(date(2025, 10, 9)) and not CN.is_workday(date(2025, 10, 12))
    ma = Workdays("US-MA")
    assert not ma.is_workday(date(2015, 4, 20)) and ma.holiday_name(date(2015, 4, 20)) == "Patriots' Day"
    assert Workdays("US").is_workday(date(2015, 4, 20))  # a Massachusetts holiday only
    plain = Workdays(None)  # without `holidays`: weekends are the rest days
    assert plain.is_workday(date(2025, 10, 1)) and not plain.is_workday(date(2025, 10, 11))


def history(first: date, last: date, today: date, today_count: int) -> list[Rec]:
    """WORK complaints on each workday, REST on each rest day (China's calendar), then `today`."""
    out: list[Rec] = []
    d = first
    while d <= last:
        out += spread(d, WORK if CN.is_workday(d) else REST, A)
        d += timedelta(days=1)
    return out + spread(today, today_count, A)


@pytest.mark.parametrize(
    ("case", "baseline_by", "today", "count", "baseline", "fires"),
    [
        # the first workday after the eight-day holiday: against the holiday it looks like a surge
        ("after the holiday, all", "all", date(2025, 10, 9), WORK, REST, True),
        ("after the holiday, day_kind", "day_kind", date(2025, 10, 9), WORK, WORK, False),
        # the adjusted working Saturday is a workday; the same weekday of past weeks were Saturdays off
        ("worked Saturday, day_kind", "day_kind", date(2025, 10, 11), WORK, WORK, False),
        ("worked Saturday, weekday", "weekday", date(2025, 10, 11), WORK, REST, True),
        # a busy Sunday after the holiday: a surge among rest days, hidden among the mixed last seven days
        ("busy Sunday, day_kind", "day_kind", date(2025, 10, 12), 60, REST, True),
        ("busy Sunday, all", "all", date(2025, 10, 12), 60, (4 * REST + 3 * WORK) / 7, False),
        # Monday Sep 22 against the last four Mondays (all workdays)
        ("Monday, weekday", "weekday", date(2025, 9, 22), WORK, WORK, False),
        ("busy Monday, weekday", "weekday", date(2025, 9, 22), 2 * WORK, WORK, True),
    ],
)
def test_baseline_by(case: str, baseline_by: str, today: date, count: int, baseline: float, fires: bool) -> None:
    recs = history(date(2025, 8, 18), today - timedelta(days=1), today, count)
    rule = threshold(baseline_by=baseline_by, min_count=10)
    ev = run([rule], recs)
    mine = [e for e in ev if e.at >= spread(today, 1, A)[0].ts and e.state == EventState.FIRING]
    assert bool(mine) == fires, case
    assert baseline_on(rule, recs, today) == pytest.approx(baseline), case
    if not mine:
        return
    if baseline_by == "day_kind":
        assert mine[0].extra["baseline_by"] == "day_kind"
        assert mine[0].extra["day_kind"] == ("workday" if CN.is_workday(today) else "rest day")
    elif baseline_by == "weekday":
        assert mine[0].extra["baseline_by"] == "weekday" and mine[0].extra["weekday"] == today.strftime("%A")
    else:
        assert "baseline_by" not in mine[0].extra
    assert mine[0].baseline == pytest.approx(baseline)


def baseline_on(rule: ThresholdRuleConfig, recs: list[Rec], today: date, holidays: str | None = "CN") -> float:
    """The baseline `today` is compared with: the engine fed up to today's first record."""
    eng = engine([rule], holidays=holidays)
    batch = make_batch(recs, eng.vocab)
    eng.ctx.coverage_start_us = int(batch.ts[0])
    upto = int((batch.ts <= spread(today, 1, A)[0].ts).sum())
    part = batch.slice(0, upto)
    eng.feed(part, int(part.ts[-1]))
    st = eng.states[rule.name]
    return st.base.value(st.series.admit((A,)))


def test_day_kind_without_holidays_knows_only_weekends() -> None:
    """With no `holidays` key the holiday week counts as workdays: Oct 9 is compared with Oct 1-8 too."""
    today = date(2025, 10, 9)
    recs = history(date(2025, 8, 18), today - timedelta(days=1), today, WORK)
    # the last seven Monday-Friday days: Sep 30 (100), Oct 1-3 and 6-8 (holidays, 20)
    assert baseline_on(threshold(baseline_by="day_kind"), recs, today, holidays=None) == pytest.approx(
        (WORK + 6 * REST) / 7
    )
    assert baseline_on(threshold(baseline_by="day_kind"), recs, today) == pytest.approx(WORK)


def test_baseline_weeks_and_the_warm_up() -> None:
    """`weekday` uses the weeks there are: two weeks of history give a two-day baseline."""
    today = date(2025, 9, 29)
    recs = history(date(2025, 9, 15), today - timedelta(days=1), today, WORK)  # Mondays Sep 15 and 22
    assert baseline_on(threshold(baseline_by="weekday", baseline_weeks=4), recs, today) == pytest.approx(WORK)
    # and a longer history reaches only baseline_weeks back: 4 Mondays, not the fifth of 100 x 3
    recs = history(date(2025, 8, 25), today - timedelta(days=1), today, WORK)
    recs = [r for r in recs if spread(date(2025, 8, 25), 1, A)[0].ts + 86_400_000_000 <= r.ts] + spread(
        date(2025, 8, 25), 3 * WORK, A
    )
    assert baseline_on(threshold(baseline_by="weekday", baseline_weeks=4), recs, today) == pytest.approx(WORK)
    assert baseline_on(threshold(baseline_by="weekday", baseline_weeks=5), recs, today) == pytest.approx(
        (3 * WORK + 4 * WORK) / 5
    )


def test_holidays_key_is_checked(tmp_path: Path) -> None:
    from sentinel.config import load_config

    path = tmp_path / "sentinel.toml"
    for bad, why in (
        ("XX", "Country XX not available"),
        ("us-ma", "not a country code"),
        ("US-ZZ", "does not have subdivision ZZ"),
    ):
        path.write_text(f'holidays = "{bad}"\n', encoding="utf-8")
        with pytest.raises(ConfigError) as err:
            load_config(path)
        assert "holidays" in str(err.value) and why in str(err.value), str(err.value)
    path.write_text(
        'holidays = "CN"\n[[rules]]\nname = "s"\nkind = "threshold"\nbaseline_by = "day_kind"\n', encoding="utf-8"
    )
    assert load_config(path).holidays == "CN"
    path.write_text('[[rules]]\nname = "s"\nkind = "threshold"\nbaseline_by = "workdays"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "baseline_by" in str(err.value)


def test_the_first_start_backfills_what_the_baselines_need() -> None:
    """The daemon's first start reads back each rule's window: a weekday baseline needs its weeks, a
    day-kind baseline the days it looks back over for rest days, a streak rule its run history."""
    from sentinel.config import Config
    from sentinel.detect import history_days
    from tests.detect.builders import streak

    def days_for(*rules: object) -> int:
        return history_days(Config(rules=list(rules)))  # type: ignore[arg-type]

    assert days_for(threshold()) == 8
    assert days_for(threshold(baseline_by="weekday", baseline_weeks=4)) == 29
    assert days_for(threshold(baseline_by="day_kind", baseline_days=7)) == 36
    assert days_for(threshold(), streak(history_days=60)) == 61


def test_a_new_holiday_calendar_rebuilds_the_rules_that_use_it() -> None:
    """A rule comparing by kind of day is defined by the calendar too: changing `holidays` makes it an
    edited rule (rebuilt from the buckets); other rules keep their identity."""
    rules = [threshold(name="kind", baseline_by="day_kind"), threshold(name="plain")]
    cn, us, none = (engine(rules, holidays=h).hashes for h in ("CN", "US-MA", None))
    assert cn["kind"] != us["kind"] != none["kind"] and cn["kind"] != none["kind"]
    assert cn["plain"] == us["plain"] == none["plain"]
