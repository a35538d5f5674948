"""Template databases (templates.py) on the real server: built once per fingerprint under an
advisory lock, cloned per run, rebuilt when half-built, never left behind by a failed build (a
drift stops a nested run with its message), swept when stale; and, with the embedded launcher,
kept in its cached cluster across runs.

Each test uses a project of its own (its own name, so its own `tmpl_<name>_` templates, never
the tier's live one) and drops every database of that prefix afterwards."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from alembic import command
from realstack import plugin, templates
from realstack.adapter import AppAdapter
from realstack.config import HarnessConfig
from realstack.contract import resolve_database
from realstack.embedded.launcher import embedded_services
from realstack.embedded.pg_cluster import TEMPLATES_FILE
from realstack.engines import autocommit_engine, create_test_engine
from realstack.janitor import (
    LOCK_SHARED,
    UNLOCK_SHARED,
    comment_on_database,
    drop_database,
    run_store,
)
from realstack.migrations import DriftError, MigrationError
from realstack.process import apoll_until
from realstack.project import Project
from realstack.stamps import RunNames, Stamp
from realstack.templates import (
    KEEP_STALE,
    ensure_template,
    fingerprint,
    run_database,
    sweep_stale_templates,
    template_prefix,
)
from sqlalchemy import MetaData, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import NullPool

from tests.harness import helpers
from tests.harness.helpers import (
    autocommit,
    drop_databases_starting,
    names_for,
    run_leftovers,
    with_extra_column,
    write_migrations_project,
)
from tests.harness.nested import (
    NESTED_TIMEOUT_S,
    REPO_ROOT,
    clean_environment,
    service_environment,
)
from tests.harness.sample import models

from .embedded_support import runs_in, settings_for, shared_cache_dir

METADATA = models.Base.metadata
LOCK_WAIT_S = 10.0
_ROW = text(
    "SELECT oid, datistemplate, datallowconn, shobj_description(oid, 'pg_database') "
    "FROM pg_database WHERE datname = :n"
)
# Sessions waiting for the advisory lock of templates._lock(name): the key's high and low
# halves are the lock's classid and objid.
_WAITERS = text(
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
    "AND classid = ((hashtextextended(:n, 0) >> 32) & 4294967295)::oid "
    "AND objid = (hashtextextended(:n, 0) & 4294967295)::oid AND objsubid = 1"
)


def unique_name(label: str) -> str:
    return f"{label}{uuid.uuid4().hex[:8]}"


@pytest_asyncio.fixture
async def project(tmp_path: Path, admin: AsyncEngine) -> AsyncIterator[Project]:
    """A private project with the sample's migrations; its databases are dropped after."""
    project = write_migrations_project(tmp_path / "project", unique_name("tmplcheck"))
    try:
        yield project
    finally:
        await drop_databases_starting(admin, template_prefix(project))


@dataclass(frozen=True)
class Template:
    oid: int
    is_template: bool
    allows_connections: bool
    stamp: dict[str, Any]


async def template_row(admin: AsyncEngine, name: str) -> Template | None:
    async with admin.connect() as conn:
        row = (await conn.execute(_ROW, {"n": name})).first()
    if row is None:
        return None
    return Template(row[0], row[1], row[2], json.loads(row[3]) if row[3] else {})


async def databases_of(admin: AsyncEngine, project: Project) -> list[str]:
    async with admin.connect() as conn:
        rows = await conn.execute(
            text("SELECT datname FROM pg_database WHERE starts_with(datname, :p) ORDER BY 1"),
            {"p": template_prefix(project)},
        )
        return list(rows.scalars())


async def current_name(admin: AsyncEngine, project: Project, metadata: MetaData = METADATA) -> str:
    """The template name ensure_template would use for this source on this server."""
    async with admin.connect() as conn:
        version = int(await conn.scalar(text("SHOW server_version_num")) or 0)
    return template_prefix(project) + fingerprint(project, metadata, version)


@dataclass(frozen=True)
class Schema:
    tables: frozenset[str]
    version: str
    notes_oid: int


