"""Alembic migration scripts of hpsweep's schema (run by ``storage.schema``, no alembic.ini)."""
