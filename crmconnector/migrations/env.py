"""Alembic environment: runs on the connection `crmconnector.migrations.upgrade` hands in."""
from alembic import context

from crmconnector.crm import local_schema  # noqa: F401  (registers the local CRM tables)
from crmconnector.store import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
