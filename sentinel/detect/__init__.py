"""Detection, pure: complaints in, alert events out, nothing else touched.

The rules (`threshold`, `streak`, `quiet`) and the engine that drives them never import the store, the notifiers,
the sources, the metrics or the command line, and never read a clock: the caller hands them batches and
instants and persists what they return. So the daemon (`sentinel.detection`, which records their events
and snapshots in each poll's transaction) and the backtest run exactly the same code. An import-rule test
keeps it so.

What the rest of Sentinel uses is named here; the modules behind it are the rules' own business.
"""

from __future__ import annotations

from sentinel.detect.base import OpenAlert, RecordFilter, Rule, RuleContext
from sentinel.detect.baseline import baselines
from sentinel.detect.engine import Engine, Snapshot, history_days, resolve_removed, sort_events
from sentinel.detect.quiet import QuietRule
from sentinel.detect.streak import StreakRule
from sentinel.detect.threshold import ThresholdRule
from sentinel.detect.workdays import Workdays, workdays_of

__all__ = [
    "Engine",
    "OpenAlert",
    "QuietRule",
    "RecordFilter",
    "Rule",
    "RuleContext",
    "Snapshot",
    "StreakRule",
    "ThresholdRule",
    "Workdays",
    "baselines",
    "history_days",
    "resolve_removed",
    "sort_events",
    "workdays_of",
]
