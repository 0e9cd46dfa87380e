"""administration: users can be disabled, API tokens revoked; the base map is a setting the
administrator chooses (none on a fresh install, rather than tiles that cannot load)

Revision ID: 0005
Revises: 0003
Create Date: 2026-11-23
"""

from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0003'
branch_labels = None
depends_on = None

BASEMAP_ROW = {
    'key': 'basemap', 'value': 'none',
    'description': '底图 base map: none | osm | tianditu | gaode | local (the GRIDPLAN_BASEMAP environment variable overrides it)',
    'source': "administrator's choice; none until one is chosen, so no page waits for tiles that cannot load",
}


def upgrade() -> None:
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('disabled', sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.add_column(sa.Column('revoked_at', sa.DateTime(), nullable=True))
    settings = sa.table('settings', sa.column('key', sa.String), sa.column('value', sa.JSON),
                        sa.column('description', sa.Text), sa.column('source', sa.Text))
    present = op.get_bind().execute(sa.select(settings.c.key).where(settings.c.key == 'basemap')).first()
    if present is None:
        op.bulk_insert(settings, [BASEMAP_ROW])


def downgrade() -> None:
    op.execute("DELETE FROM settings WHERE key = 'basemap'")
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.drop_column('revoked_at')
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('disabled')
