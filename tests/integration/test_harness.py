"""The harness's own promises, on the real services: run schema, stamps, isolation, migrations."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import Column, Integer, MetaData, Table, func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.pool import NullPool

from api.models import Base, Document, Tag
from tests.harness.janitor import (
    STAMP_MARK,
    JanitorRefusal,
    RunNames,
    SchemaJanitor,
    downgrade,
    drift,
    migrate,
)
from tests.harness.nested import run_nested_pytest

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

MARKER_KEY = "isolation-probe"
HEALTH_TESTS = "tests/integration/test_health.py"
MARKER_TAG = "isolation-probe-tag"


async def test_the_session_works_in_the_runs_own_stamped_schema(
    db_session: AsyncSession, run_names: RunNames
) -> None:
    schema = await db_session.scalar(text("SELECT current_schema()"))
    stamp = await db_session.scalar(
        text("SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace WHERE nspname = :s"),
        {"s": schema},
    )

    assert schema == run_names.schema
    assert json.loads(stamp)["created_by"] == STAMP_MARK
    assert json.loads(stamp)["run"] == run_names.run_id


async def test_rows_and_objects_written_here(
    db_session: AsyncSession, s3_client: S3Client, s3_bucket: str
) -> None:
    db_session.add(Tag(name=MARKER_TAG))
    await db_session.commit()  # a SAVEPOINT release inside the test's transaction
    await asyncio.to_thread(s3_client.put_object, Bucket=s3_bucket, Key=MARKER_KEY, Body=b"x")

    assert await db_session.scalar(select(func.count()).where(Tag.name == MARKER_TAG)) == 1


async def test_are_not_visible_to_the_next_test(
    db_session: AsyncSession, s3_client: S3Client, s3_bucket: str
) -> None:
    listing = await asyncio.to_thread(s3_client.list_objects_v2, Bucket=s3_bucket)

    assert await db_session.scalar(select(func.count()).where(Tag.name == MARKER_TAG)) == 0
    assert listing.get("KeyCount", 0) == 0


async def test_the_app_sees_the_tests_uncommitted_rows(
    db_session: AsyncSession, client: httpx.AsyncClient
) -> None:
    document = Document(
        owner="alice",
        filename="only-in-this-transaction.txt",
        content_type="text/plain",
        size_bytes=1,
        sha256="0" * 64,
        storage_key=f"documents/{uuid.uuid4()}",
    )
    db_session.add(document)
    await db_session.flush()  # not committed: only the test's transaction can see it

    response = await client.get(f"/documents/{document.id}")

    assert response.status_code == 200
    assert response.json()["filename"] == "only-in-this-transaction.txt"


@pytest.mark.real_commits
async def test_real_commits_are_visible_to_a_second_connection(
    db_session: AsyncSession, engine: AsyncEngine
) -> None:
    db_session.add(Tag(name="committed-for-real"))
    await db_session.commit()

    async with AsyncSession(engine) as other:
        seen = await other.scalar(select(func.count()).where(Tag.name == "committed-for-real"))

    assert seen == 1


async def test_real_commit_data_is_removed_after_the_test(db_session: AsyncSession) -> None:
    count = await db_session.scalar(select(func.count()).where(Tag.name == "committed-for-real"))
    assert count == 0


@pytest_asyncio.fixture
async def scratch_schema(
    database_url: str, run_names: RunNames
) -> AsyncIterator[tuple[AsyncEngine, SchemaJanitor]]:
    """A second stamped schema of this run, for tests that migrate up and down."""
    names = RunNames(run_names.run_id, f"{run_names.worker}_scratch_{uuid.uuid4().hex[:6]}")
    admin = create_async_engine(database_url, poolclass=NullPool)
    scoped = create_async_engine(
        database_url,
        poolclass=NullPool,
        connect_args={"server_settings": {"search_path": names.schema}},
    )
    try:
        async with SchemaJanitor(admin, names) as janitor:
            yield scoped, janitor
    finally:
        await scoped.dispose()
        await admin.dispose()


async def test_migrations_upgrade_to_head_and_downgrade_to_base(
    scratch_schema: tuple[AsyncEngine, SchemaJanitor],
) -> None:
    engine, janitor = scratch_schema
    listing = text("SELECT tablename FROM pg_tables WHERE schemaname = :s ORDER BY 1")
    params = {"s": janitor.names.schema}

    async with engine.begin() as conn:
        await conn.run_sync(migrate)
        after_upgrade = set((await conn.execute(listing, params)).scalars())
        assert await conn.run_sync(drift, Base.metadata) == []
        await conn.run_sync(downgrade)
        after_downgrade = set((await conn.execute(listing, params)).scalars())

    assert {t.name for t in Base.metadata.sorted_tables} <= after_upgrade
    assert after_downgrade <= {"alembic_version"}


async def test_drift_check_reports_a_model_without_a_migration(engine: AsyncEngine) -> None:
    drifted = MetaData()
    for table in Base.metadata.sorted_tables:
        table.to_metadata(drifted)
    Table("not_migrated", drifted, Column("id", Integer, primary_key=True))

    async with engine.connect() as conn:
        differences = await conn.run_sync(drift, drifted)

    assert any(diff[0] == "add_table" and diff[1].name == "not_migrated" for diff in differences)


async def test_janitor_refuses_to_drop_a_schema_without_its_stamp(
    database_url: str, run_names: RunNames
) -> None:
    names = RunNames(run_names.run_id, f"{run_names.worker}_unstamped")
    admin = create_async_engine(database_url, poolclass=NullPool)
    try:
        async with admin.begin() as conn:
            await conn.execute(text(f'CREATE SCHEMA "{names.schema}"'))
        with pytest.raises(JanitorRefusal, match="does not carry this run's stamp"):
            await SchemaJanitor(admin, names).__aexit__(None, None, None)
        async with admin.connect() as conn:
            still_there = await conn.scalar(
                text("SELECT count(*) FROM pg_namespace WHERE nspname = :s"), {"s": names.schema}
            )
        assert still_there == 1
    finally:
        async with admin.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA IF EXISTS "{names.schema}"'))
        await admin.dispose()


async def test_a_run_leaves_no_schema_and_no_bucket_behind(
    database_url: str, s3_client: S3Client, run_names: RunNames
) -> None:
    child = RunNames(f"{run_names.run_id}_child{uuid.uuid4().hex[:6]}", "main")
    result = await run_nested_pytest(["-q", HEALTH_TESTS], run_id=child.run_id)
    admin = create_async_engine(database_url, poolclass=NullPool)
    try:
        async with admin.connect() as conn:
            schemas = (
                await conn.execute(
                    text("SELECT nspname FROM pg_namespace WHERE nspname = :s"),
                    {"s": child.schema},
                )
            ).all()
    finally:
        await admin.dispose()
    buckets = await asyncio.to_thread(s3_client.list_buckets)

    assert result.returncode == 0, result.stdout + result.stderr
    assert " passed" in result.stdout
    assert schemas == []
    assert child.bucket not in {b["Name"] for b in buckets.get("Buckets", [])}
