"""`sentinel backtest --plot`: each alerted series' daily counts against its baseline and threshold,
with the alerts marked: the surge's own alerts by tier, and the warnings on the same series (streak
alerts, `pace` alerts next to a day-mode rule) that the early-warning report pairs with it, each kind
once in the legend. Needs the optional `plot` extra (matplotlib).

Type names are Chinese, and matplotlib's own DejaVu Sans has no hanzi: a title drawn with it shows
`type=□□□□` and logs one "Glyph … missing" warning per character. So the plot draws with a font
chain — DejaVu Sans for Latin, then the subset of Noto Sans SC shipped in `sentinel/fonts/`
(registered with the font manager at plot time; see its README), then any other CJK font the machine
has, for characters outside the subset — set for the plot only, not for the rest of the process.

Its words (titles, legend, axis labels, tier and rule-kind names) follow `locale`, from the catalogue the
status page and its charts use (`sentinel.web.catalogue`), so the same thing has the same name in each."""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from types import ModuleType

from sentinel.backtest import Result, roles
from sentinel.config import Config, ThresholdRuleConfig, exact
from sentinel.days import Calendar
from sentinel.detect import RuleContext, ThresholdRule, workdays_of
from sentinel.model import JsonObject, Vocab
from sentinel.web.catalogue import Text

MAX_PANELS = 12
TIER_COLOURS = {"light": "#fdae6b", "moderate": "#e6550d", "severe": "#a50f15"}
WARNING_COLOUR = "#31a354"
CJK_FONTS = [
    "Noto Sans CJK SC",
    "Noto Sans SC",
    "WenQuanYi Zen Hei",
    "Source Han Sans SC",
    "Microsoft YaHei",
    "SimHei",
    "PingFang SC",
]
FONT_FILE = Path(__file__).parent / "fonts" / "NotoSansSC-Regular-GB2312.ttf"
FONT_FAMILY = "Sentinel Noto Sans SC"
LATIN_FONT = "DejaVu Sans"  # matplotlib's own, always there


def font_families() -> list[str]:
    """The `font.family` that makes matplotlib draw Chinese: registers the shipped font (once per
    process) and returns a chain of fonts that exist here, so matplotlib falls back glyph by glyph and
    never asks for a family it cannot find (which would log a warning of its own)."""
    from matplotlib import font_manager

    manager = font_manager.fontManager
    installed = {f.name for f in manager.ttflist}
    if FONT_FAMILY not in installed:
        manager.addfont(str(FONT_FILE))
    others = [name for name in CJK_FONTS if name in installed]
    return [LATIN_FONT, FONT_FAMILY, *others]


def _series_daily(
    result: Result, cfg: Config, rule: ThresholdRuleConfig, labels: dict[str, str], vocab_values: dict[int, str]
) -> dict[int, int]:
    out: dict[int, int] = defaultdict(int)
    for (day, t, c), n in result.daily.items():
        vals = {"type": vocab_values.get(t, ""), "channel": vocab_values.get(c, "")}
        if all(vals[g] == labels.get(g) for g in rule.group_by):
            if rule.where.type and vals["type"] not in rule.where.type:
                continue
            if rule.where_not.type and vals["type"] in rule.where_not.type:
                continue
            if rule.where.channel and vals["channel"] not in rule.where.channel:
                continue
            if rule.where_not.channel and vals["channel"] in rule.where_not.channel:
                continue
            out[day] += n
    return out


def _once(named: set[str], label: str) -> str:
    """A legend entry for the first mark of each kind only."""
    if label in named:
        return "_nolegend_"
    named.add(label)
    return label


@dataclass(frozen=True, slots=True)
class _Mark:
    """An alert event of the backtest as the plot marks it (read from its `Event.to_json`)."""

    rule: str
    kind: str
    state: str
    tier: str
    labels: dict[str, str]
    day: date


def _mark(a: JsonObject) -> _Mark:
    labels = a["labels"]
    if not isinstance(labels, dict):
        raise TypeError(f"labels: expected an object, got {type(labels).__name__}")
    return _Mark(
        str(a["rule"]),
        str(a["kind"]),
        str(a["state"]),
        str(a["tier"]),
        {k: str(v) for k, v in labels.items()},
        date.fromisoformat(str(a["at"])[:10]),
    )


