"""Alembic environment: pivtool always hands Alembic an open connection
(``config.attributes["connection"]``, see pivtool.store.engine); there is no ini file."""

from __future__ import annotations

from alembic import context

from pivtool.store.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata,
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