async def schema_of(engine: AsyncEngine) -> Schema:
    async with engine.connect() as conn:
        tables = await conn.execute(
            text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        )
        version = await conn.scalar(text("SELECT version_num FROM alembic_version"))
        oid = await conn.scalar(text("SELECT 'notes'::regclass::oid"))
    return Schema(frozenset(tables.scalars()), str(version), int(oid or 0))


@asynccontextmanager
async def clone_of(
    database_url: str, run_names: RunNames, template: str
) -> AsyncIterator[AsyncEngine]:
    """A made-up run's database, cloned from `template` as the fixtures clone it; dropped at
    exit by its janitor."""
    names = names_for(run_names, "clone")
    async with run_store(database_url, names, "database", template=template) as store:
        engine = create_test_engine(store.url, None, poolclass=NullPool)
        try:
            yield engine
        finally:
            await engine.dispose()


async def wait_for_a_lock_waiter(conn: AsyncConnection, name: str) -> None:
    async def waiting() -> bool:
        return bool(await conn.scalar(_WAITERS, {"n": name}))

    if not await apoll_until(waiting, timeout_s=LOCK_WAIT_S, interval_s=0.01):
        raise AssertionError(f"no second caller waited for the build lock of {name}")


def no_migrations(monkeypatch: pytest.MonkeyPatch) -> None:
    """From here on, a template build or any Alembic upgrade (a migration run) fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a template was built or a migration ran")

    monkeypatch.setattr(command, "upgrade", refuse)
    monkeypatch.setattr(templates, "_build", refuse)


async def test_concurrent_callers_wait_for_one_build_and_share_the_template(
    project: Project, admin: AsyncEngine, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    builds: list[str] = []
    real_build = templates._build

    async def build_while_the_other_waits(
        conn: AsyncConnection,
        server_url: str,
        project: Project,
        metadata: MetaData,
        name: str,
        fp: str,
    ) -> None:
        builds.append(name)
        await wait_for_a_lock_waiter(conn, name)  # the other caller is blocked on the lock
        await real_build(conn, server_url, project, metadata, name, fp)

    monkeypatch.setattr(templates, "_build", build_while_the_other_waits)
    # Each call opens its own engine and connection, as two runs (or xdist workers) would.
    first, second = await asyncio.gather(
        ensure_template(database_url, project, METADATA),
        ensure_template(database_url, project, METADATA),
    )
    again = await ensure_template(database_url, project, METADATA)
    expected = await current_name(admin, project)
    row = await template_row(admin, expected)

    assert first == second == again == expected
    assert builds == [expected]
    assert row is not None
    assert (row.is_template, row.allows_connections) == (True, False)
    assert row.stamp["created_by"] == project.stamp_mark
    assert row.stamp["template"] == expected.removeprefix(template_prefix(project))
    assert await databases_of(admin, project) == [expected]


async def test_a_runs_database_is_a_clone_with_nothing_migrated_in_it(
    project: Project, database_url: str, run_names: RunNames, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = await ensure_template(database_url, project, METADATA)
    no_migrations(monkeypatch)

    async with (
        clone_of(database_url, run_names, name) as one,
        clone_of(database_url, run_names, name) as other,
    ):
        first, second = await schema_of(one), await schema_of(other)

    assert first.tables == {"notes", "alembic_version"}
    assert first.version == "0001"
    # Copied catalogs: two migrations would have given the table two OIDs.
    assert first == second


async def test_this_runs_own_database_is_a_clone_of_the_tiers_template(
    run_database_url: str,
    database_url: str,
    harness_config: HarnessConfig,
    app_adapter: AppAdapter,
    run_names: RunNames,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    no_migrations(monkeypatch)  # the template exists: nothing is built
    name = await ensure_template(database_url, harness_config.project, app_adapter.metadata)
    own = create_test_engine(run_database_url, None, poolclass=NullPool)
    try:
        async with clone_of(database_url, run_names, name) as fresh:
            assert await schema_of(own) == await schema_of(fresh)
    finally:
        await own.dispose()

    assert name.startswith("tmpl_sample_")


async def test_a_half_built_template_is_dropped_and_rebuilt(
    project: Project, admin: AsyncEngine, database_url: str, run_names: RunNames
) -> None:
    name = await current_name(admin, project)
    async with autocommit(admin).connect() as conn:
        await conn.execute(text(f'CREATE DATABASE "{name}" STRATEGY FILE_COPY'))
    half = await template_row(admin, name)
    assert half is not None and not half.is_template

    assert await ensure_template(database_url, project, METADATA) == name
    rebuilt = await template_row(admin, name)
    async with clone_of(database_url, run_names, name) as run:
        schema = await schema_of(run)

    assert rebuilt is not None
    assert rebuilt.oid != half.oid
    assert (rebuilt.is_template, rebuilt.allows_connections) == (True, False)
    assert schema.tables == {"notes", "alembic_version"}


BROKEN_MIGRATION = """revision = "0002"
down_revision = "0001"

