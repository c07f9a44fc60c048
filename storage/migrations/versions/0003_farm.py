"""farm: the identity of this store, which every job message carries (two farms may share one broker)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05
"""
import uuid
from datetime import datetime, timezone

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    farm = op.create_table(
        'farm',
        sa.Column('id', sa.String(length=32), primary_key=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    )
    op.bulk_insert(farm, [{'id': uuid.uuid4().hex, 'created_at': datetime.now(timezone.utc)}])


def downgrade() -> None:
    op.drop_table('farm')
