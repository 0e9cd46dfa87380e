"""boundary revisions: a counter raised by every change of units or communities, its log, and
the revision a plan was made from

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    revisions = op.create_table('revisions',
    sa.Column('name', sa.String(length=32), nullable=False),
    sa.Column('value', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    op.bulk_insert(revisions, [{'name': 'boundaries', 'value': 0}])
    op.create_table('boundary_changes',
    sa.Column('revision', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.Column('actor', sa.String(length=50), nullable=True),
    sa.Column('action', sa.String(length=32), nullable=False),
    sa.Column('streets', sa.JSON(), nullable=True),
    sa.Column('communities', sa.JSON(), nullable=True),
    sa.Column('plan_id', sa.Integer(), nullable=True),
    sa.PrimaryKeyConstraint('revision')
    )
    with op.batch_alter_table('plans', schema=None) as batch_op:
        batch_op.add_column(sa.Column('base_revision', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('streets', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('adoption', sa.JSON(), nullable=True))
    with op.batch_alter_table('plan_assignments', schema=None) as batch_op:
        batch_op.add_column(sa.Column('edited', sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table('plan_assignments', schema=None) as batch_op:
        batch_op.drop_column('edited')
    with op.batch_alter_table('plans', schema=None) as batch_op:
        batch_op.drop_column('adoption')
        batch_op.drop_column('streets')
        batch_op.drop_column('base_revision')
    op.drop_table('boundary_changes')
    op.drop_table('revisions')
