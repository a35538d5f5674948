"""The drift check compares the models with the migrated schema the way the project's env.py
configures Alembic, as `alembic check` would: what its include_object or include_name leave
out, and the types it does not compare (compare_type=False), are not drift. And the env.py
snippet the harness prints fixes Alembic's async template while keeping those options."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from inspect import CORO_CLOSED, getcoroutinestate
from pathlib import Path
from textwrap import indent
from types import CoroutineType

import pytest
import pytest_asyncio
from alembic import __file__ as alembic_init
from realstack.engines import create_test_engine
from realstack.janitor import run_store
from realstack.migrations import ENV_PY_SNIPPET, MigrationError, drift, migrate
from realstack.project import Project
from realstack.stamps import RunNames
from sqlalchemy import Column, Integer, MetaData, Table, Text, text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import NullPool

from tests.harness.helpers import write_migrations_project
from tests.harness.sample.models import Base

ENV_PY = """\
from alembic import context

{definition}

context.configure(connection=context.config.attributes["connection"]{option})
with context.begin_transaction():
    context.run_migrations()
"""
LEGACY = "legacy_reports"  # a table the app's migrations do not own
SKIP_LEGACY_OBJECT = f"""\
def include_object(obj, name, type_, reflected, compare_to):
    return not (type_ == "table" and name == "{LEGACY}")
"""
SKIP_LEGACY_NAME = f"""\
def include_name(name, type_, parent_names):
    return not (type_ == "table" and name == "{LEGACY}")
"""
ASYNC_TEMPLATE = Path(alembic_init).parent / "templates" / "async" / "env.py"


def models_with_legacy_table() -> MetaData:
    """The sample's models plus a table no migration creates (another tool owns it)."""
    copy = MetaData()
    for table in Base.metadata.sorted_tables:
        table.to_metadata(copy)
    Table(LEGACY, copy, Column("id", Integer, primary_key=True))
    return copy


def models_with_title_as_text() -> MetaData:
    """The sample's models with notes.title a TEXT instead of the migrated VARCHAR(200)."""
    copy = MetaData()
    for table in Base.metadata.sorted_tables:
        table.to_metadata(copy)
    copy.tables["notes"].c.title.type = Text()
    return copy


def write_env(project: Project, definition: str = "", option: str = "") -> None:
    env_py = project.root / "migrations" / "env.py"
    env_py.write_text(ENV_PY.format(definition=definition, option=option))


@pytest_asyncio.fixture
async def scratch(database_url: str, run_names: RunNames) -> AsyncIterator[AsyncEngine]:
    """An empty database of this run's own, dropped after the test."""
    names = RunNames(run_names.project, run_names.run_id, f"drift_{uuid.uuid4().hex[:6]}")
    async with run_store(database_url, names, "database") as store:
        engine = create_test_engine(store.url, None, poolclass=NullPool)
        try:
            yield engine
        finally:
            await engine.dispose()


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return write_migrations_project(tmp_path / "app", f"drift{uuid.uuid4().hex[:6]}")


async def _create_legacy_table(engine: AsyncEngine) -> MetaData:
    async with engine.begin() as conn:
        await conn.execute(text(f"CREATE TABLE {LEGACY} (id integer PRIMARY KEY)"))
    return Base.metadata


@pytest.mark.parametrize(
    ("definition", "option", "case"),
    [
        pytest.param(SKIP_LEGACY_OBJECT, ", include_object=include_object", "model", id="object"),
        pytest.param(SKIP_LEGACY_NAME, ", include_name=include_name", "table", id="name"),
        pytest.param("", ", compare_type=False", "type", id="compare_type"),
    ],
)
async def test_what_env_py_leaves_out_of_autogenerate_is_not_drift(
    scratch: AsyncEngine, project: Project, definition: str, option: str, case: str
) -> None:
    async with scratch.begin() as conn:
        await conn.run_sync(lambda sync: migrate(project, sync))
    if case == "table":  # in the database, not in the models: include_name filters reflection
        metadata = await _create_legacy_table(scratch)
    else:
        metadata = models_with_legacy_table() if case == "model" else models_with_title_as_text()

    write_env(project)  # Alembic's defaults: the difference is drift
    async with scratch.connect() as conn:
        by_default = await conn.run_sync(lambda sync: drift(sync, metadata, project))
    write_env(project, definition, option)  # the app's own options
    async with scratch.connect() as conn:
        with_options = await conn.run_sync(lambda sync: drift(sync, metadata, project))

    assert by_default, "the change is drift under Alembic's defaults"
    assert with_options == []


def _coroutines_in(error: BaseException | None) -> list[str]:
    """The states of the coroutines the frames of `error`'s traceback hold."""
    found: list[str] = []
    frame = error.__traceback__ if error is not None else None
    while frame is not None:
        values = frame.tb_frame.f_locals.values()
        found += [getcoroutinestate(v) for v in values if isinstance(v, CoroutineType)]
        frame = frame.tb_next
    return found


async def test_the_printed_snippet_fixes_alembics_async_template_and_keeps_its_options(
    scratch: AsyncEngine, project: Project
) -> None:
    template = ASYNC_TEMPLATE.read_text()
    # fileConfig would reconfigure this process's logging; it plays no part here.
    template = template.replace("    fileConfig(config.config_file_name)", "    pass")
    template = template.replace(
        "context.configure(connection=connection, target_metadata=target_metadata)",
        "context.configure(connection=connection, target_metadata=target_metadata, "
        "include_object=include_object)",
    ).replace("def do_run_migrations", f"{SKIP_LEGACY_OBJECT}\n\ndef do_run_migrations")
    env_py = project.root / "migrations" / "env.py"
    env_py.write_text(template)
    with pytest.raises(MigrationError) as refused:
        async with scratch.begin() as conn:
            await conn.run_sync(lambda sync: migrate(project, sync))
    message = str(refused.value)
    # The coroutine the refused asyncio.run was given is closed, not left to warn "never
    # awaited" in whatever test runs when it is collected.
    assert _coroutines_in(refused.value.__context__) == [CORO_CLOSED]
    online = ENV_PY_SNIPPET[ENV_PY_SNIPPET.index("def run_migrations_online") :]
    as_in_template = (
        "def run_migrations_online() -> None:\n"
        '    """Run migrations in \'online\' mode."""\n\n'
        "    asyncio.run(run_async_migrations())\n"
    )
    assert as_in_template in template
    env_py.write_text(template.replace(as_in_template, online + "\n"))

    async with scratch.begin() as conn:
        await conn.run_sync(lambda sync: migrate(project, sync))
        listing = text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        tables = set((await conn.execute(listing)).scalars())
        differences = await conn.run_sync(
            lambda sync: drift(sync, models_with_legacy_table(), project)
        )

    assert "started their own event loop" in message
    assert indent(ENV_PY_SNIPPET, "    ") in message
    assert tables == {"notes", "alembic_version"}
    assert differences == []
