"""Fixtures shared by the harness's own integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio
from realstack.engines import create_test_engine
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import NullPool

from .embedded_support import private_run_base, shared_cache_dir

if TYPE_CHECKING:
    from realstack.embedded.launcher import RunningServices


@pytest_asyncio.fixture
async def admin(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on the server's test database (outside every run's database and schema),
    holding no connection between statements."""
    engine = create_test_engine(database_url, None, poolclass=NullPool)
    yield engine
    await engine.dispose()


@pytest.fixture
def run_base() -> Iterator[Path]:
    """A private base for the embedded servers' run dirs of one test (embedded_support)."""
    yield from private_run_base()


@pytest.fixture(scope="module")
def cache_dir() -> Iterator[Path]:
    """A launcher cache shared by one module's tests (test_templates takes one per test)."""
    yield from shared_cache_dir()


@pytest.fixture(scope="module")
def private_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServices]:
    """A PostgreSQL of one module's own, where the tier is superuser (private_server). Imported
    here, not at the top: a guarded conftest must import nothing of the harness's own."""
    from .private_server import private_postgres_server

    yield from private_postgres_server(tmp_path_factory.mktemp("private-postgres"))