from alembic import op


def upgrade():
    op.execute("SELECT no_such_function()")
"""


async def test_drift_fails_the_build_with_its_message_and_leaves_no_template(
    project: Project, admin: AsyncEngine, database_url: str
) -> None:
    drifted = with_extra_column(METADATA)

    with pytest.raises(DriftError) as failed:
        await ensure_template(database_url, project, drifted)

    assert "The models and the Alembic migrations disagree (drift)" in str(failed.value)
    assert "'notes', Column('extra'" in str(failed.value)
    assert await databases_of(admin, project) == []


async def test_a_failing_migration_leaves_no_template(
    project: Project, admin: AsyncEngine, database_url: str
) -> None:
    (project.root / "migrations" / "versions" / "0002_broken.py").write_text(BROKEN_MIGRATION)

    with pytest.raises(DBAPIError, match="no_such_function"):
        await ensure_template(database_url, project, METADATA)

    assert await databases_of(admin, project) == []


# The sample's models as `sample_models`, loaded from their file: the sample package would
# import FastAPI (0.3 s), which the nested run below does not need.
SAMPLE_MODELS = f"""
import importlib.util, sys
spec = importlib.util.spec_from_file_location("sample_models", {str(models.__file__)!r})
sys.modules["sample_models"] = sample_models = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sample_models)
"""


NESTED_PYPROJECT = """[tool.harness]
name = "{name}"
services = ["postgres"]
guarded_paths = ["checks"]
adapter = "nested_adapter"
alembic_config = "alembic.ini"

[tool.pytest.ini_options]
pythonpath = [".", "{repo}"]
addopts = ["-p", "no:cacheprovider", "-p", "no:schemathesis", "-p", "no:pytest_postgresql",
    "-p", "no:anyio", "-p", "no:platformdirs", "-p", "no:hypothesispytest"]
asyncio_mode = "auto"
asyncio_default_fixture_loop_scope = "session"
asyncio_default_test_loop_scope = "session"
"""
# Not the sample's adapter (FastAPI): db_session needs only the metadata.
DRIFT_ADAPTER = f"""{SAMPLE_MODELS}
from {helpers.__name__} import with_extra_column

metadata = with_extra_column(sample_models.Base.metadata)  # a column no migration adds


def create_app(run):
    raise NotImplementedError


async def session_dependency():
    yield
"""
DRIFT_TEST = "async def test_that_needs_the_database(db_session):\n    pass\n"


def make_nested_project(project: Project, adapter: str, test: str) -> None:
    """Make `project` a pytest project of its own: its table with pytest's settings, the adapter
    module `nested_adapter` holding `adapter`, and `test` in checks/, its guarded path."""
    root = project.root
    (root / "pyproject.toml").write_text(
        NESTED_PYPROJECT.format(name=project.name, repo=REPO_ROOT.as_posix())
    )
    (root / "nested_adapter.py").write_text(adapter)
    (root / "conftest.py").write_text(f"pytest_plugins = [{plugin.__name__!r}]\n")
    (root / "checks").mkdir()
    (root / "checks" / "test_it.py").write_text(test)


async def run_nested_project(
    harness_config: HarnessConfig, project: Project, run_id: str, **env: str
) -> subprocess.CompletedProcess[str]:
    """`pytest checks` in the project made by make_nested_project, on this run's server."""
    child_env = clean_environment(harness_config.project, project)
    child_env |= service_environment(harness_config, with_s3=False)
    child_env |= {project.run_id_variable: run_id, **env}
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "pytest", "checks"],
        cwd=project.root,
        env=child_env,
        capture_output=True,
        text=True,
        timeout=NESTED_TIMEOUT_S,
    )


