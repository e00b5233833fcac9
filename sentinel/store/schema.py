"""The state store's tables, as SQLAlchemy Core metadata shared by the code and the migrations.

Nothing here holds a secret: receivers are referred to by name, sources by a redacted description.
Instants are BIGINT microseconds since the epoch (UTC), which every backend stores exactly.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Index, Integer, MetaData, String, Table, Text

metadata = MetaData(naming_convention={
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "pk": "pk_%(table_name)s",
})

source_state = Table(
    "source_state", metadata,
    Column("key", String(32), primary_key=True),
    Column("watermark_us", BigInteger, nullable=True),  # newest created_at read so far
    Column("coverage_start_us", BigInteger, nullable=True),  # where "days of history" begin
    Column("backfill_start_us", BigInteger, nullable=True),
    Column("backfill_done", Boolean, nullable=False, default=False),
    Column("started_us", BigInteger, nullable=False),  # first start of this store
    Column("updated_us", BigInteger, nullable=False),
)

seen_ids = Table(
    "seen_ids", metadata,
    Column("record_id", String(256), primary_key=True),
    Column("created_us", BigInteger, nullable=False),
    Index("ix_seen_ids_created_us", "created_us"),
)

hourly_buckets = Table(
    "hourly_buckets", metadata,
    Column("hour_us", BigInteger, primary_key=True),  # instant the local hour began
    Column("type", Text, primary_key=True),
    Column("channel", Text, primary_key=True),
    Column("count", Integer, nullable=False),
)

store_meta = Table(
    "store_meta", metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)
