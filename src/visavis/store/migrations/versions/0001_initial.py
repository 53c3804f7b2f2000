"""Initial schema: users, devices, calls, call participants.

Timestamps are float seconds since the epoch (double precision), as the records carry
them. Handles are unique through ``handle_key``, the case-folded handle, so the check is
the same on SQLite and PostgreSQL without collations or functional indexes.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
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
        "users",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("handle", sa.String(255), nullable=False),
        sa.Column("handle_key", sa.String(255), nullable=False),
        sa.Column("display_name", sa.String(255), nullable=False),
        sa.Column("password_hash", sa.String(512), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.UniqueConstraint("handle_key", name="uq_users_handle_key"),
    )
    op.create_table(
        "user_devices",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column(
            "user_id",
            sa.String(64),
            sa.ForeignKey("users.id", ondelete="CASCADE", name="fk_user_devices_user"),
            nullable=False,
        ),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("token_hash", sa.String(255), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("revoked_at", sa.Double(), nullable=True),
        sa.Column("push_subscription", sa.JSON(none_as_null=True), nullable=True),
        sa.UniqueConstraint("token_hash", name="uq_user_devices_token_hash"),
    )
    op.create_index("ix_user_devices_user", "user_devices", ["user_id", "created_at"])
    op.create_table(
        "calls",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("initiator_user_id", sa.String(64), nullable=False),
        sa.Column("initiator_device_id", sa.String(64), nullable=False),
        sa.Column("media", sa.String(10), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("topology", sa.String(10), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("room_id", sa.String(64), nullable=True),
        sa.Column("answered_at", sa.Double(), nullable=True),
        sa.Column("ended_at", sa.Double(), nullable=True),
        sa.Column("end_reason", sa.String(64), nullable=True),
    )
    op.create_index("ix_calls_created", "calls", ["created_at"])
    op.create_table(
        "call_participants",
        sa.Column(
            "call_id",
            sa.String(64),
            sa.ForeignKey("calls.id", ondelete="CASCADE", name="fk_call_participants_call"),
            nullable=False,
        ),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(10), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("invited_at", sa.Double(), nullable=False),
        sa.Column("invited_by", sa.String(64), nullable=False),
        sa.Column("device_id", sa.String(64), nullable=True),
        sa.Column("ring_deadline", sa.Double(), nullable=True),
        sa.Column("joined_at", sa.Double(), nullable=True),
        sa.Column("left_at", sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint("call_id", "user_id", name="pk_call_participants"),
    )
    op.create_index("ix_call_participants_ring", "call_participants", ["state", "ring_deadline"])
    op.create_index("ix_call_participants_user", "call_participants", ["user_id", "state"])


def downgrade() -> None:
    op.drop_table("call_participants")
    op.drop_table("calls")
    op.drop_table("user_devices")
    op.drop_table("users")
