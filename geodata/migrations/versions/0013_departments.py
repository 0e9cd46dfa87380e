"""departments: the 处置部门 that fix cases (name, categories, contact, own time limits, the
categories each is the default for), the department of a handler's account and of a
dispatched case, who handled a case, its 督办 (count, level, when), what each step chose, and
the step each photo belongs to

Revision ID: departments
Revises: 0001
Create Date: 2026-12-07
"""

from alembic import op
import sqlalchemy as sa


revision = 'departments'
down_revision = '0001'
branch_labels = None
depends_on = '0004'

#: (table, column) added here. Plain ADD COLUMN, never a batch copy: SpatiaLite tables with a
#: geometry column must not be recreated (and the rates' triggers on incidents would go).
COLUMNS = [
    ('users', sa.Column('department_code', sa.String(length=16), nullable=True)),
    ('incidents', sa.Column('department_code', sa.String(length=16), nullable=True)),
    ('incidents', sa.Column('handler', sa.String(length=50), nullable=True)),
    ('incidents', sa.Column('supervise_count', sa.Integer(), nullable=False, server_default='0')),
    ('incidents', sa.Column('supervise_level', sa.String(length=16), nullable=True)),
    ('incidents', sa.Column('supervised_at', sa.DateTime(), nullable=True)),
    ('incident_steps', sa.Column('detail', sa.String(length=64), nullable=True)),
    ('incident_photos', sa.Column('step_id', sa.Integer(), nullable=True)),
]


def _present(table: str, column: str) -> bool:
    return column in {c['name'] for c in sa.inspect(op.get_bind()).get_columns(table)}


def upgrade() -> None:
    op.create_table(
        'departments',
        sa.Column('code', sa.String(length=16), primary_key=True),
        sa.Column('name', sa.String(length=100), nullable=False, unique=True),
        sa.Column('categories', sa.JSON(), nullable=False),
        sa.Column('contact', sa.String(length=200), nullable=True),
        sa.Column('limits', sa.JSON(), nullable=True),
        sa.Column('default_for', sa.JSON(), nullable=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
    )
    for table, column in COLUMNS:
        if not _present(table, column.name):
            op.add_column(table, column)
    op.create_index('ix_incidents_department_code', 'incidents', ['department_code'])
    op.create_index('ix_incident_photos_step_id', 'incident_photos', ['step_id'])


def downgrade() -> None:
    op.drop_index('ix_incident_photos_step_id', 'incident_photos')
    op.drop_index('ix_incidents_department_code', 'incidents')
    for table, column in reversed(COLUMNS):
        if _present(table, column.name):  # plain DROP COLUMN, never a batch copy (see COLUMNS)
            op.execute(f'ALTER TABLE {table} DROP COLUMN {column.name}')
    op.drop_table('departments')
