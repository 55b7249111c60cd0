"""The key inventory in a database: SQLite (one desk, nothing to install) or PostgreSQL
(many desks, one roster).

``pivtool.store.engine`` opens a database and checks its schema (Alembic migrations ship in
``migrations/``); ``pivtool.store.api.Store`` is the typed interface the workflows call,
with the records it takes and returns in ``pivtool.store.records``.
The store is below the workflows and above ``core``: it imports neither the card layers nor
the CLI, and nothing here is imported by ``pivtool --version`` or ``info`` (SQLAlchemy is
loaded only when a command uses the database)."""
