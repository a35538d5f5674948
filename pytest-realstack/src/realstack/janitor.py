"""The life of one run's store on the test server, its own database or (where the role may not
create databases) its own schema: create, stamp, truncate, drop. Janitors are async context
managers sharing one base class, in pytest-postgresql's style; they destroy only what carries
this run's stamp. The one home of the DROP statements the harness runs on that server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager as AsyncContextManager
from contextlib import asynccontextmanager
from types import TracebackType

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .engines import admin_engine, autocommit_engine, database_url
from .stamps import RunNames, Stamp

# Every cleanup statement has a deadline: a session left open by a test must not hang the run.
CLEANUP_LOCK_TIMEOUT = "10s"
# Test connections (the app's own, or a test's second engine) give up waiting for a lock held
# by the test's own uncommitted transaction after this, instead of hanging the run.
TEST_LOCK_TIMEOUT = "5s"
# How a run's database is copied from its template; chosen by measurement (make bench).
CLONE_STRATEGY = "FILE_COPY"

_SCHEMA_STAMP = text(
    "SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace WHERE nspname = :name"
)
_DATABASE_STAMP = text(
    "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = :name"
)


def quote(conn: AsyncConnection, name: str) -> str:
    return conn.dialect.identifier_preparer.quote_identifier(name)


async def set_cleanup_deadline(conn: AsyncConnection) -> None:
    await conn.execute(text(f"SET LOCAL lock_timeout = '{CLEANUP_LOCK_TIMEOUT}'"))


class TemplateVanishedError(RuntimeError):
    """The template to clone was dropped (by a concurrent run's sweep) before the clone."""


def _lock_key(name: str) -> dict[str, str]:
    return {"n": name}


# A template's advisory lock: its builder and its sweeper hold it exclusively, each clone shared,
# so a template is never dropped while a run clones it (templates.py takes the exclusive one).
LOCK_SHARED = text("SELECT pg_advisory_lock_shared(hashtextextended(:n, 0))")
UNLOCK_SHARED = text("SELECT pg_advisory_unlock_shared(hashtextextended(:n, 0))")


class StoreInUseError(RuntimeError):
    """A database to drop is held by sessions this role may not end."""


# SQLSTATEs: the role may not end a session (42501); sessions still use the database (55006).
_INSUFFICIENT_PRIVILEGE = "42501"
_OBJECT_IN_USE = "55006"

# The sessions in a database this role may end (pg_terminate_backend's own rule). An autovacuum
# worker has no role, so it is left to plain DROP DATABASE, which ends it without asking.
_END_OWN_SESSIONS = text(
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n "
    "AND pid <> pg_backend_pid() AND usesysid IS NOT NULL AND pg_has_role(usesysid, 'USAGE')"
)
_SESSIONS = text(
    "SELECT pid, coalesce(usename, backend_type), coalesce(application_name, '') "
    "FROM pg_stat_activity WHERE datname = :n AND pid <> pg_backend_pid() ORDER BY pid"
)


def _sqlstate(error: DBAPIError) -> str | None:
    return getattr(error.orig, "sqlstate", None)


async def drop_database(conn: AsyncConnection, name: str) -> None:
    """Drop a database, closing the connections a test left open (`conn`: AUTOCOMMIT). A
    template is first made an ordinary database, which DROP requires; gone already is fine.

    WITH (FORCE) refuses outright when a session it may not end is there, and for a role that
    is not a superuser that includes an autovacuum worker vacuuming the database (PostgreSQL
    18). Then the role ends the sessions it may end and drops without FORCE, which stops an
    autovacuum worker itself and waits up to 5 s for the rest; sessions of other roles that
    still hold the database are named, with the fix."""
    quoted = quote(conn, name)
    is_template = await conn.scalar(
        text("SELECT datistemplate FROM pg_database WHERE datname = :n"), {"n": name}
    )
    if is_template:
        await conn.execute(text(f"ALTER DATABASE {quoted} WITH IS_TEMPLATE false"))
    try:
        await conn.execute(text(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))
        return
    except DBAPIError as error:
        if _sqlstate(error) != _INSUFFICIENT_PRIVILEGE:
            raise
    await conn.execute(_END_OWN_SESSIONS, {"n": name})
    try:
        await conn.execute(text(f"DROP DATABASE IF EXISTS {quoted}"))
    except DBAPIError as error:
        if _sqlstate(error) != _OBJECT_IN_USE:
            raise
        sessions = (await conn.execute(_SESSIONS, {"n": name})).all()
        held = ", ".join(
            f"pid {pid} ({who}{f', {app}' if app else ''})" for pid, who, app in sessions
        )
        role = await conn.scalar(text("SELECT current_user"))
        raise StoreInUseError(
            f"could not drop database {name!r}: sessions this role ({role}) may not end still "
            f"use it: {held or 'they left while it was dropped; run again'}.\n"
            f"  fix:  close them (SELECT pg_terminate_backend(pid) as their role or a "
            f"superuser), or GRANT pg_signal_backend TO {role}; then `python -m realstack.embedded "
            f"clean`."
        ) from None


async def drop_schema(conn: AsyncConnection, name: str) -> None:
    """Drop a schema and all in it; DROP SCHEMA waits for open transactions in it, and the
    lock timeout turns a stuck one into an error instead of a hang."""
    await set_cleanup_deadline(conn)
    await conn.execute(text(f"DROP SCHEMA IF EXISTS {quote(conn, name)} CASCADE"))


async def comment_on(conn: AsyncConnection, kind: str, name: str, comment: str) -> None:
    """COMMENT ON DATABASE or SCHEMA: COMMENT takes no bind parameters, so format(%I, %L)
    quotes on the server."""
    assert kind in {"DATABASE", "SCHEMA"}
    await conn.execute(
        text(
            "SELECT set_config('harness.object', :name, false), "
            "set_config('harness.comment', :comment, false)"
        ),
        {"name": name, "comment": comment},
    )
    await conn.execute(
        text(
            f"DO $$ BEGIN EXECUTE format('COMMENT ON {kind} %I IS %L', "
            "current_setting('harness.object'), current_setting('harness.comment')); END $$"
        )
    )


async def comment_on_database(conn: AsyncConnection, database: str, comment: str) -> None:
    await comment_on(conn, "DATABASE", database, comment)


async def stamp_schema(conn: AsyncConnection, schema: str, stamp: Stamp, *, create: bool) -> None:
    if create:
        await conn.execute(text(f"CREATE SCHEMA {quote(conn, schema)}"))
    await comment_on(conn, "SCHEMA", schema, stamp.to_json())


class StoreJanitor:
    """Creates a run's store and stamps it; at exit drops it (and only it), or marks it kept.

    Subclasses say what the store is: how to create it, read its stamp, write a stamp, drop it,
    and name its tables."""

    kind = "store"
    # CREATE and DROP DATABASE cannot run inside a transaction block: the database janitor
    # works on its AUTOCOMMIT engine's plain connections.
    transactional = True

    def __init__(self, engine: AsyncEngine, names: RunNames, *, keep: bool = False) -> None:
        self._engine = engine
        self.names = names
        self.keep = keep
        self.stamp = names.stamp()
        self.url = ""  # where the store's tables are reached (the schema's: its database)
        self.schema: str | None = None  # set for a schema store: the connections' search_path

    @property
    def name(self) -> str:
        return self.names.schema

    async def _create(self, conn: AsyncConnection) -> None:
        raise NotImplementedError

    async def _read_stamp(self, conn: AsyncConnection) -> str | None:
        raise NotImplementedError

    async def _write_stamp(self, conn: AsyncConnection, stamp: Stamp) -> None:
        raise NotImplementedError

    async def _drop(self, conn: AsyncConnection) -> None:
        raise NotImplementedError

    def _table(self, conn: AsyncConnection, table: str) -> str:
        return quote(conn, table)

    async def assert_stamped(self, conn: AsyncConnection) -> None:
        """Refuse unless the store carries this run's stamp."""
        found = await self._read_stamp(conn)
        stamp = Stamp.from_json(self.names.project, found)
        self.names.refuse_unless_ours(f"{self.kind} {self.name!r}", stamp, found)

    async def truncate(self, conn: AsyncConnection, tables: Sequence[str]) -> None:
        """Empty the given tables of this run's store (after a real-commit test)."""
        await self.assert_stamped(conn)
        await set_cleanup_deadline(conn)
        names = ", ".join(self._table(conn, t) for t in tables)
        await conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))

    def _connect(self) -> AsyncContextManager[AsyncConnection]:
        return self._engine.begin() if self.transactional else self._engine.connect()

    async def __aenter__(self) -> StoreJanitor:
        async with self._connect() as conn:
            await self._create(conn)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        async with self._connect() as conn:
            await self.assert_stamped(conn)
            if self.keep:
                # Kept for debugging: the sweep of dead runs must leave it alone.
                await self._write_stamp(conn, self.stamp.marked_kept())
                return
            await self._drop(conn)


