"""Per-test isolation strategies, as context managers shared by the fixtures and the benchmarks.

The default follows SQLAlchemy's documented recipe "Joining a Session into an
External Transaction": an outer transaction rolled back after the test, with
join_transaction_mode="create_savepoint" so the code's own commits become
SAVEPOINT releases. The fallback really commits and empties the tables after.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from tests.harness.janitor import SchemaJanitor


@asynccontextmanager
async def savepoint_session(engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    """A session inside an outer transaction that is always rolled back."""
    async with engine.connect() as conn:
        outer = await conn.begin()
        session = AsyncSession(
            bind=conn, join_transaction_mode="create_savepoint", expire_on_commit=False
        )
        try:
            yield session
        finally:
            await session.close()
            if outer.is_active:
                await outer.rollback()


@asynccontextmanager
async def committing_session(
    engine: AsyncEngine, janitor: SchemaJanitor, tables: Sequence[str]
) -> AsyncIterator[AsyncSession]:
    """A session that really commits; the tables are truncated afterwards (stamp checked)."""
    try:
        async with AsyncSession(engine, expire_on_commit=False) as session:
            yield session
    finally:
        async with engine.begin() as conn:
            await janitor.truncate(conn, tables)