async def test_a_run_whose_models_drift_stops_before_its_tests_with_the_drift_message(
    harness_config: HarnessConfig, admin: AsyncEngine, run_names: RunNames, tmp_path: Path
) -> None:
    project = write_migrations_project(tmp_path / "drift", unique_name("tmpldrift"))
    make_nested_project(project, DRIFT_ADAPTER, DRIFT_TEST)
    child_run = names_for(run_names, "drift").run_id
    try:
        result = await run_nested_project(harness_config, project, child_run)
        left = await databases_of(admin, project)
    finally:
        await drop_databases_starting(admin, template_prefix(project))
    output = result.stdout + result.stderr

    assert result.returncode == pytest.ExitCode.USAGE_ERROR, output
    assert "The models and the Alembic migrations disagree (drift)" in output
    assert "'notes', Column('extra'" in output
    assert "drift_check = false" in output  # the fix
    assert "passed" not in result.stdout
    assert left == []
    assert await run_leftovers(admin, child_run) == []


async def create_template(
    conn: AsyncConnection, name: str, comment: str | None, *, is_template: bool = True
) -> None:
    await conn.execute(text(f'CREATE DATABASE "{name}" STRATEGY FILE_COPY'))
    if comment is not None:
        await comment_on_database(conn, name, comment)
    if is_template:
        await conn.execute(text(f'ALTER DATABASE "{name}" WITH IS_TEMPLATE true'))


def stamp_of(project: Project, created_at: str) -> str:
    stamp = Stamp.for_template(project, "x")
    return replace(stamp, created_at=created_at).to_json()


async def test_the_sweep_keeps_the_newest_stale_templates_and_nothing_else_is_touched(
    project: Project, admin: AsyncEngine, tmp_path: Path
) -> None:
    prefix = template_prefix(project)
    # Its name extends ours, so its templates share our prefix: only the stamp tells them apart.
    other = write_migrations_project(tmp_path / "other", f"{project.name}_x")
    assert template_prefix(other).startswith(prefix)
    ours = {f"{prefix}{day:016d}": f"2020-01-{day:02d}T00:00:00Z" for day in range(1, 6)}
    locked = f"{prefix}{0:016d}"  # the oldest, but a builder holds its lock
    current = f"{prefix}{'c' * 16}"  # older still, but the current fingerprint's
    untouchable = {
        f"{template_prefix(other)}{'o' * 16}": stamp_of(other, "2000-01-01T00:00:00Z"),
        f"{prefix}{'u' * 16}": None,  # unstamped
        f"{prefix}{'j' * 16}": "not json",
    }
    half_built = f"{prefix}{'h' * 16}"  # not IS_TEMPLATE, and no builder: a killed build
    async with autocommit(admin).connect() as conn:
        for name, created_at in ours.items():
            await create_template(conn, name, stamp_of(project, created_at))
        await create_template(conn, locked, stamp_of(project, "2019-12-31T00:00:00Z"))
        await create_template(conn, current, stamp_of(project, "2019-01-01T00:00:00Z"))
        for name, comment in untouchable.items():
            await create_template(conn, name, comment)
        await create_template(
            conn, half_built, stamp_of(project, "2000-01-01T00:00:00Z"), is_template=False
        )
    before = set(await databases_of(admin, project))
    async with autocommit(admin).connect() as holder, autocommit(admin).connect() as conn:
        await holder.execute(
            text("SELECT pg_advisory_lock(hashtextextended(:n, 0))"), {"n": locked}
        )
        dropped = await sweep_stale_templates(conn, project, current)

    left = set(await databases_of(admin, project))

    newest_first = sorted(ours, key=ours.__getitem__, reverse=True)
    assert KEEP_STALE == 2
    # Not the locked one, though older; the half-built one whose builder is gone, too.
    assert dropped == [*newest_first[KEEP_STALE:], half_built]
    assert left == before - set(dropped)
    assert {locked, current, *untouchable, *newest_first[:KEEP_STALE]} <= left


