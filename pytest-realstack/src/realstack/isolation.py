"""Per-test isolation strategies, as context managers shared by the fixtures and the benchmarks.

The default follows SQLAlchemy's documented recipe "Joining a Session into an External
Transaction": an outer transaction rolled back after the test, with
join_transaction_mode="create_savepoint" so the code's own commits become SAVEPOINT
releases. The fallback really commits and empties the tables after.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    AsyncTransaction,
    async_sessionmaker,
)

from .janitor import StoreJanitor


def joined_sessionmaker(conn: AsyncConnection) -> async_sessionmaker[AsyncSession]:
    """Sessions on `conn`'s outer transaction, whose own commits become SAVEPOINT releases."""
    return async_sessionmaker(
        bind=conn, join_transaction_mode="create_savepoint", expire_on_commit=False
    )


def joined_session(conn: AsyncConnection) -> AsyncSession:
    """A session on `conn`'s outer transaction, whose own commits become SAVEPOINT releases."""
    return joined_sessionmaker(conn)()


async def end_test_transaction(
    outer: AsyncTransaction | None, sessions: Sequence[AsyncSession]
) -> None:
    """Roll the outer transaction back, then close the sessions. Rollback first: it discards
    the SAVEPOINTs with everything else, so closing the sessions afterwards sends nothing (one
    round trip saved)."""
    if outer is not None and outer.is_active:
        await outer.rollback()
    for session in sessions:
        await session.close()


@asynccontextmanager
async def savepoint_session(engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    """A session inside an outer transaction that is always rolled back."""
    async with engine.connect() as conn:
        outer = await conn.begin()
        session = joined_session(conn)
        try:
            yield session
        finally:
            await end_test_transaction(outer, [session])


@asynccontextmanager
async def committing_session(
    engine: AsyncEngine, janitor: StoreJanitor, tables: Sequence[str]
) -> AsyncIterator[AsyncSession]:
    """A session that really commits; the tables are truncated afterwards (stamp checked)."""
    try:
        async with AsyncSession(engine, expire_on_commit=False) as session:
            yield session
    finally:
        async with engine.begin() as conn:
            await janitor.truncate(conn, tables)