def _related(a: dict[str, str], b: dict[str, str]) -> bool:
    shared = a.keys() & b.keys()
    return bool(shared) and all(a[k] == b[k] for k in shared)


def plot_backtest(result: Result, cfg: Config, path: str | Path) -> int:
    """Writes the PNG; returns how many series were drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with matplotlib.rc_context({"font.family": font_families()}):
        return _draw(plt, result, cfg, path)


def series_title(t: Text, rule: str, labels: tuple[tuple[str, str], ...]) -> str:
    """`type-surge 类型=物流配送延误` (en: `type=…`): the rule, then the series' labels by their names in the
    locale; a series over all complaints (`group_by = []`) says so."""
    series = " ".join(t("plot.label", name=t.get("label." + k, k), value=v) for k, v in labels)
    return t("plot.title", rule=rule, series=series or t("plot.all"))


def _draw(plt: ModuleType, result: Result, cfg: Config, path: str | Path) -> int:  # matplotlib.pyplot
    t = Text(cfg.locale)
    rules = {r.name: r for r in cfg.rules if isinstance(r, ThresholdRuleConfig)}
    surge_rules, warning_rules = roles(cfg)
    marks = [_mark(a) for a in result.alerts]
    alerted: dict[tuple[str, tuple[tuple[str, str], ...]], list[_Mark]] = defaultdict(list)
    for a in marks:
        if a.rule in rules and (a.rule in surge_rules or not warning_rules):
            alerted[(a.rule, tuple(sorted(a.labels.items())))].append(a)
    warnings = [a for a in marks if a.rule in warning_rules and a.state == "firing"]
    cal = Calendar(cfg.tz)
    ctx = RuleContext(cal, Vocab(), None, workdays_of(cfg))
    keys = sorted(alerted, key=lambda k: -len(alerted[k]))[:MAX_PANELS]
    n = max(1, len(keys))
    fig, axes = plt.subplots(n, 1, figsize=(11, 2.8 * n), squeeze=False)
    vocab_values = result.vocab_values
    # every series over the input's whole span: a type first seen mid-stream had zero complaints on the
    # earlier days, and its baseline is built from them (design: "Records, time and history")
    input_days = [d for d, _, _ in result.daily]
    for ax, key in zip(axes[:, 0], keys, strict=False):
        rule = rules[key[0]]
        labels = dict(key[1])
        daily = _series_daily(result, cfg, rule, labels, vocab_values)
        if not daily:
            continue
        first, last = min(input_days), max(input_days)
        xs = list(range(first, last + 1))
        counts = [daily.get(d, 0) for d in xs]
        base, thr = [], []
        engine_rule = ThresholdRule(rule, ctx)  # its choice of baseline days (baseline_by)
        for i, d in enumerate(xs):
            window = [daily.get(x, 0) for x in engine_rule.baseline_days_of(d, i)]
            if window:
                b = statistics.median(window) if rule.baseline == "median" else sum(window) / len(window)
            else:
                b = float("nan")
            base.append(b)
            thr.append(max(float(exact(rule.factor)) * b, rule.min_count) if window else float("nan"))
        dates = [date.fromordinal(d) for d in xs]
        ax.bar(dates, counts, color="#9ecae1", label=t("chart.count"))
        ax.plot(dates, base, color="#3182bd", label=t("chart.baseline"))
        ax.plot(dates, thr, color="#e6550d", linestyle="--", label=t("chart.threshold"))
        named: set[str] = set()
        for a in alerted[key]:
            tier = t.get("tier." + a.tier, a.tier)
            ax.axvline(
                a.day,
                color=TIER_COLOURS[a.tier],
                alpha=0.6,
                label=_once(named, t("plot.alert", rule=key[0], tier=tier)),
            )
        for w in warnings:
            if _related(labels, w.labels):
                kind = t.get("kind." + w.kind, w.kind)
                ax.axvline(
                    w.day,
                    color=WARNING_COLOUR,
                    linestyle=":",
                    alpha=0.9,
                    label=_once(named, t("plot.warning", rule=w.rule, kind=kind)),
                )
        ax.set_title(series_title(t, key[0], key[1]), fontsize=9)
        ax.set_ylabel(t("plot.ylabel"), fontsize=8)
        ax.legend(fontsize=7, loc="upper left")
    axes[-1, 0].set_xlabel(t("plot.xlabel", tz=cfg.timezone), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return len(keys)
