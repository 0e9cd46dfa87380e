"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from alembic import op
import sqlalchemy as sa
from geoalchemy2 import Geometry

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table('audit_log',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.Column('actor', sa.String(length=50), nullable=False),
    sa.Column('action', sa.String(length=32), nullable=False),
    sa.Column('layer', sa.String(length=32), nullable=True),
    sa.Column('object_code', sa.String(length=24), nullable=True),
    sa.Column('detail', sa.JSON(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_log_at'), ['at'], unique=False)

    op.create_geospatial_table('buildings',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=24), nullable=False),
    sa.Column('households', sa.Integer(), nullable=False),
    sa.Column('population', sa.Integer(), nullable=False),
    sa.Column('unit_code', sa.String(length=20), nullable=True),
    sa.Column('district_code', sa.String(length=6), nullable=False),
    sa.Column('geom', Geometry(srid=4326, dimension=2, spatial_index=False, from_text='ST_GeomFromEWKT', name='geometry', nullable=False), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('code')
    )
    with op.batch_alter_table('buildings', schema=None) as batch_op:
        batch_op.create_geospatial_index('idx_buildings_geom', ['geom'], unique=False, postgresql_using='gist', postgresql_ops={})
        batch_op.create_index(batch_op.f('ix_buildings_district_code'), ['district_code'], unique=False)
        batch_op.create_index(batch_op.f('ix_buildings_unit_code'), ['unit_code'], unique=False)

    op.create_geospatial_table('communities',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=12), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('street_code', sa.String(length=9), nullable=False),
    sa.Column('district_code', sa.String(length=6), nullable=False),
    sa.Column('valid_from', sa.Date(), nullable=True),
    sa.Column('geom', Geometry(geometry_type='MULTIPOLYGON', srid=4326, dimension=2, spatial_index=False, from_text='ST_GeomFromEWKT', name='geometry', nullable=False), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('code')
    )
    with op.batch_alter_table('communities', schema=None) as batch_op:
        batch_op.create_geospatial_index('idx_communities_geom', ['geom'], unique=False, postgresql_using='gist', postgresql_ops={})
        batch_op.create_index(batch_op.f('ix_communities_district_code'), ['district_code'], unique=False)
        batch_op.create_index(batch_op.f('ix_communities_street_code'), ['street_code'], unique=False)

    op.create_geospatial_table('community_history',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=12), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('street_code', sa.String(length=9), nullable=False),
    sa.Column('district_code', sa.String(length=6), nullable=False),
    sa.Column('valid_from', sa.Date(), nullable=True),
    sa.Column('valid_to', sa.Date(), nullable=False),
    sa.Column('plan_id', sa.Integer(), nullable=True),
    sa.Column('geom', Geometry(geometry_type='MULTIPOLYGON', srid=4326, dimension=2, spatial_index=False, from_text='ST_GeomFromEWKT', name='geometry', nullable=False), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('community_history', schema=None) as batch_op:
        batch_op.create_geospatial_index('idx_community_history_geom', ['geom'], unique=False, postgresql_using='gist', postgresql_ops={})
        batch_op.create_index(batch_op.f('ix_community_history_code'), ['code'], unique=False)
        batch_op.create_index(batch_op.f('ix_community_history_district_code'), ['district_code'], unique=False)

    op.create_geospatial_table('districts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=6), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('geom', Geometry(geometry_type='MULTIPOLYGON', srid=4326, dimension=2, spatial_index=False, from_text='ST_GeomFromEWKT', name='geometry', nullable=False), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('code')
    )
    with op.batch_alter_table('districts', schema=None) as batch_op:
        batch_op.create_geospatial_index('idx_districts_geom', ['geom'], unique=False, postgresql_using='gist', postgresql_ops={})

    op.create_geospatial_table('facilities',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=24), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('floor_area_m2', sa.Float(), nullable=True),
    sa.Column('community_code', sa.String(length=12), nullable=True),
    sa.Column('district_code', sa.String(length=6), nullable=False),
    sa.Column('geom', Geometry(geometry_type='POINT', srid=4326, dimension=2, spatial_index=False, from_text='ST_GeomFromEWKT', name='geometry', nullable=False), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('code')
    )
    with op.batch_alter_table('facilities', schema=None) as batch_op:
        batch_op.create_geospatial_index('idx_facilities_geom', ['geom'], unique=False, postgresql_using='gist', postgresql_ops={})
        batch_op.create_index(batch_op.f('ix_facilities_community_code'), ['community_code'], unique=False)
        batch_op.create_index(batch_op.f('ix_facilities_district_code'), ['district_code'], unique=False)
        batch_op.create_index(batch_op.f('ix_facilities_kind'), ['kind'], unique=False)

    op.create_geospatial_table('grid_cells',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=15), nullable=False),
    sa.Column('community_code', sa.String(length=12), nullable=False),
    sa.Column('district_code', sa.String(length=6), nullable=False),
    sa.Column('supervisor', sa.String(length=50), nullable=True),
    sa.Column('geom', Geometry(geometry_type='MULTIPOLYGON', srid=4326, dimension=2, spatial_index=False, from_text='ST_GeomFromEWKT', name='geometry', nullable=False), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('code')
    )
    with op.batch_alter_table('grid_cells', schema=None) as batch_op:
        batch_op.create_geospatial_index('idx_grid_cells_geom', ['geom'], unique=False, postgresql_using='gist', postgresql_ops={})
        batch_op.create_index(batch_op.f('ix_grid_cells_community_code'), ['community_code'], unique=False)
        batch_op.create_index(batch_op.f('ix_grid_cells_district_code'), ['district_code'], unique=False)

    op.create_geospatial_table('incidents',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=24), nullable=False),
    sa.Column('category', sa.String(length=16), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('reported_at', sa.DateTime(), nullable=False),
    sa.Column('filed_at', sa.DateTime(), nullable=True),
    sa.Column('dispatched_at', sa.DateTime(), nullable=True),
    sa.Column('handled_at', sa.DateTime(), nullable=True),
    sa.Column('feedback_at', sa.DateTime(), nullable=True),
    sa.Column('closed_at', sa.DateTime(), nullable=True),
    sa.Column('due_at', sa.DateTime(), nullable=True),
    sa.Column('grid_code', sa.String(length=15), nullable=True),
    sa.Column('district_code', sa.String(length=6), nullable=False),
    sa.Column('geom', Geometry(geometry_type='POINT', srid=4326, dimension=2, spatial_index=False, from_text='ST_GeomFromEWKT', name='geometry', nullable=False), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('code')
    )
    with op.batch_alter_table('incidents', schema=None) as batch_op:
        batch_op.create_geospatial_index('idx_incidents_geom', ['geom'], unique=False, postgresql_using='gist', postgresql_ops={})
        batch_op.create_index(batch_op.f('ix_incidents_category'), ['category'], unique=False)
        batch_op.create_index(batch_op.f('ix_incidents_district_code'), ['district_code'], unique=False)
        batch_op.create_index(batch_op.f('ix_incidents_due_at'), ['due_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_incidents_grid_code'), ['grid_code'], unique=False)
        batch_op.create_index(batch_op.f('ix_incidents_status'), ['status'], unique=False)

    op.create_table('jobs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('progress', sa.Float(), nullable=False),
    sa.Column('message', sa.Text(), nullable=True),
    sa.Column('params', sa.JSON(), nullable=True),
    sa.Column('result', sa.JSON(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('started_at', sa.DateTime(), nullable=True),
    sa.Column('finished_at', sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_jobs_status'), ['status'], unique=False)

    op.create_table('plans',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('author', sa.String(length=50), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('district_code', sa.String(length=6), nullable=True),
    sa.Column('params', sa.JSON(), nullable=True),
    sa.Column('scores', sa.JSON(), nullable=True),
    sa.Column('comment', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('plans', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_plans_district_code'), ['district_code'], unique=False)

    op.create_geospatial_table('roads',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=24), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=True),
    sa.Column('road_class', sa.String(length=20), nullable=False),
    sa.Column('district_code', sa.String(length=6), nullable=False),
    sa.Column('geom', Geometry(geometry_type='MULTILINESTRING', srid=4326, dimension=2, spatial_index=False, from_text='ST_GeomFromEWKT', name='geometry', nullable=False), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('code')
    )
    with op.batch_alter_table('roads', schema=None) as batch_op:
        batch_op.create_geospatial_index('idx_roads_geom', ['geom'], unique=False, postgresql_using='gist', postgresql_ops={})
        batch_op.create_index(batch_op.f('ix_roads_district_code'), ['district_code'], unique=False)

    op.create_table('settings',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('value', sa.JSON(), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('source', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('key')
    )
    op.create_geospatial_table('streets',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=9), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('district_code', sa.String(length=6), nullable=False),
    sa.Column('geom', Geometry(geometry_type='MULTIPOLYGON', srid=4326, dimension=2, spatial_index=False, from_text='ST_GeomFromEWKT', name='geometry', nullable=False), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('code')
    )
    with op.batch_alter_table('streets', schema=None) as batch_op:
        batch_op.create_geospatial_index('idx_streets_geom', ['geom'], unique=False, postgresql_using='gist', postgresql_ops={})
        batch_op.create_index(batch_op.f('ix_streets_district_code'), ['district_code'], unique=False)

    op.create_table('unit_adjacency',
    sa.Column('unit_a', sa.String(length=20), nullable=False),
    sa.Column('unit_b', sa.String(length=20), nullable=False),
    sa.Column('shared_m', sa.Float(), nullable=False),
    sa.Column('district_code', sa.String(length=6), nullable=False),
    sa.PrimaryKeyConstraint('unit_a', 'unit_b')
    )
    with op.batch_alter_table('unit_adjacency', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_unit_adjacency_district_code'), ['district_code'], unique=False)
        batch_op.create_index(batch_op.f('ix_unit_adjacency_unit_b'), ['unit_b'], unique=False)

    op.create_geospatial_table('units',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=20), nullable=False),
    sa.Column('households', sa.Integer(), nullable=False),
    sa.Column('population', sa.Integer(), nullable=False),
    sa.Column('street_code', sa.String(length=9), nullable=False),
    sa.Column('community_code', sa.String(length=12), nullable=True),
    sa.Column('district_code', sa.String(length=6), nullable=False),
    sa.Column('built_year', sa.Integer(), nullable=True),
    sa.Column('land_use', sa.String(length=20), nullable=False),
    sa.Column('geom', Geometry(geometry_type='MULTIPOLYGON', srid=4326, dimension=2, spatial_index=False, from_text='ST_GeomFromEWKT', name='geometry', nullable=False), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('code')
    )
    with op.batch_alter_table('units', schema=None) as batch_op:
        batch_op.create_geospatial_index('idx_units_geom', ['geom'], unique=False, postgresql_using='gist', postgresql_ops={})
        batch_op.create_index(batch_op.f('ix_units_community_code'), ['community_code'], unique=False)
        batch_op.create_index(batch_op.f('ix_units_district_code'), ['district_code'], unique=False)
        batch_op.create_index(batch_op.f('ix_units_street_code'), ['street_code'], unique=False)

    op.create_table('users',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=50), nullable=False),
    sa.Column('password_hash', sa.String(length=255), nullable=True),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('scope_code', sa.String(length=15), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    op.create_table('incident_steps',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('incident_id', sa.Integer(), nullable=False),
    sa.Column('step', sa.String(length=16), nullable=False),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.Column('actor', sa.String(length=50), nullable=True),
    sa.Column('note', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['incident_id'], ['incidents.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('incident_steps', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_incident_steps_incident_id'), ['incident_id'], unique=False)

    op.create_table('plan_assignments',
    sa.Column('plan_id', sa.Integer(), nullable=False),
    sa.Column('unit_code', sa.String(length=20), nullable=False),
    sa.Column('community_code', sa.String(length=12), nullable=False),
    sa.ForeignKeyConstraint(['plan_id'], ['plans.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('plan_id', 'unit_code')
    )



def downgrade() -> None:

    op.drop_table('plan_assignments')
    with op.batch_alter_table('incident_steps', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_incident_steps_incident_id'))

    op.drop_table('incident_steps')
    op.drop_table('users')
    with op.batch_alter_table('units', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_units_street_code'))
        batch_op.drop_index(batch_op.f('ix_units_district_code'))
        batch_op.drop_index(batch_op.f('ix_units_community_code'))
        batch_op.drop_geospatial_index('idx_units_geom', postgresql_using='gist', column_name='geom')

    op.drop_geospatial_table('units')
    with op.batch_alter_table('unit_adjacency', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_unit_adjacency_unit_b'))
        batch_op.drop_index(batch_op.f('ix_unit_adjacency_district_code'))

    op.drop_table('unit_adjacency')
    with op.batch_alter_table('streets', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_streets_district_code'))
        batch_op.drop_geospatial_index('idx_streets_geom', postgresql_using='gist', column_name='geom')

    op.drop_geospatial_table('streets')
    op.drop_table('settings')
    with op.batch_alter_table('roads', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_roads_district_code'))
        batch_op.drop_geospatial_index('idx_roads_geom', postgresql_using='gist', column_name='geom')

    op.drop_geospatial_table('roads')
    with op.batch_alter_table('plans', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_plans_district_code'))

    op.drop_table('plans')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_jobs_status'))

    op.drop_table('jobs')
    with op.batch_alter_table('incidents', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_incidents_status'))
        batch_op.drop_index(batch_op.f('ix_incidents_grid_code'))
        batch_op.drop_index(batch_op.f('ix_incidents_due_at'))
        batch_op.drop_index(batch_op.f('ix_incidents_district_code'))
        batch_op.drop_index(batch_op.f('ix_incidents_category'))
        batch_op.drop_geospatial_index('idx_incidents_geom', postgresql_using='gist', column_name='geom')

    op.drop_geospatial_table('incidents')
    with op.batch_alter_table('grid_cells', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_grid_cells_district_code'))
        batch_op.drop_index(batch_op.f('ix_grid_cells_community_code'))
        batch_op.drop_geospatial_index('idx_grid_cells_geom', postgresql_using='gist', column_name='geom')

    op.drop_geospatial_table('grid_cells')
    with op.batch_alter_table('facilities', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_facilities_kind'))
        batch_op.drop_index(batch_op.f('ix_facilities_district_code'))
        batch_op.drop_index(batch_op.f('ix_facilities_community_code'))
        batch_op.drop_geospatial_index('idx_facilities_geom', postgresql_using='gist', column_name='geom')

    op.drop_geospatial_table('facilities')
    with op.batch_alter_table('districts', schema=None) as batch_op:
        batch_op.drop_geospatial_index('idx_districts_geom', postgresql_using='gist', column_name='geom')

    op.drop_geospatial_table('districts')
    with op.batch_alter_table('community_history', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_community_history_district_code'))
        batch_op.drop_index(batch_op.f('ix_community_history_code'))
        batch_op.drop_geospatial_index('idx_community_history_geom', postgresql_using='gist', column_name='geom')

    op.drop_geospatial_table('community_history')
    with op.batch_alter_table('communities', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_communities_street_code'))
        batch_op.drop_index(batch_op.f('ix_communities_district_code'))
        batch_op.drop_geospatial_index('idx_communities_geom', postgresql_using='gist', column_name='geom')

    op.drop_geospatial_table('communities')
    with op.batch_alter_table('buildings', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_buildings_unit_code'))
        batch_op.drop_index(batch_op.f('ix_buildings_district_code'))
        batch_op.drop_geospatial_index('idx_buildings_geom', postgresql_using='gist', column_name='geom')

    op.drop_geospatial_table('buildings')
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_log_at'))

    op.drop_table('audit_log')

