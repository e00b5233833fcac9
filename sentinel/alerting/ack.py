"""Acknowledgements: who acknowledged which alert, and the signed links that do it from a message.

An acknowledged alert is still sent when it changes (an upgrade, its resolution), but never repeated
nor escalated: `Acknowledged` is that mute stage, asked by the repeats and escalations only.

A link's token = base64url(`instance.expiry.` + HMAC-SHA256(ack_secret, `instance.expiry`)), the link is
`{external_url}/ack/{token}`. A token is bound to one alert instance (a later crisis of the same
series is a new instance and needs a new link) and expires; it is compared in constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import Connection, insert, select

from sentinel.store import alerts as alert_store
from sentinel.store.alerts import StoredAlert
from sentinel.store.schema import acks


class BadToken(ValueError):
    """The token is malformed, forged or expired (the message says which, never the secret)."""


@dataclass(frozen=True, slots=True)
class AckClaim:
    instance: str
    expiry: int  # unix seconds


def _sign(secret: str, message: bytes) -> bytes:
    return hmac.new(secret.encode(), message, hashlib.sha256).digest()


def make_token(secret: str, instance: str, expiry: int) -> str:
    message = f"{instance}.{expiry}".encode()
    raw = message + b"." + _sign(secret, message)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def verify_token(secret: str, token: str, now: float | None = None) -> AckClaim:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (ValueError, TypeError):
        raise BadToken("malformed token") from None
    parts = raw.split(b".", 2)
    if len(parts) != 3:
        raise BadToken("malformed token")
    instance_b, expiry_b, mac = parts
    message = instance_b + b"." + expiry_b
    if not hmac.compare_digest(mac, _sign(secret, message)):
        raise BadToken("signature does not match")
    try:
        instance, expiry = instance_b.decode("ascii"), int(expiry_b)
    except (UnicodeDecodeError, ValueError):
        raise BadToken("malformed token") from None
    if expiry < (time.time() if now is None else now):
        raise BadToken("link expired")
    return AckClaim(instance, expiry)


def ack_url(
    base_url: str, secret: str | None, instance: str, ttl_seconds: float, now: float | None = None
) -> str | None:
    if not secret:
        return None
    expiry = int((time.time() if now is None else now) + ttl_seconds)
    return f"{base_url.rstrip('/')}/ack/{make_token(secret, instance, expiry)}"


# --- the record -------------------------------------------------------------------------------------

AckVia = Literal["api", "link"]  # decided by the server from how the ack arrived: bearer token or signed link


def acknowledge(conn: Connection, instance: str, by: str, via: AckVia, now_us: int) -> str:
    """Record an acknowledgement; returns "acknowledged", "already" or raises KeyError (unknown)."""
    if alert_store.get_alert(conn, instance) is None:
        raise KeyError(instance)
    if conn.execute(select(acks.c.instance).where(acks.c.instance == instance)).first() is not None:
        return "already"
    conn.execute(insert(acks).values(instance=instance, by=by[:200] or "unknown", via=via, at_us=now_us))
    return "acknowledged"


def acked(conn: Connection) -> dict[str, tuple[str, int]]:
    """instance -> (who, when) of every acknowledgement."""
    return {i: (b, t) for i, b, t in conn.execute(select(acks.c.instance, acks.c.by, acks.c.at_us))}


class Acknowledged:
    """A Muter for reminders: `mutes` names who acknowledged the alert."""

    def __init__(self, by_instance: Mapping[str, tuple[str, int]]) -> None:
        self.by_instance = by_instance

    @classmethod
    def load(cls, conn: Connection) -> Acknowledged:
        return cls(acked(conn))

    def mutes(self, alert: StoredAlert) -> str | None:
        ack = self.by_instance.get(alert.instance)
        return None if ack is None else f"acknowledged by {ack[0]}"
