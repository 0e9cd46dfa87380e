"""plan steps: every hand edit of a plan (a move, a paint stroke, a split, a merge, a new
community, a community named) kept with what it changed, so that undo and redo belong to the
plan on the server and survive a reload and another tab

Revision ID: plan_steps
Revises: 0001
Create Date: 2026-12-06
"""

from alembic import op
import sqlalchemy as sa


revision = 'plan_steps'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'plan_steps',
        sa.Column('plan_id', sa.Integer(), nullable=False),
        sa.Column('seq', sa.Integer(), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('made_in', sa.Integer(), nullable=False),
        sa.Column('undone', sa.Boolean(), nullable=False, server_default='0'),
        sa.Column('actor', sa.String(length=50), nullable=True),
        sa.Column('at', sa.DateTime(), nullable=True),
        sa.Column('units', sa.JSON(), nullable=True),
        sa.Column('names', sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(['plan_id'], ['plans.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('plan_id', 'seq'),
    )


def downgrade() -> None:
    op.drop_table('plan_steps')
