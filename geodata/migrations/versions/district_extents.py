"""where each district's rows of a layer lie (their bounding box, stamped with the layer's
revision counters of that district) and which communities' districts its facilities name, so
that a read by place, or of the facilities a community names, names the districts whose rows can
answer it instead of reaching every district's part

Revision ID: district_extents
Revises: 0001
Create Date: 2026-12-07
"""

from alembic import op
import sqlalchemy as sa


revision = 'district_extents'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # empty: the first reader of a layer measures every district (geodata/extents.py)
    op.create_table(
        'district_extents',
        sa.Column('layer', sa.String(length=32), nullable=False),
        sa.Column('district_code', sa.String(length=6), nullable=False),
        sa.Column('revision', sa.Integer(), nullable=False),
        sa.Column('minx', sa.Float(), nullable=True),
        sa.Column('miny', sa.Float(), nullable=True),
        sa.Column('maxx', sa.Float(), nullable=True),
        sa.Column('maxy', sa.Float(), nullable=True),
        sa.Column('named', sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint('layer', 'district_code'),
    )


def downgrade() -> None:
    op.drop_table('district_extents')
