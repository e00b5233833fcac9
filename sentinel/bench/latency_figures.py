"""The figures of `sentinel bench latency`: percentiles per system, setting and rule, Sentinel over its peer,
the delivery and footprint extras, and the report as printed and written.

It guarantees that a timeout is never hidden (it counts as infinite in the percentiles, so a p99 or max that
reached one is shown as `timeout`, never as the slowest message that did arrive), that percentiles
interpolate linearly between closest ranks (numpy's default), and that the printed table and the JSON
report keep one layout whatever systems ran.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import IO, Literal, NotRequired, TypedDict

from sentinel.bench.common import STREAK_RULE, SURGE_RULE, Machine
from sentinel.bench.latency_workload import PAIRED, SYSTEMS, Measurement

Figure = Literal["p50", "p90", "p99", "max"]
FIGURES: tuple[tuple[Figure, float], ...] = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0))


class Summary(TypedDict):
    """One system, setting and rule: how many, how many timed out, and the figures in seconds (None: a
    timeout reached that rank)."""

    n: int
    timeouts: int
    p50: float | None
    p90: float | None
    p99: float | None
    max: float | None


Results = dict[str, dict[str, Summary | str]]  # system -> rule -> figures, or why there are none
Ratios = dict[str, dict[str, float | None]]  # "mine / peer" -> figure -> ratio


class Extras(TypedDict, total=False):
    delivery: dict[str, object]
    footprint: dict[str, float]


class Report(TypedDict):
    """The JSON report, in the order it is written."""

    benchmark: str
    date: str
    mode: str
    sentinel_version: str
    duration_s: float
    machine: Machine
    workload: dict[str, object]
    settings: dict[str, dict[str, object]]
    results: Results
    ratios: Ratios
    notes: list[str]
    delivery: NotRequired[dict[str, object]]
    footprint: NotRequired[dict[str, float]]
    measurements: list[dict[str, object]]


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); infinities stay infinite."""
    xs = sorted(values)
    if not xs:
        return math.nan
    pos = q * (len(xs) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    if lo == hi or xs[hi] == xs[lo]:
        return xs[lo]
    if math.isinf(xs[hi]):
        return math.inf
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarize(ms: Sequence[Measurement]) -> Summary:
    lat = [m.latency for m in ms]

    def figure(q: float) -> float | None:
        v = percentile(lat, q)
        return None if math.isinf(v) or math.isnan(v) else round(v, 4)

    p50, p90, p99, top = (figure(q) for _name, q in FIGURES)
    return {
        "n": len(ms),
        "timeouts": sum(1 for x in lat if math.isinf(x)),
        "p50": p50,
        "p90": p90,
        "p99": p99,
        "max": top,
    }


def results(ms: Sequence[Measurement]) -> Results:
    out: Results = {}
    for system in SYSTEMS:
        mine = [m for m in ms if m.system == system]
        if not mine:
            continue
        out[system] = {}
        for rule in (SURGE_RULE, STREAK_RULE):
            of_rule = [m for m in mine if m.rule == rule]
            if of_rule:
                out[system][rule] = summarize(of_rule)
            elif system.startswith("peer-") and rule == STREAK_RULE:
                out[system][rule] = "not expressible: PromQL sees counts per scrape, not five in a row"
    return out


def ratios(res: Mapping[str, Mapping[str, Summary | str]]) -> Ratios:
    """Sentinel / peer per figure, surges only (the peer has no streaks): below 1 means Sentinel is faster."""
    out: Ratios = {}
    for mine, peer in PAIRED.items():
        a, b = res.get(mine, {}).get(SURGE_RULE), res.get(peer, {}).get(SURGE_RULE)
        if not isinstance(a, dict) or not isinstance(b, dict):
            continue
        ratio: dict[str, float | None] = {}
        for k, _q in FIGURES:
            x, y = a[k], b[k]
            ratio[k] = round(x / y, 4) if x is not None and y else None
        out[f"{mine} / {peer}"] = ratio
    return out


def extras(quick: bool) -> Extras:
    """Delivery throughput and footprint, from their own benchmarks (shorter with `--quick`)."""
    from sentinel.bench.delivery import measure_throughput
    from sentinel.bench.footprint import measure_footprint

    messages = 300 if quick else 2000
    seconds = 20.0 if quick else 120.0
    return {
        "delivery": {
            "messages": messages,
            "one_receiver": measure_throughput(1, messages),
            "ten_receivers": measure_throughput(10, messages),
        },
        "footprint": {"seconds": seconds, **measure_footprint(seconds)},
    }


def _fmt(v: float | None) -> str:
    return "timeout" if v is None else f"{v:.3f}"


def print_report(report: Report, out: IO[str]) -> None:
    res, rat = report["results"], report["ratios"]
    print(
        f"\nlatency from the commit of the row that crosses the threshold to the sink (seconds), "
        f"{report['date']}, {report['machine']['nproc']} CPUs",
        file=out,
    )
    print(
        f"{'system':<22}{'rule':<18}{'n':>4}{'p50':>9}{'p90':>9}{'p99':>9}{'max':>9}{'timeouts':>10}"
        f"  ratio to peer (p50/p90/p99/max)",
        file=out,
    )
    for system, by_rule in res.items():
        for rule, s in by_rule.items():
            if not isinstance(s, dict):
                print(f"{system:<22}{rule:<18}  {s}", file=out)
                continue
            ratio = ""
            if rule == SURGE_RULE and system in PAIRED and f"{system} / {PAIRED[system]}" in rat:
                r = rat[f"{system} / {PAIRED[system]}"]
                ratio = (
                    f"  {'/'.join('-' if r[k] is None else f'{r[k]:.3g}' for k in ('p50', 'p90', 'p99', 'max'))}"
                    f" x {PAIRED[system]}"
                )
            print(
                f"{system:<22}{rule:<18}{s['n']:>4}{_fmt(s['p50']):>9}{_fmt(s['p90']):>9}{_fmt(s['p99']):>9}"
                f"{_fmt(s['max']):>9}{s['timeouts']:>10}{ratio}",
                file=out,
            )
    extra: tuple[tuple[str, Mapping[str, object] | None], ...] = (
        ("delivery", report.get("delivery")),
        ("footprint", report.get("footprint")),
    )
    for name, value in extra:
        if isinstance(value, dict):
            print(f"{name}: " + ", ".join(f"{k} {v}" for k, v in value.items()), file=out)
        elif value is not None:
            print(f"{name}: {value}", file=out)
    for note in report["notes"]:
        print(f"note: {note}", file=out)
