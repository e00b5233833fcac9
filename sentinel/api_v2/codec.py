"""Alertmanager's wire forms for Sentinel's own objects, with no request or store in sight: matchers in
Prometheus's text form (amtool's and Grafana's `filter`), times as RFC 3339 with milliseconds, an alert's
labels, a silence as JSON and in Alertmanager's list order, and Sentinel's routing as an Alertmanager
configuration (`config.original`).

It guarantees the forms of Alertmanager's OpenAPI spec (`api/v2/openapi.yaml`, 0.25 and later), Sentinel's
`rule` and `tier` shown as `alertname` and `severity` wherever a label name is shown, and that
`config.original` never carries a URL, a token or a secret (receivers keep only their name).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from sentinel import __version__
from sentinel.alerting import silences as silence_store
from sentinel.alerting.routing import IMPLICIT, Router
from sentinel.config import Config, MatchValue, summary
from sentinel.model import US, JsonOut, JsonOutObject
from sentinel.store.alerts import StoredAlert
from sentinel.units import format_duration

NO_RECEIVER = "-"  # the implicit route's stand-in when no receiver is configured


# --- matchers in Prometheus's text form ------------------------------------------------------------

_MATCHER = re.compile(r'\s*(?P<name>[^\s=!~"{},]+)\s*(?P<op>=~|!~|!=|=)\s*(?P<value>.*?)\s*', re.S)


def parse_matcher(text: str) -> silence_store.SilenceMatcher:
    """`name=value`, `name!=value`, `name=~regex`, `name!~regex`, the value bare or double-quoted with
    Go's escapes, as amtool and Grafana send them in `filter`. Raises ValueError saying what is wrong."""
    m = _MATCHER.fullmatch(text)
    if m is None:
        raise ValueError(f"bad matcher {text[:80]!r}: expected name=value, name!=value, name=~regex or name!~regex")
    value = m["value"]
    if value.startswith('"'):
        try:
            unquoted = json.loads(value)
        except json.JSONDecodeError:
            unquoted = None
        if not isinstance(unquoted, str):
            raise ValueError(f"bad matcher {text[:80]!r}: the quoted value is not closed or has a bad escape")
        value = unquoted
    is_regex = "~" in m["op"]
    if is_regex:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"bad matcher {text[:80]!r}: bad regular expression: {exc}") from None
    return silence_store.SilenceMatcher(m["name"], value, is_regex, not m["op"].startswith("!"))


def filter_matches(matchers: Sequence[silence_store.SilenceMatcher], labels: Mapping[str, str]) -> bool:
    """Alertmanager's filter: as the matcher says, except that an empty value also accepts the label's
    absence (`=`/`=~`) or its presence (`!=`/`!~`) — `foo=""` asks for alerts without `foo`."""
    for m in matchers:
        present = m.name in labels
        if m.value == "" and present != m.is_equal:
            continue
        if not m(labels):
            return False
    return True


# --- times, labels ------------------------------------------------------------------------------


