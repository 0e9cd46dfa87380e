"""client ids: a report or a step made on a phone without a signal carries an id the phone made,
so that sending it again when the signal returns stores it once (unique per reporter / actor)

Revision ID: client_ids
Revises: 0001
Create Date: 2026-12-07
"""

from alembic import op
import sqlalchemy as sa


revision = 'client_ids'
down_revision = '0001'
branch_labels = None
# the reporter column of incidents comes with the incident loop (0004)
depends_on = '0004'


def upgrade() -> None:
    # plain ADD COLUMN and CREATE INDEX (no batch copy of the table): SQLite keeps the
    # triggers that keep the rates' sums on incidents
    for table in ('incidents', 'incident_steps'):
        op.add_column(table, sa.Column('client_id', sa.String(length=64), nullable=True))
        op.add_column(table, sa.Column('client_hash', sa.String(length=64), nullable=True))
    op.create_index('uq_incidents_reporter_client_id', 'incidents', ['reporter', 'client_id'], unique=True)
    op.create_index('uq_incident_steps_actor_client_id', 'incident_steps', ['actor', 'client_id'],
                    unique=True)


def downgrade() -> None:
    op.drop_index('uq_incident_steps_actor_client_id', table_name='incident_steps')
    op.drop_index('uq_incidents_reporter_client_id', table_name='incidents')
    # plain DROP COLUMN (SQLite 3.35+), never a batch copy: a copied incidents table loses the
    # rates' triggers and its SpatiaLite geometry registration
    for table in ('incident_steps', 'incidents'):
        op.execute(f'ALTER TABLE {table} DROP COLUMN client_hash')
        op.execute(f'ALTER TABLE {table} DROP COLUMN client_id')