async def test_a_build_sweeps_the_stale_templates_of_its_project(
    project: Project, admin: AsyncEngine, database_url: str
) -> None:
    prefix = template_prefix(project)
    stale = [f"{prefix}{day:016d}" for day in range(1, 4)]
    async with autocommit(admin).connect() as conn:
        for day, name in enumerate(stale, start=1):
            await create_template(conn, name, stamp_of(project, f"2020-01-{day:02d}T00:00:00Z"))

    name = await ensure_template(database_url, project, METADATA)

    assert await databases_of(admin, project) == sorted([name, *stale[1:]])


async def test_the_sweep_never_drops_a_template_a_run_is_cloning(
    project: Project, admin: AsyncEngine
) -> None:
    """A clone holds its template's lock shared (janitor.DatabaseJanitor._clone): the sweep's
    exclusive try fails, so the template stays until the clone is done."""
    prefix = template_prefix(project)
    stale = [f"{prefix}{day:016d}" for day in range(1, 5)]  # the two oldest are beyond KEEP_STALE
    async with autocommit(admin).connect() as conn:
        for day, name in enumerate(stale, start=1):
            await create_template(conn, name, stamp_of(project, f"2020-01-{day:02d}T00:00:00Z"))
    being_cloned = stale[0]
    async with autocommit(admin).connect() as clone, autocommit(admin).connect() as conn:
        await clone.execute(LOCK_SHARED, {"n": being_cloned})
        while_cloning = await sweep_stale_templates(conn, project, f"{prefix}{'c' * 16}")
        await clone.execute(UNLOCK_SHARED, {"n": being_cloned})
        afterwards = await sweep_stale_templates(conn, project, f"{prefix}{'c' * 16}")

    assert while_cloning == [stale[1]]
    assert afterwards == [being_cloned]


