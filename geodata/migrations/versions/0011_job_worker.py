"""jobs: the worker (host:pid) running each job, so a restarted worker can tell a job whose
worker was killed (kill -9, a crash, a reboot) from one still running elsewhere

Revision ID: 0011_job_worker
Revises: 0001
Create Date: 2026-11-23
"""

from alembic import op
import sqlalchemy as sa


revision = '0011_job_worker'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs') as batch:
        batch.add_column(sa.Column('worker', sa.String(length=80), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('jobs') as batch:
        batch.drop_column('worker')
