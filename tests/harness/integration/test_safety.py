"""The harness destroys only what it can prove it created, removes what killed runs left,
refuses a database that holds someone's tables, and keeps a failed run's state on request."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio
from realstack.buckets import BucketJanitor, sweep_dead_buckets
from realstack.config import HarnessConfig
from realstack.contract import TEST_TOX_DOCKER_SERVICES, ToxDockerMark
from realstack.engines import create_test_engine
from realstack.janitor import DatabaseJanitor, drop_database
from realstack.stamps import JanitorRefusal, RunNames, Stamp
from realstack.sweeps import sweep_dead_stores
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import NullPool

from tests.harness.helpers import (
    ScratchStore,
    autocommit,
    database_exists,
    database_stamp,
    dead_pid,
    engine_on,
    names_for,
    run_leftovers,
)
from tests.harness.nested import EXAMPLES, run_nested_pytest, service_environment

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

FIXTURES_PROBE = str(EXAMPLES / "fixtures_probe.py")
KEEP_PROBE = str(EXAMPLES / "keep_probe.py")
SURVIVORS = ("live", "kept", "foreign", "unstamped")


@pytest.mark.parametrize("kind", ["database", "schema"])
async def test_sweep_drops_a_dead_runs_store_and_keeps_live_kept_foreign_and_unstamped_ones(
    admin: AsyncEngine, database_url: str, run_names: RunNames, kind: str
) -> None:
    stores = {
        label: ScratchStore(kind, admin, database_url, names_for(run_names, label))
        for label in ("dead", *SURVIVORS)
    }
    pid = dead_pid()
    stamps: dict[str, Stamp | None] = {
        "dead": replace(stores["dead"].names.stamp(), pid=pid),
        "live": stores["live"].names.stamp(),  # this process: alive
        "kept": replace(stores["kept"].names.stamp(), pid=pid, kept=True),
        "foreign": replace(
            stores["foreign"].names.stamp(), pid=pid, created_by="other-test-harness"
        ),
        "unstamped": None,
    }
    try:
        for label, store in stores.items():
            await store.create(stamps[label])
        removed = await sweep_dead_stores(database_url, run_names.project)

        assert f"{kind} {stores['dead'].name}" in removed
        assert not await stores["dead"].exists()
        for label in SURVIVORS:
            assert await stores[label].exists(), label
            assert await stores[label].rows() == 1, label

        # `make clean-leftovers` also removes a dead run's kept state, and nothing else.
        removed = await sweep_dead_stores(database_url, run_names.project, include_kept=True)

        assert f"{kind} {stores['kept'].name}" in removed
        assert not await stores["kept"].exists()
        for label in ("live", "foreign", "unstamped"):
            assert await stores[label].exists(), label
    finally:
        for store in stores.values():
            await store.drop()


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
            await drop_database(conn, name)


async def test_a_database_with_user_tables_is_refused_before_any_test_and_left_untouched(
    harness_config: HarnessConfig, admin: AsyncEngine, dev_database: str, run_names: RunNames
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
    created = await run_leftovers(admin, f"{run_names.run_id}_refused")

    assert result.returncode == pytest.ExitCode.USAGE_ERROR, result.stdout + result.stderr
    assert "refuse a database that holds tables they did not create" in result.stderr
    assert "public.customers" in result.stderr
    assert "TEST_ALLOW_USER_TABLES=1" in result.stderr
    assert "collected" not in result.stdout
    assert [tuple(r) for r in rows] == [(1, "ada"), (2, "grace")]
    assert schemas == []
    assert created == []  # no database of the run either


async def _customers(database_url: str) -> list[tuple[object, ...]]:
    dev = create_test_engine(database_url, None, poolclass=NullPool)
    try:
        async with dev.connect() as conn:
            rows = await conn.execute(text("SELECT id, name FROM customers ORDER BY id"))
            return [tuple(r) for r in rows.all()]
    finally:
        await dev.dispose()


def _postgres_variables_for(config: HarnessConfig, database_url: str) -> dict[str, str]:
    """POSTGRES_* naming `database_url`'s database, as a docker-compose .env would set them."""
    return {**service_environment(config), "POSTGRES_DB": database_url.rsplit("/", 1)[1]}


def _tox_hook_mark(env: dict[str, str], tox_pid: int) -> str:
    """What the harness's tox hook writes once tox-docker's containers are up (toxplugin.py)."""
    endpoint = {k: env[k] for k in ("POSTGRES_HOST", "POSTGRES_PORT")}
    return str(ToxDockerMark.of({f"postgres-tox-{tox_pid}": endpoint}))


