"""The core fixtures: the run's schema, its engine, per-test isolation, the app and a client.

Registered by the plugin once the guard has passed. What they know of the app comes from the
adapter (adapter.py); the S3 fixtures live in s3_fixtures.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

import httpx
import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    AsyncTransaction,
    async_sessionmaker,
)

from .adapter import AdapterError, AppAdapter, check_session_dependency
from .clients import asgi_client, requests_served, serve_lifespan_state
from .config import HarnessConfig, RunTargets
from .engines import create_test_engine
from .isolation import end_test_transaction, joined_session, joined_sessionmaker
from .janitor import RunStore, run_store
from .leaks import Baseline, undo_leftovers
from .migrations import MigrationError, prepare
from .project import ProjectConfigError
from .services import endpoints_down
from .stamps import RunNames
from .stash import ADAPTER, CONFIG, RUN_BUCKET
from .sweeps import sweep_dead_stores
from .templates import run_database

if TYPE_CHECKING:
    from .buckets import BucketJanitor  # boto3: imported only by projects with S3


def stop_run(config: pytest.Config, message: str) -> NoReturn:
    """End the run with `message`; in an xdist worker (where pytest.exit would crash the
    controller with an INTERNALERROR) fail every test with it instead."""
    if hasattr(config, "workerinput"):
        pytest.fail(message, pytrace=False)
    pytest.exit(message, returncode=pytest.ExitCode.USAGE_ERROR)


def keep_on_failure(request: pytest.FixtureRequest, config: HarnessConfig) -> bool:
    return config.keep_on_failure and request.session.testsfailed > 0


def sweeps(names: RunNames) -> bool:
    """One process per run removes what killed runs left behind (the others would race it)."""
    return names.worker in {"main", "gw0"}


def left_with_the_server(request: pytest.FixtureRequest, config: HarnessConfig, what: str) -> bool:
    """The run's `what` could not be dropped at its end: True, said in one line, when a service
    of the run is gone (the run stopped for that reason); False when the error is another."""
    down = endpoints_down(config)
    if not down:
        return False
    say(
        request,
        f"harness: the run's {what} was not dropped, as {' and '.join(down)} no longer "
        "answer(s) (an embedded server takes it along; else `python -m realstack.embedded clean` "
        "removes it "
        "later)",
    )
    return True


def say(request: pytest.FixtureRequest, line: str) -> None:
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(line)


def report_removed(request: pytest.FixtureRequest, kind: str, removed: list[str]) -> None:
    for name in removed:
        shown = f"{kind} {name!r}" if kind else name
        say(request, f"harness: removed {shown} left by a run that was killed")


@pytest.fixture(scope="session")
def harness_config(pytestconfig: pytest.Config) -> HarnessConfig:
    """The resolved, guarded configuration of this run (the same object in every fixture)."""
    return pytestconfig.stash[CONFIG]


@pytest.fixture(scope="session")
def app_adapter(pytestconfig: pytest.Config) -> AppAdapter:
    """The project's adapter, loaded and checked (adapter.py)."""
    return pytestconfig.stash[ADAPTER]


@pytest.fixture(scope="session")
def run_names(pytestconfig: pytest.Config, harness_config: HarnessConfig) -> RunNames:
    """The names of what this run (and this xdist worker) owns: its database, schema, bucket."""
    workerinput: dict[str, Any] = getattr(pytestconfig, "workerinput", {})
    worker = str(workerinput.get("workerid", "main"))
    return RunNames(harness_config.project, harness_config.run_id, worker)


@pytest.fixture(scope="session")
def database_url(harness_config: HarnessConfig) -> str:
    """The guarded URL of the test database (password included); not the run's schema."""
    return harness_config.database_url


@pytest_asyncio.fixture(scope="session")
async def _run_store(
    request: pytest.FixtureRequest, harness_config: HarnessConfig, run_names: RunNames
) -> AsyncIterator[RunStore]:
    """The run's own database (or, where the role may not create one, schema)."""
    server_url = harness_config.database_url
    if sweeps(run_names):
        removed = await sweep_dead_stores(server_url, harness_config.project)
        report_removed(request, "", removed)
    yielded = False
    try:
        async with AsyncExitStack() as stack:
            try:
                if harness_config.per_run == "database":
                    metadata = request.getfixturevalue("app_adapter").metadata
                    own = run_database(
                        server_url,
                        harness_config.project,
                        metadata,
                        run_names,
                        wait_s=harness_config.services_timeout_s,
                    )
                else:
                    own = run_store(server_url, run_names, "schema")
                store = await stack.enter_async_context(own)
            # ProjectConfigError: a template_inputs pattern matches no file since the table's load.
            except (MigrationError, ProjectConfigError) as exc:
                stop_run(request.config, str(exc))
            yielded = True
            yield store
            store.keep = keep_on_failure(request, harness_config)
    except Exception:
        if not yielded or not left_with_the_server(
            request, harness_config, f"{store.kind} {store.name!r}"
        ):
            raise