class SchemaJanitor(StoreJanitor):
    """The run's own schema in the server's test database."""

    kind = "schema"

    def __init__(
        self, engine: AsyncEngine, names: RunNames, *, keep: bool = False, url: str = ""
    ) -> None:
        super().__init__(engine, names, keep=keep)
        self.url = url  # the server's test database, which holds the schema
        self.schema = names.schema

    async def _create(self, conn: AsyncConnection) -> None:
        await stamp_schema(conn, self.name, self.stamp, create=True)

    async def _read_stamp(self, conn: AsyncConnection) -> str | None:
        found = await conn.scalar(_SCHEMA_STAMP, {"name": self.name})
        return None if found is None else str(found)

    async def _write_stamp(self, conn: AsyncConnection, stamp: Stamp) -> None:
        await stamp_schema(conn, self.name, stamp, create=False)

    async def _drop(self, conn: AsyncConnection) -> None:
        await drop_schema(conn, self.name)

    def _table(self, conn: AsyncConnection, table: str) -> str:
        return f"{quote(conn, self.name)}.{quote(conn, table)}"


class DatabaseJanitor(StoreJanitor):
    """The run's own database, a clone of the migrated template when one is given, with its
    test settings; dropped with the connections a test left open (WITH (FORCE))."""

    kind = "database"
    transactional = False

    def __init__(
        self,
        engine: AsyncEngine,
        server_url: str,
        names: RunNames,
        *,
        keep: bool = False,
        template: str | None = None,
    ) -> None:
        super().__init__(engine, names, keep=keep)  # engine: AUTOCOMMIT, on the test database
        self.template = template  # a migrated template to clone (templates.py), or None
        self.url = database_url(server_url, names.database)

    async def _create(self, conn: AsyncConnection) -> None:
        if self.template:
            await self._clone(conn, self.template)
        else:
            await conn.execute(text(f"CREATE DATABASE {quote(conn, self.name)}"))
        await self._write_stamp(conn, self.stamp)
        await conn.execute(
            text(
                f"ALTER DATABASE {quote(conn, self.name)} SET lock_timeout = '{TEST_LOCK_TIMEOUT}'"
            )
        )

    async def _clone(self, conn: AsyncConnection, template: str) -> None:
        """CREATE DATABASE ... TEMPLATE under the template's shared lock, which a sweeper's
        exclusive one excludes; TemplateVanishedError if it was dropped before the lock."""
        await conn.execute(text(f"SET lock_timeout = '{CLEANUP_LOCK_TIMEOUT}'"))
        await conn.execute(LOCK_SHARED, _lock_key(template))
        try:
            if not await conn.scalar(
                text("SELECT datistemplate FROM pg_database WHERE datname = :n"), {"n": template}
            ):
                raise TemplateVanishedError(template)
            await conn.execute(
                text(
                    f"CREATE DATABASE {quote(conn, self.name)} "
                    f"TEMPLATE {quote(conn, template)} STRATEGY {CLONE_STRATEGY}"
                )
            )
        finally:
            await conn.execute(UNLOCK_SHARED, _lock_key(template))
            await conn.execute(text("RESET lock_timeout"))

    async def _read_stamp(self, conn: AsyncConnection) -> str | None:
        found = await conn.scalar(_DATABASE_STAMP, {"name": self.name})
        return None if found is None else str(found)

    async def _write_stamp(self, conn: AsyncConnection, stamp: Stamp) -> None:
        await comment_on_database(conn, self.name, stamp.to_json())

    async def _drop(self, conn: AsyncConnection) -> None:
        await drop_database(conn, self.name)


RunStore = StoreJanitor


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
    admin = autocommit_engine(server_url) if database else admin_engine(server_url)
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
