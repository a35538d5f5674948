"""Delete the objects left in the outbox: `python -m api.storage_gc [--batch-size N]`.

DELETE /documents/{id} removes the row and records its storage key in
`pending_object_deletions` in one transaction, then deletes the object and the outbox row; a
failed upload whose object S3 could not delete at once records its key there too. `sweep`
works through the whole outbox, oldest first, in batches (each its own transaction, rows
locked with SKIP LOCKED so several sweepers share the work): it deletes the batch's objects
(DeleteObjects, 1000 keys a request; a missing one counts as deleted) and aborts any multipart
upload left under their keys, then removes their outbox rows; a key that still fails keeps its
row, with its attempt count and last error.

Exit codes: 0 when every key it tried is gone, 1 when some could not be deleted (they stay
pending, and the next run retries them), 2 on a configuration error, 3 when the database
cannot be reached. The last line says what it did and what is still pending.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.config import SettingsError, load_settings
from api.db import create_engine_for, create_sessionmaker
from api.models import PendingObjectDeletion
from api.storage import Storage, StorageError

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 1000
EXIT_SOME_FAILED = 1
EXIT_CONFIGURATION = 2
EXIT_UNREACHABLE = 3


@dataclass(frozen=True)
class SweepResult:
    deleted: int  # keys whose object is gone and whose outbox row was removed
    failed: int  # keys tried in this sweep that could not be deleted (their rows stay)
    batches: int  # batches that held at least one key
    # outbox rows left at the end (failed ones, and any added meanwhile), not those another
    # sweeper is working on at that moment
    pending: int


async def _sweep_batch(
    session: AsyncSession, storage: Storage, after_id: int, batch_size: int
) -> tuple[int, int, int | None]:
    """One batch of keys with ids above `after_id`: (deleted, failed, last id or None)."""
    # SKIP LOCKED lets several sweepers (or a sweeper and DELETE requests) share the work.
    entries = list(
        await session.scalars(
            select(PendingObjectDeletion)
            .where(PendingObjectDeletion.id > after_id)
            .order_by(PendingObjectDeletion.id)
            .limit(batch_size)
            .with_for_update(skip_locked=True)
        )
    )
    deleted = failed = 0
    keys = [entry.storage_key for entry in entries]
    try:
        # One DeleteObjects request per 1000 keys, and one listing of what failed uploads
        # left open, per batch: not a request per key.
        refused = await storage.delete_many(keys) if keys else {}
        open_uploads = await storage.open_multipart_uploads() if keys else {}
    except StorageError as exc:
        refused, open_uploads = dict.fromkeys(keys, str(exc)), {}
    for entry in entries:
        error = refused.get(entry.storage_key)
        if error is None:
            try:
                for upload_id in open_uploads.get(entry.storage_key, []):
                    await storage.abort_multipart_upload(entry.storage_key, upload_id)
            except StorageError as exc:
                error = str(exc)
        if error is None:
            await session.delete(entry)
            deleted += 1
        else:
            entry.attempts += 1
            entry.last_error = error[:1000]
            failed += 1
    await session.commit()
    return deleted, failed, entries[-1].id if entries else None


async def sweep(
    sessionmaker: async_sessionmaker[AsyncSession],
    storage: Storage,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> SweepResult:
    """Work through every outbox row that exists when the sweep reaches it, in batches of
    `batch_size`; each key is tried once per sweep. Safe to run concurrently."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    deleted = failed = batches = 0
    after_id = 0
    async with sessionmaker() as session:
        while True:
            done, not_done, last_id = await _sweep_batch(session, storage, after_id, batch_size)
            if last_id is None:
                break
            deleted, failed, batches = deleted + done, failed + not_done, batches + 1
            after_id = last_id
        # Rows another sweeper holds are its to delete and to report: counted here they would
        # show as pending in both reports. SKIP LOCKED leaves them out (the count's own locks
        # end with the rollback below).
        unlocked = select(PendingObjectDeletion.id).with_for_update(skip_locked=True).subquery()
        pending = await session.scalar(select(func.count()).select_from(unlocked))
        await session.rollback()
    return SweepResult(deleted=deleted, failed=failed, batches=batches, pending=pending or 0)


def _report(result: SweepResult) -> str:
    return (
        f"storage_gc: deleted {result.deleted} object(s) in {result.batches} batch(es); "
        f"{result.failed} could not be deleted; {result.pending} still pending"
    )


async def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m api.storage_gc", description=__doc__)
    parser.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        help=f"keys per transaction (default {DEFAULT_BATCH_SIZE})",
    )
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIGURATION
    engine = create_engine_for(settings)
    try:
        result = await sweep(
            create_sessionmaker(engine), Storage.from_settings(settings), batch_size=args.batch_size
        )
    except (SQLAlchemyError, OSError) as exc:
        print(f"storage_gc: the database is unavailable ({type(exc).__name__})", file=sys.stderr)
        return EXIT_UNREACHABLE
    finally:
        await engine.dispose()
    print(_report(result))
    return EXIT_SOME_FAILED if result.failed else 0


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(_main(argv))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main())
