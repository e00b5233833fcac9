"""Inhibition: while a `source` alert is open, `target` alerts with the same `equal` label values are
held, so one surge seen at total, type and type x channel level tells people once.

The stage guarantees, as Alertmanager's inhibitor: an alert is inhibited only by another open alert
(never by itself, never by a resolved one), an alert is matched on its routing labels (series labels
plus `rule`, `kind` and `tier`), and a label missing on both sides counts as equal (empty on both).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sentinel.alerting.routing import Matcher, compile_matchers, labels_of, matches
from sentinel.config import Config
from sentinel.store.alerts import StoredAlert


@dataclass(frozen=True, slots=True)
class InhibitRule:
    """One `[[inhibit]]` table, its matchers compiled."""

    source: tuple[Matcher, ...]
    target: tuple[Matcher, ...]
    equal: tuple[str, ...]


def inhibit_rules(cfg: Config) -> tuple[InhibitRule, ...]:
    return tuple(
        InhibitRule(compile_matchers(i.source), compile_matchers(i.target), tuple(i.equal)) for i in cfg.inhibit
    )


class Inhibitor:
    """A Muter: the rules against the alerts open at one moment. `mutes` names the inhibiting alert."""

    def __init__(self, rules: Iterable[InhibitRule], open_alerts: Iterable[StoredAlert]) -> None:
        self.rules = tuple(rules)
        # labels are computed once a step, not once a question
        self._open = [(a.instance, labels_of(a)) for a in open_alerts] if self.rules else []

    def mutes(self, alert: StoredAlert) -> str | None:
        return self.inhibited_by(alert.instance, labels_of(alert)) if self.rules else None

    def inhibited_by(self, instance: str, labels: Mapping[str, str]) -> str | None:
        """The instance of the first open alert that inhibits `instance` (with routing labels `labels`)."""
        for rule in self.rules:
            if not matches(rule.target, labels):
                continue
            for other, olabels in self._open:
                if other == instance or not matches(rule.source, olabels):
                    continue
                if all(olabels.get(k, "") == labels.get(k, "") for k in rule.equal):
                    return other
        return None