@pytest_asyncio.fixture(scope="session")
async def _migrated(
    request: pytest.FixtureRequest,
    harness_config: HarnessConfig,
    app_adapter: AppAdapter,
    _run_store: RunStore,
) -> AsyncIterator[tuple[AsyncEngine, Baseline]]:
    project, metadata = harness_config.project, app_adapter.metadata
    engine = create_test_engine(_run_store.url, _run_store.schema)
    try:
        async with engine.begin() as conn:
            if _run_store.schema is not None:  # no template: migrate the run's own schema
                try:
                    await conn.run_sync(lambda sync: prepare(sync, project, metadata))
                except MigrationError as exc:
                    stop_run(request.config, str(exc))
            tables = [t.name for t in app_adapter.metadata.sorted_tables]
            baseline = await Baseline(tables, _run_store.schema).take(conn)
        yield engine, baseline
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def engine(_migrated: tuple[AsyncEngine, Baseline]) -> AsyncEngine:
    """The run's engine: its own database (or search_path = its schema), migrated to head and
    checked for drift against the adapter's models."""
    return _migrated[0]


@pytest.fixture(scope="session")
def run_database_url(harness_config: HarnessConfig, _run_store: RunStore) -> str:
    """The full URL of the run's own database, password included, for a second connection:
    `create_async_engine(run_database_url)`. What it can see: see the README's pitfalls."""
    if _run_store.schema is not None:
        pytest.fail(
            f"run_database_url: the role may not create databases, so this run has a schema "
            f"({_run_store.schema!r}), which a URL cannot carry for asyncpg. fix: give the role "
            "CREATEDB, or connect with database_url and "
            "connect_args={'server_settings': {'search_path': run_targets.schema}}",
            pytrace=False,
        )
    return _run_store.url


@pytest.fixture(scope="session")
def run_targets(
    request: pytest.FixtureRequest, harness_config: HarnessConfig, _run_store: RunStore
) -> RunTargets:
    """What the adapter builds the app from: the run's database (or schema) and bucket."""
    bucket = request.getfixturevalue("_run_bucket").bucket if harness_config.s3 else None
    return RunTargets(_run_store.url, _run_store.schema, harness_config.s3, bucket)


def real_commits(request: pytest.FixtureRequest) -> bool:
    return request.node.get_closest_marker("real_commits") is not None


@dataclass
class HeldConnection:
    """A test's connection (held by _after_db_test), in an outer transaction rolled back after
    the test (None under real_commits), and the sessions to close then."""

    conn: AsyncConnection
    outer: AsyncTransaction | None
    sessions: list[AsyncSession] = field(default_factory=list)


@pytest.fixture
def db_session(_after_db_test: HeldConnection) -> AsyncSession:
    """The test's session.

    By default it lives inside an outer transaction that is rolled back, and its commits
    become SAVEPOINT releases. Under @pytest.mark.real_commits it is a plain session that
    really commits; the tables are put back as migrated after the test. Its connection,
    transaction and closing belong to _after_db_test: one async fixture for both."""
    held = _after_db_test
    if held.outer is None:
        session = AsyncSession(held.conn.engine, expire_on_commit=False)
    else:
        session = joined_session(held.conn)
    held.sessions.append(session)
    return session


@pytest.fixture
def db_sessionmaker(_after_db_test: HeldConnection) -> async_sessionmaker[AsyncSession]:
    """The test's sessionmaker: each session it makes is one like `db_session`, in the test's
    rolled-back transaction (a plain one under real_commits). They share the test's one
    connection: use them one at a time."""
    held = _after_db_test
    if held.outer is None:
        return async_sessionmaker(held.conn.engine, expire_on_commit=False)
    return joined_sessionmaker(held.conn)


# What a test asks for to reach the run's bucket: its name (s3_bucket; s3_client), both on
# _run_bucket, or the raw targets (run_targets), on which app, client and an adapter's own
# clients, repositories and workers are built.
_SEES_THE_BUCKET = frozenset({"_run_bucket", "run_targets"})


def bucket_to_empty(request: pytest.FixtureRequest, served_before: int) -> BucketJanitor | None:
    """The run's bucket after a test that could have written to it, through any client: the
    test can see the bucket (_SEES_THE_BUCKET), or it made the app serve a request. Emptying
    costs one LIST when there is nothing to delete. None for other tests: they pay nothing."""
    bucket: BucketJanitor | None = request.config.stash.get(RUN_BUCKET, None)
    if bucket is None:
        return None
    if requests_served() != served_before or not _SEES_THE_BUCKET.isdisjoint(request.fixturenames):
        return bucket
    return None


