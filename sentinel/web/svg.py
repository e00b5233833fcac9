"""A small inline SVG chart of a series' daily counts against its baseline and threshold (no script).

Pure: points in, markup out. Every string that reaches the markup (the title, dates) is escaped here,
and numbers are formatted by this module, so the result is safe to insert into an HTML page as is.
Native `<title>` tooltips give each bar its numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from markupsafe import Markup, escape

from sentinel.history import DayPoint
from sentinel.web.catalogue import Text

WIDTH, HEIGHT = 560, 168
LEFT, RIGHT, TOP, BOTTOM = 40, 8, 20, 20

BAR, BAR_OVER, BAR_TODAY = "#8aa4c8", "#d9534f", "#c9d6e8"
BASELINE, THRESHOLD, AXIS = "#555555", "#c0392b", "#999999"


def _num(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


def _step_path(values: Sequence[float | None], xs: Sequence[float], step: float, y: Callable[[float], float]) -> str:
    """A step line: flat across each day's slot, joined day to day, broken where a value is missing."""
    parts: list[str] = []
    drawing = False
    for v, x in zip(values, xs, strict=True):
        if v is None:
            drawing = False
            continue
        parts.append(f"{'L' if drawing else 'M'}{x:.1f},{y(v):.1f}H{x + step:.1f}")
        drawing = True
    return "".join(parts)


def daily_chart(
    points: Sequence[DayPoint], *, title: str, width: int = WIDTH, height: int = HEIGHT, text: Text | None = None
) -> Markup:
    """Bars of daily counts (today's lighter, days over their threshold red), the baseline as a dashed
    line and the threshold as a red line; words (legend, tooltips, "today") in `text`'s locale."""
    t = text or Text("en")
    if not points:
        return Markup("")
    top = (
        max(
            [
                1.0,
                *(float(p.count) for p in points),
                *(p.threshold for p in points if p.threshold is not None),
                *(p.baseline for p in points if p.baseline is not None),
            ]
        )
        * 1.1
    )
    plot_w, plot_h = width - LEFT - RIGHT, height - TOP - BOTTOM
    step = plot_w / len(points)
    xs = [LEFT + i * step for i in range(len(points))]

    def y(v: float) -> float:
        return TOP + plot_h * (1 - v / top)

    out = [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img">',
        f"<title>{escape(title)}</title>",
        f'<line x1="{LEFT}" y1="{y(0):.1f}" x2="{width - RIGHT}" y2="{y(0):.1f}" stroke="{AXIS}"/>',
        f'<text x="{LEFT - 4}" y="{y(0):.1f}" font-size="10" text-anchor="end" fill="#666">0</text>',
        f'<text x="{LEFT - 4}" y="{TOP + 4}" font-size="10" text-anchor="end" fill="#666">{_num(top / 1.1)}</text>',
    ]
    for p, x in zip(points, xs, strict=True):
        over = p.threshold is not None and p.count > p.threshold
        fill = BAR_OVER if over else BAR_TODAY if p.partial else BAR
        tip = f"{p.day.isoformat()}{t('chart.today_tip') if p.partial else ''}: {p.count}"
        if p.baseline is not None and p.threshold is not None:
            tip += t("chart.tip_lines", baseline=_num(p.baseline), threshold=_num(p.threshold))
        else:
            tip += t("chart.no_baseline")
        bar_h = y(0) - y(float(p.count))
        out.append(
            f'<rect x="{x + step * 0.15:.1f}" y="{y(float(p.count)):.1f}" width="{step * 0.7:.1f}" '
            f'height="{bar_h:.1f}" fill="{fill}"><title>{escape(tip)}</title></rect>'
        )
    baseline = _step_path([p.baseline for p in points], xs, step, y)
    threshold = _step_path([p.threshold for p in points], xs, step, y)
    if baseline:
        out.append(f'<path d="{baseline}" fill="none" stroke="{BASELINE}" stroke-width="1.5" stroke-dasharray="4 3"/>')
    if threshold:
        out.append(f'<path d="{threshold}" fill="none" stroke="{THRESHOLD}" stroke-width="1.5"/>')
    for i, (p, x) in enumerate(zip(points, xs, strict=True)):
        if (len(points) - 1 - i) % 3 == 0:  # every third day, counted back from the last
            label = t("chart.today") if p.partial else p.day.strftime("%m-%d")
            out.append(
                f'<text x="{x + step / 2:.1f}" y="{height - 6}" font-size="10" text-anchor="middle" '
                f'fill="#666">{escape(label)}</text>'
            )
    out.append(
        f'<g font-size="10" fill="#444"><rect x="{LEFT}" y="4" width="10" height="8" fill="{BAR}"/>'
        f'<text x="{LEFT + 14}" y="12">{escape(t("chart.count"))}</text>'
        f'<line x1="{LEFT + 90}" y1="8" x2="{LEFT + 110}" y2="8" stroke="{BASELINE}" '
        f'stroke-dasharray="4 3" stroke-width="1.5"/><text x="{LEFT + 114}" y="12">'
        f"{escape(t('chart.baseline'))}</text>"
        f'<line x1="{LEFT + 170}" y1="8" x2="{LEFT + 190}" y2="8" stroke="{THRESHOLD}" stroke-width="1.5"/>'
        f'<text x="{LEFT + 194}" y="12">{escape(t("chart.threshold"))}</text></g>'
    )
    out.append("</svg>")
    return Markup("".join(out))
