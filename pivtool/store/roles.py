"""The PostgreSQL permissions of a desk (docs/fleet.md shows and explains them).

A desk claims users and records what it did; it never deletes anything, never changes an
audit row, and cannot change the schema. The escrow it can read is ciphertext (the
passphrase never reaches the database), so "reading escrow in clear" is impossible for any
role, the owner included.
"""

from __future__ import annotations

import re

#: Tables a desk reads and writes (no DELETE: nothing a desk does removes a row).
READ_WRITE = ("users", "keys", "certificates", "escrow", "graph_binds")
#: Append-only for a desk (the audit trail also has a trigger refusing UPDATE/DELETE).
APPEND = ("audit", "meta")
SEQUENCES = ("users_id_seq", "certificates_id_seq", "audit_id_seq")

_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def desk_grants(role: str = "pivtool_desk", database: str = "pivtool") -> str:
    """The SQL that creates the desk group role *role* and grants it what a desk needs in
    *database* (run it as the database owner after ``pivtool db upgrade``)."""
    for name in (role, database):
        if not _NAME.match(name):
            raise ValueError(f"{name!r} is not a plain lower-case SQL name")
    return "\n".join([
        f"CREATE ROLE {role} NOLOGIN;",
        f"GRANT CONNECT ON DATABASE {database} TO {role};",
        f"GRANT USAGE ON SCHEMA public TO {role};",
        f"GRANT SELECT ON alembic_version, claims TO {role};",
        f"GRANT SELECT, INSERT, UPDATE ON {', '.join(READ_WRITE)} TO {role};",
        f"GRANT SELECT, INSERT ON {', '.join(APPEND)} TO {role};",
        f"GRANT USAGE ON SEQUENCE {', '.join(SEQUENCES)} TO {role};",
    ]) + "\n"
