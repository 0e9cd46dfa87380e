"""plan assignments carry their unit's district, so that a plan made district by district (one
task per district, on several workers) writes and rewrites one district's rows by
``plan_id, district_code`` — a repeated task replaces its own rows, and on a store split by
district the statement stays in that district's part

Revision ID: scale_plan_district
Revises: 0001
Create Date: 2026-12-07
"""

from alembic import op
import sqlalchemy as sa


revision = 'scale_plan_district'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # plain ADD COLUMN (no batch copy); rows of plans made before it have no district (NULL)
    op.add_column('plan_assignments', sa.Column('district_code', sa.String(length=6), nullable=True))
    op.create_index('ix_plan_assignments_district', 'plan_assignments', ['plan_id', 'district_code'])


def downgrade() -> None:
    op.drop_index('ix_plan_assignments_district', table_name='plan_assignments')
    with op.batch_alter_table('plan_assignments') as batch:
        batch.drop_column('district_code')
