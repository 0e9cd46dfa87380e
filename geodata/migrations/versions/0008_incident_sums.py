"""rates from daily and monthly sums: ``incident_days`` and ``incident_months`` hold, per cell
(community, street, district) and day or month, the counts and step hours the rates are summed
from, kept current by triggers on ``incidents`` in the same transaction as every write (the
loop's steps, imports, code replacement, deletions), and filled here from the cases already stored.
A period reads whole months from ``incident_months`` and the days at its ends from ``incident_days``

SQLite: row triggers (``AFTER INSERT``, ``AFTER UPDATE OF`` the columns the sums read, ``AFTER
DELETE``). PostgreSQL: statement triggers over the transition tables, so a bulk write makes one
aggregated change. Either way a change subtracts the old row's contributions and adds the new
row's, summed per (cell, day) and applied in key order (concurrent writers lock rows in the same
order). A table rebuild of ``incidents`` (SQLite batch copy) would drop the triggers: never do one.

Revision ID: 0008_incident_sums
Revises: 0004
Create Date: 2026-11-23
"""

from alembic import op
import sqlalchemy as sa


revision = '0008_incident_sums'
down_revision = '0004'
branch_labels = None
depends_on = None

CODES = ('district_code', 'street_code', 'community_code', 'grid_code')
#: The tables kept, and the column each is kept by (a day; a month, as its first day).
TABLES = {'incident_days': 'day', 'incident_months': 'month'}
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


def _when(dialect: str, unit: str, column: str) -> str:
    """The day (or the month's first day) of a timestamp."""
    if dialect == 'sqlite':
        return f"substr({column}, 1, 10)" if unit == 'day' else f"substr({column}, 1, 7) || '-01'"
    return f"CAST({column} AS date)" if unit == 'day' else f"CAST(date_trunc('month', {column}) AS date)"


def _parts(dialect: str, unit: str, r: str, sign: str, source: str) -> list[str]:
    """One SELECT per anchor: the codes, the day or month and the signed contributions of row ``r``."""
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
        out.append(f"SELECT {keys}, {_when(dialect, unit, r + anchor)} AS {unit}, {', '.join(values)} "
                   f"{source} WHERE {r}{anchor} IS NOT NULL")
    return out


def _apply(table: str, parts: list[str], upsert: bool = True) -> str:
    """Sum the contributions per (cell, day or month) and add them to ``table`` in key order."""
    keys = ', '.join(CODES + (TABLES[table],))
    sums = ', '.join(f'sum({n}) AS {n}' for n in SUMS)
    changed = ' OR '.join(f'sum({n}) <> 0' for n in SUMS)
    sql = (f"INSERT INTO {table} ({keys}, {', '.join(SUMS)}) "
           f"SELECT {keys}, {sums} FROM ({' UNION ALL '.join(parts)}) AS c WHERE true "
           f"GROUP BY {keys} HAVING {changed} ORDER BY {keys}")
    if upsert:
        sets = ', '.join(f'{n} = {table}.{n} + excluded.{n}' for n in SUMS)
        sql += f" ON CONFLICT ({keys}) DO UPDATE SET {sets}"
    return sql


def _body(dialect: str, old: str | None, new: str | None, source_old: str = '', source_new: str = '') -> str:
    """The statements a trigger runs: both tables, the old row's contributions out, the new row's in."""
    out = []
    for table, unit in TABLES.items():
        parts = []
        if old:
            parts += _parts(dialect, unit, old, '-', source_old)
        if new:
            parts += _parts(dialect, unit, new, '', source_new)
        out.append(_apply(table, parts))
    return '; '.join(out)


def _sqlite() -> list[str]:
    return [
        f"CREATE TRIGGER incident_sums_insert AFTER INSERT ON incidents FOR EACH ROW "
        f"BEGIN {_body('sqlite', None, 'NEW.')}; END",
        f"CREATE TRIGGER incident_sums_update AFTER UPDATE OF {', '.join(READ)} ON incidents FOR EACH ROW "
        f"BEGIN {_body('sqlite', 'OLD.', 'NEW.')}; END",
        f"CREATE TRIGGER incident_sums_delete AFTER DELETE ON incidents FOR EACH ROW "
        f"BEGIN {_body('sqlite', 'OLD.', None)}; END",
    ]


def _postgresql() -> list[str]:
    old, new = 'FROM old_rows r', 'FROM new_rows r'
    out = []
    for event, body, tables in (
        ('insert', _body('postgresql', None, 'r.', source_new=new), 'NEW TABLE AS new_rows'),
        ('update', _body('postgresql', 'r.', 'r.', old, new), 'OLD TABLE AS old_rows NEW TABLE AS new_rows'),
        ('delete', _body('postgresql', 'r.', None, source_old=old), 'OLD TABLE AS old_rows'),
    ):
        out.append(f"CREATE FUNCTION incident_sums_{event}() RETURNS trigger LANGUAGE plpgsql AS $body$ "
                   f"BEGIN {body}; RETURN NULL; END $body$")
        out.append(f"CREATE TRIGGER incident_sums_{event} AFTER {event.upper()} ON incidents "
                   f"REFERENCING {tables} FOR EACH STATEMENT EXECUTE FUNCTION incident_sums_{event}()")
    return out


def upgrade() -> None:
    bind = op.get_bind()
    dialect = bind.dialect.name
    for table, unit in TABLES.items():
        columns = [sa.Column('district_code', sa.String(length=6), nullable=False),
                   sa.Column('street_code', sa.String(length=9), nullable=False),
                   sa.Column('community_code', sa.String(length=12), nullable=False),
                   sa.Column('grid_code', sa.String(length=15), nullable=False),
                   sa.Column(unit, sa.Date(), nullable=False)]
        columns += [sa.Column(n, sa.Float() if n in FLOATS else sa.Integer(), nullable=False,
                              server_default='0') for n in SUMS]
        op.create_table(table, *columns, sa.PrimaryKeyConstraint(*CODES, unit))
        op.create_index(f'ix_{table}_{unit}', table, [unit])
        bind.exec_driver_sql(_apply(table, _parts(dialect, unit, 'r.', '', 'FROM incidents r'), upsert=False))
    for statement in _sqlite() if dialect == 'sqlite' else _postgresql():
        bind.exec_driver_sql(statement)


def downgrade() -> None:
    bind = op.get_bind()
    for event in ('insert', 'update', 'delete'):
        bind.exec_driver_sql(f'DROP TRIGGER IF EXISTS incident_sums_{event}'
                             + (' ON incidents' if bind.dialect.name == 'postgresql' else ''))
        if bind.dialect.name == 'postgresql':
            bind.exec_driver_sql(f'DROP FUNCTION IF EXISTS incident_sums_{event}()')
    for table, unit in TABLES.items():
        op.drop_index(f'ix_{table}_{unit}', table_name=table)
        op.drop_table(table)
