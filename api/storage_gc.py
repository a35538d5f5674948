"""Retry object deletions left in the outbox: `python -m api.storage_gc` (exit 1 if any remain).

DELETE /documents/{id} removes the row and records its storage key in
`pending_object_deletions` in one transaction, then deletes the object and the outbox row.
If the object delete (or the outbox cleanup) fails, the key stays in the outbox; `sweep`
deletes each such object (deleting an already-missing object counts as success) and then
its outbox row, and records the attempt count and last error for keys that still fail.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.config import SettingsError, load_settings
from api.db import create_engine_for, create_sessionmaker
from api.models import PendingObjectDeletion
from api.storage import Storage, StorageError, make_s3_client

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 1000


@dataclass(frozen=True)
class SweepResult:
    deleted: int
    failed: int


async def sweep(
    sessionmaker: async_sessionmaker[AsyncSession],
    storage: Storage,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> SweepResult:
    """Process up to `batch_size` outbox rows, oldest first; safe to run concurrently."""
    deleted = failed = 0
    async with sessionmaker() as session:
        # SKIP LOCKED lets several sweepers (or a sweeper and DELETE requests) share the work.
        pending = await session.scalars(
            select(PendingObjectDeletion)
            .order_by(PendingObjectDeletion.id)
            .limit(batch_size)
            .with_for_update(skip_locked=True)
        )
        for entry in list(pending):
            try:
                await storage.delete(entry.storage_key)
            except StorageError as exc:
                entry.attempts += 1
                entry.last_error = str(exc)[:1000]
                failed += 1
            else:
                await session.delete(entry)
                deleted += 1
        await session.commit()
    return SweepResult(deleted=deleted, failed=failed)


async def _main() -> int:
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    engine = create_engine_for(settings)
    try:
        storage = Storage(make_s3_client(settings), settings.s3_bucket)
        result = await sweep(create_sessionmaker(engine), storage)
    finally:
        await engine.dispose()
    print(f"storage_gc: deleted {result.deleted} object(s), {result.failed} still pending")
    return 1 if result.failed else 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(asyncio.run(_main()))
