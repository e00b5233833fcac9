"""`[source]`, the database the complaints are read from, and `[state]`, how instances sharing a state
store agree who leads.

A source is valid here only if a poll could run on it: exactly one of a plain table name or a query that
binds every parameter the poll passes, positive intervals, a `NOTIFY` channel PostgreSQL will not
truncate. Whether the database answers is left to the daemon.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Literal

from pydantic import Field, field_validator, model_validator

from sentinel.config.values import Duration, Model, SecretValue, Zone


class Columns(Model):
    id: str = "id"
    created_at: str = "created_at"
    type: str = "type"
    channel: str = "channel"
    customer: str | None = None


class SourceConfig(Model):
    url: SecretValue
    table: str | None = None
    query: str | None = None
    columns: Columns = Columns()
    timezone: Zone | None = None
    id_type: Literal["auto", "int", "str"] = "auto"
    poll_interval: Duration = timedelta(seconds=1)
    lateness: Duration = timedelta(minutes=5)
    reconcile_interval: Duration = timedelta(minutes=5)
    batch_size: int = Field(10_000, ge=1, le=1_000_000)
    record_url: str | None = None
    listen_notify: bool = True
    notify_channel: str | None = None

    @model_validator(mode="after")
    def _table_or_query(self) -> SourceConfig:
        if (self.table is None) == (self.query is None):
            raise ValueError("give exactly one of `table` or `query`")
        if self.query is not None:
            missing = [p for p in (":since_ts", ":since_id", ":limit") if p not in self.query]
            if missing:
                raise ValueError(f"query must bind {', '.join(missing)}")
        if self.table is not None and not re.fullmatch(
            r"[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?", self.table
        ):
            raise ValueError(f"table {self.table!r} is not a plain (schema.)table name")
        if self.poll_interval <= timedelta(0):
            raise ValueError("poll_interval must be positive")
        if self.lateness < timedelta(0):
            raise ValueError("lateness must not be negative")
        if self.reconcile_interval <= timedelta(0):
            raise ValueError("reconcile_interval must be positive")
        if self.record_url is not None and "{id}" not in self.record_url:
            raise ValueError("record_url must contain {id}")
        # PostgreSQL silently truncates channel names to 63 bytes, so a longer one would never match the
        # trigger's; identifier characters keep LISTEN and pg_notify() spelling it the same way.
        if self.notify_channel is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$]{0,62}", self.notify_channel):
            raise ValueError(
                f"notify_channel {self.notify_channel!r} must be 1-63 letters, digits, _ or $, "
                "starting with a letter or _"
            )
        return self


class StateConfig(Model):
    """How instances sharing a PostgreSQL state store agree who leads (README: Running two instances)."""

    lease_ttl: Duration = timedelta(seconds=15)  # a standby takes over a leader silent this long

    @field_validator("lease_ttl")
    @classmethod
    def _lease_ttl(cls, v: timedelta) -> timedelta:
        if not timedelta(seconds=2) <= v <= timedelta(minutes=10):
            raise ValueError(
                "lease_ttl must be between 2s and 10m (the leader renews its lease every "
                "lease_ttl / 5, at most every 3 s; a standby takes over after lease_ttl)"
            )
        return v
