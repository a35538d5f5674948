"""Run by nested runs of the harness's own tests; not collected on its own (examples/).

Every core fixture, and the adapter's, in one module: the whole session must still have
resolved the targets once (examples/conftest.py reports the count).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from realstack.config import HarnessConfig, RunTargets
from realstack.contract import S3Target
from realstack.stamps import RunNames
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from tests.harness.sample.models import Note

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


@pytest.mark.parametrize("n", range(4))
async def test_the_app_the_session_and_the_bucket(
    n: int,
    client: httpx.AsyncClient,
    db_session: AsyncSession,
    s3_client: S3Client,
    s3_bucket: str,
) -> None:
    created = (await client.post("/notes", json={"title": f"probe {n}"})).json()
    put = await client.put(f"/notes/{created['id']}/attachment", content=b"probe")
    keys = await asyncio.to_thread(s3_client.list_objects_v2, Bucket=s3_bucket)

    assert put.status_code == 204
    assert await db_session.scalar(select(func.count()).select_from(Note)) == 1
    assert keys.get("KeyCount") == 1


@pytest.mark.parametrize("n", range(4))
async def test_the_session_scoped_fixtures(
    n: int,
    harness_config: HarnessConfig,
    run_names: RunNames,
    database_url: str,
    run_targets: RunTargets,
    engine: AsyncEngine,
    s3_target: S3Target,
    app_adapter: Any,
    app: Any,
) -> None:
    async with engine.connect() as conn:
        database = await conn.scalar(text("SELECT current_database()"))
        schema = await conn.scalar(text("SELECT current_schema()"))

    assert database_url == harness_config.database_url  # the server's test database
    if harness_config.per_run == "database":
        assert database == run_names.database
        assert (schema, run_targets.schema) == ("public", None)
        assert run_targets.database_url.rsplit("/", 1)[1] == run_names.database
    else:  # the fallback: a schema of the server's test database
        assert schema == run_names.schema == run_targets.schema
        assert run_targets.database_url == database_url
    assert s3_target is harness_config.s3 is run_targets.s3
    assert app_adapter.create_app is not None and app is not None


@pytest.mark.real_commits
async def test_real_commits(db_session: AsyncSession, note: Note) -> None:
    await db_session.commit()
    assert await db_session.scalar(select(func.count()).select_from(Note)) == 1
