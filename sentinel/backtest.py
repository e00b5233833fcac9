"""`sentinel backtest`: replay a file of complaints through the configured rules, event time as clock.

The same `Engine.feed` as the daemon, in large batches: `advance` runs at every deadline and day
boundary that falls between records (never once per poll interval of a year of data). Output is one
JSON object per event; the summary (alerts per rule, tier and day, and alerts per day overall) tells
whether a rule would be too noisy before it is switched on, and the early-warning report how early it
would have warned: for each surge (a threshold alert), whether a streak (or `pace`) alert on the same
series came first within 24 h and by how long, and for each warning rule its precision (the share of
its alerts followed by a surge within 24 h). The output ends with that summary as one JSON line
(`{"summary": {...}}`), so scripts read the figures without parsing the table.
"""

from __future__ import annotations

import bisect
import json
import statistics
import sys
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

import numpy as np

from sentinel.config import Config, StreakRuleConfig, ThresholdRuleConfig
from sentinel.days import Calendar, history_start_us
from sentinel.detect import Engine, RuleContext, workdays_of
from sentinel.model import US, Batch, Event, EventState, JsonObject, Vocab, to_datetime
from sentinel.sources.files import Block, FileReader

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

Progressed = Callable[[int], None]
"""Told the bytes read so far, after each block (the progress bar's `update`)."""

WARNING_WINDOW_US = 24 * 3600 * US
"""How far ahead of a surge a warning still counts as an early warning of it (and a surge after a
warning as its confirmation)."""


@dataclass(frozen=True, slots=True)
class Opened:
    """An alert as it opened: what the early-warning report pairs up."""

    rule: str
    at: int
    labels: tuple[tuple[str, str], ...]
    tier: str
    value: float


@dataclass
class Result:
    events: int = 0
    records: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    late: int = 0
    first_us: int | None = None
    last_us: int | None = None
    fired: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # (rule, tier, day) -> firing
    sorted_input: bool = True
    daily: dict[tuple[int, int, int], int] = field(default_factory=dict)  # (day, type, channel) -> n
    # firing / upgraded events as `Event.to_json` writes them, for the plot (which indexes them by key)
    alerts: list[JsonObject] = field(default_factory=list)
    opened: list[Opened] = field(default_factory=list)  # firing events, for the early-warning report
    vocab_values: dict[int, str] = field(default_factory=dict)  # codes of `daily`

    def days(self, cal: Calendar) -> int:
        if self.first_us is None or self.last_us is None:
            return 0
        return cal.day_of(self.last_us) - cal.day_of(self.first_us) + 1


def _blocks(reader: FileReader, progress: Progressed | None) -> Iterator[Block]:
    for block in reader:
        if progress is not None:
            progress(block.bytes_read)
        yield block


def _is_sorted(batch: Batch, after: int | None) -> bool:
    if len(batch) == 0:
        return True
    if after is not None and int(batch.ts[0]) < after:
        return False
    return bool(np.all(np.diff(batch.ts) >= 0))


def _id_before(a: object, b: object) -> bool:
    """`a` orders before `b` as `Batch.sorted` orders ids: as numbers when both are, else as text."""
    if isinstance(a, int | np.integer) and isinstance(b, int | np.integer):
        return int(a) < int(b)
    return str(a) < str(b)


def run(
    cfg: Config,
    input_path: str | Path,
    out: IO[str],
    *,
    encoding: str = "utf-8",
    progress: Progressed | None = None,
    keep_daily: bool = False,
) -> Result:
    """Replay `input_path`; events go to `out` as JSON lines (written once the replay is complete)."""
    _lean_arrow_memory()
    cal = Calendar(cfg.tz)
    id_type = cfg.source.id_type if cfg.source is not None else "auto"
    vocab = Vocab()
    lines: list[str] = []
    reader = FileReader(input_path, vocab, cfg.source_tz, encoding, id_type)
    result = _replay(cfg, cal, vocab, _blocks(reader, progress), lines, keep_daily)
    if not result.sorted_input:
        # Not in time order: read it whole, sort, and replay from the start in large slices.
        vocab = Vocab()
        reader = FileReader(input_path, vocab, cfg.source_tz, encoding, id_type)
        blocks = list(_blocks(reader, progress))
        whole = Batch.concat([b.batch for b in blocks]).sorted()
        rejected = [r for b in blocks for r in b.rejected]
        slices = [
            Block(whole.slice(i, i + SORTED_SLICE), rejected if i == 0 else [], 0, 0)
            for i in range(0, max(len(whole), 1), SORTED_SLICE)
        ]
        lines = []
        result = _replay(cfg, cal, vocab, slices, lines, keep_daily)
        result.sorted_input = False
    out.writelines(lines)
    out.write(json.dumps({"summary": summary_json(result, cfg)}, ensure_ascii=False) + "\n")
    return result


