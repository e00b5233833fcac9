"""Foundation: source watermark, recently seen ids, raw hourly buckets.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "source_state",
        sa.Column("key", sa.String(32), primary_key=True),
        sa.Column("watermark_us", sa.BigInteger, nullable=True),
        sa.Column("coverage_start_us", sa.BigInteger, nullable=True),
        sa.Column("backfill_start_us", sa.BigInteger, nullable=True),
        sa.Column("backfill_done", sa.Boolean, nullable=False),
        sa.Column("started_us", sa.BigInteger, nullable=False),
        sa.Column("updated_us", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_source_state"),
    )
    op.create_table(
        "seen_ids",
        sa.Column("record_id", sa.String(256), nullable=False),
        sa.Column("created_us", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("record_id", name="pk_seen_ids"),
    )
    op.create_index("ix_seen_ids_created_us", "seen_ids", ["created_us"])
    op.create_table(
        "hourly_buckets",
        sa.Column("hour_us", sa.BigInteger, nullable=False),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("channel", sa.Text, nullable=False),
        sa.Column("count", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("hour_us", "type", "channel", name="pk_hourly_buckets"),
    )
    op.create_table(
        "store_meta",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("value", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_store_meta"),
    )


def downgrade() -> None:
    op.drop_table("store_meta")
    op.drop_table("hourly_buckets")
    op.drop_index("ix_seen_ids_created_us", table_name="seen_ids")
    op.drop_table("seen_ids")
    op.drop_table("source_state")
