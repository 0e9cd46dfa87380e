"""incident steps and photos carry their case's district, and the incident sums are kept by row
triggers: the storage split by district (issue 19, item 4).

``incident_steps.district_code`` and ``incident_photos.district_code`` are filled here from their
case (``incidents.district_code``) and set by every writer from now on, so that a step or a photo
lives in its case's district — the same partition of a table split by district, the same shard
on Citus. On PostgreSQL they are NOT NULL; SQLite cannot add a NOT NULL column without a table
copy (which would drop the rates' triggers), so there they are nullable and filled by the writers.

PostgreSQL's incident sums (``incident_days``, ``incident_months``; migration 0008) were kept by
statement triggers over transition tables. Those fail on Citus and cannot be per district: they are
replaced by row triggers, like SQLite's, each writing only its own row's district's sums (the old
row's contributions out of the old row's cells, the new row's into the new row's). The numbers are
the same; a bulk write now makes one upsert per row instead of one per statement. The trigger
functions skip their work while ``gridplan.moving_rows`` is ``on`` in the transaction: a district's
rows moved from the DEFAULT partition into their own (``geodata.partitions``) carry their sums with
them and must not be counted twice.

Revision ID: district_incident_rows
Revises: 0001
Create Date: 2026-12-07
"""

import importlib.util
from pathlib import Path

from alembic import op
import sqlalchemy as sa


revision = 'district_incident_rows'
down_revision = '0001'
branch_labels = None
# the sums and their triggers (0008, after the incident loop 0004 made the steps and photos)
depends_on = '0008_incident_sums'

CHILDREN = ('incident_steps', 'incident_photos')
EVENTS = ('insert', 'update', 'delete')
#: set in a transaction that moves rows between partitions (their sums move with them)
MOVING = "current_setting('gridplan.moving_rows', true) = 'on'"


def _sums():
    """Migration 0008's module: the sums' SQL is written once, there."""
    path = Path(__file__).with_name('0008_incident_sums.py')
    spec = importlib.util.spec_from_file_location('gridplan_migration_0008', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def row_triggers() -> list[str]:
    """PostgreSQL: one function and one row trigger per event, the same statements as SQLite's
    (``NEW.``/``OLD.``), so each row writes the sums of its own district only."""
    sums = _sums()
    out = []
    for event, old, new in (('insert', None, 'NEW.'), ('update', 'OLD.', 'NEW.'), ('delete', 'OLD.', None)):
        body = sums._body('postgresql', old, new)
        out.append(f"CREATE OR REPLACE FUNCTION incident_sums_{event}() RETURNS trigger LANGUAGE plpgsql AS "
                   f"$body$ BEGIN IF {MOVING} THEN RETURN NULL; END IF; {body}; RETURN NULL; END $body$")
        of = f" OF {', '.join(sums.READ)}" if event == 'update' else ''
        out.append(f"CREATE TRIGGER incident_sums_{event} AFTER {event.upper()}{of} ON incidents "
                   f"FOR EACH ROW EXECUTE FUNCTION incident_sums_{event}()")
    return out


def _drop_triggers(bind) -> None:
    for event in EVENTS:
        bind.exec_driver_sql(f'DROP TRIGGER IF EXISTS incident_sums_{event} ON incidents')
        bind.exec_driver_sql(f'DROP FUNCTION IF EXISTS incident_sums_{event}()')


def upgrade() -> None:
    bind = op.get_bind()
    postgres = bind.dialect.name == 'postgresql'
    for table in CHILDREN:
        # plain ADD COLUMN, never a batch copy (SpatiaLite keeps its triggers and registrations)
        op.add_column(table, sa.Column('district_code', sa.String(length=6), nullable=True))
        bind.exec_driver_sql(f"UPDATE {table} SET district_code = (SELECT i.district_code FROM incidents i "
                             f"WHERE i.id = {table}.incident_id)")
        if postgres:
            op.alter_column(table, 'district_code', nullable=False)
        op.create_index(f'ix_{table}_district_code', table, ['district_code'])
    if postgres:
        _drop_triggers(bind)
        for statement in row_triggers():
            bind.exec_driver_sql(statement)


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == 'postgresql':
        _drop_triggers(bind)
        for statement in _sums()._postgresql():
            bind.exec_driver_sql(statement)
    for table in CHILDREN:
        op.drop_index(f'ix_{table}_district_code', table_name=table)
        # plain DROP COLUMN (SQLite 3.35+), never a batch copy
        op.execute(f'ALTER TABLE {table} DROP COLUMN district_code')
