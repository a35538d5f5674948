"""The harness's own promises on the real services: the run's stamped schema, migrations up
and down, the drift check, refusal of unstamped schemas, and a run that leaves nothing."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio
from sqlalchemy import Column, Integer, MetaData, Table, func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.pool import NullPool

from tests.harness.adapter import AppAdapter
from tests.harness.config import HarnessConfig
from tests.harness.isolation import create_test_engine
from tests.harness.janitor import SchemaJanitor, stamp_schema
from tests.harness.migrations import downgrade, drift, migrate
from tests.harness.stamps import JanitorRefusal, RunNames
from tests.harness.tests.helpers import drop_schema, names_for, schema_exists
from tests.harness.tests.nested import EXAMPLES, run_nested_pytest
from tests.harness.tests.sample.models import Note

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

MARKER_KEY = "isolation-probe"
MARKER_TITLE = "isolation-probe-note"
FIXTURES_PROBE = str(EXAMPLES / "fixtures_probe.py")


async def test_the_session_works_in_the_runs_own_stamped_schema(
    db_session: AsyncSession, run_names: RunNames
) -> None:
    schema = await db_session.scalar(text("SELECT current_schema()"))
    stamp = await db_session.scalar(
        text("SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace WHERE nspname = :s"),
        {"s": schema},
    )

    assert schema == run_names.schema
    assert json.loads(stamp)["created_by"] == run_names.project.stamp_mark == "sample-test-harness"
    assert json.loads(stamp)["run"] == run_names.run_id


async def test_rows_and_objects_written_here(
    db_session: AsyncSession, s3_client: S3Client, s3_bucket: str
) -> None:
    db_session.add(Note(title=MARKER_TITLE, body=""))
    await db_session.commit()  # a SAVEPOINT release inside the test's transaction
    await asyncio.to_thread(s3_client.put_object, Bucket=s3_bucket, Key=MARKER_KEY, Body=b"x")

    assert await db_session.scalar(select(func.count()).where(Note.title == MARKER_TITLE)) == 1


async def test_are_not_visible_to_the_next_test(
    db_session: AsyncSession, s3_client: S3Client, s3_bucket: str
) -> None:
    listing = await asyncio.to_thread(s3_client.list_objects_v2, Bucket=s3_bucket)

    assert await db_session.scalar(select(func.count()).where(Note.title == MARKER_TITLE)) == 0
    assert listing.get("KeyCount", 0) == 0


@pytest_asyncio.fixture
async def scratch_schema(
    admin: AsyncEngine, database_url: str, run_names: RunNames
) -> AsyncIterator[tuple[AsyncEngine, SchemaJanitor]]:
    """A second stamped schema of this run, for tests that migrate up and down."""
    names = RunNames(
        run_names.project, run_names.run_id, f"{run_names.worker}_scratch_{uuid.uuid4().hex[:6]}"
    )
    scoped = create_test_engine(database_url, names.schema, poolclass=NullPool)
    try:
        async with SchemaJanitor(admin, names) as janitor:
            yield scoped, janitor
    finally:
        await scoped.dispose()


async def test_migrations_upgrade_to_head_and_downgrade_to_base(
    scratch_schema: tuple[AsyncEngine, SchemaJanitor], app_adapter: AppAdapter
) -> None:
    engine, janitor = scratch_schema
    project = janitor.names.project
    listing = text("SELECT tablename FROM pg_tables WHERE schemaname = :s ORDER BY 1")
    params = {"s": janitor.names.schema}

    async with engine.begin() as conn:
        await conn.run_sync(lambda sync: migrate(project, sync))
        after_upgrade = set((await conn.execute(listing, params)).scalars())
        assert await conn.run_sync(drift, app_adapter.metadata) == []
        await conn.run_sync(lambda sync: downgrade(project, sync))
        after_downgrade = set((await conn.execute(listing, params)).scalars())

    assert after_upgrade == {"notes", "alembic_version"}
    assert after_downgrade <= {"alembic_version"}


async def test_drift_check_reports_a_model_without_a_migration(
    engine: AsyncEngine, app_adapter: AppAdapter
) -> None:
    drifted = MetaData()
    for table in app_adapter.metadata.sorted_tables:
        table.to_metadata(drifted)
    Table("not_migrated", drifted, Column("id", Integer, primary_key=True))

    async with engine.connect() as conn:
        differences = await conn.run_sync(drift, drifted)

    assert any(diff[0] == "add_table" and diff[1].name == "not_migrated" for diff in differences)


async def test_janitor_refuses_to_drop_or_truncate_a_schema_without_its_stamp(
    admin: AsyncEngine, run_names: RunNames
) -> None:
    names = names_for(run_names, "unstamped")
    async with admin.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{names.schema}"'))
        await conn.execute(text(f'CREATE TABLE "{names.schema}".precious (id int)'))
        await conn.execute(text(f'INSERT INTO "{names.schema}".precious VALUES (1)'))
    try:
        janitor = SchemaJanitor(admin, names)
        with pytest.raises(JanitorRefusal, match="does not carry this run's stamp"):
            await janitor.__aexit__(None, None, None)
        with pytest.raises(JanitorRefusal, match="does not carry this run's stamp"):
            async with admin.begin() as conn:
                await janitor.truncate(conn, ["precious"])

        assert await schema_exists(admin, names.schema)
        async with admin.connect() as conn:
            rows = await conn.scalar(text(f'SELECT count(*) FROM "{names.schema}".precious'))
        assert rows == 1
    finally:
        await drop_schema(admin, names.schema)


@pytest.mark.parametrize("owner", ["another run", "another project"])
async def test_janitor_refuses_a_schema_stamped_by_someone_else(
    admin: AsyncEngine, run_names: RunNames, owner: str
) -> None:
    names = names_for(run_names, "foreign")
    stamp = names.stamp()
    if owner == "another run":
        stamp = replace(stamp, run=f"{names.run_id}_not_ours")
    else:
        stamp = replace(stamp, created_by="other-test-harness")
    async with admin.begin() as conn:
        await stamp_schema(conn, names.schema, stamp, create=True)
    try:
        with pytest.raises(JanitorRefusal, match="does not carry this run's stamp"):
            await SchemaJanitor(admin, names).__aexit__(None, None, None)
        assert await schema_exists(admin, names.schema)
    finally:
        await drop_schema(admin, names.schema)


async def test_a_run_leaves_no_schema_and_no_bucket_behind(
    harness_config: HarnessConfig,
    admin: AsyncEngine,
    s3_client: S3Client,
    run_names: RunNames,
    tmp_path: Path,
) -> None:
    child = names_for(run_names, "child")
    child = RunNames(child.project, child.run_id, "main")
    result = await run_nested_pytest(
        harness_config,
        ["-q", FIXTURES_PROBE],
        run_id=child.run_id,
        env={"PROBE_REPORT_DIR": str(tmp_path)},
    )
    buckets = await asyncio.to_thread(s3_client.list_buckets)
    report = await asyncio.to_thread(lambda: json.loads((tmp_path / "controller.json").read_text()))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "9 passed" in result.stdout
    assert not await schema_exists(admin, child.schema)
    assert child.bucket not in {b["Name"] for b in buckets.get("Buckets", [])}
    # Every core fixture and the adapter's, and still one resolution in the whole session.
    assert report["resolutions"] == 1
    assert report["run_id"] == child.run_id
