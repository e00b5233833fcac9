"""The one feeding path shared by the daemon and the backtest.

`feed` splits a batch at the rule's deadlines and day boundaries and calls `advance` there: a deadline
T applies before records with created_at >= T. Records past a deadline that lies beyond the `horizon`
(the daemon's `now - lateness`: time that may still receive late rows) wait in the rule's `pending`
buffer until the horizon passes it. So any split of the same records into batches gives the same
events, and the daemon gives the backtest's events for rows that become visible within `lateness`.
"""

from __future__ import annotations

import numpy as np

from sentinel.detect.base import Rule, S
from sentinel.model import Batch, Event


def feed(rule: Rule[S], state: S, batch: Batch, horizon: int, start: int | None = None) -> list[Event]:
    """Give `batch` (sorted) to `rule` and move its time up to `horizon`.

    Records later than `horizon` wait in `state.pending`: a row created earlier may still arrive
    (within `lateness`), and it must take its place before them, exactly as in a replay. `start` is
    where the rule's clock begins when it has none yet (the source's coverage start).
    """
    if len(state.pending):
        batch = Batch.concat([state.pending, batch]).sorted()
        state.pending = Batch.empty()
    events: list[Event] = []
    n = len(batch)
    if state.clock is None:
        first = int(batch.ts[0]) if n else horizon
        begin = min(first, start) if start is not None else first
        events += rule.advance(min(begin, horizon), state)[0]
    ts = batch.ts
    i = 0
    while True:
        d = rule.deadline(state)
        due = d is not None and d <= horizon
        cut = d if due and d is not None else horizon + 1  # records at or before the horizon are final
        j = int(np.searchsorted(ts, cut, side="left"))
        if j > i:
            events += rule.process(batch.slice(i, j), state)
            i = j
        if not due or d is None:
            break
        events += rule.advance(d, state)[0]
    if i < n:
        state.pending = batch.slice(i, n)
    if state.clock is not None and state.clock < horizon:
        events += rule.advance(horizon, state)[0]
    return events
