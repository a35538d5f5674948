"""The core fixtures: the run's schema, its engine, per-test isolation, the app and a client.

Registered by the plugin once the guard has passed. What they know of the app comes from the
adapter (tests/harness/adapter.py); the S3 fixtures live in s3_fixtures.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.pool import NullPool

from .adapter import AppAdapter
from .config import HarnessConfig, RunTargets
from .isolation import committing_session, create_test_engine, savepoint_session
from .janitor import SchemaJanitor, sweep_dead_schemas
from .migrations import MigrationError, drift, drift_message, migrate
from .plugin import ADAPTER, CONFIG
from .stamps import RunNames


def keep_on_failure(request: pytest.FixtureRequest, config: HarnessConfig) -> bool:
    return config.keep_on_failure and request.session.testsfailed > 0


def sweeps(names: RunNames) -> bool:
    """One process per run removes what killed runs left behind (the others would race it)."""
    return names.worker in {"main", "gw0"}


def report_removed(request: pytest.FixtureRequest, kind: str, removed: list[str]) -> None:
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    for name in removed:
        if reporter is not None:
            reporter.write_line(f"harness: removed {kind} {name!r} left by a run that was killed")


@pytest.fixture(scope="session")
def harness_config(pytestconfig: pytest.Config) -> HarnessConfig:
    """The resolved, guarded configuration of this run (the same object in every fixture)."""
    return pytestconfig.stash[CONFIG]


@pytest.fixture(scope="session")
def app_adapter(pytestconfig: pytest.Config) -> AppAdapter:
    return pytestconfig.stash[ADAPTER]


@pytest.fixture(scope="session")
def run_names(pytestconfig: pytest.Config, harness_config: HarnessConfig) -> RunNames:
    workerinput: dict[str, Any] = getattr(pytestconfig, "workerinput", {})
    worker = str(workerinput.get("workerid", "main"))
    return RunNames(harness_config.project, harness_config.run_id, worker)


@pytest.fixture(scope="session")
def database_url(harness_config: HarnessConfig) -> str:
    """The guarded URL of the test database (password included); not the run's schema."""
    return harness_config.database_url


@pytest_asyncio.fixture(scope="session")
async def _run_schema(
    request: pytest.FixtureRequest, harness_config: HarnessConfig, run_names: RunNames
) -> AsyncIterator[SchemaJanitor]:
    # The admin engine works outside the run's schema; NullPool keeps no connection open
    # that could hold a lock when the schema is dropped.
    admin = create_test_engine(harness_config.database_url, None, poolclass=NullPool)
    try:
        if sweeps(run_names):
            removed = await sweep_dead_schemas(admin, harness_config.project)
            report_removed(request, "schema", removed)
        janitor = SchemaJanitor(admin, run_names)
        async with janitor:
            yield janitor
            janitor.keep = keep_on_failure(request, harness_config)
    finally:
        await admin.dispose()


@pytest_asyncio.fixture(scope="session")
async def engine(
    harness_config: HarnessConfig, app_adapter: AppAdapter, _run_schema: SchemaJanitor
) -> AsyncIterator[AsyncEngine]:
    """An engine whose search_path is the run's schema, migrated to head (and drift-checked)."""
    project = harness_config.project
    engine = create_test_engine(harness_config.database_url, _run_schema.names.schema)
    try:
        async with engine.begin() as conn:
            try:
                await conn.run_sync(lambda sync: migrate(project, sync))
            except MigrationError as exc:
                pytest.exit(str(exc), returncode=pytest.ExitCode.USAGE_ERROR)
            if project.drift_check:
                differences = await conn.run_sync(drift, app_adapter.metadata)
                if differences:
                    pytest.exit(
                        drift_message(project, differences),
                        returncode=pytest.ExitCode.USAGE_ERROR,
                    )
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def run_targets(
    request: pytest.FixtureRequest, harness_config: HarnessConfig, _run_schema: SchemaJanitor
) -> RunTargets:
    """What the adapter builds the app from: the run's database, schema and bucket."""
    bucket = request.getfixturevalue("_run_bucket").bucket if harness_config.s3 else None
    return RunTargets(
        harness_config.database_url, _run_schema.names.schema, harness_config.s3, bucket
    )


def real_commits(request: pytest.FixtureRequest) -> bool:
    return request.node.get_closest_marker("real_commits") is not None


@pytest_asyncio.fixture
async def db_session(
    request: pytest.FixtureRequest,
    engine: AsyncEngine,
    app_adapter: AppAdapter,
    _run_schema: SchemaJanitor,
) -> AsyncIterator[AsyncSession]:
    """The test's session.

    By default it lives inside an outer transaction that is rolled back, and its commits
    become SAVEPOINT releases. Under @pytest.mark.real_commits it is a plain session that
    really commits; the tables are emptied after the test.
    """
    if real_commits(request):
        tables = [t.name for t in app_adapter.metadata.sorted_tables]
        async with committing_session(engine, _run_schema, tables) as session:
            yield session
    else:
        async with savepoint_session(engine) as session:
            yield session


@pytest_asyncio.fixture(scope="session")
async def _session_app(app_adapter: AppAdapter, run_targets: RunTargets) -> AsyncIterator[Any]:
    app = app_adapter.create_app(run_targets)
    lifespan = getattr(getattr(app, "router", None), "lifespan_context", None)
    if lifespan is None:
        yield app
        return
    async with lifespan(app):  # what uvicorn would run: the app's start-up and shut-down
        yield app


@pytest.fixture
def app(
    request: pytest.FixtureRequest,
    _session_app: Any,
    app_adapter: AppAdapter,
    harness_config: HarnessConfig,
    db_session: AsyncSession,
) -> Iterator[Any]:
    """The app under test, built by the adapter for this run.

    HTTP calls use the test's `db_session` (a dependency override), so they see and roll back
    the same data as the test; concurrent requests take turns on it. Under real_commits the
    app uses its own engine and commits for real.
    """
    if harness_config.s3 is not None:
        request.getfixturevalue("s3_bucket")  # emptied after the test
    overrides: dict[Any, Any] = _session_app.dependency_overrides
    if not real_commits(request):
        # One AsyncSession serves one request at a time; gather() in a test must not interleave.
        turn = asyncio.Lock()

        async def _test_session() -> AsyncIterator[AsyncSession]:
            async with turn:
                yield db_session

        overrides[app_adapter.session_dependency] = _test_session
    try:
        yield _session_app
    finally:
        overrides.clear()


def asgi_client(app: Any, headers: dict[str, str] | None = None) -> httpx.AsyncClient:
    """An httpx client that calls the app in-process (no socket); for adapters' own clients."""
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test", headers=headers or {}
    )


@pytest_asyncio.fixture
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """An anonymous client of the app under test."""
    async with asgi_client(app) as c:
        yield c