SORTED_SLICE = 262_144


def _lean_arrow_memory() -> None:
    """pyarrow's default allocator keeps freed blocks; jemalloc (or the system's) hands them back, which
    keeps a year-long replay's peak memory near its steady state."""
    import pyarrow as pa

    try:
        pa.set_memory_pool(pa.jemalloc_memory_pool())
    except (NotImplementedError, pa.ArrowNotImplementedError):
        pa.set_memory_pool(pa.system_memory_pool())


class _Unsorted(Exception):
    pass


def _replay(
    cfg: Config, cal: Calendar, vocab: Vocab, blocks: Iterable[Block], lines: list[str], keep_daily: bool
) -> Result:
    result = Result()
    ctx = RuleContext(cal, vocab, None, workdays_of(cfg))
    if cfg.history_start is not None:
        ctx.coverage_start_us = history_start_us(cfg.history_start, cal)
    engine = Engine(cfg.rules, ctx, cfg.timezone)
    last: int | None = None
    last_id: object = None
    try:
        for block in blocks:
            result.rejected.update(r.reason for r in block.rejected)
            batch = block.batch
            if len(batch) == 0:
                continue
            if not _is_sorted(batch, last):
                raise _Unsorted
            batch = batch.sorted()  # ties in created_at ordered by id
            if int(batch.ts[0]) == last and _id_before(batch.ids[0], last_id):
                raise _Unsorted  # a tie split across blocks, not in id order: (created_at, id) needs a sort
            last_id = batch.ids[-1]
            if ctx.coverage_start_us is None:
                ctx.coverage_start_us = int(batch.ts[0])
            result.records += len(batch)
            result.first_us = int(batch.ts[0]) if result.first_us is None else result.first_us
            last = result.last_us = int(batch.ts[-1])
            if keep_daily:
                _count_daily(result, batch, cal)
            _emit(engine.feed(batch, last), lines, cfg, cal, result)
    except _Unsorted:
        result.sorted_input = False
        return result
    result.late = engine.late_records()
    if keep_daily:
        result.vocab_values = dict(enumerate(vocab.values))
    return result


def _emit(events: list[Event], lines: list[str], cfg: Config, cal: Calendar, result: Result) -> None:
    tz = cfg.tz
    for ev in events:
        d = ev.to_json(tz)
        lines.append(json.dumps(d, ensure_ascii=False) + "\n")
        result.events += 1
        if ev.state != EventState.RESOLVED:
            result.alerts.append(d)
        if ev.state == EventState.FIRING:
            result.opened.append(Opened(ev.rule, ev.at, tuple(sorted(ev.labels.items())), ev.tier.label, ev.value))
            result.fired[(ev.rule, ev.tier.label, cal.date_of(cal.day_of(ev.at)).isoformat())] += 1


def _count_daily(result: Result, batch: Batch, cal: Calendar) -> None:
    days = cal.days_of(batch.ts)
    key = days * (1 << 42) + batch.type.astype(np.int64) * (1 << 21) + batch.channel.astype(np.int64)
    uniq, counts = np.unique(key, return_counts=True)
    for k, n in zip(uniq.tolist(), counts.tolist(), strict=True):
        d, rest = divmod(k, 1 << 42)
        t, c = divmod(rest, 1 << 21)
        result.daily[(d, t, c)] = result.daily.get((d, t, c), 0) + n


def summary_rows(result: Result, cfg: Config) -> tuple[list[tuple[str, str, str, int]], float]:
    """(rule, tier, day, alerts) rows and the overall alerts per day."""
    rows = sorted(((r, t, d, n) for (r, t, d), n in result.fired.items()), key=lambda x: (x[2], x[0], x[1]))
    days = max(1, result.days(Calendar(cfg.tz)))
    return rows, sum(result.fired.values()) / days


@dataclass(frozen=True, slots=True)
class Warned:
    """One surge and the earliest warning of it, if any came within the window."""

    surge: Opened
    warning: Opened | None

    @property
    def lead_us(self) -> int | None:
        return None if self.warning is None else self.surge.at - self.warning.at


@dataclass(frozen=True, slots=True)
class Precision:
    rule: str
    alerts: int
    followed: int

    @property
    def share(self) -> float | None:
        return self.followed / self.alerts if self.alerts else None


@dataclass(frozen=True, slots=True)
class EarlyWarning:
    surge_rules: list[str]
    warning_rules: list[str]
    surges: list[Warned]
    precision: list[Precision]


