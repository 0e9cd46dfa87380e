"""names without codes: provisional codes on streets and communities (临时代码, replaced by the
official code table), how each unit's households were estimated, and points whose location is
only approximate (geocoded to a community or street, not an address)

Revision ID: 0006
Revises: 0003
Create Date: 2026-11-24
"""

from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0003'
branch_labels = None
depends_on = None

#: (table, column) added here. Plain ADD COLUMN, never a batch copy: SpatiaLite tables with a
#: geometry column must not be recreated. A column another branch already added is left alone.
COLUMNS = [
    ('streets', sa.Column('provisional', sa.Boolean(), nullable=False, server_default=sa.false())),
    ('communities', sa.Column('provisional', sa.Boolean(), nullable=False, server_default=sa.false())),
    ('units', sa.Column('households_source', sa.String(length=32), nullable=True)),
    ('facilities', sa.Column('location_precision', sa.String(length=16), nullable=True)),
    ('incidents', sa.Column('location_precision', sa.String(length=16), nullable=True)),
    ('incidents', sa.Column('community_code', sa.String(length=12), nullable=True)),
]


def _present(table: str, column: str) -> bool:
    return column in {c['name'] for c in sa.inspect(op.get_bind()).get_columns(table)}


def upgrade() -> None:
    for table, column in COLUMNS:
        if not _present(table, column.name):
            op.add_column(table, column)


def downgrade() -> None:
    for table, column in reversed(COLUMNS):
        if _present(table, column.name):
            with op.batch_alter_table(table, schema=None) as batch_op:
                batch_op.drop_column(column.name)
