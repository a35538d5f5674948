"""docstore: a small document store with metadata in PostgreSQL and bytes in S3."""

from api.app import create_app
from api.config import Settings, SettingsError, load_settings

__all__ = ["Settings", "SettingsError", "create_app", "load_settings"]
