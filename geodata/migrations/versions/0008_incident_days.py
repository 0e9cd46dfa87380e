"""rates from daily sums: ``incident_days`` holds, per cell (community, street, district) and day,
the counts and step hours the rates are summed from, kept current by triggers on ``incidents``
in the same transaction as every write (the loop's steps, imports, code replacement, deletions),
and filled here from the cases already stored

SQLite: row triggers (``AFTER INSERT``, ``AFTER UPDATE OF`` the columns the sums read, ``AFTER
DELETE``). PostgreSQL: statement triggers over the transition tables, so a bulk write makes one
aggregated change. Either way a change subtracts the old row's contributions and adds the new
row's, summed per (cell, day) and applied in key order (concurrent writers lock rows in the same
order). A table rebuild of ``incidents`` (SQLite batch copy) would drop the triggers: never do one.

Revision ID: 0008_incident_days
Revises: 0004
Create Date: 2026-11-23
"""

from alembic import op
import sqlalchemy as sa


revision = '0008_incident_days'
down_revision = '0004'
branch_labels = None
depends_on = None

KEYS = ('district_code', 'street_code', 'community_code', 'grid_code', 'day')
#: Each anchor (the step time a sum is counted on) and what one case adds on that day.
#: ``{r}`` is the case's row (``NEW.``/``OLD.`` in SQLite, ``r.`` over a transition table).
ANCHORS = {
    'reported_at': {'reported': '1'},
    'filed_at': {'filed': '1', 'filing_sum': 'COALESCE({r}filing_wh, 0.0)',
                 'filing_n': 'CASE WHEN {r}filing_wh IS NULL THEN 0 ELSE 1 END'},
    'dispatched_at': {'dispatch_sum': 'COALESCE({r}dispatch_wh, 0.0)',
                      'dispatch_n': 'CASE WHEN {r}dispatch_wh IS NULL THEN 0 ELSE 1 END'},
    'handled_at': {'handling_sum': 'COALESCE({r}handling_wh, 0.0)',
                   'handling_n': 'CASE WHEN {r}handling_wh IS NULL THEN 0 ELSE 1 END'},
    'closed_at': {'closed': '1', 'returned': '{r}rework_count',
                  'verify_sum': 'COALESCE({r}verify_wh, 0.0)',
                  'verify_n': 'CASE WHEN {r}verify_wh IS NULL THEN 0 ELSE 1 END'},
    'due_at': {'due': '1', 'due_closed': 'CASE WHEN {r}closed_at IS NULL THEN 0 ELSE 1 END',
               'due_closed_on_time': 'CASE WHEN {r}closed_at IS NOT NULL AND {r}closed_at <= {r}due_at '
                                     'THEN 1 ELSE 0 END'},
}
FLOATS = ('filing_sum', 'dispatch_sum', 'handling_sum', 'verify_sum')
SUMS = ('reported', 'filed', 'closed', 'due', 'due_closed', 'due_closed_on_time', 'returned',
        'filing_sum', 'filing_n', 'dispatch_sum', 'dispatch_n', 'handling_sum', 'handling_n',
        'verify_sum', 'verify_n')
#: The columns of ``incidents`` the sums read: an update of others (code, description, version,
#: geometry) changes nothing here.
READ = ('reported_at', 'filed_at', 'dispatched_at', 'handled_at', 'closed_at', 'due_at', 'grid_code',
        'community_code', 'street_code', 'district_code', 'rework_count', 'filing_wh', 'dispatch_wh',
        'handling_wh', 'verify_wh')


def _day(dialect: str, column: str) -> str:
    return f'substr({column}, 1, 10)' if dialect == 'sqlite' else f'CAST({column} AS date)'


def _parts(dialect: str, r: str, sign: str, source: str) -> list[str]:
    """One SELECT per anchor: the keys, the day and the signed contributions of row ``r``."""
    community = f"COALESCE({r}community_code, substr({r}grid_code, 1, 12))"
    keys = (f"COALESCE({r}district_code, '') AS district_code, "
            f"COALESCE({r}street_code, substr({community}, 1, 9), '') AS street_code, "
            f"COALESCE({community}, '') AS community_code, COALESCE({r}grid_code, '') AS grid_code")
    out = []
    for anchor, adds in ANCHORS.items():
        values = []
        for name in SUMS:
            zero = '0.0' if name in FLOATS else '0'
            value = adds.get(name)
            values.append(f"{sign}({value.format(r=r)}) AS {name}" if value else f"{zero} AS {name}")
        out.append(f"SELECT {keys}, {_day(dialect, r + anchor)} AS day, {', '.join(values)} "
                   f"{source} WHERE {r}{anchor} IS NOT NULL")
    return out


