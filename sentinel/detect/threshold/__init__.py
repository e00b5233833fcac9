"""The threshold rule: "a type's volume passes 1.5 x its daily average".

Modes (one module each, behind the `Mode` protocol of `mode.py`):
- `day` (`day.py`): today's count so far against the mean (or median) of the previous full days;
  thresholds are integers fixed for the day, so a batch is evaluated with a few numpy passes.
- `rolling` (`rolling.py`): the last 24 local hours (the current hour and the 23 before it) against the
  same daily baseline; the window slides at every hour boundary (a deadline).
- `pace` (`pace.py`): today so far against the baseline days' average count by the same time of day
  (hourly buckets, linear inside the hour): fires hours earlier on a morning surge and equals `day` at
  midnight.

Tiers only go up while an alert is open; one record crossing several tiers gives one event at the
highest. Day-mode alerts carry over midnight and resolve at the 00:00 ending the first full day that
never met the firing condition; pace and rolling alerts resolve after `resolve_after` unmet.

Baseline days (`baseline_by`): `all` the previous `baseline_days` days; `day_kind` the previous
`baseline_days` days of the same kind (a workday against workdays, a rest day, weekend or public holiday,
against rest days: `holidays` names the calendar), looked for over at most `lookback_days`; `weekday` the
same weekday in each of the last `baseline_weeks` weeks. Monday after a quiet weekend is then compared
with other workdays, not with the weekend.

What every mode shares is `core.py` (counts, thresholds, alerts), the state `state.py`, saving and
restoring `rule.py`.
"""

from __future__ import annotations

from sentinel.detect.threshold.mode import Mode
from sentinel.detect.threshold.rule import ThresholdRule
from sentinel.detect.threshold.state import ThresholdState, baseline_days_of, lookback_days

__all__ = ["Mode", "ThresholdRule", "ThresholdState", "baseline_days_of", "lookback_days"]
