"""Store tests run on both engines: SQLite in tmp_path and a real PostgreSQL started by
``tests/pg_stack.py`` (a missing PostgreSQL fails, never skips)."""

from __future__ import annotations

from tests.pg_stack import db_url, pg_server, pg_url

__all__ = ["db_url", "pg_server", "pg_url"]
