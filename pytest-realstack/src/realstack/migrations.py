"""Alembic for the harness: the project's own migrations, run on the connection the harness
hands in, and the drift check (models against the migrated schema)."""

from __future__ import annotations

from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, inspect
from sqlalchemy.engine import Connection

from .project import Project

ENV_PY_FIX = """your migrations' env.py must run on the connection the harness passes in
(Alembic cookbook: "Sharing a Connection across one or more programmatic migration commands"):

    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
    else:
        ...  # your usual code, e.g. asyncio.run(run_async_migrations())"""


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


def downgrade(project: Project, connection: Connection, revision: str = "base") -> None:
    command.downgrade(alembic_config(project, connection), revision)


def drift(connection: Connection, metadata: MetaData) -> list[Any]:
    """The differences between the migrated schema and the models (empty means no drift)."""
    context = MigrationContext.configure(connection)
    return list(compare_metadata(context, metadata))


def drift_message(project: Project, differences: list[Any]) -> str:
    return (
        "The models and the Alembic migrations disagree (drift):\n  "
        + "\n  ".join(map(str, differences))
        + "\n  fix: add a migration (alembic revision --autogenerate -m '...'), or set "
        f"drift_check = false in [tool.harness] of {project.root / 'pyproject.toml'}."
    )


class DriftError(MigrationError):
    """The models and the migrations disagree."""


def prepare(connection: Connection, project: Project, metadata: MetaData) -> None:
    """Migrate the connection's database (or schema) to head and, if the table asks, check it
    against the models; raises MigrationError or DriftError."""
    migrate(project, connection)
    if project.drift_check:
        differences = drift(connection, metadata)
        if differences:
            raise DriftError(drift_message(project, differences))
