"""Alembic migrations for the docstore schema (script_location = "api:migrations")."""
