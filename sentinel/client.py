"""The CLI's side of the HTTP API: `sentinel status`, `ack` and `silence` talk to the running daemon,
never to its store. The address comes from `listen` (a wildcard means loopback), the bearer token from
`[api] token` in the same configuration file, read by `sentinel.client_config` (not the full configuration:
see there why)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sentinel.client_config import ClientConfig


class ApiError(Exception):
    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def base_url(cfg: ClientConfig) -> str:
    host, _, port = cfg.listen.rpartition(":")
    if host in ("0.0.0.0", "::", "[::]", ""):
        host = "127.0.0.1"
    return f"http://{host}:{port}"


# Any (the answer): the daemon's JSON as parsed, which the commands read by the API's documented shape
def call(cfg: ClientConfig, method: str, path: str, body: object = None, timeout: float = 10.0) -> Any:
    """One request to the daemon's API, JSON both ways. `http.client` rather than requests: these commands
    are typed by a person waiting for the answer, and requests alone takes longer to import than the call
    takes (redirects are not followed either way)."""
    import http.client
    from urllib.parse import urlsplit

    headers = {"Accept": "application/json"}
    if cfg.token is not None:
        headers["Authorization"] = f"Bearer {cfg.token.get()}"
    payload = None
    if body is not None:
        payload = json.dumps(body, ensure_ascii=False).encode("utf-8")
        headers["Content-Type"] = "application/json"
    where = urlsplit(base_url(cfg))
    conn = http.client.HTTPConnection(where.hostname or "127.0.0.1", where.port, timeout=timeout)
    try:
        conn.request(method, path, body=payload, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
    except (OSError, http.client.HTTPException) as exc:
        raise ApiError(f"cannot reach the daemon at {base_url(cfg)}: {type(exc).__name__}") from None
    finally:
        conn.close()
    text = raw.decode("utf-8", errors="replace")
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if resp.status >= 400:
        reason = data.get("error") if isinstance(data, dict) else text[:200]
        raise ApiError(f"{method} {path}: HTTP {resp.status}: {reason}", resp.status)
    return data


ALERT_LABELS = ("rule", "kind", "tier", "type", "channel", "customer", "alertname", "severity")
"""The labels an alert can carry: its series' fields, Sentinel's `rule`, `kind` and `tier`, and the names
the Alertmanager API shows them by (`alertname` = rule, `severity` = tier). A matcher on any other label
matches nothing, or (`!=`, `!~`) everything."""


def unknown_label(matcher: Mapping[str, object]) -> str | None:
    """Why a matcher's label is one no alert has (`tpye=...`), with the close names; None when it is known."""
    import difflib

    name = str(matcher["name"])
    if name in ALERT_LABELS:
        return None
    close = difflib.get_close_matches(name, ALERT_LABELS, n=2, cutoff=0.6)
    hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
    return f"no alert has the label {name!r}{hint}; alerts carry {', '.join(ALERT_LABELS)}"


def parse_matcher(text: str) -> dict[str, str | bool]:
    """`type=物流配送延误`, `channel=~电话.*`, `type!=其他`, `type!~测试.*` -> Alertmanager matcher JSON."""
    for op, regex, equal in (("!~", True, False), ("=~", True, True), ("!=", False, False), ("=", False, True)):
        name, sep, value = text.partition(op)
        if sep and name.strip():
            return {"name": name.strip(), "value": value.strip().strip('"'), "isRegex": regex, "isEqual": equal}
    raise ValueError(f"{text!r} is not a matcher (name=value, name=~regex, name!=value, name!~regex)")
