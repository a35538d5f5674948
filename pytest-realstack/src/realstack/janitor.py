"""The life of one run's schema: create, stamp, (migrate,) truncate, drop; and the sweep of
schemas that killed runs left. It destroys only what carries this run's stamp."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from types import TracebackType

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

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


async def set_cleanup_deadline(conn: AsyncConnection) -> None:
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
        await set_cleanup_deadline(conn)
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
            await set_cleanup_deadline(conn)
            await conn.execute(text(f"DROP SCHEMA {self._quoted(conn)} CASCADE"))


_DATABASE_STAMP = text(
    "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = :name"
)
# Test connections (the app's own, or a test's second engine) give up waiting for a lock held
# by the test's own uncommitted transaction after this, instead of hanging the run.
TEST_LOCK_TIMEOUT = "5s"
# How a run's database is copied from its template; chosen by measurement (make bench).
CLONE_STRATEGY = "FILE_COPY"


def autocommit_engine(server_url: str) -> AsyncEngine:
    """An engine for CREATE/DROP DATABASE (no transaction block), holding no connection."""
    from sqlalchemy.pool import NullPool

    from .isolation import create_test_engine

    return create_test_engine(server_url, None, poolclass=NullPool, isolation_level="AUTOCOMMIT")


def database_url(server_url: str, database: str) -> str:
    """`server_url` with its database replaced, password kept (for engines, not for messages)."""
    from sqlalchemy.engine import make_url

    return make_url(server_url).set(database=database).render_as_string(hide_password=False)


async def comment_on_database(conn: AsyncConnection, database: str, comment: str) -> None:
    """COMMENT takes no bind parameters; format(%I, %L) quotes on the server."""
    await conn.execute(
        text(
            "SELECT set_config('harness.database', :name, false), "
            "set_config('harness.comment', :comment, false)"
        ),
        {"name": database, "comment": comment},
    )
    await conn.execute(
        text(
            "DO $$ BEGIN EXECUTE format('COMMENT ON DATABASE %I IS %L', "
            "current_setting('harness.database'), current_setting('harness.comment')); END $$"
        )
    )


class DatabaseJanitor:
    """Creates the run's own database, stamps it and sets its test settings; drops it (and only
    it) at exit, closing any connection a test left open (DROP DATABASE ... WITH (FORCE))."""

    def __init__(
        self,
        admin_engine: AsyncEngine,
        server_url: str,
        names: RunNames,
        *,
        keep: bool = False,
        template: str | None = None,
    ) -> None:
        self._engine = admin_engine  # AUTOCOMMIT, on the server's test database
        self.template = template  # a migrated template to clone (templates.py), or None
        self.names = names
        self.keep = keep
        self.stamp = names.stamp()
        self.url = database_url(server_url, names.database)
        self.schema: str | None = None

    def _quoted(self, conn: AsyncConnection) -> str:
        return conn.dialect.identifier_preparer.quote_identifier(self.names.database)

    async def _write_stamp(self, conn: AsyncConnection, stamp: Stamp) -> None:
        await comment_on_database(conn, self.names.database, stamp.to_json())

    async def __aenter__(self) -> DatabaseJanitor:
        async with self._engine.connect() as conn:
            clone = ""
            if self.template:
                source = conn.dialect.identifier_preparer.quote_identifier(self.template)
                clone = f" TEMPLATE {source} STRATEGY {CLONE_STRATEGY}"
            await conn.execute(text(f"CREATE DATABASE {self._quoted(conn)}{clone}"))
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
        await set_cleanup_deadline(conn)
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


RunStore = DatabaseJanitor | SchemaJanitor


def schema_admin_engine(server_url: str) -> AsyncEngine:
    from sqlalchemy.pool import NullPool

    from .isolation import create_test_engine

    return create_test_engine(server_url, None, poolclass=NullPool)


@asynccontextmanager
async def run_store(
    server_url: str,
    names: RunNames,
    per_run: str,
    *,
    keep: bool = False,
    template: str | None = None,
) -> AsyncIterator[RunStore]:
    """The run's own database (per_run="database"; a clone of `template` if given) or schema,
    created, stamped and yielded; dropped at exit unless `keep` (or `.keep`) says otherwise."""
    database = per_run == "database"
    admin = autocommit_engine(server_url) if database else schema_admin_engine(server_url)
    store: RunStore
    if database:
        store = DatabaseJanitor(admin, server_url, names, keep=keep, template=template)
    else:
        store = SchemaJanitor(admin, names, keep=keep, url=server_url)
    try:
        async with store:
            yield store
    finally:
        await admin.dispose()
