"""deep-zoom pyramids: tile pack columns on previews, the bounded on-demand render cache

Revision ID: v0002
Revises: v0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "v0002"
down_revision = "v0001"
branch_labels = None
depends_on = None

_PREVIEW_COLUMNS: list[sa.Column[object]] = [
    sa.Column("tile_format", sa.String(length=8), nullable=True),
    sa.Column("tile_size", sa.Integer(), nullable=True),
    sa.Column("overlap", sa.Integer(), nullable=True),
    sa.Column("levels", sa.Integer(), nullable=True),
    sa.Column("bytes", sa.BigInteger(), nullable=True),
    sa.Column("lossy", sa.Boolean(), nullable=True),
    sa.Column("source_lossy", sa.Boolean(), nullable=True),
    sa.Column("window_center", sa.Float(), nullable=True),
    sa.Column("window_width", sa.Float(), nullable=True),
    sa.Column("window_function", sa.String(length=16), nullable=True),
    sa.Column("windows", sa.Text(), nullable=True),
    sa.Column("built_at", sa.DateTime(timezone=True), nullable=True),
]


def upgrade() -> None:
    for column in _PREVIEW_COLUMNS:
        op.add_column("previews", column)
    op.create_table(
        "renders",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version_pk", sa.Integer(), nullable=False),
        sa.Column("frame", sa.Integer(), nullable=False),
        sa.Column("window", sa.String(length=100), nullable=False),
        sa.Column("tile_format", sa.String(length=8), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("object_key", sa.String(length=512), nullable=True),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["version_pk"],
            ["instance_versions.id"],
            name=op.f("fk_renders_version_pk_instance_versions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_renders")),
        sa.UniqueConstraint(
            "version_pk", "frame", "window", "tile_format", name="uq_renders_render"
        ),
    )
    op.create_index("ix_renders_last_used", "renders", ["status", "last_used_at"])


def downgrade() -> None:
    op.drop_index("ix_renders_last_used", table_name="renders")
    op.drop_table("renders")
    with op.batch_alter_table("previews") as batch_op:
        for column in reversed(_PREVIEW_COLUMNS):
            batch_op.drop_column(column.name)
