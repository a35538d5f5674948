"""ASGI entry point for `uvicorn api.asgi:app`; configuration comes from the environment."""

from __future__ import annotations

import sys

from api.app import create_app
from api.config import SettingsError, load_settings

try:
    _settings = load_settings()
except SettingsError as exc:
    print(exc, file=sys.stderr)
    sys.exit(2)

app = create_app(_settings)