async def test_a_template_a_concurrent_sweep_dropped_before_the_clone_is_built_again(
    project: Project,
    admin: AsyncEngine,
    database_url: str,
    run_names: RunNames,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The window between ensure_template and the clone's shared lock: another run's sweep drops
    the template right there (an injection point), and the run builds it again and clones."""
    real_ensure = templates.ensure_template
    dropped: list[str] = []

    async def ensure_then_lose_it(
        url: str, proj: Project, metadata: MetaData, *, wait_s: float = 30.0
    ) -> str:
        name = await real_ensure(url, proj, metadata, wait_s=wait_s)
        if not dropped:
            async with autocommit(admin).connect() as conn:
                await drop_database(conn, name)
            dropped.append(name)
        return name

    monkeypatch.setattr(templates, "ensure_template", ensure_then_lose_it)
    names = names_for(run_names, "vanish")

    async with run_database(database_url, project, METADATA, names) as store:
        engine = create_test_engine(store.url, None, poolclass=NullPool)
        try:
            tables = await schema_of(engine)
        finally:
            await engine.dispose()

    assert dropped == [await current_name(admin, project)]
    assert "notes" in tables.tables
    assert await run_leftovers(admin, names.run_id) == []


async def test_waiting_on_another_runs_build_is_bounded_and_names_the_holder(
    project: Project, admin: AsyncEngine, database_url: str
) -> None:
    name = await current_name(admin, project)
    async with autocommit(admin).connect() as builder:
        holder = await builder.scalar(text("SELECT pg_backend_pid()"))
        await builder.execute(text("SELECT pg_advisory_lock(hashtextextended(:n, 0))"), {"n": name})
        # Bounded: without the lock timeout this would wait for the holder (forever here).
        with pytest.raises(MigrationError) as waited:
            await ensure_template(database_url, project, METADATA, wait_s=1.0)

    message = str(waited.value)
    assert f"waited 1 s for another run's build of the migrated template {name}" in message
    assert f"held by server backend {holder}" in message
    assert "fix:" in message and "TEST_SERVICES_TIMEOUT" in message


async def test_a_failed_sweep_never_fails_the_run(
    project: Project, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken_sweep(*args: object) -> list[str]:
        raise DBAPIError("DROP DATABASE ...", {}, Exception("database does not exist"))

    monkeypatch.setattr(templates, "sweep_stale_templates", broken_sweep)

    name = await ensure_template(database_url, project, METADATA)

    assert name.startswith(template_prefix(project))


# Across runs: the templates of `project` the server held before ensure_template, and the one it
# got; with `drop`, the ones it held are dropped first (as a sweep would).
async def ensure_and_report(url: str, project: Project, *, drop: bool) -> tuple[list[str], str]:
    admin = autocommit_engine(url)
    try:
        before = await databases_of(admin, project)
        if drop:
            await drop_databases_starting(admin, template_prefix(project))
    finally:
        await admin.dispose()
    return before, await ensure_template(url, project, METADATA)


@pytest.fixture
def cache_dir() -> Iterator[Path]:
    """The launcher's cache, for this test only (not in tmp_path: as root, the server runs as
    nobody, who must reach the binaries copied there)."""
    yield from shared_cache_dir()


def ensure_in_a_fresh_run(
    project: Project, run_base: Path, cache_dir: Path, *, drop: bool = False
) -> tuple[list[str], str]:
    """Start the embedded launcher's PostgreSQL for `project` (a copy of the cached cluster),
    ensure the template on it, stop it (which saves new templates to the cache): what
    ensure_and_report says."""
    with embedded_services(settings_for(project, run_base, cache_dir), report=None) as running:
        url = resolve_database(project, running.env).url
        assert url is not None
        return asyncio.run(ensure_and_report(url, project, drop=drop))


def cached_cluster(cache_dir: Path) -> Path:
    clusters = list(cache_dir.glob("pg-cluster-*"))
    assert len(clusters) == 1, clusters
    return clusters[0]


def test_the_launcher_keeps_a_new_template_in_its_cache_and_the_next_run_builds_nothing(
    tmp_path: Path, run_base: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = write_migrations_project(tmp_path / "project", unique_name("tmplrun"))

    first_before, built = ensure_in_a_fresh_run(project, run_base, cache_dir)
    listing = cached_cluster(cache_dir) / TEMPLATES_FILE
    saved = listing.read_text().split()
    saved_inode = listing.stat().st_ino
    with monkeypatch.context() as patched:
        no_migrations(patched)
        second_before, found = ensure_in_a_fresh_run(project, run_base, cache_dir)

    assert first_before == []
    assert built.startswith(template_prefix(project))
    assert saved == [built]
    assert (second_before, found) == ([built], built)  # a fresh cluster, copied from the cache
    assert listing.stat().st_ino == saved_inode  # nothing new, so the cache was not rewritten
    assert runs_in(run_base) == []

    # The list names what the saved cluster holds: not a template dropped during the run.
    first_migration = project.root / "migrations" / "versions" / "0001_notes.py"
    first_migration.write_text(first_migration.read_text() + "\n# a new fingerprint\n")
    third_before, rebuilt = ensure_in_a_fresh_run(project, run_base, cache_dir, drop=True)

    assert third_before == [built]
    assert rebuilt != built
    assert (cached_cluster(cache_dir) / TEMPLATES_FILE).read_text().split() == [rebuilt]


# A migration that reads a file outside its own folder (whose files the fingerprint covers):
# app/sql/seed.sql, whose content only template_inputs can bring into the fingerprint.
READS_SQL = """revision = "0002"
down_revision = "0001"

from pathlib import Path

from alembic import op

