"""The figures of the second wave in messages, in every syntax and both locales: a day-mode surge's
projection of the day, how long a handed-on alert has been open (and a streak's run still going), and the
quiet rule's silence against what the series normally has in that time."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from sentinel.model import Tier
from sentinel.notify.base import Syntax
from sentinel.notify.render import human_duration
from sentinel.notify.views import AlertView, alert_payload

from .test_render import LOCALES, NOW, run, streak, threshold

PROJECTION = {
    "zh_CN": ("按当前速度，今日预计 412 件", "约为日均 3.1 倍"),
    "en": ("At this pace about 412 today", "3.1× the daily mean"),
}


def quiet(**kw: Any) -> AlertView:
    values: dict[str, Any] = {
        "rule": "channel-quiet",
        "kind": "quiet",
        "state": "firing",
        "tier": Tier.MODERATE,
        "labels": {"channel": "微信公众号"},
        "value": 0.0,
        "baseline": 9.4,
        "ratio": None,
        "started": NOW,
        "at": NOW,
        "instance": "inst-3",
        "fingerprint": "fp-3",
        "p": 8.3e-05,
        "expected": 9.4,
        "silent_s": 3 * 3600 + 20 * 60,
    }
    values.update(kw)
    return AlertView(**values)


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("syntax", list(Syntax))
@pytest.mark.parametrize(
    ("projected", "baseline", "state", "shown"),
    [
        (412.0, 133.0, "firing", (True, True)),  # 412 / 133 = 3.1 x the daily mean
        (412.0, 133.0, "upgraded", (True, True)),
        (412.0, 0.0, "firing", (True, False)),  # a new type: no daily mean to compare with
        (412.0, 133.0, "resolved", (False, False)),  # a resolution projects nothing
        (None, 133.0, "firing", (False, False)),  # pace and rolling events carry no projection
    ],
)
def test_a_surge_says_where_the_day_is_heading(
    syntax: Syntax, locale: str, projected: float | None, baseline: float, state: str, shown: tuple[bool, bool]
) -> None:
    view = threshold(
        projected=projected,
        baseline=baseline,
        state=state,
        ratio=1.51 if baseline else None,
        duration_s=3600 if state == "resolved" else None,
    )
    _, body = run([view], syntax, locale)
    count, ratio = PROJECTION[locale]
    assert (count in body, ratio in body) == shown, body


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("syntax", list(Syntax))
def test_a_handed_on_alert_says_how_long_it_has_been_open(syntax: Syntax, locale: str) -> None:
    """The handover event is dated when the alert started; the message takes the time it had been open
    when Sentinel started from `open_s` (not "0s so far")."""
    view = streak(
        handover=True,
        started=NOW - timedelta(hours=9, minutes=40),
        at=NOW - timedelta(hours=9, minutes=40),
        open_s=9 * 3600 + 40 * 60,
        run_length=37,
        length=37,
    )
    _, body = run([view], syntax, locale)
    assert human_duration(9 * 3600 + 40 * 60, locale) in body
    assert ("已连续 37 条" if locale == "zh_CN" else "37 in a row so far") in body
    _, fresh = run([streak()], syntax, locale)
    assert human_duration(9 * 3600 + 40 * 60, locale) not in fresh


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("syntax", list(Syntax))
def test_a_quiet_series_says_how_long_and_what_it_normally_has(syntax: Syntax, locale: str) -> None:
    title, body = run([quiet()], syntax, locale)
    assert ("无投诉" if locale == "zh_CN" else "gone quiet") in title
    assert human_duration(3 * 3600 + 20 * 60, locale) in body and "9.4" in body and "8.3e-05" in body
    _, resolved = run([quiet(state="resolved", duration_s=5400, reason="a complaint arrived")], syntax, locale)
    assert ("又有新投诉进来" if locale == "zh_CN" else "complaints are arriving again") in resolved
    assert human_duration(5400, locale) in resolved
    _, digest = run([quiet(), threshold()], syntax, locale)
    assert human_duration(3 * 3600 + 20 * 60, locale) in digest


def test_the_webhook_annotations_carry_the_projection_and_the_expectation() -> None:
    with_projection = alert_payload(threshold(projected=412.0), "https://sentinel.example")
    assert with_projection.annotations["projected"] == "412.0"
    assert "projected" not in alert_payload(threshold(), "https://sentinel.example").annotations
    assert alert_payload(quiet(), "https://sentinel.example").annotations["expected"] == "9.4"