@pytest.mark.parametrize("mark", ["none", "of an ended tox run"])
async def test_postgres_variables_nobody_marked_are_refused_naming_them_and_the_fix(
    harness_config: HarnessConfig,
    admin: AsyncEngine,
    dev_database: str,
    run_names: RunNames,
    mark: str,
) -> None:
    run_id = f"{run_names.run_id}_compose"
    env = _postgres_variables_for(harness_config, dev_database)
    if mark != "none":
        env[TEST_TOX_DOCKER_SERVICES.name] = _tox_hook_mark(env, dead_pid())

    result = await run_nested_pytest(harness_config, [FIXTURES_PROBE], run_id=run_id, env=env)

    assert result.returncode == pytest.ExitCode.USAGE_ERROR, result.stdout + result.stderr
    message = result.stderr
    assert "refuse a database that holds tables they did not create" in message
    assert "public.customers" in message
    assert f"POSTGRES_PORT={env['POSTGRES_PORT']!r}" in message
    assert f"POSTGRES_DB={env['POSTGRES_DB']!r}" in message
    assert "POSTGRES_PASSWORD='***'" in message
    assert env["POSTGRES_PASSWORD"] not in message
    assert "unset POSTGRES_HOST and POSTGRES_PORT" in message
    assert TEST_TOX_DOCKER_SERVICES.name in message
    assert "TEST_ALLOW_USER_TABLES=1" in message
    assert "Traceback" not in message
    assert "collected" not in result.stdout
    assert await _customers(dev_database) == [(1, "ada"), (2, "grace")]
    assert await run_leftovers(admin, run_id) == []


async def test_the_tox_hooks_mark_is_what_lets_postgres_variables_name_that_database(
    harness_config: HarnessConfig, admin: AsyncEngine, dev_database: str, run_names: RunNames
) -> None:
    env = _postgres_variables_for(harness_config, dev_database)
    # This process stands for tox: the mark names a live tox run, as tox-docker's names do.
    marked = {**env, TEST_TOX_DOCKER_SERVICES.name: _tox_hook_mark(env, os.getpid())}

    unmarked_run = await run_nested_pytest(
        harness_config, [FIXTURES_PROBE], run_id=f"{run_names.run_id}_unmarked", env=env
    )
    marked_run = await run_nested_pytest(
        harness_config, [FIXTURES_PROBE], run_id=f"{run_names.run_id}_marked", env=marked
    )

    assert unmarked_run.returncode == pytest.ExitCode.USAGE_ERROR, unmarked_run.stderr
    assert marked_run.returncode == pytest.ExitCode.OK, marked_run.stdout + marked_run.stderr
    assert await _customers(dev_database) == [(1, "ada"), (2, "grace")]
    assert await run_leftovers(admin, f"{run_names.run_id}_marked") == []


async def test_a_failed_run_keeps_its_database_and_bucket_on_request_and_only_then(
    harness_config: HarnessConfig,
    admin: AsyncEngine,
    database_url: str,
    s3_client: S3Client,
    run_names: RunNames,
) -> None:
    child = names_for(run_names, "keep")
    child = RunNames(child.project, child.run_id, "main")
    result = await run_nested_pytest(
        harness_config, [KEEP_PROBE], run_id=child.run_id, env={"TEST_KEEP_ON_FAILURE": "1"}
    )
    try:
        comment = await database_stamp(admin, child.database)
        kept = engine_on(database_url, child.database)
        try:
            async with kept.connect() as conn:
                listing = text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
                tables = set((await conn.execute(listing)).scalars())
        finally:
            await kept.dispose()
        tags = await asyncio.to_thread(s3_client.get_bucket_tagging, Bucket=child.bucket)
        bucket_stamp = Stamp.parse(child.project, {t["Key"]: t["Value"] for t in tags["TagSet"]})

        assert result.returncode == pytest.ExitCode.TESTS_FAILED, result.stdout + result.stderr
        assert "1 failed, 1 passed" in result.stdout
        database_stamped = Stamp.from_json(child.project, comment)
        assert database_stamped is not None and database_stamped.kept, comment
        assert database_stamped.run == child.run_id
        assert tables == {"notes", "alembic_version"}
        assert bucket_stamp is not None and bucket_stamp.kept
        # A normal sweep leaves kept state alone (`clean` would remove it, with include_kept).
        assert f"database {child.database}" not in await sweep_dead_stores(
            database_url, child.project
        )
        assert child.bucket not in await asyncio.to_thread(
            sweep_dead_buckets, s3_client, child.project
        )
    finally:
        # Exactly the child's database and bucket, through its stamp.
        if await database_exists(admin, child.database):
            await DatabaseJanitor(autocommit(admin), database_url, child).__aexit__(
                None, None, None
            )
        if child.bucket in _bucket_names(s3_client):
            await BucketJanitor(s3_client, child).__aexit__(None, None, None)
    assert await run_leftovers(admin, child.run_id) == []
    assert child.bucket not in _bucket_names(s3_client)


async def test_without_the_request_a_failed_run_leaves_nothing(
    harness_config: HarnessConfig, admin: AsyncEngine, s3_client: S3Client, run_names: RunNames
) -> None:
    child = names_for(run_names, "nokeep")
    child = RunNames(child.project, child.run_id, "main")
    result = await run_nested_pytest(harness_config, [KEEP_PROBE], run_id=child.run_id)
    buckets = _bucket_names(s3_client)

    assert result.returncode == pytest.ExitCode.TESTS_FAILED, result.stdout + result.stderr
    assert await run_leftovers(admin, child.run_id) == []
    assert child.bucket not in buckets
