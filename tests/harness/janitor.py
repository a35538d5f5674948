"""The life of one run's schema: create, stamp, (migrate,) truncate, drop; and the sweep of
schemas that killed runs left. It destroys only what carries this run's stamp."""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .project import Project
from .stamps import RunNames, Stamp

# Every cleanup statement has a deadline: a session left open by a test must not hang the run.
CLEANUP_LOCK_TIMEOUT = "10s"

_SCHEMA_STAMP = text(
    "SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace WHERE nspname = :name"
)


async def stamp_schema(conn: AsyncConnection, schema: str, stamp: Stamp, *, create: bool) -> None:
    # COMMENT takes no bind parameters; format(%I, %L) quotes on the server.
    await conn.execute(
        text(
            "SELECT set_config('harness.schema', :schema, true), "
            "set_config('harness.stamp', :stamp, true)"
        ),
        {"schema": schema, "stamp": stamp.to_json()},
    )
    create_sql = (
        "EXECUTE format('CREATE SCHEMA %I', current_setting('harness.schema')); " if create else ""
    )
    await conn.execute(
        text(
            "DO $$ BEGIN " + create_sql + "EXECUTE format('COMMENT ON SCHEMA %I IS %L', "
            "current_setting('harness.schema'), current_setting('harness.stamp')); "
            "END $$"
        )
    )


async def _set_cleanup_deadline(conn: AsyncConnection) -> None:
    await conn.execute(text(f"SET LOCAL lock_timeout = '{CLEANUP_LOCK_TIMEOUT}'"))


class SchemaJanitor:
    """Creates the run's schema and stamps it; drops it (and only it) at exit."""

    def __init__(self, admin_engine: AsyncEngine, names: RunNames, *, keep: bool = False) -> None:
        self._engine = admin_engine
        self.names = names
        self.keep = keep
        self.stamp = names.stamp()

    def _quoted(self, conn: AsyncConnection) -> str:
        return conn.dialect.identifier_preparer.quote_identifier(self.names.schema)

    async def __aenter__(self) -> SchemaJanitor:
        async with self._engine.begin() as conn:
            await stamp_schema(conn, self.names.schema, self.stamp, create=True)
        return self

    async def assert_stamped(self, conn: AsyncConnection) -> None:
        """Refuse unless the schema carries this run's stamp."""
        found = (await conn.execute(_SCHEMA_STAMP, {"name": self.names.schema})).scalar()
        stamp = Stamp.from_json(self.names.project, found)
        self.names.refuse_unless_ours(f"schema {self.names.schema!r}", stamp, found)

    async def truncate(self, conn: AsyncConnection, tables: Sequence[str]) -> None:
        """Empty the given tables of this run's schema (after a real-commit test)."""
        await self.assert_stamped(conn)
        await _set_cleanup_deadline(conn)
        quote = conn.dialect.identifier_preparer.quote_identifier
        schema = self._quoted(conn)
        names = ", ".join(f"{schema}.{quote(t)}" for t in tables)
        await conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        async with self._engine.begin() as conn:
            await self.assert_stamped(conn)
            if self.keep:
                # Kept for debugging: the sweep of dead runs must leave it alone.
                await stamp_schema(conn, self.names.schema, self.stamp.marked_kept(), create=False)
                return
            # DROP SCHEMA waits for open transactions in it; the lock timeout turns a
            # stuck one into an error instead of a hang.
            await _set_cleanup_deadline(conn)
            await conn.execute(text(f"DROP SCHEMA {self._quoted(conn)} CASCADE"))


async def sweep_dead_schemas(
    admin: AsyncEngine, project: Project, *, include_kept: bool = False
) -> list[str]:
    """Drop the schemas of this project's harness runs on this machine whose process is gone."""
    async with admin.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT nspname, obj_description(oid, 'pg_namespace') FROM pg_namespace "
                    "WHERE nspname LIKE 'test\\_%'"
                )
            )
        ).all()
    dropped = []
    for name, comment in rows:
        stamp = Stamp.from_json(project, comment)
        if stamp is None or not stamp.owner_is_dead(include_kept=include_kept):
            continue
        async with admin.begin() as conn:
            await _set_cleanup_deadline(conn)
            quoted = conn.dialect.identifier_preparer.quote_identifier(name)
            await conn.execute(text(f"DROP SCHEMA IF EXISTS {quoted} CASCADE"))
        dropped.append(name)
    return dropped
