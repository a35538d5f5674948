"""The life of one run's schema: create, stamp, (migrate,) truncate, drop; and the sweep of
schemas that killed runs left. It destroys only what carries this run's stamp."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
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

    def __init__(
        self, admin_engine: AsyncEngine, names: RunNames, *, keep: bool = False, url: str = ""
    ) -> None:
        self._engine = admin_engine
        self.names = names
        self.keep = keep
        self.stamp = names.stamp()
        self.url = url  # the server's test database, which holds the schema
        self.schema: str | None = names.schema

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


_DATABASE_STAMP = text(
    "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = :name"
)
# Test connections (the app's own, or a test's second engine) give up waiting for a lock held
# by the test's own uncommitted transaction after this, instead of hanging the run.
TEST_LOCK_TIMEOUT = "5s"


def autocommit_engine(server_url: str) -> AsyncEngine:
    """An engine for CREATE/DROP DATABASE (no transaction block), holding no connection."""
    from sqlalchemy.pool import NullPool

    from .isolation import create_test_engine

    return create_test_engine(server_url, None, poolclass=NullPool, isolation_level="AUTOCOMMIT")


def database_url(server_url: str, database: str) -> str:
    """`server_url` with its database replaced, password kept (for engines, not for messages)."""
    from sqlalchemy.engine import make_url

    return make_url(server_url).set(database=database).render_as_string(hide_password=False)


class DatabaseJanitor:
    """Creates the run's own database, stamps it and sets its test settings; drops it (and only
    it) at exit, closing any connection a test left open (DROP DATABASE ... WITH (FORCE))."""

    def __init__(
        self, admin_engine: AsyncEngine, server_url: str, names: RunNames, *, keep: bool = False
    ) -> None:
        self._engine = admin_engine  # AUTOCOMMIT, on the server's test database
        self.names = names
        self.keep = keep
        self.stamp = names.stamp()
        self.url = database_url(server_url, names.database)
        self.schema: str | None = None

    def _quoted(self, conn: AsyncConnection) -> str:
        return conn.dialect.identifier_preparer.quote_identifier(self.names.database)

    async def _write_stamp(self, conn: AsyncConnection, stamp: Stamp) -> None:
        # COMMENT takes no bind parameters; format(%I, %L) quotes on the server.
        await conn.execute(
            text(
                "SELECT set_config('harness.database', :name, false), "
                "set_config('harness.stamp', :stamp, false)"
            ),
            {"name": self.names.database, "stamp": stamp.to_json()},
        )
        await conn.execute(
            text(
                "DO $$ BEGIN EXECUTE format('COMMENT ON DATABASE %I IS %L', "
                "current_setting('harness.database'), current_setting('harness.stamp')); END $$"
            )
        )

    async def __aenter__(self) -> DatabaseJanitor:
        async with self._engine.connect() as conn:
            await conn.execute(text(f"CREATE DATABASE {self._quoted(conn)}"))
            await self._write_stamp(conn, self.stamp)
            quoted = self._quoted(conn)
            await conn.execute(
                text(f"ALTER DATABASE {quoted} SET lock_timeout = '{TEST_LOCK_TIMEOUT}'")
            )
        return self

    async def assert_stamped(self, conn: AsyncConnection) -> None:
        found = (await conn.execute(_DATABASE_STAMP, {"name": self.names.database})).scalar()
        stamp = Stamp.from_json(self.names.project, found)
        self.names.refuse_unless_ours(f"database {self.names.database!r}", stamp, found)

    async def truncate(self, conn: AsyncConnection, tables: Sequence[str]) -> None:
        """Empty the given tables of this run's database (`conn` is connected to it)."""
        await self.assert_stamped(conn)
        await _set_cleanup_deadline(conn)
        quote = conn.dialect.identifier_preparer.quote_identifier
        await conn.execute(
            text(f"TRUNCATE {', '.join(map(quote, tables))} RESTART IDENTITY CASCADE")
        )

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        async with self._engine.connect() as conn:
            await self.assert_stamped(conn)
            if self.keep:
                await self._write_stamp(conn, self.stamp.marked_kept())
                return
            await conn.execute(text(f"DROP DATABASE {self._quoted(conn)} WITH (FORCE)"))


async def sweep_dead_databases(
    admin: AsyncEngine, project: Project, *, include_kept: bool = False
) -> list[str]:
    """Drop the databases of this project's harness runs on this machine whose process is gone.

    `admin` must be an AUTOCOMMIT engine (see autocommit_engine)."""
    async with admin.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database "
                    "WHERE datname LIKE 'test\\_%'"
                )
            )
        ).all()
        dropped = []
        for name, comment in rows:
            stamp = Stamp.from_json(project, comment)
            if stamp is None or not stamp.owner_is_dead(include_kept=include_kept):
                continue
            quoted = conn.dialect.identifier_preparer.quote_identifier(name)
            await conn.execute(text(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))
            dropped.append(name)
    return dropped


RunStore = DatabaseJanitor | SchemaJanitor


def _schema_admin(server_url: str) -> AsyncEngine:
    from sqlalchemy.pool import NullPool

    from .isolation import create_test_engine

    return create_test_engine(server_url, None, poolclass=NullPool)


@asynccontextmanager
async def run_store(
    server_url: str, names: RunNames, per_run: str, *, keep: bool = False
) -> AsyncIterator[RunStore]:
    """The run's own database (per_run="database") or schema, created, stamped and yielded;
    dropped at exit unless `keep` (or `.keep`, set meanwhile) says otherwise."""
    admin = autocommit_engine(server_url) if per_run == "database" else _schema_admin(server_url)
    store: RunStore
    if per_run == "database":
        store = DatabaseJanitor(admin, server_url, names, keep=keep)
    else:
        store = SchemaJanitor(admin, names, keep=keep, url=server_url)
    try:
        async with store:
            yield store
    finally:
        await admin.dispose()


async def sweep_dead_stores(
    server_url: str, project: Project, *, include_kept: bool = False
) -> list[str]:
    """Drop the databases and schemas of this project's dead runs on this machine; describe each."""
    admin = autocommit_engine(server_url)
    try:
        databases = await sweep_dead_databases(admin, project, include_kept=include_kept)
    finally:
        await admin.dispose()
    admin = _schema_admin(server_url)
    try:
        schemas = await sweep_dead_schemas(admin, project, include_kept=include_kept)
    finally:
        await admin.dispose()
    return [f"database {name}" for name in databases] + [f"schema {name}" for name in schemas]
