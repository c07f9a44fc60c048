"""reliability: the host a job ran on, when a retried job may run again, a partial index of leases for the reaper

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""
import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs') as batch:
        batch.add_column(sa.Column('host', sa.String(length=200), nullable=True))
        batch.add_column(sa.Column('not_before', sa.DateTime(timezone=True), nullable=True))
    # Partial: the reaper scans running jobs only, and an index led by status would lure the planner into
    # scanning every succeeded job when it looks fingerprints up (cache hits) on stale statistics.
    op.create_index('ix_jobs_running_lease', 'jobs', ['lease_until'], postgresql_where=sa.text("status = 'running'"),
                    sqlite_where=sa.text("status = 'running'"))


def downgrade() -> None:
    op.drop_index('ix_jobs_running_lease', table_name='jobs')
    with op.batch_alter_table('jobs') as batch:
        batch.drop_column('not_before')
        batch.drop_column('host')
