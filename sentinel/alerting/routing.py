"""Routes: which receivers hear about an alert, matched on its tier and labels.

Matchers are `label = "value"` (exact), `label = "~regex"` (fully matched) or a list of those (any of
them). The labels an alert is matched on are its series labels plus `rule`, `kind` and `tier`. Routes
are tried in order; the first that matches wins unless it says `continue = true`. With no routes
configured, one implicit route sends everything to every receiver.

What routing guarantees: the same labels always take the same routes (the order of the file, nothing
else); an alert no configured route matches is told to no one (it is still recorded and shown); a
group key depends only on the route and the values of its `group_by` labels, so it is the same after
a restart and different for the same labels under another route.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sentinel.config import Config, MatchValue, RouteConfig
from sentinel.store.alerts import StoredAlert

IMPLICIT = -1


@dataclass(frozen=True, slots=True)
class Matcher:
    name: str
    values: tuple[str, ...]
    patterns: tuple[re.Pattern[str], ...]

    def __call__(self, labels: Mapping[str, str]) -> bool:
        v = labels.get(self.name, "")
        return v in self.values or any(p.fullmatch(v) for p in self.patterns)


def compile_matchers(spec: Mapping[str, MatchValue]) -> tuple[Matcher, ...]:
    out = []
    for name, value in spec.items():
        items = [value] if isinstance(value, str) else list(value)
        exact = tuple(v for v in items if not v.startswith("~"))
        patterns = tuple(re.compile(v[1:]) for v in items if v.startswith("~"))
        out.append(Matcher(name, exact, patterns))
    return tuple(out)


def matches(matchers: Sequence[Matcher], labels: Mapping[str, str]) -> bool:
    return all(m(labels) for m in matchers)


def alert_labels(rule: str, kind: str, tier: str, labels: Mapping[str, str]) -> dict[str, str]:
    return {**labels, "rule": rule, "kind": kind, "tier": tier}


def labels_of(alert: StoredAlert) -> dict[str, str]:
    """The labels routes, silences and inhibitions match a stored alert on."""
    return alert_labels(alert.rule, alert.kind, alert.tier.label, alert.labels)


@dataclass(frozen=True, slots=True)
class Route:
    index: int
    cfg: RouteConfig
    matchers: tuple[Matcher, ...]

    def group_key(self, labels: Mapping[str, str]) -> tuple[str, dict[str, str]]:
        values = {g: labels.get(g, "") for g in self.cfg.group_by}
        raw = json.dumps([self.index, sorted(values.items())], ensure_ascii=False)
        return hashlib.sha256(raw.encode()).hexdigest()[:24], values


class Router:
    def __init__(self, cfg: Config) -> None:
        if cfg.routes:
            self.routes = [Route(i, r, compile_matchers(r.match)) for i, r in enumerate(cfg.routes)]
        else:
            implicit = RouteConfig(receivers=[r.name for r in cfg.receivers] or ["-"])
            self.routes = [Route(IMPLICIT, implicit, ())]
        self.by_index = {r.index: r for r in self.routes}

    def route(self, labels: Mapping[str, str]) -> list[Route]:
        out = []
        for r in self.routes:
            if matches(r.matchers, labels):
                out.append(r)
                if not r.cfg.continue_:
                    break
        return out

    def get(self, index: int) -> Route | None:
        return self.by_index.get(index)
