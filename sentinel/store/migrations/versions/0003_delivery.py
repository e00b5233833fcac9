"""Delivery: the dispatcher's cursor, the durable outbox, per-robot rate-limit state.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dispatch_cursor",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_dispatch_cursor"),
    )
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), autoincrement=True, nullable=False),
        sa.Column("delivery_id", sa.String(40), nullable=False),
        sa.Column("receiver", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("tier", sa.String(16), nullable=False),
        sa.Column("instances", sa.Text, nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("event_at_us", sa.BigInteger, nullable=False),
        sa.Column("created_us", sa.BigInteger, nullable=False),
        sa.Column("next_attempt_us", sa.BigInteger, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("finished_us", sa.BigInteger, nullable=True),
        sa.Column("url_index", sa.Integer, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_outbox"),
        sa.UniqueConstraint("delivery_id", name="uq_outbox_delivery_id"),
    )
    op.create_index("ix_outbox_receiver_status", "outbox", ["receiver", "status", "id"])
    op.create_table(
        "rate_state",
        sa.Column("receiver", sa.String(128), nullable=False),
        sa.Column("url_index", sa.Integer, nullable=False),
        sa.Column("sent", sa.Text, nullable=False),
        sa.Column("blocked_until_us", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("receiver", "url_index", name="pk_rate_state"),
    )

    op.create_table(
        "notify_log",
        sa.Column("receiver", sa.String(128), nullable=False),
        sa.Column("instance", sa.String(32), nullable=False),
        sa.Column("route", sa.Integer, nullable=False),
        sa.Column("group_key", sa.String(64), nullable=False),
        sa.Column("last_sent_us", sa.BigInteger, nullable=False),
        sa.Column("last_state", sa.String(16), nullable=False),
        sa.Column("last_tier", sa.String(16), nullable=False),
        sa.PrimaryKeyConstraint("receiver", "instance", name="pk_notify_log"),
    )
    op.create_table(
        "dispatch_groups",
        sa.Column("group_key", sa.String(64), nullable=False),
        sa.Column("route", sa.Integer, nullable=False),
        sa.Column("labels", sa.Text, nullable=False),
        sa.Column("pending", sa.Text, nullable=False),
        sa.Column("first_pending_us", sa.BigInteger, nullable=True),
        sa.Column("last_flush_us", sa.BigInteger, nullable=True),
        sa.Column("urgent", sa.Boolean, nullable=False),
        sa.PrimaryKeyConstraint("group_key", name="pk_dispatch_groups"),
    )
    op.create_table(
        "silences",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("matchers", sa.Text, nullable=False),
        sa.Column("starts_us", sa.BigInteger, nullable=False),
        sa.Column("ends_us", sa.BigInteger, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("comment", sa.Text, nullable=False),
        sa.Column("created_us", sa.BigInteger, nullable=False),
        sa.Column("updated_us", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_silences"),
    )
    op.create_table(
        "acks",
        sa.Column("instance", sa.String(32), nullable=False),
        sa.Column("by", sa.String(200), nullable=False),
        sa.Column("via", sa.String(16), nullable=False),
        sa.Column("at_us", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("instance", name="pk_acks"),
    )
    op.create_table(
        "escalations",
        sa.Column("instance", sa.String(32), nullable=False),
        sa.Column("tier", sa.String(16), nullable=False),
        sa.Column("at_us", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("instance", "tier", name="pk_escalations"),
    )


def downgrade() -> None:
    op.drop_table("escalations")
    op.drop_table("acks")
    op.drop_table("silences")
    op.drop_table("dispatch_groups")
    op.drop_table("notify_log")
    op.drop_table("rate_state")
    op.drop_index("ix_outbox_receiver_status", table_name="outbox")
    op.drop_table("outbox")
    op.drop_table("dispatch_cursor")
