"""Call links (FaceTime's links) and the guests who open them.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
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
        "call_links",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column(
            "user_id",
            sa.String(64),
            sa.ForeignKey("users.id", name="fk_call_links_user"),
            nullable=False,
        ),
        sa.Column("token_hash", sa.String(255), nullable=False, unique=True),
        sa.Column("media", sa.String(10), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("expires_at", sa.Double(), nullable=False),
        sa.Column("revoked_at", sa.Double(), nullable=True),
        sa.Column("call_id", sa.String(64), nullable=True),
    )
    op.create_index("ix_call_links_user", "call_links", ["user_id"])
    op.create_table(
        "link_guests",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column(
            "link_id",
            sa.String(64),
            sa.ForeignKey("call_links.id", name="fk_link_guests_link"),
            nullable=False,
        ),
        sa.Column("token_hash", sa.String(255), nullable=False, unique=True),
        sa.Column("display_name", sa.String(100), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("call_id", sa.String(64), nullable=True),
    )
    op.create_index("ix_link_guests_link", "link_guests", ["link_id"])


def downgrade() -> None:
    op.drop_table("link_guests")
    op.drop_table("call_links")
