"""Alembic migrations of the inventory schema, shipped as package data."""
