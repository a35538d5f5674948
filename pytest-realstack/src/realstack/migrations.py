"""Alembic for the harness: the project's own migrations, run on the connection the harness
hands in, and the drift check (models against the migrated schema)."""

from __future__ import annotations

import types
from inspect import CORO_CREATED
from inspect import getcoroutinestate as coroutine_state
from textwrap import indent
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, inspect
from sqlalchemy.engine import Connection

from .project import Project

# The one change the harness asks of a project's env.py, shown by MigrationError and, verbatim,
# by the README (tests/harness/unit/test_env_py_snippet.py holds them together). Its shape is
# Alembic's async template (`alembic init -t async`), which has both functions already.
ENV_PY_SNIPPET = """\
def do_run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # your options stay here: include_object=..., include_name=..., compare_type=...
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")  # the harness's, in the tests
    if connection is not None:
        do_run_migrations(connection)
    else:
        asyncio.run(run_async_migrations())  # your own engine, as before"""

ENV_PY_FIX = (
    "your migrations' env.py must run on the connection the harness passes in (Alembic's "
    'cookbook: "Sharing a Connection across one or more programmatic migration commands"). '
    "Make its run_migrations_online() this, and keep your context.configure(...) options in "
    "do_run_migrations (Alembic's async template has both functions; "
    "run_async_migrations is its own engine's code, which ends in "
    "connection.run_sync(do_run_migrations)):\n\n" + indent(ENV_PY_SNIPPET, "    ")
)


class MigrationError(RuntimeError):
    """The project's migrations could not run the way the harness needs; str() says why."""


def alembic_config(project: Project, connection: Connection | None = None) -> Config:
    """The project's Alembic config, from pyproject.toml ([tool.alembic]) or an alembic.ini."""
    path = project.alembic_config
    toml = path.name == "pyproject.toml"
    cfg = Config(toml_file=str(path)) if toml else Config(file_=str(path))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def migrate(project: Project, connection: Connection, revision: str = "head") -> None:
    """Upgrade the connection's schema (its search_path) to `revision`, or explain the failure."""
    try:
        command.upgrade(alembic_config(project, connection), revision)
    except RuntimeError as exc:
        if "running event loop" in str(exc) or "asyncio.run()" in str(exc):
            _close_refused_coroutines(exc)
            raise MigrationError(
                f"the migrations of {project.alembic_config} started their own event loop "
                f"({exc}).\n  fix:  {ENV_PY_FIX}"
            ) from None
        raise
    if "alembic_version" not in inspect(connection).get_table_names():
        raise MigrationError(
            f"the migrations of {project.alembic_config} ran, but not on the run's schema: it "
            "has no alembic_version table, so env.py connected on its own.\n"
            f"  fix:  {ENV_PY_FIX}"
        )


def _close_refused_coroutines(refusal: BaseException) -> None:
    """asyncio.run(coro) refused inside the running loop leaves coro never awaited, and Python
    then warns about it in whatever test runs when it is collected: close it here, so the
    message above is all the user sees."""
    frame = refusal.__traceback__
    while frame is not None:
        for value in frame.tb_frame.f_locals.values():
            if isinstance(value, types.CoroutineType) and coroutine_state(value) == CORO_CREATED:
                value.close()
        frame = frame.tb_next


def downgrade(project: Project, connection: Connection, revision: str = "base") -> None:
    command.downgrade(alembic_config(project, connection), revision)


def drift(connection: Connection, metadata: MetaData, project: Project) -> list[Any]:
    """The differences between the migrated schema and the models (empty means no drift),
    compared the way the project's env.py configures Alembic: its include_object,
    include_name, compare_type, compare_server_default... are honoured, as by `alembic check`
    and `alembic revision --autogenerate`, so the harness reports what those would. env.py runs
    on `connection` with nothing to migrate and may change nothing (dont_mutate)."""
    cfg = alembic_config(project, connection)
    script = ScriptDirectory.from_config(cfg)
    differences: list[Any] = []

    def compare(revision: Any, context: Any) -> list[Any]:
        differences.extend(compare_metadata(context, metadata))
        return []  # no migration step to run

    with EnvironmentContext(cfg, script, fn=compare, as_sql=False, dont_mutate=True):
        script.run_env()
    return differences


def drift_message(project: Project, differences: list[Any]) -> str:
    return (
        "The models and the Alembic migrations disagree (drift):\n  "
        + "\n  ".join(map(str, differences))
        + "\n  fix: add a migration (python -m realstack.embedded run --migrated -- python -m "
        "alembic revision --autogenerate -m '...' writes it on a database at head), leave the "
        "object out in your env.py's include_object if another tool owns it, or set "
        f"drift_check = false in [tool.harness] of {project.root / 'pyproject.toml'}."
    )


class DriftError(MigrationError):
    """The models and the migrations disagree."""


def prepare(connection: Connection, project: Project, metadata: MetaData) -> None:
    """Migrate the connection's database (or schema) to head and, if the table asks, check it
    against the models; raises MigrationError or DriftError."""
    migrate(project, connection)
    if project.drift_check:
        differences = drift(connection, metadata, project)
        if differences:
            raise DriftError(drift_message(project, differences))
