"""The state store's tables, as SQLAlchemy Core metadata shared by the code and the migrations.

Nothing here holds a secret: receivers are referred to by name, sources by a redacted description.
Instants are BIGINT microseconds since the epoch (UTC), which every backend stores exactly.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Float, Index, Integer, MetaData, String, Table, Text, true

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)

source_state = Table(
    "source_state",
    metadata,
    Column("key", String(32), primary_key=True),
    Column("watermark_us", BigInteger, nullable=True),  # newest created_at read so far
    Column("coverage_start_us", BigInteger, nullable=True),  # where "days of history" begin
    Column("backfill_start_us", BigInteger, nullable=True),
    Column("backfill_done", Boolean, nullable=False, default=False),
    Column("started_us", BigInteger, nullable=False),  # first start of this store
    Column("updated_us", BigInteger, nullable=False),
    Column("ledger_start_us", BigInteger, nullable=True),  # the ledger knows every row created after this
)

seen_ids = Table(  # the ledger: every row counted or rejected over the history window
    "seen_ids",
    metadata,
    Column("record_id", String(256), primary_key=True),  # canonical id, or a content digest for id-less rows
    Column("created_us", BigInteger, nullable=False),  # the row's time; when first read if it has none
    Column("digest", String(16), nullable=True),  # the row's content (NULL: remembered before 0004)
    Column("timed", Boolean, nullable=False, server_default=true()),  # created_us is the row's own time
    Column("seen_us", BigInteger, nullable=False, server_default="0"),  # when first read
    Index("ix_seen_ids_created_us", "created_us", "timed"),
)

hourly_buckets = Table(
    "hourly_buckets",
    metadata,
    Column("hour_us", BigInteger, primary_key=True),  # instant the local hour began
    Column("type", Text, primary_key=True),
    Column("channel", Text, primary_key=True),
    Column("count", Integer, nullable=False),
)

store_meta = Table(
    "store_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

rule_state = Table(
    "rule_state",
    metadata,
    Column("rule", String(128), primary_key=True),
    Column("part", String(32), primary_key=True),  # core | series | pending
    Column("config_hash", String(64), nullable=False),
    Column("data", Text, nullable=False),
    Column("updated_us", BigInteger, nullable=False),
)

alerts = Table(
    "alerts",
    metadata,
    Column("instance", String(32), primary_key=True),
    Column("fingerprint", String(32), nullable=False),
    Column("rule", String(128), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("labels", Text, nullable=False),
    Column("tier", String(16), nullable=False),
    Column("status", String(16), nullable=False),  # open | resolved
    Column("started_us", BigInteger, nullable=False),
    Column("updated_us", BigInteger, nullable=False),
    Column("resolved_us", BigInteger, nullable=True),
    Column("value", Float, nullable=False),
    Column("baseline", Float, nullable=True),
    Column("peak", Float, nullable=False),
    Column("last_event", Text, nullable=False),
    Column("replay", Boolean, nullable=False),  # opened during the first start's backfill
    Index("ix_alerts_status", "status", "updated_us"),
    Index("ix_alerts_fingerprint", "fingerprint"),
)

alert_events = Table(
    "alert_events",
    metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("instance", String(32), nullable=False),
    Column("fingerprint", String(32), nullable=False),
    Column("rule", String(128), nullable=False),
    Column("state", String(16), nullable=False),
    Column("tier", String(16), nullable=False),
    Column("at_us", BigInteger, nullable=False),
    Column("payload", Text, nullable=False),
    Column("notify", Boolean, nullable=False),  # false: recorded during backfill, never sent
    Column("created_us", BigInteger, nullable=False),
    Index("ix_alert_events_instance", "instance"),
)

dispatch_cursor = Table(
    "dispatch_cursor",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("seq", BigInteger, nullable=False),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("delivery_id", String(40), nullable=False, unique=True),  # stable across retries
    Column("receiver", String(128), nullable=False),
    Column("kind", String(16), nullable=False),  # alert | digest | repeat | escalation | fallback | test
    Column("status", String(16), nullable=False),  # pending | sending | delivered | failed | dry_run
    Column("tier", String(16), nullable=False),
    Column("instances", Text, nullable=False),  # JSON list of the alert instances in the message
    Column("payload", Text, nullable=False),  # JSON: views and message facts; rendered at send time
    Column("event_at_us", BigInteger, nullable=False),  # earliest event in it (for the delay metric)
    Column("created_us", BigInteger, nullable=False),
    Column("next_attempt_us", BigInteger, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("last_error", Text, nullable=True),
    Column("finished_us", BigInteger, nullable=True),
    Column("url_index", Integer, nullable=True),
    Index("ix_outbox_receiver_status", "receiver", "status", "id"),
)

rate_state = Table(
    "rate_state",
    metadata,
    Column("receiver", String(128), primary_key=True),
    Column("url_index", Integer, primary_key=True),
    Column("sent", Text, nullable=False),  # JSON list of recent send instants (µs)
    Column("blocked_until_us", BigInteger, nullable=False),
)

notify_log = Table(
    "notify_log",
    metadata,  # who was told what about which alert (resolutions go to the same people)
    Column("receiver", String(128), primary_key=True),
    Column("instance", String(32), primary_key=True),
    Column("route", Integer, nullable=False),
    Column("group_key", String(64), nullable=False),
    Column("last_sent_us", BigInteger, nullable=False),
    Column("last_state", String(16), nullable=False),
    Column("last_tier", String(16), nullable=False),
)

dispatch_groups = Table(
    "dispatch_groups",
    metadata,  # alerts waiting to be told, grouped per route and group labels
    Column("group_key", String(64), primary_key=True),
    Column("route", Integer, nullable=False),
    Column("labels", Text, nullable=False),
    Column("pending", Text, nullable=False),  # JSON {instance: why}
    Column("first_pending_us", BigInteger, nullable=True),
    Column("last_flush_us", BigInteger, nullable=True),
    Column("urgent", Boolean, nullable=False),
)

silences = Table(
    "silences",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("matchers", Text, nullable=False),  # JSON, Alertmanager's shape
    Column("starts_us", BigInteger, nullable=False),
    Column("ends_us", BigInteger, nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("comment", Text, nullable=False),
    Column("created_us", BigInteger, nullable=False),
    Column("updated_us", BigInteger, nullable=False),
)

acks = Table(
    "acks",
    metadata,
    Column("instance", String(32), primary_key=True),
    Column("by", String(200), nullable=False),
    Column("via", String(16), nullable=False),  # api | link, set by the server (older rows may say cli)
    Column("at_us", BigInteger, nullable=False),
)

escalations = Table(
    "escalations",
    metadata,  # escalated once per level
    Column("instance", String(32), primary_key=True),
    Column("tier", String(16), primary_key=True),
    Column("at_us", BigInteger, nullable=False),
)

leader_lease = Table(
    "leader_lease",
    metadata,  # PostgreSQL: who leads the instances sharing this store (sentinel.store.lease)
    Column("name", String(32), primary_key=True),  # one row, "leader"
    Column("epoch", BigInteger, nullable=False),  # +1 at every takeover; every fenced write compares it
    Column("holder", String(128), nullable=False),  # "HOST pid PID" of the leader
    Column("backend_pid", Integer, nullable=False),  # the leader's lock session on the server
    Column("acquired_us", BigInteger, nullable=False),  # the server's clock, as are the two below
    Column("renewed_us", BigInteger, nullable=False),
    Column("ttl_us", BigInteger, nullable=False),  # the leader's lease_ttl: standbys take over after it
)
