"""Leader lease: the row through which instances sharing one PostgreSQL store agree who leads, with the
epoch every fenced write compares (see `sentinel.store.lease`). Unused, but present, on SQLite.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "leader_lease",
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("epoch", sa.BigInteger, nullable=False),
        sa.Column("holder", sa.String(128), nullable=False),
        sa.Column("backend_pid", sa.Integer, nullable=False),
        sa.Column("acquired_us", sa.BigInteger, nullable=False),
        sa.Column("renewed_us", sa.BigInteger, nullable=False),
        sa.Column("ttl_us", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_leader_lease"),
    )


def downgrade() -> None:
    op.drop_table("leader_lease")
