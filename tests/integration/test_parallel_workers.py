"""xdist workers share one set of services, each with its own schema and bucket."""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from tests.harness.janitor import RunNames
from tests.harness.nested import run_nested_pytest

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

PROBE = "tests/integration/xdist_probe.py"


async def test_two_workers_share_the_services_but_not_their_data(
    database_url: str, s3_client: S3Client, run_names: RunNames
) -> None:
    child_run = f"{run_names.run_id}_xdist{uuid.uuid4().hex[:6]}"
    result = await run_nested_pytest(["-n", "2", "-v", PROBE], run_id=child_run)
    admin = create_async_engine(database_url, poolclass=NullPool)
    try:
        async with admin.connect() as conn:
            leftovers = (
                await conn.execute(
                    text("SELECT nspname FROM pg_namespace WHERE nspname LIKE :p"),
                    {"p": f"test_{child_run}%"},
                )
            ).all()
    finally:
        await admin.dispose()
    buckets = await asyncio.to_thread(s3_client.list_buckets)

    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"\[gw0\] .*PASSED", result.stdout)
    assert re.search(r"\[gw1\] .*PASSED", result.stdout)
    assert leftovers == []  # teardown after the last worker removed every schema
    assert not [b for b in buckets.get("Buckets", []) if child_run.replace("_", "-") in b["Name"]]
