"""Fixtures of the integration tier: the run's schema and bucket, per-test isolation, HTTP clients.

Registered by tests/conftest.py once the guard has passed. Per-test isolation
lives in tests/harness/isolation.py (SAVEPOINT by default, real commits on
request), shared with the benchmarks.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.pool import NullPool

from api import Settings, create_app
from api.deps import get_session
from api.models import Base
from tests.harness import contract
from tests.harness.isolation import committing_session, create_test_engine, savepoint_session
from tests.harness.janitor import (
    BucketJanitor,
    RunNames,
    SchemaJanitor,
    drift,
    migrate,
    s3_client_for,
    sweep_dead_buckets,
    sweep_dead_schemas,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

# Test-only owners and tokens: the app under test accepts exactly these.
TOKENS = {"alice": "alice-test-token", "bob": "bob-test-token"}
MAX_UPLOAD_BYTES = 1024 * 1024
KEEP_SWITCH = "TEST_KEEP_ON_FAILURE"


def _keep_on_failure(session: pytest.Session) -> bool:
    keep = os.environ.get(KEEP_SWITCH, "").lower() in {"1", "true", "yes"}
    return keep and session.testsfailed > 0


@pytest.fixture(scope="session")
def run_names() -> RunNames:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    return RunNames(os.environ[contract.RUN_ID_VARIABLE], worker)


@pytest.fixture(scope="session")
def database_url() -> str:
    url = contract.resolve_database_url().url
    assert url is not None  # the guard has checked it before collection
    return url


def _sweeps(names: RunNames) -> bool:
    """One process per run removes what killed runs left behind (the others would race it)."""
    return names.worker in {"main", "gw0"}


def _report(request: pytest.FixtureRequest, kind: str, removed: list[str]) -> None:
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    for name in removed:
        if reporter is not None:
            reporter.write_line(f"harness: removed {kind} {name!r} left by a run that was killed")


@pytest.fixture(scope="session")
def s3_target() -> contract.S3Target:
    return contract.resolve_s3()


@pytest_asyncio.fixture(scope="session")
async def _run_schema(
    request: pytest.FixtureRequest, database_url: str, run_names: RunNames
) -> AsyncIterator[SchemaJanitor]:
    # The admin engine works outside the run's schema; NullPool keeps no
    # connection open that could hold a lock when the schema is dropped.
    admin = create_async_engine(database_url, poolclass=NullPool)
    try:
        if _sweeps(run_names):
            _report(request, "schema", await sweep_dead_schemas(admin))
        janitor = SchemaJanitor(admin, run_names)
        async with janitor:
            yield janitor
            janitor.keep = _keep_on_failure(request.session)
    finally:
        await admin.dispose()


@pytest_asyncio.fixture(scope="session")
async def _run_bucket(
    request: pytest.FixtureRequest, s3_target: contract.S3Target, run_names: RunNames
) -> AsyncIterator[BucketJanitor]:
    client = s3_client_for(s3_target)
    if _sweeps(run_names):
        _report(request, "bucket", await asyncio.to_thread(sweep_dead_buckets, client))
    janitor = BucketJanitor(client, run_names)
    async with janitor:
        yield janitor
        janitor.keep = _keep_on_failure(request.session)


def _settings_for(
    target: contract.S3Target, *, database_url: str, schema: str | None, bucket: str
) -> Settings:
    return Settings(
        database_url=database_url or "postgresql+asyncpg://unused/unused",
        database_schema=schema,
        s3_endpoint_url=target.endpoint_url,
        s3_region=target.region,
        s3_access_key=target.access_key,
        s3_secret_key=target.secret_key,
        s3_bucket=bucket,
        api_tokens=TOKENS,
        max_upload_bytes=MAX_UPLOAD_BYTES,
    )


@pytest.fixture(scope="session")
def settings(
    database_url: str,
    s3_target: contract.S3Target,
    _run_schema: SchemaJanitor,
    _run_bucket: BucketJanitor,
) -> Settings:
    """The app's settings for this run: its own schema, its own bucket, two test owners."""
    return _settings_for(
        s3_target,
        database_url=database_url,
        schema=_run_schema.names.schema,
        bucket=_run_bucket.bucket,
    )


@pytest_asyncio.fixture(scope="session")
async def engine(settings: Settings, _run_schema: SchemaJanitor) -> AsyncIterator[AsyncEngine]:
    """An engine whose search_path is the run's schema, migrated to head and checked for drift."""
    engine = create_test_engine(settings)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(migrate)
            differences = await conn.run_sync(drift, Base.metadata)
        if differences:
            pytest.exit(
                "The models and the Alembic migrations disagree (drift):\n  "
                + "\n  ".join(map(str, differences))
                + "\n  fix: add a migration under api/migrations/versions/ "
                "(alembic revision --autogenerate -m '...').",
                returncode=pytest.ExitCode.USAGE_ERROR,
            )
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def s3_client(_run_bucket: BucketJanitor, s3_target: contract.S3Target) -> S3Client:
    """A boto3 S3 client for the test's own checks: path-style addressing, SigV4."""
    return s3_client_for(s3_target)


@pytest.fixture
def s3_bucket(_run_bucket: BucketJanitor) -> Iterator[str]:
    """The run's bucket, emptied after each test so no test sees another's objects."""
    yield _run_bucket.bucket
    _run_bucket.empty()


def _real_commits(request: pytest.FixtureRequest) -> bool:
    return request.node.get_closest_marker("real_commits") is not None


@pytest_asyncio.fixture
async def db_session(
    request: pytest.FixtureRequest,
    engine: AsyncEngine,
    _run_schema: SchemaJanitor,
) -> AsyncIterator[AsyncSession]:
    """The test's session.

    By default it lives inside an outer transaction that is rolled back, and its
    commits become SAVEPOINT releases. Under @pytest.mark.real_commits it is a
    plain session that really commits; the tables are emptied after the test.
    """
    if _real_commits(request):
        tables = [t.name for t in Base.metadata.sorted_tables]
        async with committing_session(engine, _run_schema, tables) as session:
            yield session
    else:
        async with savepoint_session(engine) as session:
            yield session


@pytest_asyncio.fixture(scope="session")
async def _session_app(settings: Settings, engine: AsyncEngine) -> AsyncIterator[FastAPI]:
    app = create_app(settings)
    try:
        yield app
    finally:
        await app.state.engine.dispose()


@pytest.fixture
def app(
    request: pytest.FixtureRequest, _session_app: FastAPI, db_session: AsyncSession, s3_bucket: str
) -> Iterator[FastAPI]:
    """The app under test, built for the test settings.

    It uses the test's `db_session` through a dependency override, so HTTP calls
    see and roll back the same data as the test. Under real_commits it uses its
    own engine and commits for real.
    """
    if not _real_commits(request):

        async def _test_session() -> AsyncIterator[AsyncSession]:
            yield db_session

        _session_app.dependency_overrides[get_session] = _test_session
    try:
        yield _session_app
    finally:
        _session_app.dependency_overrides.clear()


def _client(app: FastAPI, owner: str | None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {TOKENS[owner]}"} if owner else {}
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test", headers=headers
    )


@pytest_asyncio.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An anonymous client of the app under test."""
    async with _client(app, None) as c:
        yield c


@pytest_asyncio.fixture
async def authed_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client holding the Bearer token of owner "alice"."""
    async with _client(app, "alice") as c:
        yield c


@pytest_asyncio.fixture
async def other_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client holding the Bearer token of owner "bob"."""
    async with _client(app, "bob") as c:
        yield c
