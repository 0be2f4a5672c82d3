"""created_records: a chat's created CRM record is claimed first, so a retried chat.started never creates two

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 23:00:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('created_records',
    sa.Column('chat_id', sa.String(length=200), nullable=False),
    sa.Column('object', sa.String(length=32), nullable=False),
    sa.Column('record_id', sa.String(length=18), nullable=True),
    sa.Column('claimed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('claim', sa.String(length=32), nullable=False),
    sa.PrimaryKeyConstraint('chat_id')
    )


def downgrade() -> None:
    op.drop_table('created_records')