def iso(us: int) -> str:
    """RFC 3339 in UTC with milliseconds, as Alertmanager writes times."""
    dt = datetime.fromtimestamp(us // US, UTC).replace(microsecond=us % US)
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def am_labels(alert: StoredAlert) -> dict[str, str]:
    """The labels Alertmanager's tools see: those routes and silences match on (the series labels, `kind`),
    with the rule as `alertname` and the tier as `severity`."""
    return {**alert.labels, "alertname": alert.rule, "severity": alert.tier.label, "kind": alert.kind}


AM_NAME = {own: am for am, own in silence_store.ALIASES.items()}  # rule -> alertname, tier -> severity


# --- silences --------------------------------------------------------------------------------------

STATE_ORDER = {"active": 0, "pending": 1, "expired": 2}


def silence_json(s: silence_store.Silence, now: int) -> JsonOutObject:
    return {
        "id": s.id,
        "status": {"state": s.state(now)},
        "updatedAt": iso(s.updated_us),
        "matchers": [m.to_json() for m in s.matchers],
        "startsAt": iso(s.starts_us),
        "endsAt": iso(s.ends_us),
        "createdBy": s.created_by,
        "comment": s.comment,
        "annotations": {},
    }


def silence_order(s: silence_store.Silence, now: int) -> tuple[int, int]:
    """Alertmanager's order: active (soonest end first), pending (soonest start), expired (latest end)."""
    state = s.state(now)
    at = {"active": s.ends_us, "pending": s.starts_us, "expired": -s.ends_us}[state]
    return STATE_ORDER[state], at


def silence_filter_hit(s: silence_store.Silence, filters: Sequence[silence_store.SilenceMatcher]) -> bool:
    """Alertmanager's silence filter: every filter matcher appears among the silence's matchers, same name,
    kind and value."""
    return all(f in s.matchers for f in filters)


# --- the routes ------------------------------------------------------------------------------------

UNROUTED = "sentinel-unrouted"
"""`config.original`'s receiver for alerts no route matches: Sentinel tells no one of them."""


def am_matchers(spec: Mapping[str, MatchValue]) -> list[str]:
    """Sentinel's route matchers (`value`, `~regex`, or a list of either) as Alertmanager's matcher text,
    with Sentinel's label names as this API shows them (`rule` -> `alertname`, `tier` -> `severity`)."""
    out = []
    for name, value in spec.items():
        items = [value] if isinstance(value, str) else list(value)
        shown = AM_NAME.get(name, name)
        if len(items) == 1 and not items[0].startswith("~"):
            out.append(f"{shown}={json.dumps(items[0], ensure_ascii=False)}")
            continue
        either = "|".join(v[1:] if v.startswith("~") else re.escape(v) for v in items)
        out.append(f"{shown}=~{json.dumps(either if len(items) == 1 else f'(?:{either})', ensure_ascii=False)}")
    return out


def original(cfg: Config) -> str:
    """`config.original`: Sentinel's routes, receivers (names only) and inhibitions as an Alertmanager
    configuration, so `amtool config routes` and Grafana's notification policies can read them, under a
    comment with the rest in brief. Never a URL, a token or a secret: receivers keep only their name.

    A Sentinel route names several receivers; in Alertmanager's tree it becomes a route whose children,
    one per receiver, all match (`continue`), so the alert reaches each. The root's receiver stands for
    Sentinel's "no route matched: nobody is told"."""
    router = Router(cfg)
    comments = [
        f"Sentinel {__version__}'s routing in Alertmanager's form, for amtool and Grafana to read "
        "(Sentinel's own configuration is its TOML file).",
        *summary(cfg).splitlines(),
    ]
    children = []
    for route in router.routes:
        rc = route.cfg
        where = "default route" if route.index == IMPLICIT else f"route {route.index + 1}"
        if rc.mute:
            comments.append(f"{where}: muted {', '.join(map(str, rc.mute))} ({cfg.timezone})")
        if rc.escalate_to:
            comments.append(
                f"{where}: escalates to {', '.join(rc.escalate_to)} after "
                f"{format_duration(rc.escalate_after)} unacknowledged"
            )
        node: dict[str, JsonOut] = {}
        if rc.match:
            node["matchers"] = am_matchers(rc.match)
        names = [UNROUTED if n == NO_RECEIVER else n for n in rc.receivers]
        if len(names) == 1:
            node["receiver"] = names[0]
        else:
            node["routes"] = [{"receiver": n, "continue": i < len(names) - 1} for i, n in enumerate(names)]
        node.update(
            {
                "group_by": [AM_NAME.get(g, g) for g in rc.group_by],
                "group_wait": format_duration(rc.group_wait),
                "group_interval": format_duration(rc.group_interval),
                "repeat_interval": format_duration(rc.repeat_interval),
                "continue": rc.continue_,
            }
        )
        children.append(node)
    doc: dict[str, JsonOut] = {
        "route": {"receiver": UNROUTED, "routes": children},
        "receivers": [{"name": r.name} for r in cfg.receivers] + [{"name": UNROUTED}],
    }
    if cfg.inhibit:
        doc["inhibit_rules"] = [
            {
                "source_matchers": am_matchers(i.source),
                "target_matchers": am_matchers(i.target),
                **({"equal": [AM_NAME.get(e, e) for e in i.equal]} if i.equal else {}),
            }
            for i in cfg.inhibit
        ]
    import yaml  # only when asked: PyYAML costs an idle daemon about 1 MB for one rarely read answer

    header = "".join(f"# {line}\n" for line in comments)
    return header + yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)
