"""`sentinel backtest --plot`: each alerted series' daily counts against its baseline and threshold,
with the alerts marked. Needs the optional `plot` extra (matplotlib)."""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import date
from pathlib import Path
from typing import Any

from sentinel.backtest import Result
from sentinel.config import Config, ThresholdRuleConfig, exact

MAX_PANELS = 12
CJK_FONTS = ["Noto Sans CJK SC", "Noto Sans SC", "WenQuanYi Zen Hei", "Source Han Sans SC", "Microsoft YaHei",
             "SimHei", "PingFang SC"]


def _series_daily(result: Result, cfg: Config, rule: ThresholdRuleConfig, labels: dict[str, str],
                  vocab_values: dict[int, str]) -> dict[int, int]:
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


def plot_backtest(result: Result, cfg: Config, path: str | Path) -> int:
    """Writes the PNG; returns how many series were drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)  # a missing fallback font is fine
    # type names are Chinese: prefer a CJK font when one is installed (fonts-noto-cjk, fonts-wqy-zenhei …)
    rc = getattr(matplotlib, "rcParams", None)
    if rc is not None:
        rc["font.sans-serif"] = [*CJK_FONTS, *rc["font.sans-serif"]]

    rules = {r.name: r for r in cfg.rules if isinstance(r, ThresholdRuleConfig)}
    alerted: dict[tuple[str, tuple[tuple[str, str], ...]], list[dict[str, Any]]] = defaultdict(list)
    for a in result.alerts:
        if a["rule"] in rules:
            alerted[(a["rule"], tuple(sorted(a["labels"].items())))].append(a)
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
        for i, _ in enumerate(xs):
            window = counts[max(0, i - rule.baseline_days):i]
            b = sum(window) / len(window) if window else float("nan")
            base.append(b)
            thr.append(max(float(exact(rule.factor)) * b, rule.min_count) if window else float("nan"))
        dates = [date.fromordinal(d) for d in xs]
        ax.bar(dates, counts, color="#9ecae1", label="daily count")
        ax.plot(dates, base, color="#3182bd", label="baseline")
        ax.plot(dates, thr, color="#e6550d", linestyle="--", label="threshold")
        for a in alerted[key]:
            d = date.fromisoformat(a["at"][:10])
            ax.axvline(d, color={"light": "#fdae6b", "moderate": "#e6550d", "severe": "#a50f15"}[a["tier"]],
                       alpha=0.6)
        ax.set_title(f"{key[0]} {' '.join(f'{k}={v}' for k, v in key[1])}", fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return len(keys)