@pytest_asyncio.fixture
async def _after_db_test(
    request: pytest.FixtureRequest,
    harness_config: HarnessConfig,
    _migrated: tuple[AsyncEngine, Baseline],
    _run_store: RunStore,
) -> AsyncIterator[HeldConnection]:
    """A test's connection to the run's database (db_session's, the app's requests') and, after
    the test, on it: the outer transaction rolled back, and what the test left in the database
    found, undone and reported; meanwhile, if the test could have written to the bucket, the
    bucket's emptiness checked (and the bucket emptied). The plugin puts it first in the
    fixtures of each test that uses the database, so it is torn down last; other tests don't
    get it (there is no autouse fixture)."""
    engine, baseline = _migrated
    if baseline.stopped:  # a test before changed the schema: nothing after it runs on it
        stop_run(request.config, baseline.stopped)
    committed = real_commits(request)
    served = requests_served()
    yielded = False
    try:
        async with engine.connect() as conn:
            held = HeldConnection(conn, None if committed else await conn.begin())
            yielded = True
            yield held
            bucket = bucket_to_empty(request, served)
            if bucket is not None:
                # Its LIST goes out now: the S3 server answers it while PostgreSQL rolls back
                # and checks, so the test pays the longer of the two, not their sum.
                bucket.emptiness.send()
            try:
                await end_test_transaction(held.outer, held.sessions)
                test = request.node.nodeid
                problems = await undo_leftovers(
                    test, conn, _run_store, baseline, committed=committed
                )
            finally:
                if bucket is not None:
                    bucket.empty()  # reads that answer; deletes only if objects were listed
    except Exception:
        down = endpoints_down(harness_config) if yielded else []
        if not down:
            raise
        # One line, not the driver's chain (still its __context__, which the plugin reads to
        # stop the run: plugin.py, _services_gone).
        message = f"harness: {down[0]} stopped answering during this test"
        raise pytest.fail.Exception(message, pytrace=False) from None
    if problems:  # the message says what and the fix: a traceback through pytest-asyncio would not
        pytest.fail("\n".join(problems), pytrace=False)


@pytest_asyncio.fixture(scope="session")
async def _session_app(
    request: pytest.FixtureRequest,
    app_adapter: AppAdapter,
    run_targets: RunTargets,
    _migrated: tuple[AsyncEngine, Baseline],
) -> AsyncIterator[Any]:
    """The app, around which its lifespan (or the adapter's) runs once for the session, as
    uvicorn would run it: start-up before the first test, shut-down after the last."""
    app = app_adapter.create_app(run_targets)
    try:
        check_session_dependency(app_adapter, app)
    except AdapterError as exc:
        stop_run(request.config, str(exc))
    async with app_adapter.lifespan_for(app) as state:
        if state is not None and not isinstance(state, Mapping):
            stop_run(
                request.config,
                f"the lifespan of {app_adapter.module.__name__}'s app yielded a "
                f"{type(state).__name__}; fix: yield a dict (the lifespan state each request "
                "gets a copy of as request.state), or nothing",
            )
        serve_lifespan_state(app, state or {})
        try:
            engine, baseline = _migrated
            async with engine.connect() as conn:  # what the start-up wrote is the new normal
                await baseline.take(conn)
            yield app
        finally:
            serve_lifespan_state(app, None)


@pytest.fixture
def app(
    request: pytest.FixtureRequest,
    _session_app: Any,
    app_adapter: AppAdapter,
    db_session: AsyncSession,
) -> Iterator[Any]:
    """The app under test, built by the adapter for this run.

    HTTP calls use the test's `db_session` (or, for an adapter whose dependency yields a
    sessionmaker, `db_sessionmaker`) through a dependency override, so they see and roll back
    the same data as the test; concurrent requests take turns on it. Under real_commits the
    app uses its own engine and commits for real. After the test, the app's overrides are
    put back as they were (the adapter's own stay).
    """
    overrides: dict[Any, Any] = _session_app.dependency_overrides
    before = dict(overrides)
    if not real_commits(request):
        given: Any = db_session
        if app_adapter.session_dependency_yields == "sessionmaker":
            given = request.getfixturevalue("db_sessionmaker")
        # One connection serves one request at a time; gather() in a test must not interleave.
        turn = asyncio.Lock()

        async def _test_session() -> AsyncIterator[Any]:
            async with turn:
                yield given

        overrides[app_adapter.session_dependency] = _test_session
    try:
        yield _session_app
    finally:
        overrides.clear()
        overrides.update(before)


@pytest.fixture
def client(app: Any) -> httpx.AsyncClient:
    """An anonymous client of the app under test."""
    return asgi_client(app)
