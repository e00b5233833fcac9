"""`sentinel backtest`: replay a file of complaints through the configured rules, event time as clock.

The same `Engine.feed` as the daemon, in large batches: `advance` runs at every deadline and day
boundary that falls between records (never once per poll interval of a year of data). Output is one
JSON object per event; the summary (alerts per rule, tier and day, and alerts per day overall) tells
whether a rule would be too noisy before it is switched on.
"""

from __future__ import annotations

import json
import sys
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from sentinel.config import Config
from sentinel.days import Calendar, history_start_us
from sentinel.detect.base import RuleContext
from sentinel.detect.engine import Engine
from sentinel.model import Batch, Event, EventState, Vocab
from sentinel.sources.files import Block, FileReader


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
    alerts: list[dict[str, Any]] = field(default_factory=list)  # firing / upgraded events, for the plot
    vocab_values: dict[int, str] = field(default_factory=dict)  # codes of `daily`

    def days(self, cal: Calendar) -> int:
        if self.first_us is None or self.last_us is None:
            return 0
        return cal.day_of(self.last_us) - cal.day_of(self.first_us) + 1


def _blocks(reader: FileReader, progress: Any) -> Iterator[Block]:
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


def _id_before(a: Any, b: Any) -> bool:
    """`a` orders before `b` as `Batch.sorted` orders ids: as numbers when both are, else as text."""
    if isinstance(a, int | np.integer) and isinstance(b, int | np.integer):
        return int(a) < int(b)
    return str(a) < str(b)


def run(cfg: Config, input_path: str | Path, out: IO[str], *, encoding: str = "utf-8",
        progress: Any = None, keep_daily: bool = False) -> Result:
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
        slices = [Block(whole.slice(i, i + SORTED_SLICE), rejected if i == 0 else [], 0, 0)
                  for i in range(0, max(len(whole), 1), SORTED_SLICE)]
        lines = []
        result = _replay(cfg, cal, vocab, slices, lines, keep_daily)
        result.sorted_input = False
    out.writelines(lines)
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


def _replay(cfg: Config, cal: Calendar, vocab: Vocab, blocks: Any, lines: list[str], keep_daily: bool) -> Result:
    result = Result()
    ctx = RuleContext(cal, vocab, None)
    if cfg.history_start is not None:
        ctx.coverage_start_us = history_start_us(cfg.history_start, cal)
    engine = Engine(cfg.rules, ctx, cfg.timezone)
    last: int | None = None
    last_id: Any = None
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


def print_summary(result: Result, cfg: Config, stream: IO[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(file=stream, highlight=False)
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
    rejected = ", ".join(f"{k}={v}" for k, v in sorted(result.rejected.items())) or "none"
    console.print(f"records: {result.records:,} over {days} day(s); rejected: {rejected}; late: {result.late}; "
                  f"events: {result.events:,}; alerts per day overall: [bold]{per_day:.2f}[/bold]"
                  + ("" if result.sorted_input else " (input was not in time order: sorted first)"),
                  soft_wrap=True)  # one line, whatever the width: logs and scripts grep it


def progress_bar(total: int) -> tuple[Any, Any]:
    """A rich progress bar over bytes read, when stderr is a terminal."""
    if not sys.stderr.isatty():
        return None, None
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

    # on stderr, the terminal that was checked: stdout carries the events (rich's default console is
    # stdout, where the bar would vanish when stdout is redirected, or interleave with the events)
    prog = Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                    TimeRemainingColumn(), transient=True, console=Console(file=sys.stderr))
    task = prog.add_task("replaying", total=total)
    prog.start()

    def update(pos: int) -> None:
        prog.update(task, completed=pos)

    return prog, update
