"""The inline SVG chart: well-formed, escaped, bars and step lines where the data says."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import date, timedelta

from sentinel.history import DayPoint
from sentinel.web import svg

NS = "{http://www.w3.org/2000/svg}"
D0 = date(2025, 7, 1)


def pts(counts: list[int], baselines: list[float | None]) -> list[DayPoint]:
    return [
        DayPoint(D0 + timedelta(days=i), c, b, None if b is None else max(1.5 * b, 10.0), i == len(counts) - 1)
        for i, (c, b) in enumerate(zip(counts, baselines, strict=True))
    ]


def test_empty_is_nothing() -> None:
    assert svg.daily_chart([], title="x") == ""


def test_well_formed_and_escaped() -> None:
    hostile = '"><img src=x onerror=alert(1)> & <script>alert(1)</script>'
    out = str(svg.daily_chart(pts([1, 2, 3], [None, 2.0, 2.0]), title=hostile))
    assert "<img" not in out and "<script" not in out
    root = ET.fromstring(out)  # parses as XML: nothing broke out of an attribute or an element
    assert root.tag == NS + "svg"
    assert root.find(NS + "title") is not None and root.find(NS + "title").text == hostile  # type: ignore[union-attr]


def test_bars_colours_and_tooltips() -> None:
    out = str(svg.daily_chart(pts([8, 12, 40], [None, 8.0, 8.0]), title="t"))
    root = ET.fromstring(out)
    bars = [r for r in root.iter(NS + "rect") if r.find(NS + "title") is not None]
    assert [r.get("fill") for r in bars] == [svg.BAR, svg.BAR, svg.BAR_OVER]  # 12 <= 12; 40 > 12
    tips = [r.find(NS + "title").text for r in bars]  # type: ignore[union-attr]
    assert tips == [
        "2025-07-01: 8, no baseline yet",
        "2025-07-02: 12, baseline 8, threshold 12",
        "2025-07-03 (today so far): 40, baseline 8, threshold 12",
    ]
    heights = [float(r.get("height", "0")) for r in bars]
    assert heights[2] > heights[1] > heights[0] > 0


def test_today_below_threshold_is_drawn_lighter() -> None:
    root = ET.fromstring(str(svg.daily_chart(pts([5, 5], [5.0, 5.0]), title="t")))
    bars = [r for r in root.iter(NS + "rect") if r.find(NS + "title") is not None]
    assert [r.get("fill") for r in bars] == [svg.BAR, svg.BAR_TODAY]


def test_lines_break_where_there_is_no_baseline() -> None:
    root = ET.fromstring(str(svg.daily_chart(pts([1, 1, 1, 1, 1], [2.0, None, 3.0, 3.0, None]), title="t")))
    paths = list(root.iter(NS + "path"))
    assert len(paths) == 2
    for p in paths:
        d = p.get("d", "")
        assert d.count("M") == 2 and d.count("L") == 1 and d.count("H") == 3


def test_no_lines_without_any_baseline() -> None:
    root = ET.fromstring(str(svg.daily_chart(pts([3, 4], [None, None]), title="t")))
    assert not list(root.iter(NS + "path"))
