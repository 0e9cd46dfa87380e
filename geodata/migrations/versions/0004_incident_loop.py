"""the incident loop: a version on every case (two supervisors acting at once: one wins), where a
case was placed (point, or only a community or street), who reported it, how often it was
returned for rework, when it was evaluated, the working hours each step took; supervisors'
cells (grid_assignments) and the photos of a case (incident_photos, files outside the database)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

#: Columns added to ``incidents``. Plain ADD COLUMN, never a batch copy: a SpatiaLite table with
#: a geometry column must not be recreated. A column another branch already added (0006 adds
#: ``location_precision`` and ``community_code``) is left alone.
COLUMNS = [
    sa.Column('version', sa.Integer(), nullable=False, server_default='1'),
    sa.Column('location_precision', sa.String(length=16), nullable=True),
    sa.Column('community_code', sa.String(length=12), nullable=True),
    sa.Column('street_code', sa.String(length=9), nullable=True),
    sa.Column('reporter', sa.String(length=50), nullable=True),
    sa.Column('rework_count', sa.Integer(), nullable=False, server_default='0'),
    sa.Column('evaluated_at', sa.DateTime(), nullable=True),
    sa.Column('evaluation', sa.String(length=16), nullable=True),
    # working hours each step took, on the calendar in force when it was taken (率 by SQL sums)
    sa.Column('filing_wh', sa.Float(), nullable=True),
    sa.Column('dispatch_wh', sa.Float(), nullable=True),
    sa.Column('handling_wh', sa.Float(), nullable=True),
    sa.Column('verify_wh', sa.Float(), nullable=True),
]
INDEXES = [('ix_incidents_community_code', ['community_code']),
           ('ix_incidents_reported_at', ['reported_at']),
           ('ix_incidents_closed_at', ['closed_at'])]


def _columns(table: str) -> set[str]:
    return {c['name'] for c in sa.inspect(op.get_bind()).get_columns(table)}


def _indexes(table: str) -> set[str]:
    return {i['name'] for i in sa.inspect(op.get_bind()).get_indexes(table)}


def upgrade() -> None:
    present = _columns('incidents')
    for column in COLUMNS:
        if column.name not in present:
            op.add_column('incidents', column)
    indexes = _indexes('incidents')
    for name, columns in INDEXES:
        if name not in indexes:
            op.create_index(name, 'incidents', columns)
    op.create_table('grid_assignments',
    sa.Column('user_name', sa.String(length=50), nullable=False),
    sa.Column('cell_code', sa.String(length=15), nullable=False),
    sa.Column('assigned_at', sa.DateTime(), nullable=False),
    sa.Column('assigned_by', sa.String(length=50), nullable=True),
    sa.PrimaryKeyConstraint('user_name', 'cell_code')
    )
    op.create_index('ix_grid_assignments_cell_code', 'grid_assignments', ['cell_code'])
    op.create_table('incident_photos',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('incident_id', sa.Integer(), nullable=False),
    sa.Column('stored_name', sa.String(length=64), nullable=False),
    sa.Column('content_type', sa.String(length=32), nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('original_name', sa.String(length=200), nullable=True),
    sa.Column('step', sa.String(length=16), nullable=True),
    sa.Column('uploaded_by', sa.String(length=50), nullable=True),
    sa.Column('uploaded_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['incident_id'], ['incidents.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('stored_name')
    )
    op.create_index('ix_incident_photos_incident_id', 'incident_photos', ['incident_id'])


def downgrade() -> None:
    op.drop_index('ix_incident_photos_incident_id', table_name='incident_photos')
    op.drop_table('incident_photos')
    op.drop_index('ix_grid_assignments_cell_code', table_name='grid_assignments')
    op.drop_table('grid_assignments')
    indexes = _indexes('incidents')
    for name, _ in INDEXES:
        if name in indexes:
            op.drop_index(name, table_name='incidents')
    mine = [c.name for c in COLUMNS if c.name not in ('location_precision', 'community_code')]
    for name in reversed(mine):
        op.drop_column('incidents', name)  # SQLite ≥ 3.35 drops a column in place
