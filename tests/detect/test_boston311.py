"""The recommended configuration on a real stream: Boston 311, 2015 (121,145 service requests), replayed by
`sentinel backtest` in a real process. Real streams are clustered and full of staff batch entry; the
rules must still catch the known public events (blizzard Juno, the 2015-08-04 storms, the 2015-01-08 cold
snap), and the streak rule must warn early on them without drowning people (<= 0.1 alerts a day, >= 30 %
of its alerts followed by a surge of the same type within 24 h). The figures are printed and recorded
(junit properties), so a change in calibration shows in the test log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "examples" / "boston311.toml"
DATA = Path(os.environ.get("SENTINEL_BOSTON311", ROOT.parent / "shared" / "data" / "boston311_2015.csv.gz"))
JUNO = ("2015-01-26", "2015-01-28")
# (name, first day, last day, the types the public filed about it)
KNOWN_EVENTS = [
    (
        "blizzard Juno",
        *JUNO,
        {"Request for Snow Plowing (Emergency Responder)", "Misc. Snow Complaint", "Space Savers"},
    ),
    ("2015-08-04 storms", "2015-08-04", "2015-08-04", {"Tree Emergencies"}),
    ("2015-01-08 cold snap", "2015-01-08", "2015-01-08", {"Heat - Excessive  Insufficient"}),
]
# the file has no record at all on this day (an export gap or an intake outage: either way the intake went
# silent), the case the quiet rule is for; it must tell of it on the busiest public channel that morning
SILENT_DAY = "2015-07-22"
# the streak rule's early warnings on those events, which the calibration must keep
EARLY_WARNINGS = [
    ("Request for Snow Plowing (Emergency Responder)", JUNO),
    ("Tree Emergencies", ("2015-08-04", "2015-08-04")),
]


def backtest(config: Path, out: Path) -> tuple[list[dict[str, Any]], dict[str, Any], float]:
    """`sentinel backtest` in a real process: (events, the summary line, seconds)."""
    if not DATA.exists():
        pytest.skip(f"the Boston 311 file is not at {DATA} (set SENTINEL_BOSTON311 to its path)")
    script = Path(sys.executable).with_name("sentinel")
    if not script.exists():
        pytest.skip(f"the `sentinel` console script is not installed next to {sys.executable} (pip install -e .)")
    started = time.perf_counter()
    proc = subprocess.run(
        [str(script), "backtest", "--config", str(config), "--input", str(DATA), "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    seconds = time.perf_counter() - started
    assert proc.returncode == 0, proc.stderr
    assert "Early warning: did a warning come first (within 24 h)?" in proc.stdout
    lines = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert set(lines[-1]) == {"summary"}
    return lines[:-1], lines[-1]["summary"], seconds


@pytest.fixture(scope="module")
def replay(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict[str, Any]], dict[str, Any], float]:
    return backtest(CONFIG, tmp_path_factory.mktemp("boston") / "events.jsonl")


def _at(e: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(e["at"])


def test_the_recommended_configuration_on_boston_311(
    replay: tuple[list[dict[str, Any]], dict[str, Any], float], record_property: Callable[[str, object], None]
) -> None:
    events, summary, seconds = replay
    fired = [e for e in events if e["state"] == "firing"]
    surges = [e for e in fired if e["rule"] == "type-surge"]
    streaks = [e for e in fired if e["rule"] == "same-type-streak"]
    quiet = [e for e in fired if e["rule"] == "channel-quiet"]
    days = summary["days"]
    assert days == 365 and summary["records"] == 121_145

    caught = {}
    for name, first, last, types in KNOWN_EVENTS:
        caught[name] = [
            e["labels"]["type"] for e in surges if first <= e["at"][:10] <= last and e["labels"]["type"] in types
        ]
    window = timedelta(hours=24)
    warned = {}
    for type_, (first, last) in EARLY_WARNINGS:
        surge = min((e for e in surges if e["labels"]["type"] == type_ and first <= e["at"][:10] <= last), key=_at)
        before = [s for s in streaks if s["labels"]["type"] == type_ and _at(surge) - window <= _at(s) <= _at(surge)]
        warned[type_] = (_at(surge) - min(map(_at, before))) if before else None
    followed = sum(
        1 for s in streaks if any(t["labels"] == s["labels"] and _at(s) <= _at(t) <= _at(s) + window for t in surges)
    )
    figures = {
        "type-surge alerts/day": round(len(surges) / days, 3),
        "same-type-streak alerts/day": round(len(streaks) / days, 3),
        "streak precision": round(followed / len(streaks), 3),
        "events caught": {k: sorted(set(v)) for k, v in caught.items()},
        "streak early warnings": {k: str(v) for k, v in warned.items()},
        "surges warned first": f"{summary['early_warning']['warned']} of {summary['early_warning']['surges']}",
        "channel-quiet alerts/day": round(len(quiet) / days, 3),
        "silent day told": sorted(
            f"{e['labels']['channel']} {e['at'][11:16]}" for e in quiet if e["at"][:10] == SILENT_DAY
        ),
        "backtest seconds": round(seconds, 2),
    }
    for key, value in figures.items():
        record_property(key, value)
    print("\nBoston 311 2015, examples/boston311.toml:", json.dumps(figures, ensure_ascii=False))

    missed = [name for name, types in caught.items() if not types]
    assert not missed, f"known events missed: {missed}"
    lost = [t for t, lead in warned.items() if lead is None]
    assert not lost, f"streak early warnings lost: {lost}"
    assert len(streaks) / days <= 0.1, figures
    assert followed / len(streaks) >= 0.30, figures
    assert len(surges) / days <= 0.3, figures  # the threshold rule stays as quiet as calibrated (0.23)
    told = [e for e in quiet if e["at"][:10] == SILENT_DAY and e["labels"] == {"channel": "Constituent Call"}]
    assert told and told[0]["at"][11:16] < "09:00", figures  # the silent day told in its first working hour
    assert len(quiet) / days <= 0.06, figures  # and otherwise rarely (0.04)
    assert all(e["p"] <= 1e-9 and e["expected"] >= 20.7 for e in quiet)
    # the summary line says what the events say
    assert summary["rules"]["same-type-streak"]["alerts"] == len(streaks)
    assert summary["rules"]["type-surge"]["alerts"] == len(surges)
    assert summary["early_warning"]["precision"]["same-type-streak"] == {
        "alerts": len(streaks),
        "followed": followed,
        "precision": round(followed / len(streaks), 4),
    }


def test_every_streak_alert_reports_both_expectations(
    replay: tuple[list[dict[str, Any]], dict[str, Any], float],
) -> None:
    """The observed run rate and the independent estimate are on every alert; the blend gates."""
    events, _, _ = replay
    opened = [e for e in events if e["rule"] == "same-type-streak" and e["state"] == "firing"]
    assert opened
    for e in opened:
        assert e["length"] == 6
        assert {
            "expected_per_day_observed",
            "expected_per_day_independent",
            "runs_observed",
            "days_observed",
        } <= e.keys()
        assert e["expected_per_day"] is None or e["expected_per_day"] <= 0.01
    # after the warm-up every alert is judged on the full 60 days of run history
    assert any(e["days_observed"] == 60 for e in opened)


def test_workday_baselines_on_boston_311(
    tmp_path: Path,
    record_property: Callable[[str, object], None],
    replay: tuple[list[dict[str, Any]], dict[str, Any], float],
) -> None:
    """`baseline_by = "day_kind"` with Massachusetts' holidays: fewer surges on the first workday after a
    weekend or holiday (the Monday effect), the known events still caught."""
    from datetime import date

    from sentinel.detect.workdays import Workdays

    text = CONFIG.read_text(encoding="utf-8")
    assert 'holidays = "US-MA"' in text  # the example names Massachusetts' holidays already
    text = text.replace("max_p = 1e-6", 'max_p = 1e-6\nbaseline_by = "day_kind"', 1)
    config = tmp_path / "day_kind.toml"
    config.write_text(text, encoding="utf-8")
    by_kind, _, _ = backtest(config, tmp_path / "events.jsonl")
    ma = Workdays("US-MA")

    def after_rest(e: dict[str, Any]) -> bool:
        d = date.fromisoformat(e["at"][:10])
        return ma.is_workday(d) and not ma.is_workday(d - timedelta(days=1))

    figures = {}
    for name, events in (("all", replay[0]), ("day_kind", by_kind)):
        surges = [e for e in events if e["rule"] == "type-surge" and e["state"] == "firing"]
        monday = [e for e in surges if after_rest(e)]
        figures[name] = {
            "surges/day": round(len(surges) / 365, 3),
            "on the first workday after rest": len(monday),
            "share": round(len(monday) / len(surges), 3),
        }
        for event_name, first, last, types in KNOWN_EVENTS:
            assert any(first <= e["at"][:10] <= last and e["labels"]["type"] in types for e in surges), (
                name,
                event_name,
            )
    assert all(
        e["baseline_by"] == "day_kind" and e["day_kind"] in ("workday", "rest day")
        for e in by_kind
        if e["rule"] == "type-surge" and e["state"] == "firing"
    )
    record_property("first workday after rest", figures)
    print("\nBoston 311 2015, surges on the first workday after a weekend or holiday:", json.dumps(figures))
    days = sum(1 for i in range(365) if after_rest({"at": (date(2015, 1, 1) + timedelta(days=i)).isoformat()}))
    # those days are 15 % of the year; comparing like with like brings their share of surges down to that
    assert figures["day_kind"]["on the first workday after rest"] < figures["all"]["on the first workday after rest"]
    assert figures["day_kind"]["share"] <= days / 365 + 0.05 < figures["all"]["share"]