def roles(cfg: Config) -> tuple[list[str], list[str]]:
    """(surge rules, warning rules): threshold rules in `day` or `rolling` mode are the surges; streak
    rules warn, and so do `pace` rules when there is another threshold rule to confirm them."""
    thresholds = [r for r in cfg.rules if isinstance(r, ThresholdRuleConfig)]
    surges = [r.name for r in thresholds if r.mode != "pace"] or [r.name for r in thresholds]
    warnings = [r.name for r in cfg.rules if isinstance(r, StreakRuleConfig)]
    warnings += [r.name for r in thresholds if r.name not in surges]
    return surges, warnings


def _related(a: Opened, b: Opened) -> bool:
    """Alerts about the same series: they share a label (type, channel) and agree on every shared one."""
    da, db = dict(a.labels), dict(b.labels)
    shared = da.keys() & db.keys()
    return bool(shared) and all(da[k] == db[k] for k in shared)


class _ByLabel:
    """Alerts indexed by each (label, value) they carry, in time order, for window look-ups."""

    def __init__(self, alerts: list[Opened]) -> None:
        self.index: dict[tuple[str, str], list[Opened]] = defaultdict(list)
        for a in sorted(alerts, key=lambda x: (x.at, x.rule)):
            for item in a.labels:
                self.index[item].append(a)
        self.times = {k: [a.at for a in v] for k, v in self.index.items()}

    def between(self, like: Opened, lo: int, hi: int) -> list[Opened]:
        """Related alerts with lo <= at <= hi, earliest first."""
        found: dict[int, Opened] = {}
        for item in like.labels:
            alerts, times = self.index.get(item, []), self.times.get(item, [])
            for a in alerts[bisect.bisect_left(times, lo) : bisect.bisect_right(times, hi)]:
                if _related(like, a):
                    found[id(a)] = a
        return sorted(found.values(), key=lambda x: (x.at, x.rule))


def early_warning(result: Result, cfg: Config) -> EarlyWarning:
    surge_rules, warning_rules = roles(cfg)
    surges = [a for a in result.opened if a.rule in surge_rules]
    warnings = [a for a in result.opened if a.rule in warning_rules]
    by_warning, by_surge = _ByLabel(warnings), _ByLabel(surges)
    warned = []
    for s in sorted(surges, key=lambda x: (x.at, x.rule)):
        first = by_warning.between(s, s.at - WARNING_WINDOW_US, s.at)
        warned.append(Warned(s, first[0] if first else None))
    precision = []
    for rule in warning_rules:
        mine = [w for w in warnings if w.rule == rule]
        followed = sum(1 for w in mine if by_surge.between(w, w.at, w.at + WARNING_WINDOW_US))
        precision.append(Precision(rule, len(mine), followed))
    return EarlyWarning(surge_rules, warning_rules, warned, precision)


def _lead(us: int | None) -> str:
    if us is None:
        return "-"
    minutes = us // (60 * US)
    return f"{minutes // 60}:{minutes % 60:02d}"


