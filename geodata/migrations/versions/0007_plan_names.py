"""plan documents: the names a plan gives its communities (new ones named as they are made,
existing ones renamed), used when the plan is adopted

Revision ID: 0007
Revises: 0003
Create Date: 2026-11-24
"""

from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'plan_communities',
        sa.Column('plan_id', sa.Integer(), nullable=False),
        sa.Column('code', sa.String(length=12), nullable=False),
        sa.Column('name', sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(['plan_id'], ['plans.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('plan_id', 'code'),
    )


def downgrade() -> None:
    op.drop_table('plan_communities')
