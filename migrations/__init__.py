"""Alembic environment of the session catalog (shipped as onthefly._migrations)."""