SEED = Path(__file__).resolve().parents[2] / "app" / "sql" / "seed.sql"


def upgrade():
    op.execute(SEED.read_text())
"""
SEED_SQL = "INSERT INTO notes (title, body) VALUES ('seed', '{}')"
SEED_QUERY = text("SELECT body FROM notes WHERE title = 'seed'")


def write_seed(root: Path, body: str) -> None:
    seed = root / "app" / "sql" / "seed.sql"
    seed.parent.mkdir(parents=True, exist_ok=True)
    seed.write_text(SEED_SQL.format(body))


@pytest_asyncio.fixture
async def reading_project(tmp_path: Path, admin: AsyncEngine) -> AsyncIterator[Project]:
    """A private project whose migration 0002 runs app/sql/seed.sql (seeding body 'v1'), which
    its template_inputs names; its databases are dropped after."""
    root = tmp_path / "reads"
    write_seed(root, "v1")
    project = write_migrations_project(
        root, unique_name("tmplreads"), template_inputs=["app/sql/*.sql"]
    )
    (root / "migrations" / "versions" / "0002_seed.py").write_text(READS_SQL)
    try:
        yield project
    finally:
        await drop_databases_starting(admin, template_prefix(project))


async def seed_in_a_clone(database_url: str, run_names: RunNames, template: str) -> str:
    async with clone_of(database_url, run_names, template) as run, run.connect() as conn:
        return str(await conn.scalar(SEED_QUERY))


async def test_a_changed_sql_file_named_in_template_inputs_gives_a_rebuilt_template(
    reading_project: Project, admin: AsyncEngine, database_url: str, run_names: RunNames
) -> None:
    first = await ensure_template(database_url, reading_project, METADATA)
    seeded = await seed_in_a_clone(database_url, run_names, first)
    write_seed(reading_project.root, "v2")  # no migration, no model changed: only the file

    second = await ensure_template(database_url, reading_project, METADATA)

    assert seeded == "v1"
    assert second != first
    assert await seed_in_a_clone(database_url, run_names, second) == "v2"
    assert second in await databases_of(admin, reading_project)


async def test_dropping_a_projects_templates_waits_for_a_clone_and_spares_all_else(
    project: Project, admin: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    prefix = template_prefix(project)
    other = write_migrations_project(tmp_path / "other", f"{project.name}_x")  # shares our prefix
    ours = [f"{prefix}{day:016d}" for day in range(1, 4)]
    half_built = f"{prefix}{'h' * 16}"
    untouchable = {
        f"{template_prefix(other)}{'o' * 16}": stamp_of(other, "2000-01-01T00:00:00Z"),
        f"{prefix}{'u' * 16}": None,  # unstamped
        f"{prefix}{'j' * 16}": "not json",
    }
    async with autocommit(admin).connect() as conn:
        for name in ours:
            await create_template(conn, name, stamp_of(project, "2020-01-01T00:00:00Z"))
        await create_template(
            conn, half_built, stamp_of(project, "2020-01-01T00:00:00Z"), is_template=False
        )
        for name, comment in untouchable.items():
            await create_template(conn, name, comment)
    try:
        async with autocommit(admin).connect() as clone:
            await clone.execute(LOCK_SHARED, {"n": ours[0]})  # a run clones it right now
            dropping = asyncio.create_task(
                templates.drop_project_templates(database_url, project, wait_s=LOCK_WAIT_S)
            )
            await wait_for_a_lock_waiter(clone, ours[0])
            cloning = await template_row(admin, ours[0])
            await clone.execute(UNLOCK_SHARED, {"n": ours[0]})
            dropped = await dropping
        left = await databases_of(admin, project)
    finally:
        await drop_databases_starting(admin, template_prefix(other))

    assert cloning is not None  # still there while the clone held it
    assert dropped == sorted([*ours, half_built])
    assert left == sorted(name for name in untouchable if name.startswith(prefix))


SEED_TEST = """import os

from sqlalchemy import text


