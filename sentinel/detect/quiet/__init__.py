"""The quiet rule: "a channel that normally has traffic has had nothing for too long".

An intake channel whose sync broke (the seeds describe a CRM sync 72 h behind) sends nothing, while the
other channels still flow, so the source-level staleness alert cannot see it. For each series (a
channel, a type, or the total) the rule knows the baseline days' average count by local wall-clock hour
(the profile the threshold rule's `pace` mode uses, linear inside the hour), so it knows how many
complaints the series normally has between its last record and now: E. The chance of none at all in that
time is exp(-E) (Poisson). The rule fires once

    exp(-E) <= max_p   and   E >= min_expected

(whichever needs the longer silence decides: max_p is a probability, min_expected a floor in complaints
for streams whose lulls are longer than Poisson says), and resolves at the series' next record. A channel
that is normally quiet at night gains almost no E overnight, so a quiet night is not an alert.

Time enters only as the engine's instants: the moment E reaches the bound is a deadline (found exactly
from the piecewise-linear profile, in whole seconds, never early), applied when time passes it: by
`advance` (the daemon's horizon, `now - lateness`, or the backtest's) or by later records in a batch,
which show how far time went. The rule is self-timed like the streak rule's gaps: only midnight splits a
batch, so a stream whose busy channels have deadlines every minute is not cut into thousands of pieces;
the daemon and the backtest fire at the same instant, whatever the split. A silence spanning midnights
adds each past day's part judged by that day's own profile (`acc`, kept in the snapshot); today's part
comes from today's profile.

Late records (their time already closed) count into their day's hourly counts, and as a sign of life at
the rule's clock: a sync catching up with records 72 h old resolves the alert and does not re-open it.

The profile, E, deadlines, records and time are `core.py`; saving and restoring `rule.py`.
"""

from __future__ import annotations

from sentinel.detect.quiet.core import QuietState
from sentinel.detect.quiet.rule import QuietRule

__all__ = ["QuietRule", "QuietState"]
