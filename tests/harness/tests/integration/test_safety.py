"""The harness destroys only what it can prove it created, removes what killed runs left,
refuses a database that holds someone's tables, and keeps a failed run's state on request."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import NullPool

from tests.harness.buckets import BucketJanitor, sweep_dead_buckets
from tests.harness.config import HarnessConfig
from tests.harness.isolation import create_test_engine
from tests.harness.janitor import SchemaJanitor, stamp_schema, sweep_dead_schemas
from tests.harness.stamps import JanitorRefusal, RunNames, Stamp
from tests.harness.tests.helpers import dead_pid, drop_schema, names_for, schema_exists
from tests.harness.tests.nested import EXAMPLES, run_nested_pytest

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

FIXTURES_PROBE = str(EXAMPLES / "fixtures_probe.py")
KEEP_PROBE = str(EXAMPLES / "keep_probe.py")


async def _create_schema(admin: AsyncEngine, names: RunNames, stamp: Stamp) -> None:
    async with admin.begin() as conn:
        await stamp_schema(conn, names.schema, stamp, create=True)


async def test_sweep_drops_a_dead_runs_schema_and_keeps_live_kept_and_foreign_ones(
    admin: AsyncEngine, run_names: RunNames
) -> None:
    dead, live, kept, foreign = (
        names_for(run_names, n) for n in ("dead", "live", "kept", "foreign")
    )
    pid = dead_pid()
    await _create_schema(admin, dead, replace(dead.stamp(), pid=pid))
    await _create_schema(admin, live, live.stamp())  # this process: alive
    await _create_schema(admin, kept, replace(kept.stamp(), pid=pid, kept=True))
    other_project = replace(foreign.stamp(), pid=pid, created_by="other-test-harness")
    await _create_schema(admin, foreign, other_project)
    try:
        dropped = await sweep_dead_schemas(admin, run_names.project)

        assert dead.schema in dropped
        assert not await schema_exists(admin, dead.schema)
        for survivor in (live, kept, foreign):
            assert await schema_exists(admin, survivor.schema), survivor.schema
    finally:
        for names in (dead, live, kept, foreign):
            await drop_schema(admin, names.schema)


async def test_sweep_never_touches_an_unstamped_schema(
    admin: AsyncEngine, run_names: RunNames
) -> None:
    names = names_for(run_names, "nostamp")
    async with admin.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{names.schema}"'))
        await conn.execute(text(f'CREATE TABLE "{names.schema}".precious (id int)'))
    try:
        await sweep_dead_schemas(admin, run_names.project, include_kept=True)

        assert await schema_exists(admin, names.schema)
    finally:
        await drop_schema(admin, names.schema)


def _create_bucket(client: S3Client, names: RunNames, stamp: Stamp | None) -> None:
    client.create_bucket(Bucket=names.bucket)
    if stamp is not None:
        tags: list[dict[str, str]] = stamp.to_tags()
        client.put_bucket_tagging(Bucket=names.bucket, Tagging={"TagSet": tags})  # type: ignore[typeddict-item]
    client.put_object(Bucket=names.bucket, Key="precious", Body=b"keep me")


def _bucket_names(client: S3Client) -> set[str]:
    return {b["Name"] for b in client.list_buckets().get("Buckets", [])}


def _remove_bucket(client: S3Client, name: str) -> None:
    if name in _bucket_names(client):
        for key in ("precious",):
            client.delete_object(Bucket=name, Key=key)
        client.delete_bucket(Bucket=name)


async def test_sweep_deletes_a_dead_runs_bucket_and_keeps_live_foreign_and_unstamped_ones(
    s3_client: S3Client, run_names: RunNames
) -> None:
    dead, live, foreign, bare = (
        names_for(run_names, n) for n in ("dead", "live", "foreign", "bare")
    )
    pid = dead_pid()
    _create_bucket(s3_client, dead, replace(dead.stamp(), pid=pid))
    _create_bucket(s3_client, live, live.stamp())
    _create_bucket(s3_client, foreign, replace(foreign.stamp(), pid=pid, created_by="other"))
    _create_bucket(s3_client, bare, None)
    try:
        deleted = await asyncio.to_thread(sweep_dead_buckets, s3_client, run_names.project)

        remaining = _bucket_names(s3_client)
        assert dead.bucket in deleted
        assert dead.bucket not in remaining
        assert {live.bucket, foreign.bucket, bare.bucket} <= remaining
    finally:
        for names in (dead, live, foreign, bare):
            _remove_bucket(s3_client, names.bucket)


@pytest.mark.parametrize("stamped_by", ["nobody", "another run"])
async def test_bucket_janitor_refuses_to_empty_or_delete_a_bucket_without_its_stamp(
    s3_client: S3Client, run_names: RunNames, stamped_by: str
) -> None:
    names = names_for(run_names, "foreign")
    stamp = None if stamped_by == "nobody" else replace(names.stamp(), run="another-run")
    _create_bucket(s3_client, names, stamp)
    try:
        janitor = BucketJanitor(s3_client, names)
        with pytest.raises(JanitorRefusal, match="does not carry this run's stamp"):
            janitor.empty()
        with pytest.raises(JanitorRefusal, match="does not carry this run's stamp"):
            await janitor.__aexit__(None, None, None)

        body = s3_client.get_object(Bucket=names.bucket, Key="precious")["Body"].read()
        assert body == b"keep me"
    finally:
        _remove_bucket(s3_client, names.bucket)


@pytest_asyncio.fixture
async def dev_database(admin: AsyncEngine, database_url: str) -> AsyncIterator[str]:
    """A developer's "real" database beside the test one: one table with rows."""
    name = f"dev_{uuid.uuid4().hex[:10]}"
    autocommit = admin.execution_options(isolation_level="AUTOCOMMIT")
    async with autocommit.connect() as conn:
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = database_url.rsplit("/", 1)[0] + f"/{name}"
    dev = create_test_engine(url, None, poolclass=NullPool)
    async with dev.begin() as conn:
        await conn.execute(text("CREATE TABLE customers (id int PRIMARY KEY, name text)"))
        await conn.execute(text("INSERT INTO customers VALUES (1, 'ada'), (2, 'grace')"))
    await dev.dispose()
    try:
        yield url
    finally:
        async with autocommit.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def test_a_database_with_user_tables_is_refused_before_any_test_and_left_untouched(
    harness_config: HarnessConfig, dev_database: str, run_names: RunNames
) -> None:
    result = await run_nested_pytest(
        harness_config,
        [FIXTURES_PROBE],
        run_id=f"{run_names.run_id}_refused",
        env={"TEST_DATABASE_URL": dev_database},
    )
    dev = create_test_engine(dev_database, None, poolclass=NullPool)
    try:
        async with dev.connect() as conn:
            rows = (await conn.execute(text("SELECT id, name FROM customers ORDER BY id"))).all()
            schemas = (
                await conn.execute(
                    text("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'test%'")
                )
            ).all()
    finally:
        await dev.dispose()

    assert result.returncode == pytest.ExitCode.USAGE_ERROR, result.stdout + result.stderr
    assert "refuse a database that holds tables they did not create" in result.stderr
    assert "public.customers" in result.stderr
    assert "TEST_ALLOW_USER_TABLES=1" in result.stderr
    assert "collected" not in result.stdout
    assert [tuple(r) for r in rows] == [(1, "ada"), (2, "grace")]
    assert schemas == []


