"""Alembic environment: runs on the connection ``storage.schema`` hands over (in
``config.attributes["connection"]``, inside the transaction that holds the upgrade lock);
hpsweep never runs migrations from a URL of its own."""

from __future__ import annotations

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
