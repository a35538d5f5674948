"""Run by test_parallel_workers.py under `pytest -n 2`; not collected on its own (no test_ prefix).

Each test commits rows and writes an object, then checks it sees only its own worker's.
"""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from api.models import Tag

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

WORKER = os.environ.get("PYTEST_XDIST_WORKER", "main")


@pytest.mark.real_commits
@pytest.mark.parametrize("n", range(8))
async def test_a_worker_sees_only_its_own_rows_and_objects(
    n: int, db_session: AsyncSession, s3_client: S3Client, s3_bucket: str
) -> None:
    db_session.add(Tag(name=f"{WORKER}-{n}"))
    await db_session.commit()
    await asyncio.to_thread(s3_client.put_object, Bucket=s3_bucket, Key=f"{WORKER}-{n}", Body=b"")

    schema = await db_session.scalar(text("SELECT current_schema()"))
    names = set((await db_session.execute(select(Tag.name))).scalars())
    listing = await asyncio.to_thread(s3_client.list_objects_v2, Bucket=s3_bucket)

    assert str(schema).endswith(f"_{WORKER}")
    assert s3_bucket.endswith(f"-{WORKER}")
    assert names == {f"{WORKER}-{n}"}
    assert [o["Key"] for o in listing.get("Contents", [])] == [f"{WORKER}-{n}"]