def _apply(parts: list[str], upsert: bool = True) -> str:
    """Sum the contributions per (cell, day) and add them to ``incident_days`` in key order."""
    keys = ', '.join(KEYS)
    sums = ', '.join(f'sum({n}) AS {n}' for n in SUMS)
    changed = ' OR '.join(f'sum({n}) <> 0' for n in SUMS)
    sql = (f"INSERT INTO incident_days ({keys}, {', '.join(SUMS)}) "
           f"SELECT {keys}, {sums} FROM ({' UNION ALL '.join(parts)}) AS c WHERE true "
           f"GROUP BY {keys} HAVING {changed} ORDER BY {keys}")
    if upsert:
        sets = ', '.join(f'{n} = incident_days.{n} + excluded.{n}' for n in SUMS)
        sql += f" ON CONFLICT ({keys}) DO UPDATE SET {sets}"
    return sql


def _sqlite() -> list[str]:
    new = _parts('sqlite', 'NEW.', '', '')
    old = _parts('sqlite', 'OLD.', '-', '')
    return [
        f"CREATE TRIGGER incident_days_insert AFTER INSERT ON incidents FOR EACH ROW "
        f"BEGIN {_apply(new)}; END",
        f"CREATE TRIGGER incident_days_update AFTER UPDATE OF {', '.join(READ)} ON incidents FOR EACH ROW "
        f"BEGIN {_apply(old + new)}; END",
        f"CREATE TRIGGER incident_days_delete AFTER DELETE ON incidents FOR EACH ROW "
        f"BEGIN {_apply(old)}; END",
    ]


def _postgresql() -> list[str]:
    new = _parts('postgresql', 'r.', '', 'FROM new_rows r')
    old = _parts('postgresql', 'r.', '-', 'FROM old_rows r')
    out = []
    for event, parts, tables in (
        ('insert', new, 'NEW TABLE AS new_rows'),
        ('update', old + new, 'OLD TABLE AS old_rows NEW TABLE AS new_rows'),
        ('delete', old, 'OLD TABLE AS old_rows'),
    ):
        out.append(f"CREATE FUNCTION incident_days_{event}() RETURNS trigger LANGUAGE plpgsql AS $body$ "
                   f"BEGIN {_apply(parts)}; RETURN NULL; END $body$")
        out.append(f"CREATE TRIGGER incident_days_{event} AFTER {event.upper()} ON incidents "
                   f"REFERENCING {tables} FOR EACH STATEMENT EXECUTE FUNCTION incident_days_{event}()")
    return out


def upgrade() -> None:
    bind = op.get_bind()
    columns = [sa.Column('district_code', sa.String(length=6), nullable=False),
               sa.Column('street_code', sa.String(length=9), nullable=False),
               sa.Column('community_code', sa.String(length=12), nullable=False),
               sa.Column('grid_code', sa.String(length=15), nullable=False),
               sa.Column('day', sa.Date(), nullable=False)]
    columns += [sa.Column(n, sa.Float() if n in FLOATS else sa.Integer(), nullable=False,
                          server_default='0') for n in SUMS]
    op.create_table('incident_days', *columns, sa.PrimaryKeyConstraint(*KEYS))
    dialect = bind.dialect.name
    source = 'FROM incidents r'
    bind.exec_driver_sql(_apply(_parts(dialect, 'r.', '', source), upsert=False))
    for statement in _sqlite() if dialect == 'sqlite' else _postgresql():
        bind.exec_driver_sql(statement)


def downgrade() -> None:
    bind = op.get_bind()
    for event in ('insert', 'update', 'delete'):
        bind.exec_driver_sql(f'DROP TRIGGER IF EXISTS incident_days_{event}'
                             + (' ON incidents' if bind.dialect.name == 'postgresql' else ''))
        if bind.dialect.name == 'postgresql':
            bind.exec_driver_sql(f'DROP FUNCTION IF EXISTS incident_days_{event}()')
    op.drop_table('incident_days')
