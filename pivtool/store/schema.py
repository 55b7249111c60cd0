"""The inventory's tables (SQLAlchemy Core), the same on SQLite and PostgreSQL.

This module describes the schema at the newest migration; the migrations in
``migrations/versions`` create it step by step and are the only thing that changes a
database. Times are naive UTC datetimes (SQLite has no time zones); serials of YubiKeys are
``BigInteger`` (they fit 32 bits today, PIV card serials from other vendors may not).

A user's *claim* — which desk, reader and key are enrolling them, until when the lease
runs — lives in the user row itself (``claim_*`` columns, shown by the ``claims`` view):
claiming is then one row lock and one ``UPDATE``, not a second table to keep in step.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

#: An autoincrementing 64-bit key on PostgreSQL that is still SQLite's ROWID alias.
BigId = BigInteger().with_variant(Integer(), "sqlite")

users = Table(
    "users", metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("upn", String(320), nullable=False),
    Column("upn_key", String(320), nullable=False, unique=True),  # casefolded UPN
    Column("roster", Text),
    Column("row", Integer),
    Column("options", JSON, nullable=False),
    Column("in_roster", Boolean, nullable=False, default=True),
    Column("status", String(16), nullable=False, default="pending"),
    Column("pinned_serial", BigInteger),  # the roster's serial column
    Column("serial", BigInteger),  # the key the enrollment is (or was) on
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_step", String(100)),
    Column("error", Text),
    Column("started", DateTime),
    Column("finished", DateTime),
    Column("certificate", JSON),
    Column("certificate_user_ids", JSON),
    Column("pin_letter", Text),
    Column("history", JSON),
    Column("updated", DateTime),
    # The claim (see the module docstring).
    Column("claim_desk", String(100)),
    Column("claim_reader", String(200)),
    Column("claimed", DateTime),
    Column("heartbeat", DateTime),
    Column("lease_until", DateTime),
    Index("ix_users_claim", "status", "pinned_serial", "row"),
    Index("ix_users_serial", "serial"),
)

keys = Table(
    "keys", metadata,
    Column("serial", BigInteger, primary_key=True, autoincrement=False),
    Column("model", String(100)),
    Column("firmware", String(20)),
    Column("form_factor", String(50)),
    Column("owner_upn", String(320)),
    Column("status", String(16), nullable=False, default="active"),
    Column("first_seen", DateTime, nullable=False),
    Column("last_seen", DateTime, nullable=False),
    Column("last_desk", String(100)),
    Column("note", Text),
    Index("ix_keys_owner", "owner_upn"),
)

certificates = Table(
    "certificates", metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("key_serial", BigInteger, ForeignKey("keys.serial"), nullable=False),
    Column("slot", String(4), nullable=False),
    Column("fingerprint", String(64), nullable=False),  # SHA-256 of the DER, hex
    Column("serial", String(80)),  # the certificate's serial number, hex
    Column("subject", Text),
    Column("issuer", Text),
    Column("not_before", DateTime),
    Column("not_after", DateTime),
    Column("certificate_user_ids", JSON),
    Column("status", String(16), nullable=False, default="present"),
    Column("pem", Text),
    Column("recorded", DateTime, nullable=False),
    Column("updated", DateTime, nullable=False),
    UniqueConstraint("key_serial", "slot", "fingerprint", name="uq_certificates_slot_fp"),
)

#: ``batch enroll --graph-bind``: one row per enrolled user whose certificateUserIds a desk
#: wrote (or is writing) into Entra. The row is written *ahead* of the Graph PATCH (status
#: ``binding``, with the desk and a lease), so it is also the claim: a desk binds a user only
#: by turning this row to ``binding`` itself in one statement, never while another desk's
#: lease is live, and never again once ``bound``. Keyed by the user's casefolded UPN.
graph_binds = Table(
    "graph_binds", metadata,
    Column("upn_key", String(320), ForeignKey("users.upn_key"), primary_key=True),
    Column("status", String(16), nullable=False),  # binding, bound, failed
    Column("ids", JSON, nullable=False),  # the high-affinity values being bound
    Column("attempts", Integer, nullable=False),
    Column("patched", Boolean, nullable=False),  # a PATCH of ours was answered
    Column("added", JSON),  # the values the answered PATCH added
    Column("error", Text),
    Column("updated", DateTime, nullable=False),
    Column("desk", String(100)),
    Column("lease_until", DateTime),
)

#: One row per key and secret kind ("puk", "mgmt_key"). ``document`` is a complete
#: pivtool escrow document (scrypt + AES-256-GCM, see workflows.escrow) holding only that
#: secret: the database never sees a PUK or management key in clear.
escrow = Table(
    "escrow", metadata,
    Column("serial", BigInteger, primary_key=True, autoincrement=False),
    Column("kind", String(16), primary_key=True),
    Column("upn", String(320)),
    Column("created", DateTime, nullable=False),
    Column("updated", DateTime, nullable=False),
    Column("document", Text, nullable=False),
)

#: Small named values: the escrow keyring (KDF parameters and passphrase check).
meta = Table(
    "meta", metadata,
    Column("name", String(100), primary_key=True),
    Column("value", JSON, nullable=False),
)

#: Append-only (triggers refuse UPDATE and DELETE on both engines; on PostgreSQL the desk
#: role also has only SELECT and INSERT).
audit = Table(
    "audit", metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("time", DateTime, nullable=False),
    Column("desk", String(100)),
    Column("operator", String(100)),
    Column("command", String(100)),
    Column("reader", String(200)),
    Column("serial", BigInteger),
    Column("upn", String(320)),
    Column("step", String(100), nullable=False),
    Column("outcome", String(40), nullable=False),
    Column("detail", Text),
    Column("fingerprint", String(64)),
    Index("ix_audit_serial", "serial"),
    Index("ix_audit_upn", "upn"),
)
