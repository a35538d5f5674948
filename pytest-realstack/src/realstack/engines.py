"""The engines the stores and the fixtures open on the test server, and its URLs: the lowest
module of the stores layer, so the stores and the isolation strategies share it without a cycle.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool


def create_test_engine(database_url: str, schema: str | None, **options: Any) -> AsyncEngine:
    """An engine whose connections use `schema` as search_path, without pool pre-ping.

    The test server is local and the pool drops broken connections anyway; the ping would
    add a round trip to every test's isolation.
    """
    connect_args = {"server_settings": {"search_path": schema}} if schema else {}
    return create_async_engine(database_url, connect_args=connect_args, **options)


def autocommit_engine(server_url: str) -> AsyncEngine:
    """An engine for CREATE/DROP DATABASE (no transaction block), holding no connection."""
    return create_test_engine(server_url, None, poolclass=NullPool, isolation_level="AUTOCOMMIT")


def admin_engine(server_url: str) -> AsyncEngine:
    """An engine on the server's test database for schema work, holding no connection."""
    return create_test_engine(server_url, None, poolclass=NullPool)


def database_url(server_url: str, database: str) -> str:
    """`server_url` with its database replaced, password kept (for engines, not for messages)."""
    return make_url(server_url).set(database=database).render_as_string(hide_password=False)
