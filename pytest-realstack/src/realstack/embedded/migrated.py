"""`run --migrated -- CMD`: a database of its own on the services' server, migrated to head,
for a command that needs the schema there. `alembic revision --autogenerate` refuses an empty
database ("Target database is not up to date"), and the server's test database is empty (or,
on warm services, at whatever head an earlier command left). Stamped like a test run's store,
so a sweep removes it if this process dies; dropped when the command ends."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from ..contract import resolve_database
from ..guard import mask_url
from ..project import Project

WORKER = "migrated"  # the database is test_<run id>_migrated


class MigrationsFailedError(RuntimeError):
    """The project's migrations could not bring the new database to head; str() says why."""


@contextmanager
def migrated_database(project: Project, env: Mapping[str, str]) -> Iterator[str]:
    """Create and stamp a database on the server `env` names, upgrade it to head with the
    project's migrations (its env.py on the harness's connection, as in the tests), and yield
    its URL; drop it at exit. MigrationsFailedError, naming the fix, if they fail."""
    import asyncio

    from ..config import new_run_id
    from ..janitor import run_store
    from ..stamps import RunNames

    server_url = resolve_database(project, env).url
    if server_url is None:
        raise MigrationsFailedError(
            "--migrated: the services named no PostgreSQL server (POSTGRES_HOST/POSTGRES_PORT "
            "unset).\n  fix:  a project whose [tool.harness] services include postgres; then "
            "`run --migrated` starts one"
        )
    names = RunNames(project, new_run_id(), WORKER)
    store_context = run_store(server_url, names, "database")
    with asyncio.Runner() as runner:
        store = runner.run(store_context.__aenter__())
        try:
            runner.run(_upgrade_to_head(project, store.url))
            yield store.url
        finally:
            runner.run(store_context.__aexit__(None, None, None))


async def _upgrade_to_head(project: Project, url: str) -> None:
    from ..engines import admin_engine
    from ..migrations import MigrationError, migrate

    engine = admin_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(lambda sync: migrate(project, sync))
    except MigrationError as exc:
        raise MigrationsFailedError(f"--migrated: {exc}") from None
    except Exception as exc:  # a migration's own error: its message, without the trace
        raise MigrationsFailedError(
            f"--migrated: upgrading {mask_url(url)} to head with the migrations of "
            f"{project.alembic_config} failed: {type(exc).__name__}: {exc}\n"
            "  fix:  correct that migration (python -m alembic upgrade head shows its trace), "
            "then rerun"
        ) from None
    finally:
        await engine.dispose()
