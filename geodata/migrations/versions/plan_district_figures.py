"""plan district figures: each district's part of a plan kept in figures (its communities'
households and compactness, its additive scores), so that a hand edit of one district of a
province's plan re-scores the whole plan without reading any other district's units

Revision ID: plan_district_figures
Revises: 0001
Create Date: 2026-12-08
"""

from alembic import op
import sqlalchemy as sa


revision = 'plan_district_figures'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'plan_district_figures',
        sa.Column('plan_id', sa.Integer(), nullable=False),
        sa.Column('district_code', sa.String(length=6), nullable=False),
        sa.Column('figures', sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(['plan_id'], ['plans.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('plan_id', 'district_code'),
    )


def downgrade() -> None:
    op.drop_table('plan_district_figures')
