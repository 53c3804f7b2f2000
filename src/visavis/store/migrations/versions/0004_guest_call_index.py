"""Call history lists the guests admitted into each call: index link_guests by call.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_link_guests_call", "link_guests", ["call_id"])


def downgrade() -> None:
    op.drop_index("ix_link_guests_call", table_name="link_guests")
