"""Run by test_parallel_workers.py under `pytest -n 2`; not collected on its own (examples/).

Each test commits rows and writes an object, then checks it sees only its own worker's.
"""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from tests.harness.sample.models import Note

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

WORKER = os.environ.get("PYTEST_XDIST_WORKER", "main")


@pytest.mark.real_commits
@pytest.mark.parametrize("n", range(8))
async def test_a_worker_sees_only_its_own_rows_and_objects(
    n: int, db_session: AsyncSession, s3_client: S3Client, s3_bucket: str
) -> None:
    db_session.add(Note(title=f"{WORKER}-{n}", body=""))
    await db_session.commit()
    await asyncio.to_thread(s3_client.put_object, Bucket=s3_bucket, Key=f"{WORKER}-{n}", Body=b"")

    database = await db_session.scalar(text("SELECT current_database()"))
    titles = set((await db_session.execute(select(Note.title))).scalars())
    listing = await asyncio.to_thread(s3_client.list_objects_v2, Bucket=s3_bucket)

    assert str(database).endswith(f"_{WORKER}")
    assert s3_bucket.endswith(f"-{WORKER}")
    assert titles == {f"{WORKER}-{n}"}
    assert [o["Key"] for o in listing.get("Contents", [])] == [f"{WORKER}-{n}"]