def summary_json(result: Result, cfg: Config) -> JsonObject:
    """The summary as data: alerts per rule, and the early-warning report."""
    cal = Calendar(cfg.tz)
    days = max(1, result.days(cal))
    per_rule: dict[str, Counter[str]] = defaultdict(Counter)
    for (rule, tier, _), n in result.fired.items():
        per_rule[rule][tier] += n
    ew = early_warning(result, cfg)

    def when(us: int) -> str:
        return to_datetime(us, cfg.tz).isoformat()

    warned = [w for w in ew.surges if w.warning is not None]
    leads = [w.lead_us // US for w in warned if w.lead_us is not None]
    return {
        "records": result.records,
        "days": days,
        "events": result.events,
        "alerts_per_day": round(sum(result.fired.values()) / days, 4),
        "rules": {
            r.name: {
                "light": per_rule[r.name]["light"],
                "moderate": per_rule[r.name]["moderate"],
                "severe": per_rule[r.name]["severe"],
                "alerts": sum(per_rule[r.name].values()),
                "per_day": round(sum(per_rule[r.name].values()) / days, 4),
            }
            for r in cfg.rules
        },
        "early_warning": {
            "window_s": WARNING_WINDOW_US // US,
            "surge_rules": [*ew.surge_rules],
            "warning_rules": [*ew.warning_rules],
            "surges": len(ew.surges),
            "warned": len(warned),
            "median_lead_s": int(statistics.median(leads)) if leads else None,
            "alerts": [
                {
                    "at": when(w.surge.at),
                    "rule": w.surge.rule,
                    "labels": dict(w.surge.labels),
                    "tier": w.surge.tier,
                    "value": w.surge.value,
                    "warned_by": None if w.warning is None else w.warning.rule,
                    "warned_at": None if w.warning is None else when(w.warning.at),
                    "lead_s": None if w.lead_us is None else w.lead_us // US,
                }
                for w in ew.surges
            ],
            "precision": {
                p.rule: {
                    "alerts": p.alerts,
                    "followed": p.followed,
                    "precision": None if p.share is None else round(p.share, 4),
                }
                for p in ew.precision
            },
        },
    }


def print_early_warning(result: Result, cfg: Config, console: Console) -> None:
    from rich.table import Table

    ew = early_warning(result, cfg)
    if not ew.surge_rules or not ew.warning_rules:
        return
    cal = Calendar(cfg.tz)
    table = Table(title="Early warning: did a warning come first (within 24 h)?")
    several = len(ew.surge_rules) > 1
    cols = ["surge at", *(["rule"] if several else []), "series", "tier", "value", "warned by", "lead"]
    for col in cols:
        table.add_column(
            col, justify="right" if col in ("value", "lead") else "left", no_wrap=col in ("surge at", "lead")
        )
    for w in ew.surges:
        at = to_datetime(w.surge.at, cfg.tz)
        table.add_row(
            at.strftime("%Y-%m-%d %H:%M"),
            *([w.surge.rule] if several else []),
            ", ".join(v for _, v in w.surge.labels) or "(total)",
            w.surge.tier,
            f"{w.surge.value:g}",
            "-" if w.warning is None else w.warning.rule,
            _lead(w.lead_us),
        )
    console.print(table)
    prec = Table(title="Warning rules: alerts followed by a surge of the same series within 24 h")
    for col in ("rule", "alerts", "followed", "precision", "per day"):
        prec.add_column(col, justify="left" if col == "rule" else "right")
    days = max(1, result.days(cal))
    for p in ew.precision:
        prec.add_row(
            p.rule,
            str(p.alerts),
            str(p.followed),
            "-" if p.share is None else f"{p.share:.0%}",
            f"{p.alerts / days:.2f}",
        )
    console.print(prec)
    warned = [w for w in ew.surges if w.warning is not None]
    leads = [w.lead_us for w in warned if w.lead_us is not None]
    median = _lead(int(statistics.median(leads))) if leads else "-"
    console.print(
        f"surges warned first: {len(warned)} of {len(ew.surges)}; median lead {median} (h:mm)", soft_wrap=True
    )


def print_summary(result: Result, cfg: Config, stream: IO[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(file=stream, highlight=False)
    if not console.is_terminal:
        console.width = max(console.width, 120)  # a file or a pipe: the early-warning table needs room
    rows, per_day = summary_rows(result, cfg)
    table = Table(title="Alerts opened per rule, tier and day")
    for col in ("day", "rule", "tier", "alerts"):
        table.add_column(col, justify="right" if col == "alerts" else "left")
    for rule, tier, day, n in rows:
        table.add_row(day, rule, tier, str(n))
    console.print(table)
    per_rule: dict[str, Counter[str]] = defaultdict(Counter)
    for (rule, tier, _), n in result.fired.items():
        per_rule[rule][tier] += n
    totals = Table(title="Totals per rule")
    for col in ("rule", "light", "moderate", "severe", "per day"):
        totals.add_column(col, justify="left" if col == "rule" else "right")
    days = max(1, result.days(Calendar(cfg.tz)))
    for rule in [r.name for r in cfg.rules]:
        c = per_rule.get(rule, Counter())
        totals.add_row(rule, str(c["light"]), str(c["moderate"]), str(c["severe"]), f"{sum(c.values()) / days:.2f}")
    console.print(totals)
    print_early_warning(result, cfg, console)
    rejected = ", ".join(f"{k}={v}" for k, v in sorted(result.rejected.items())) or "none"
    console.print(
        f"records: {result.records:,} over {days} day(s); rejected: {rejected}; late: {result.late}; "
        f"events: {result.events:,}; alerts per day overall: [bold]{per_day:.2f}[/bold]"
        + ("" if result.sorted_input else " (input was not in time order: sorted first)"),
        soft_wrap=True,
    )  # one line, whatever the width: logs and scripts grep it


def progress_bar(total: int) -> tuple[Progress | None, Progressed | None]:
    """A rich progress bar over bytes read, when stderr is a terminal."""
    if not sys.stderr.isatty():
        return None, None
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

    # on stderr, the terminal that was checked: stdout carries the events (rich's default console is
    # stdout, where the bar would vanish when stdout is redirected, or interleave with the events)
    prog = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        transient=True,
        console=Console(file=sys.stderr),
    )
    task = prog.add_task("replaying", total=total)
    prog.start()

    def update(pos: int) -> None:
        prog.update(task, completed=pos)

    return prog, update
