"""index chats.linked_id: a record's chats, for the latest opt-out keyword among them

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04 16:36:40.000000
"""
from alembic import op


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('chats', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_chats_linked_id'), ['linked_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('chats', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_chats_linked_id'))
