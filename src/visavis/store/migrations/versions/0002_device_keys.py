"""Device identity public keys for end-to-end encryption (one per device, set once).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "device_keys",
        sa.Column(
            "device_id",
            sa.String(64),
            sa.ForeignKey("user_devices.id", ondelete="CASCADE", name="fk_device_keys_device"),
            primary_key=True,
        ),
        sa.Column("public_key", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("device_keys")
