"""`sentinel bench engine` (also plain `sentinel bench`): the engine's figures, printed (never asserted).

Generates 2,000,000 complaints over 30 days (5 main types x 4 channels plus 1,000 rare types) and
reports: records per second through the rules; the full backtest against merely parsing the same file
with Python's `csv` module (goal: at most 1.5 x), also with a quiet rule per channel added; one live
evaluation cycle over 10,000 series (goal: under 50 ms); the backtest's peak RSS in a fresh process (goal:
under 150 MB).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

from sentinel.config import Config, load_config
from sentinel.days import Calendar
from sentinel.detect import Engine, RuleContext
from sentinel.detect.threshold import ThresholdState
from sentinel.model import US, Batch, Vocab, from_datetime
from sentinel.simulate import CHANNELS, generate

TZ = ZoneInfo("Asia/Shanghai")
START = date(2025, 6, 1)

BENCH_RULES = """
timezone = "Asia/Shanghai"

[[rules]]
name = "type-surge"
kind = "threshold"
group_by = ["type"]
max_p = 1e-4
tiers = { moderate = 2.0, severe = 3.0 }

[[rules]]
name = "type-channel-surge"
kind = "threshold"
group_by = ["type", "channel"]

[[rules]]
name = "same-type-streak"
kind = "streak"
length = 5
distinct = "customer"
max_expected_per_day = 1.0
"""


QUIET_RULE = """
[[rules]]
name = "channel-quiet"
kind = "quiet"
group_by = ["channel"]
"""
"""A quiet rule per channel, timed as a second backtest next to the design's rules."""


def write_input(path: Path, records: int, days: int, rare_types: int, seed: int = 1) -> int:
    """The benchmark's CSV (written with pyarrow: generating it is not what is measured)."""
    import pyarrow as pa  # here, not at the top: the CLI imports every benchmark to list its options
    import pyarrow.csv as pcsv

    stream = generate(
        START, days, records / days, TZ, seed=seed, rare_types=rare_types, rare_share=0.05, customers=200_000
    )
    offset = 8 * 3600 * US  # Asia/Shanghai has no DST
    local = (stream.ts + offset).astype("datetime64[us]")
    text = np.char.add(np.datetime_as_string(local, unit="us"), "+08:00")
    types = np.asarray(stream.types, dtype=object)[stream.type]
    table = pa.table(
        {
            "id": stream.ids,
            "created_at": text,
            "type": types,
            "channel": np.asarray(CHANNELS, dtype=object)[stream.channel],
            "customer": np.char.add("C", stream.customer.astype(str)),
        }
    )
    pcsv.write_csv(table, path)
    return len(stream)


def time_csv_parse(path: Path) -> tuple[float, int]:
    t = time.perf_counter()
    n = 0
    with open(path, newline="", encoding="utf-8") as f:
        for _ in csv.reader(f):
            n += 1
    return time.perf_counter() - t, n - 1


def time_backtest(cfg: Config, path: Path) -> tuple[float, int]:
    from sentinel.backtest import run

    out = io.StringIO()
    t = time.perf_counter()
    result = run(cfg, path, out)
    return time.perf_counter() - t, result.events


def time_rules(cfg: Config, path: Path) -> tuple[float, int, int]:
    """Records per second through the rules alone: the file parsed first, then fed in large batches."""
    from sentinel.sources.files import FileReader

    vocab = Vocab()
    batches = [b.batch for b in FileReader(path, vocab, TZ)]
    ctx = RuleContext(Calendar(TZ), vocab, int(batches[0].ts[0]))
    engine = Engine(cfg.rules, ctx, cfg.timezone)
    n = sum(len(b) for b in batches)
    t = time.perf_counter()
    events = 0
    for b in batches:
        events += len(engine.feed(b, int(b.ts[-1])))
    return time.perf_counter() - t, n, events


def time_live_cycle(series: int = 10_000, history_days: int = 8) -> dict[str, float]:
    """One daemon cycle's detection work with 10,000 live series: a poll's new records fed as the daemon
    does (settled up to a horizon 5 minutes behind, the newer ones run ahead on a fork of the state: fire
    on sight), and the rule snapshots serialised (what the poll transaction writes)."""
    from sentinel.store.codecs import batch_to_json, dumps

    cfg = load_config_text(BENCH_RULES)
    vocab = Vocab()
    cal = Calendar(TZ)
    n_types = series // len(CHANNELS)
    rng = np.random.default_rng(5)
    day0 = from_datetime(__import__("datetime").datetime(2025, 6, 1, tzinfo=TZ))
    per_day = series * 3
    ts = np.sort(day0 + rng.integers(0, history_days * 86400 * US, size=per_day * history_days))
    types = vocab.encode([f"类型-{i:05d}" for i in range(n_types)])
    chans = vocab.encode(list(CHANNELS))
    batch = Batch(
        np.arange(len(ts), dtype=np.int64),
        ts.astype(np.int64),
        types[rng.integers(0, n_types, size=len(ts))],
        chans[rng.integers(0, 4, size=len(ts))],
    )
    ctx = RuleContext(cal, vocab, day0)
    engine = Engine(cfg.rules, ctx, cfg.timezone)
    engine.feed(batch, int(ts[-1]))
    surge = engine.states["type-channel-surge"]
    assert isinstance(surge, ThresholdState)
    live_series = len(surge.series)
    timings = []
    now = int(ts[-1])
    for k in range(30):
        new_ts = np.sort(now + rng.integers(1, 2 * US, size=50))
        poll = Batch(
            np.arange(10**8 + k * 50, 10**8 + (k + 1) * 50, dtype=np.int64),
            new_ts.astype(np.int64),
            types[rng.integers(0, n_types, size=50)],
            chans[rng.integers(0, 4, size=50)],
        )
        t = time.perf_counter()
        engine.feed_live(poll, int(new_ts[-1]) - 300 * US)
        for rule in engine.rules:
            snap = engine.snapshot(rule)
            dumps(snap.core)
            dumps(batch_to_json(snap.pending, vocab))
        timings.append(time.perf_counter() - t)
        now = int(new_ts[-1])
    return {
        "series": float(live_series),
        "median_ms": float(np.median(timings) * 1000),
        "p95_ms": float(np.percentile(timings, 95) * 1000),
    }


