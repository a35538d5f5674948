"""ASGI entry point for `uvicorn api.asgi:app`; configuration comes from the environment."""

from __future__ import annotations

import logging
import sys

from api.app import create_app
from api.config import SettingsError, load_settings

try:
    settings = load_settings()
except SettingsError as exc:
    print(exc, file=sys.stderr)
    sys.exit(2)


def _configure_logging(level: str) -> None:
    """The service's own log lines (logger `api`) on stderr, one line each, at LOG_LEVEL."""
    logger = logging.getLogger("api")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level)


_configure_logging(settings.log_level)
app = create_app(settings)
