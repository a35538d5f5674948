"""Fixtures shared by the harness's own integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import NullPool

from tests.harness.isolation import create_test_engine


@pytest_asyncio.fixture
async def admin(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on the server's test database (outside every run's database and schema),
    holding no connection between statements."""
    engine = create_test_engine(database_url, None, poolclass=NullPool)
    yield engine
    await engine.dispose()
