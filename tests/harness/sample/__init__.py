"""notes: a tiny FastAPI + SQLAlchemy + Alembic app (S3 attachments optional), on which the
harness tests itself. It knows nothing of the harness; sample/adapter.py is the seam."""

from .app import create_app
from .settings import S3Settings, Settings

__all__ = ["S3Settings", "Settings", "create_app"]
