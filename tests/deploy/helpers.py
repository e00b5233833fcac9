"""Helpers for the deploy tests: paths, and a `Metrics` with every family populated, so labelled families
show up in the exposition text (an unobserved labelled family renders only its HELP and TYPE lines)."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

from sentinel.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"

# Realistic label values (UTF-8 included, as the data has it); unknown label names get "x".
LABEL_VALUES = {
    "rule": "type-surge",
    "type": "物流配送延误",
    "channel": "电话热线",
    "tier": "moderate",
    "state": "firing",
    "receiver": "cs-team",
    "outcome": "failed",
    "reason": "bad_time",
    "version": "0.0.0",
}


def populated_metrics() -> Metrics:
    """Every metric family of `Metrics` with at least one observed sample."""
    m = Metrics()
    for metric in vars(m).values():
        if not isinstance(metric, MetricWrapperBase):
            continue
        names: tuple[str, ...] = metric._labelnames
        child = metric.labels(*(LABEL_VALUES.get(n, "x") for n in names)) if names else metric
        if isinstance(child, Counter):
            child.inc()
        elif isinstance(child, Gauge):
            child.set(1)
        elif isinstance(child, Histogram):
            child.observe(0.3)
        else:
            raise AssertionError(f"populated_metrics() does not know how to observe {type(child).__name__}")
    for family in m.registry.collect():
        assert family.samples, f"{family.name} has no samples after populated_metrics()"
    return m
