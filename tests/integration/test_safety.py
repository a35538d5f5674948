"""The harness destroys only what it can prove it created, and removes what killed runs left."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from tests.harness import contract
from tests.harness.janitor import (
    BucketJanitor,
    JanitorRefusal,
    RunNames,
    Stamp,
    stamp_schema,
    sweep_dead_buckets,
    sweep_dead_schemas,
)
from tests.harness.nested import run_nested_pytest

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    probe = subprocess.Popen([sys.executable, "-c", "pass"])
    probe.wait()
    return probe.pid


def _names(run_names: RunNames, label: str) -> RunNames:
    return RunNames(f"{run_names.run_id}_{label}{uuid.uuid4().hex[:6]}", run_names.worker)


@pytest_asyncio.fixture
async def admin(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(database_url, poolclass=NullPool)
    yield engine
    await engine.dispose()


async def _schema_exists(admin: AsyncEngine, name: str) -> bool:
    async with admin.connect() as conn:
        found = await conn.scalar(
            text("SELECT count(*) FROM pg_namespace WHERE nspname = :n"), {"n": name}
        )
    return bool(found == 1)


async def _create_schema(admin: AsyncEngine, names: RunNames, stamp: Stamp) -> None:
    async with admin.begin() as conn:
        await stamp_schema(conn, names.schema, stamp, create=True)


async def _drop_schema(admin: AsyncEngine, name: str) -> None:
    async with admin.begin() as conn:
        await conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))


async def test_sweep_drops_a_dead_runs_schema_and_keeps_live_and_kept_ones(
    admin: AsyncEngine, run_names: RunNames
) -> None:
    dead, live, kept = (_names(run_names, n) for n in ("dead", "live", "kept"))
    dead_pid = _dead_pid()
    await _create_schema(admin, dead, replace(dead.stamp(), pid=dead_pid))
    await _create_schema(admin, live, live.stamp())  # this process: alive
    await _create_schema(admin, kept, replace(kept.stamp(), pid=dead_pid, kept=True))
    try:
        dropped = await sweep_dead_schemas(admin)

        assert dead.schema in dropped
        assert not await _schema_exists(admin, dead.schema)
        assert await _schema_exists(admin, live.schema)
        assert await _schema_exists(admin, kept.schema)
    finally:
        for names in (dead, live, kept):
            await _drop_schema(admin, names.schema)


async def test_sweep_never_touches_an_unstamped_schema(
    admin: AsyncEngine, run_names: RunNames
) -> None:
    names = _names(run_names, "nostamp")
    async with admin.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{names.schema}"'))
        await conn.execute(text(f'CREATE TABLE "{names.schema}".precious (id int)'))
    try:
        await sweep_dead_schemas(admin, include_kept=True)

        assert await _schema_exists(admin, names.schema)
    finally:
        await _drop_schema(admin, names.schema)


def _create_bucket(client: S3Client, names: RunNames, stamp: Stamp | None) -> None:
    client.create_bucket(Bucket=names.bucket)
    if stamp is not None:
        client.put_bucket_tagging(Bucket=names.bucket, Tagging={"TagSet": stamp.to_tags()})
    client.put_object(Bucket=names.bucket, Key="precious", Body=b"keep me")


def _bucket_names(client: S3Client) -> set[str]:
    return {b["Name"] for b in client.list_buckets().get("Buckets", [])}


def _remove_bucket(client: S3Client, name: str) -> None:
    if name in _bucket_names(client):
        client.delete_object(Bucket=name, Key="precious")
        client.delete_bucket(Bucket=name)


async def test_sweep_deletes_a_dead_runs_bucket_and_keeps_live_and_unstamped_ones(
    s3_client: S3Client, run_names: RunNames
) -> None:
    dead, live, bare = (_names(run_names, n) for n in ("dead", "live", "bare"))
    _create_bucket(s3_client, dead, replace(dead.stamp(), pid=_dead_pid()))
    _create_bucket(s3_client, live, live.stamp())
    _create_bucket(s3_client, bare, None)
    try:
        deleted = await asyncio.to_thread(sweep_dead_buckets, s3_client)

        remaining = _bucket_names(s3_client)
        assert dead.bucket in deleted
        assert dead.bucket not in remaining
        assert {live.bucket, bare.bucket} <= remaining
    finally:
        for names in (dead, live, bare):
            _remove_bucket(s3_client, names.bucket)


async def test_bucket_janitor_refuses_to_empty_a_bucket_without_its_stamp(
    s3_client: S3Client, run_names: RunNames
) -> None:
    names = _names(run_names, "foreign")
    _create_bucket(s3_client, names, None)
    try:
        with pytest.raises(JanitorRefusal, match="does not carry this run's stamp"):
            BucketJanitor(s3_client, names).empty()

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
    dev = create_async_engine(url, poolclass=NullPool)
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
    dev_database: str, s3_target: contract.S3Target, run_names: RunNames
) -> None:
    result = await run_nested_pytest(
        ["tests/integration"],
        run_id=f"{run_names.run_id}_refused",
        env={
            "TEST_DATABASE_URL": dev_database,
            "TEST_S3_ENDPOINT_URL": str(s3_target.endpoint_url),
        },
    )
    dev = create_async_engine(dev_database, poolclass=NullPool)
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
