"""`python -m api.storage_gc` drains the whole outbox, batch after batch, on real PostgreSQL and
S3, and its output and exit code are true (issue 11, row 8): success, partial failure, more
than one batch, open multipart uploads, and the 1,001-key run of the issue through the CLI.

The sweep opens sessions of its own and commits, so the in-process tests use real commits;
the CLI runs as a process on a sandbox database and bucket.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio
from realstack import HarnessConfig, sandbox
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from api import Settings
from api.db import create_engine_for
from api.models import PendingObjectDeletion
from api.storage import Storage
from api.storage_gc import SweepResult, sweep
from tests.app_adapter import environment_of, settings_for
from tests.helpers import object_keys
from tests.load_client import REPO, stored_keys

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

# SeaweedFS answers InvalidRequest for a key that climbs out of its directory: a real
# per-key refusal by the server, which the sweep must count as a failure and keep.
REFUSED_KEY = "documents/../refused"
CLI_TIMEOUT_S = 60.0

pytestmark = pytest.mark.real_commits


@pytest_asyncio.fixture
async def sessions(engine: AsyncEngine) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    yield async_sessionmaker(engine, expire_on_commit=False)


@pytest.fixture
def storage(s3_client: S3Client, s3_bucket: str) -> Storage:
    return Storage(s3_client, s3_bucket)


async def pend(sessions: async_sessionmaker[AsyncSession], *keys: str) -> None:
    async with sessions() as session:
        session.add_all(PendingObjectDeletion(storage_key=key) for key in keys)
        await session.commit()


async def outbox(sessions: async_sessionmaker[AsyncSession]) -> list[PendingObjectDeletion]:
    async with sessions() as session:
        rows = await session.scalars(select(PendingObjectDeletion).order_by("id"))
        return list(rows)


def put(s3: S3Client, bucket: str, *keys: str) -> None:
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=b"left behind")


async def test_every_pending_object_is_deleted_and_a_missing_one_counts_as_deleted(
    sessions: async_sessionmaker[AsyncSession], storage: Storage, s3_client: S3Client
) -> None:
    keys = [f"documents/gc-{n}" for n in range(3)]
    put(s3_client, storage.bucket, *keys)
    await pend(sessions, *keys, "documents/never-stored")

    result = await sweep(sessions, storage)

    assert result == SweepResult(deleted=4, failed=0, batches=1, pending=0)
    assert object_keys(s3_client, storage.bucket) == []
    assert await outbox(sessions) == []


async def test_a_key_s3_refuses_stays_pending_with_its_error_and_the_others_go(
    sessions: async_sessionmaker[AsyncSession], storage: Storage, s3_client: S3Client
) -> None:
    put(s3_client, storage.bucket, "documents/a", "documents/b")
    await pend(sessions, "documents/a", REFUSED_KEY, "documents/b")

    first = await sweep(sessions, storage)
    second = await sweep(sessions, storage)

    assert first == SweepResult(deleted=2, failed=1, batches=1, pending=1)
    assert second == SweepResult(deleted=0, failed=1, batches=1, pending=1)
    [left] = await outbox(sessions)
    assert left.storage_key == REFUSED_KEY
    assert left.attempts == 2
    assert left.last_error is not None and "InvalidRequest" in left.last_error
    assert object_keys(s3_client, storage.bucket) == []


async def test_rows_another_sweeper_holds_are_not_reported_pending_by_this_one(
    sessions: async_sessionmaker[AsyncSession], storage: Storage, s3_client: S3Client
) -> None:
    put(s3_client, storage.bucket, "documents/mine", "documents/theirs")
    await pend(sessions, "documents/mine", "documents/theirs")
    async with sessions() as other:  # the other sweeper, in the middle of its batch
        theirs = select(PendingObjectDeletion).where(
            PendingObjectDeletion.storage_key == "documents/theirs"
        )
        await other.scalar(theirs.with_for_update(skip_locked=True))

        result = await sweep(sessions, storage)

    assert result == SweepResult(deleted=1, failed=0, batches=1, pending=0)
    assert [row.storage_key for row in await outbox(sessions)] == ["documents/theirs"]


async def test_the_sweep_drains_every_batch_and_tries_each_failing_key_once(
    sessions: async_sessionmaker[AsyncSession], storage: Storage, s3_client: S3Client
) -> None:
    keys = [f"documents/batch-{n:02}" for n in range(10)]
    put(s3_client, storage.bucket, *keys)
    await pend(sessions, *keys[:4], REFUSED_KEY, *keys[4:])

    result = await sweep(sessions, storage, batch_size=3)

    assert result == SweepResult(deleted=10, failed=1, batches=4, pending=1)
    assert [row.attempts for row in await outbox(sessions)] == [1]
    assert object_keys(s3_client, storage.bucket) == []


async def test_a_multipart_upload_left_open_under_a_pending_key_is_aborted(
    sessions: async_sessionmaker[AsyncSession], storage: Storage, s3_client: S3Client
) -> None:
    key = "documents/half-uploaded"
    started = s3_client.create_multipart_upload(Bucket=storage.bucket, Key=key)
    s3_client.upload_part(
        Bucket=storage.bucket, Key=key, UploadId=started["UploadId"], PartNumber=1, Body=b"p"
    )
    other = s3_client.create_multipart_upload(Bucket=storage.bucket, Key="documents/in-flight")
    await pend(sessions, key)

    result = await sweep(sessions, storage)

    assert result == SweepResult(deleted=1, failed=0, batches=1, pending=0)
    left = s3_client.list_multipart_uploads(Bucket=storage.bucket).get("Uploads", [])
    assert [(u.get("Key"), u.get("UploadId")) for u in left] == [
        ("documents/in-flight", other["UploadId"])  # not pending: not ours to abort
    ]
    s3_client.abort_multipart_upload(
        Bucket=storage.bucket, Key="documents/in-flight", UploadId=other["UploadId"]
    )


def run_gc(settings: Settings) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "api.storage_gc"],
        cwd=REPO,
        env={**os.environ, **environment_of(settings)},
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


async def test_the_cli_deletes_all_1001_pending_keys_and_exits_0_then_1_on_a_refusal(
    harness_config: HarnessConfig,
) -> None:
    async with sandbox(harness_config, "gc") as run:
        settings = settings_for(run)
        engine = create_engine_for(settings)
        try:
            async with engine.begin() as conn:
                await conn.execute(
                    text(
                        "INSERT INTO pending_object_deletions (storage_key) "
                        "SELECT 'documents/gc-' || n FROM generate_series(1, 1001) AS n"
                    )
                )
            drained = await asyncio.to_thread(run_gc, settings)
            async with engine.begin() as conn:
                await conn.execute(
                    text("INSERT INTO pending_object_deletions (storage_key) VALUES (:k), (:ok)"),
                    {"k": REFUSED_KEY, "ok": "documents/fine"},
                )
            refused = await asyncio.to_thread(run_gc, settings)
        finally:
            await engine.dispose()
        left = await stored_keys(settings)

    assert drained.returncode == 0, drained.stderr
    assert drained.stdout.strip() == (
        "storage_gc: deleted 1001 object(s) in 2 batch(es); 0 could not be deleted; 0 still pending"
    )
    assert refused.returncode == 1, refused.stderr
    assert refused.stdout.strip() == (
        "storage_gc: deleted 1 object(s) in 1 batch(es); 1 could not be deleted; 1 still pending"
    )
    assert left.outbox == 1