def load_config_text(text: str) -> Config:
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False, encoding="utf-8") as f:
        f.write(text)
        name = f.name
    try:
        return load_config(name)
    finally:
        os.unlink(name)


def peak_rss_of_backtest(config_path: Path, path: Path) -> tuple[float, float]:
    """(seconds, peak RSS MB) of `sentinel backtest` in a fresh process."""
    # VmHWM, not ru_maxrss: Linux keeps ru_maxrss across fork+exec, so a child would report its parent's peak.
    code = (
        "import sys, time\n"
        "from sentinel.cli import main\n"
        "t = time.perf_counter()\n"
        "rc = main(['backtest', '--config', sys.argv[1], '--input', sys.argv[2], '--output', '/dev/null'])\n"
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0].split()[1]\n"
        "print(time.perf_counter() - t, int(hwm) / 1024)\n"
        "sys.exit(rc)\n"
    )
    from sentinel.bench.common import python_child, run_child

    out = run_child("the backtest child", python_child(code, str(config_path), str(path)))
    secs, rss = out.strip().splitlines()[-1].split()
    return float(secs), float(rss)


def run_bench(
    records: int = 2_000_000, days: int = 30, rare_types: int = 1000, say: Callable[[str], None] = print
) -> dict[str, float | str]:
    cfg_text = BENCH_RULES
    with tempfile.TemporaryDirectory(prefix="sentinel-bench-") as tmp:
        d = Path(tmp)
        cfg_path = d / "bench.toml"
        cfg_path.write_text(cfg_text, encoding="utf-8")
        cfg = load_config(cfg_path)
        path = d / "complaints.csv"
        say(f"generating {records:,} complaints over {days} days ({rare_types} rare types) ...")
        n = write_input(path, records, days, rare_types)
        size_mb = path.stat().st_size / 1e6
        say(f"  {n:,} records, {size_mb:.0f} MB CSV")
        parse_s, parsed = time_csv_parse(path)
        say(f"parse with Python's csv module: {parse_s:.2f} s ({parsed / parse_s / 1e6:.2f} M rows/s)")
        rules_s, fed, events = time_rules(cfg, path)
        say(
            f"rules alone: {rules_s:.2f} s for {fed:,} records = {fed / rules_s / 1e6:.2f} M records/s "
            f"(goal >= 1.0), {events:,} events"
        )
        bt_s, bt_events = time_backtest(cfg, path)
        say(
            f"full backtest (parse + rules + output): {bt_s:.2f} s = {bt_s / parse_s:.2f} x the csv parse "
            f"(goal <= 1.5), {bt_events:,} events"
        )
        quiet_s, _ = time_backtest(load_config_text(cfg_text + QUIET_RULE), path)
        say(f"the same with a quiet rule per channel: {quiet_s:.2f} s = {quiet_s / parse_s:.2f} x the csv parse")
        sub_s, rss = peak_rss_of_backtest(cfg_path, path)
        say(f"backtest in a fresh process: {sub_s:.2f} s, peak RSS {rss:.0f} MB (goal < 150)")
        live = time_live_cycle()
        say(
            f"live cycle over {live['series']:.0f} series: median {live['median_ms']:.1f} ms, "
            f"p95 {live['p95_ms']:.1f} ms (goal < 50)"
        )
    result: dict[str, float | str] = {
        "records": n,
        "csv_mb": round(size_mb, 1),
        "csv_parse_s": round(parse_s, 3),
        "rules_s": round(rules_s, 3),
        "rules_records_per_s": round(fed / rules_s),
        "backtest_s": round(bt_s, 3),
        "backtest_over_parse": round(bt_s / parse_s, 3),
        "backtest_quiet_s": round(quiet_s, 3),
        "backtest_quiet_over_parse": round(quiet_s / parse_s, 3),
        "backtest_process_s": round(sub_s, 3),
        "backtest_peak_rss_mb": round(rss, 1),
        "live_cycle_median_ms": round(live["median_ms"], 2),
        "live_cycle_p95_ms": round(live["p95_ms"], 2),
        "live_series": int(live["series"]),
        "events": bt_events,
        "machine": f"{os.cpu_count()} CPU, Python {sys.version.split()[0]}",
        "self_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    say(json.dumps(result))
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--records", type=int, default=2_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--rare-types", type=int, default=1000)


def run(args: argparse.Namespace) -> int:
    run_bench(records=args.records, days=args.days, rare_types=args.rare_types)
    return 0