async def test_the_seed_is_what_the_sql_file_held(db_session):
    body = await db_session.scalar(text("SELECT body FROM notes WHERE title = 'seed'"))
    assert body == os.environ["EXPECTED_SEED"]
"""
SEED_ADAPTER = f"""{SAMPLE_MODELS}
metadata = sample_models.Base.metadata


def create_app(run):
    raise NotImplementedError


async def session_dependency():
    yield
"""


async def test_a_run_with_test_rebuild_template_rebuilds_a_template_an_unnamed_file_left_stale(
    harness_config: HarnessConfig, admin: AsyncEngine, run_names: RunNames, tmp_path: Path
) -> None:
    root = tmp_path / "unnamed"
    write_seed(root, "v1")
    project = write_migrations_project(root, unique_name("tmplforce"))  # no template_inputs
    (root / "migrations" / "versions" / "0002_seed.py").write_text(READS_SQL)
    make_nested_project(project, SEED_ADAPTER, SEED_TEST)
    try:
        built = await ensure_template(harness_config.database_url, project, METADATA)
        before = await template_row(admin, built)
        write_seed(root, "v2")
        stale = await run_nested_project(
            harness_config, project, names_for(run_names, "stale").run_id, EXPECTED_SEED="v1"
        )
        forced = await run_nested_project(
            harness_config,
            project,
            names_for(run_names, "force").run_id,
            EXPECTED_SEED="v2",
            TEST_REBUILD_TEMPLATE="1",
        )
        after = await template_row(admin, built)
        left = await databases_of(admin, project)
    finally:
        await drop_databases_starting(admin, template_prefix(project))

    said = forced.stdout + forced.stderr
    assert stale.returncode == pytest.ExitCode.OK, stale.stdout + stale.stderr  # the problem
    assert forced.returncode == pytest.ExitCode.OK, said
    assert f"TEST_REBUILD_TEMPLATE=1: dropped 1 migrated template(s) of {project.name}" in said
    assert f": {built}; this run builds its own" in said
    assert before is not None and after is not None
    assert after.oid != before.oid  # the same fingerprint, built again
    assert left == [built]


def seed_in_a_fresh_run(
    project: Project, run_base: Path, cache_dir: Path, *, drop_first: bool = False
) -> tuple[list[str], str]:
    """Start the embedded launcher's PostgreSQL (a copy of the cached cluster); with
    `drop_first`, drop the project's templates as TEST_REBUILD_TEMPLATE does; ensure the
    template and read the seed from a clone; stop (which saves new templates to the cache):
    what was dropped, and the seed."""

    async def on(url: str) -> tuple[list[str], str]:
        dropped = await templates.drop_project_templates(url, project) if drop_first else []
        name = await ensure_template(url, project, METADATA)
        names = RunNames(project, unique_name("seed"), "main")
        return dropped, await seed_in_a_clone(url, names, name)

    with embedded_services(settings_for(project, run_base, cache_dir), report=None) as running:
        url = resolve_database(project, running.env).url
        assert url is not None
        return asyncio.run(on(url))


def test_a_template_rebuilt_under_its_own_name_replaces_it_in_the_launchers_cache(
    tmp_path: Path, run_base: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "cached"
    write_seed(root, "v1")
    project = write_migrations_project(root, unique_name("tmplcache"))  # no template_inputs
    (root / "migrations" / "versions" / "0002_seed.py").write_text(READS_SQL)

    first = seed_in_a_fresh_run(project, run_base, cache_dir)
    write_seed(root, "v2")
    stale = seed_in_a_fresh_run(project, run_base, cache_dir)  # what the cache holds
    forced = seed_in_a_fresh_run(project, run_base, cache_dir, drop_first=True)
    with monkeypatch.context() as patched:
        no_migrations(patched)
        cold = seed_in_a_fresh_run(project, run_base, cache_dir)

    cached = (cached_cluster(cache_dir) / TEMPLATES_FILE).read_text().split()
    assert first == stale == ([], "v1")
    assert forced == (cached, "v2")
    assert cold == ([], "v2")  # a cold run clones the rebuilt template, building nothing
