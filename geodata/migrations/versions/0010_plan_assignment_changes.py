"""plan assignments remember the plan version that last changed them, so a process holding the
plan in memory catches up on another process's hand edits by reading only those rows; the
households per community come from a covering index of the units (their rows carry geometry:
a city's 200,000 read from disk took seconds)

Revision ID: 0010
Revises: 0007
Create Date: 2026-11-23
"""

from alembic import op
import sqlalchemy as sa


revision = '0010'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # plain ADD COLUMN (no batch copy); rows written before it count as changed at version 0
    op.add_column('plan_assignments',
                  sa.Column('changed_in', sa.Integer(), nullable=False, server_default='0'))
    op.create_index('ix_plan_assignments_changes', 'plan_assignments', ['plan_id', 'changed_in'])
    op.create_index('ix_units_totals', 'units', ['community_code', 'households', 'population'])


def downgrade() -> None:
    op.drop_index('ix_units_totals', table_name='units')
    op.drop_index('ix_plan_assignments_changes', table_name='plan_assignments')
    with op.batch_alter_table('plan_assignments') as batch:
        batch.drop_column('changed_in')
