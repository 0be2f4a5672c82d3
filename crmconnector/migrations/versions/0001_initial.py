"""initial schema

Revision ID: 0001
Revises:
"""
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    from crmconnector.crm import local_schema  # noqa: F401
    from crmconnector.store import metadata

    metadata.create_all(op.get_bind())


def downgrade() -> None:
    from crmconnector.store import metadata

    metadata.drop_all(op.get_bind())
