"""The harness's own promises on the real services: the run's own stamped database (or, as
a fallback, schema), migrations up and down, the drift check, refusal of what the run did not
stamp, and a run that leaves nothing."""

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
from realstack.adapter import AppAdapter
from realstack.config import HarnessConfig, RunTargets
from realstack.engines import create_test_engine
from realstack.janitor import TEST_LOCK_TIMEOUT, RunStore, run_store
from realstack.migrations import downgrade, drift, migrate
from realstack.stamps import JanitorRefusal, RunNames
from sqlalchemy import Column, Integer, MetaData, Table, func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.pool import NullPool

from tests.harness.helpers import ScratchStore, names_for, run_leftovers, schema_exists
from tests.harness.nested import EXAMPLES, run_nested_pytest
from tests.harness.sample.models import Note

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

MARKER_KEY = "isolation-probe"
MARKER_TITLE = "isolation-probe-note"
FIXTURES_PROBE = str(EXAMPLES / "fixtures_probe.py")
KINDS = ["database", "schema"]
_STAMP = "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = :d"


async def test_the_session_works_in_the_runs_own_stamped_database(
    db_session: AsyncSession,
    run_names: RunNames,
    run_targets: RunTargets,
    harness_config: HarnessConfig,
    admin: AsyncEngine,
) -> None:
    database = await db_session.scalar(text("SELECT current_database()"))
    schema = await db_session.scalar(text("SELECT current_schema()"))
    lock_timeout = await db_session.scalar(text("SELECT current_setting('lock_timeout')"))
    stamp = json.loads(await db_session.scalar(text(_STAMP), {"d": database}))

    assert harness_config.per_run == "database"  # the test role may create databases
    assert database == run_names.database
    assert (schema, run_targets.schema) == ("public", None)
    assert stamp["created_by"] == run_names.project.stamp_mark == "sample-test-harness"
    assert stamp["run"] == run_names.run_id
    assert lock_timeout == TEST_LOCK_TIMEOUT
    # The server's test database holds nothing of the run's; the leftover checks see the run.
    assert not await schema_exists(admin, run_names.schema)
    assert f"database {run_names.database}" in await run_leftovers(admin, run_names.run_id)


async def test_run_database_url_reaches_the_runs_database_with_its_password(
    run_database_url: str, run_targets: RunTargets, run_names: RunNames
) -> None:
    other = create_test_engine(run_database_url, None, poolclass=NullPool)
    try:
        async with other.connect() as conn:
            database = await conn.scalar(text("SELECT current_database()"))
    finally:
        await other.dispose()

    assert database == run_names.database
    assert run_database_url == run_targets.database_url
    assert "***" not in run_database_url


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


@pytest_asyncio.fixture(params=KINDS)
async def scratch_store(
    request: pytest.FixtureRequest, database_url: str, run_names: RunNames
) -> AsyncIterator[tuple[AsyncEngine, RunStore]]:
    """A second stamped database (or schema, the fallback) of this run, for tests that
    migrate up and down."""
    names = RunNames(
        run_names.project, run_names.run_id, f"{run_names.worker}_scratch_{uuid.uuid4().hex[:6]}"
    )
    async with run_store(database_url, names, request.param) as store:
        scoped = create_test_engine(store.url, store.schema, poolclass=NullPool)
        try:
            yield scoped, store
        finally:
            await scoped.dispose()


async def test_migrations_upgrade_to_head_and_downgrade_to_base(
    scratch_store: tuple[AsyncEngine, RunStore], app_adapter: AppAdapter
) -> None:
    engine, store = scratch_store
    project = store.names.project
    listing = text("SELECT tablename FROM pg_tables WHERE schemaname = :s ORDER BY 1")
    params = {"s": store.schema or "public"}

    async with engine.begin() as conn:
        await conn.run_sync(lambda sync: migrate(project, sync))
        after_upgrade = set((await conn.execute(listing, params)).scalars())
        assert await conn.run_sync(drift, app_adapter.metadata, project) == []
        await conn.run_sync(lambda sync: downgrade(project, sync))
        after_downgrade = set((await conn.execute(listing, params)).scalars())

    assert after_upgrade == {"notes", "alembic_version"}
    assert after_downgrade <= {"alembic_version"}


async def test_drift_check_reports_a_model_without_a_migration(
    engine: AsyncEngine, app_adapter: AppAdapter, harness_config: HarnessConfig
) -> None:
    drifted = MetaData()
    for table in app_adapter.metadata.sorted_tables:
        table.to_metadata(drifted)
    Table("not_migrated", drifted, Column("id", Integer, primary_key=True))

    async with engine.connect() as conn:
        differences = await conn.run_sync(drift, drifted, harness_config.project)

    assert any(diff[0] == "add_table" and diff[1].name == "not_migrated" for diff in differences)


async def assert_refused_and_untouched(store: ScratchStore) -> None:
    """The store's janitor refuses to drop or truncate it, and its row survives; then the test
    drops the store itself."""
    try:
        janitor = store.janitor()
        with pytest.raises(JanitorRefusal, match="does not carry this run's stamp"):
            await janitor.__aexit__(None, None, None)
        with pytest.raises(JanitorRefusal, match="does not carry this run's stamp"):
            async with store.begin() as conn:
                await janitor.truncate(conn, ["precious"])

        assert await store.exists()
        assert await store.rows() == 1
    finally:
        await store.drop()


@pytest.mark.parametrize("kind", KINDS)
async def test_janitor_refuses_to_drop_or_truncate_what_carries_no_stamp(
    admin: AsyncEngine, database_url: str, run_names: RunNames, kind: str
) -> None:
    store = ScratchStore(kind, admin, database_url, names_for(run_names, "unstamped"))
    await store.create(stamp=None)
    await assert_refused_and_untouched(store)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("owner", ["another run", "another project"])
async def test_janitor_refuses_what_someone_else_stamped(
    admin: AsyncEngine, database_url: str, run_names: RunNames, owner: str, kind: str
) -> None:
    store = ScratchStore(kind, admin, database_url, names_for(run_names, "foreign"))
    stamp = store.names.stamp()
    if owner == "another run":
        stamp = replace(stamp, run=f"{store.names.run_id}_not_ours")
    else:
        stamp = replace(stamp, created_by="other-test-harness")
    await store.create(stamp)
    await assert_refused_and_untouched(store)


async def test_a_run_leaves_no_database_no_schema_and_no_bucket_behind(
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
    assert await run_leftovers(admin, child.run_id) == []
    assert child.bucket not in {b["Name"] for b in buckets.get("Buckets", [])}
    # Every core fixture and the adapter's, and still one resolution in the whole session.
    assert report["resolutions"] == 1
    assert report["run_id"] == child.run_id
