"""searches: a batch's searches and their trials, and the job status `pruned`

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-12
"""
import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

_OLD = "status IN ('pending', 'queued', 'running', 'succeeded', 'failed', 'cancelled')"
_NEW = "status IN ('pending', 'queued', 'running', 'succeeded', 'failed', 'cancelled', 'pruned')"


def _job_statuses(old: str, new: str) -> None:
    """Widen (or narrow) the jobs' status check. SQLite changes a CHECK only by copying the table, and the copy's
    DROP TABLE would cascade into every job's metrics, events and edges: its schema text is edited instead, the
    procedure SQLite documents for changing a CHECK (rows need no rewrite: each passes the wider check)."""
    if op.get_bind().dialect.name != "sqlite":
        op.drop_constraint('ck_jobs_status', 'jobs', type_='check')
        op.create_check_constraint('ck_jobs_status', 'jobs', new)
        return
    bind = op.get_bind()
    sql = bind.exec_driver_sql("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'jobs'").scalar_one()
    if old not in sql:
        raise RuntimeError("the jobs table's status check is not the one this migration expects")
    version = bind.exec_driver_sql("PRAGMA schema_version").scalar_one()
    bind.exec_driver_sql("PRAGMA writable_schema = ON")
    bind.exec_driver_sql("UPDATE sqlite_master SET sql = ? WHERE type = 'table' AND name = 'jobs'",
                         (sql.replace(old, new),))
    bind.exec_driver_sql(f"PRAGMA schema_version = {int(version) + 1}")
    bind.exec_driver_sql("PRAGMA writable_schema = OFF")


def upgrade() -> None:
    _job_statuses(_OLD, _NEW)
    op.create_table(
        'searches',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('batch_id', sa.Integer(), sa.ForeignKey('batches.id', ondelete='CASCADE'), nullable=False),
        sa.Column('name', sa.String(length=100), nullable=False),
        sa.Column('job_id', sa.Integer(), sa.ForeignKey('jobs.id', ondelete='CASCADE'), nullable=False),
        sa.Column('config', sa.JSON(), nullable=False),
        sa.Column('plan', sa.JSON(), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('asked', sa.Integer(), nullable=False),
        sa.Column('seeded', sa.Boolean(), nullable=False),
        sa.Column('best_job_id', sa.Integer(), sa.ForeignKey('jobs.id', ondelete='SET NULL'), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint('batch_id', 'name', name='uq_searches_batch_name'),
        sa.CheckConstraint("status IN ('running', 'succeeded', 'failed', 'cancelled')", name='ck_searches_status'),
    )
    op.create_index('ix_searches_job_id', 'searches', ['job_id'])
    op.create_table(
        'search_trials',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('search_id', sa.Integer(), sa.ForeignKey('searches.id', ondelete='CASCADE'), nullable=False),
        sa.Column('number', sa.Integer(), nullable=True),
        sa.Column('job_id', sa.Integer(), sa.ForeignKey('jobs.id', ondelete='SET NULL'), nullable=True),
        sa.Column('values', sa.JSON(), nullable=False),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('value', sa.Float(), nullable=True),
        sa.Column('attrs', sa.JSON(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint('search_id', 'number', name='uq_search_trials_number'),
        sa.CheckConstraint("state IN ('running', 'complete', 'pruned', 'failed')", name='ck_search_trials_state'),
    )
    op.create_index('ix_search_trials_job_id', 'search_trials', ['job_id'])


def downgrade() -> None:
    op.drop_index('ix_search_trials_job_id', table_name='search_trials')
    op.drop_table('search_trials')
    op.drop_index('ix_searches_job_id', table_name='searches')
    op.drop_table('searches')
    op.execute("UPDATE jobs SET status = 'cancelled' WHERE status = 'pruned'")
    _job_statuses(_NEW, _OLD)
