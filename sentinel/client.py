"""The CLI's side of the HTTP API: `sentinel status`, `ack` and `silence` talk to the running daemon,
never to its store. The address comes from `listen` (a wildcard means loopback), the bearer token from
`[api] token` in the same configuration file."""

from __future__ import annotations

from typing import Any

import requests

from sentinel.config import Config


class ApiError(Exception):
    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def base_url(cfg: Config) -> str:
    host, _, port = cfg.listen.rpartition(":")
    if host in ("0.0.0.0", "::", "[::]", ""):
        host = "127.0.0.1"
    return f"http://{host}:{port}"


def call(cfg: Config, method: str, path: str, body: Any = None, timeout: float = 10.0) -> Any:
    headers = {"Accept": "application/json"}
    if cfg.api.token is not None:
        headers["Authorization"] = f"Bearer {cfg.api.token.get()}"
    url = base_url(cfg) + path
    try:
        resp = requests.request(method, url, json=body, headers=headers, timeout=timeout, allow_redirects=False)
    except requests.RequestException as exc:
        raise ApiError(f"cannot reach the daemon at {base_url(cfg)}: {type(exc).__name__}") from None
    try:
        data = resp.json()
    except ValueError:
        data = None
    if resp.status_code >= 400:
        reason = data.get("error") if isinstance(data, dict) else resp.text[:200]
        raise ApiError(f"{method} {path}: HTTP {resp.status_code}: {reason}", resp.status_code)
    return data


ALERT_LABELS = ("rule", "kind", "tier", "type", "channel", "customer", "alertname", "severity")
"""The labels an alert can carry: its series' fields, Sentinel's `rule`, `kind` and `tier`, and the names
the Alertmanager API shows them by (`alertname` = rule, `severity` = tier). A matcher on any other label
matches nothing, or (`!=`, `!~`) everything."""


def unknown_label(matcher: dict[str, Any]) -> str | None:
    """Why a matcher's label is one no alert has (`tpye=...`), with the close names; None when it is known."""
    import difflib

    name = str(matcher["name"])
    if name in ALERT_LABELS:
        return None
    close = difflib.get_close_matches(name, ALERT_LABELS, n=2, cutoff=0.6)
    hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
    return f"no alert has the label {name!r}{hint}; alerts carry {', '.join(ALERT_LABELS)}"


def parse_matcher(text: str) -> dict[str, Any]:
    """`type=物流配送延误`, `channel=~电话.*`, `type!=其他`, `type!~测试.*` -> Alertmanager matcher JSON."""
    for op, regex, equal in (("!~", True, False), ("=~", True, True), ("!=", False, False), ("=", False, True)):
        name, sep, value = text.partition(op)
        if sep and name.strip():
            return {"name": name.strip(), "value": value.strip().strip('"'), "isRegex": regex, "isEqual": equal}
    raise ValueError(f"{text!r} is not a matcher (name=value, name=~regex, name!=value, name!~regex)")
