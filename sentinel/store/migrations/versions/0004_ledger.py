"""Ledger: `seen_ids` remembers every row counted or rejected over the history window, not only the
lateness window, with a digest of its content, whether its time is usable and when it was first read;
`source_state.ledger_start_us` says from where on that memory is complete.

An upgraded store's ledger is complete from its oldest seen row on (the old seen set covered every row
after `watermark - lateness`); reconciliation never looks before that, so rows the old code may have
missed long ago are not counted again as "late" now.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("seen_ids") as batch:
        batch.add_column(sa.Column("digest", sa.String(16), nullable=True))
        batch.add_column(sa.Column("timed", sa.Boolean, nullable=False, server_default=sa.true()))
        batch.add_column(sa.Column("seen_us", sa.BigInteger, nullable=False, server_default="0"))
    op.execute("UPDATE seen_ids SET seen_us = created_us")
    # reconciliation counts timed entries by created_us: from the index alone
    op.drop_index("ix_seen_ids_created_us", table_name="seen_ids")
    op.create_index("ix_seen_ids_created_us", "seen_ids", ["created_us", "timed"])
    with op.batch_alter_table("source_state") as batch:
        batch.add_column(sa.Column("ledger_start_us", sa.BigInteger, nullable=True))
    op.execute(
        "UPDATE source_state SET ledger_start_us = COALESCE((SELECT MIN(created_us) FROM seen_ids) - 1, watermark_us)"
    )


def downgrade() -> None:
    with op.batch_alter_table("source_state") as batch:
        batch.drop_column("ledger_start_us")
    op.drop_index("ix_seen_ids_created_us", table_name="seen_ids")
    op.create_index("ix_seen_ids_created_us", "seen_ids", ["created_us"])
    with op.batch_alter_table("seen_ids") as batch:
        batch.drop_column("seen_us")
        batch.drop_column("timed")
        batch.drop_column("digest")