async def test_a_failed_run_keeps_its_schema_and_bucket_on_request_and_only_then(
    harness_config: HarnessConfig, admin: AsyncEngine, s3_client: S3Client, run_names: RunNames
) -> None:
    child = names_for(run_names, "keep")
    child = RunNames(child.project, child.run_id, "main")
    result = await run_nested_pytest(
        harness_config, [KEEP_PROBE], run_id=child.run_id, env={"TEST_KEEP_ON_FAILURE": "1"}
    )
    try:
        async with admin.connect() as conn:
            comment = await conn.scalar(
                text(
                    "SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace "
                    "WHERE nspname = :s"
                ),
                {"s": child.schema},
            )
            tables = set(
                (
                    await conn.execute(
                        text("SELECT tablename FROM pg_tables WHERE schemaname = :s"),
                        {"s": child.schema},
                    )
                ).scalars()
            )
        tags = await asyncio.to_thread(s3_client.get_bucket_tagging, Bucket=child.bucket)
        bucket_stamp = Stamp.parse(child.project, {t["Key"]: t["Value"] for t in tags["TagSet"]})

        assert result.returncode == pytest.ExitCode.TESTS_FAILED, result.stdout + result.stderr
        assert "1 failed, 1 passed" in result.stdout
        schema_stamp = Stamp.from_json(child.project, comment)
        assert schema_stamp is not None and schema_stamp.kept, comment
        assert schema_stamp.run == child.run_id
        assert tables == {"notes", "alembic_version"}
        assert bucket_stamp is not None and bucket_stamp.kept
        # A normal sweep leaves kept state alone (`clean` would remove it, with include_kept).
        assert child.schema not in await sweep_dead_schemas(admin, child.project)
        assert child.bucket not in await asyncio.to_thread(
            sweep_dead_buckets, s3_client, child.project
        )
    finally:
        # Exactly the child's schema and bucket, through its stamp.
        if await schema_exists(admin, child.schema):
            await SchemaJanitor(admin, child).__aexit__(None, None, None)
        if child.bucket in _bucket_names(s3_client):
            await BucketJanitor(s3_client, child).__aexit__(None, None, None)
    assert not await schema_exists(admin, child.schema)
    assert child.bucket not in _bucket_names(s3_client)


async def test_without_the_request_a_failed_run_leaves_nothing(
    harness_config: HarnessConfig, admin: AsyncEngine, s3_client: S3Client, run_names: RunNames
) -> None:
    child = names_for(run_names, "nokeep")
    child = RunNames(child.project, child.run_id, "main")
    result = await run_nested_pytest(harness_config, [KEEP_PROBE], run_id=child.run_id)
    buckets = _bucket_names(s3_client)

    assert result.returncode == pytest.ExitCode.TESTS_FAILED, result.stdout + result.stderr
    assert not await schema_exists(admin, child.schema)
    assert child.bucket not in buckets
