"""The life of one run's schema and bucket: create, stamp, migrate, check, empty, drop.

Both janitors are async context managers, so cleanup cannot be forgotten; both
destroy only what they created, and the schema janitor proves it from a stamp
stored in the database before every DROP or TRUNCATE.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import ObjectIdentifierTypeDef

PROJECT_ROOT = Path(__file__).resolve().parents[2]
STAMP_MARK = "docstore-test-harness"


class JanitorRefusal(RuntimeError):
    """The harness was about to destroy something it cannot prove it created."""


@dataclass(frozen=True)
class RunNames:
    """The names one run (or one xdist worker of it) uses for its schema and bucket."""

    run_id: str
    worker: str

    @property
    def schema(self) -> str:
        return f"test_{self.run_id}_{self.worker}".replace("-", "_").lower()

    @property
    def bucket(self) -> str:
        return f"test-{self.run_id}-{self.worker}".replace("_", "-").lower()

    def stamp(self) -> str:
        return json.dumps(
            {
                "created_by": STAMP_MARK,
                "run": self.run_id,
                "worker": self.worker,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
            sort_keys=True,
        )


def new_run_id() -> str:
    """Unique across concurrent runs on one machine: a timestamp plus the pid."""
    return f"{time.strftime('%y%m%d%H%M%S', time.gmtime())}_{os.getpid()}"


def alembic_config(connection: Connection | None = None) -> Config:
    cfg = Config(toml_file=str(PROJECT_ROOT / "pyproject.toml"))
    if connection is not None:
        # Alembic cookbook: "Sharing a Connection across one or more programmatic
        # migration commands" - env.py runs on this connection and its search_path.
        cfg.attributes["connection"] = connection
    return cfg


def migrate(connection: Connection, revision: str = "head") -> None:
    command.upgrade(alembic_config(connection), revision)


def downgrade(connection: Connection, revision: str = "base") -> None:
    command.downgrade(alembic_config(connection), revision)


def drift(connection: Connection, metadata: MetaData) -> list[Any]:
    """The differences between the migrated schema and the models (empty means no drift)."""
    context = MigrationContext.configure(connection)
    return list(compare_metadata(context, metadata))


class SchemaJanitor:
    """Creates the run's schema, stamps it, migrates it; drops it (and only it) at exit."""

    def __init__(self, admin_engine: AsyncEngine, names: RunNames, *, keep: bool = False) -> None:
        self._engine = admin_engine
        self.names = names
        self.keep = keep

    async def _quote(self, conn: AsyncConnection) -> str:
        return conn.dialect.identifier_preparer.quote_identifier(self.names.schema)

    async def __aenter__(self) -> SchemaJanitor:
        async with self._engine.begin() as conn:
            # COMMENT takes no bind parameters; format(%I, %L) quotes on the server.
            await conn.execute(
                text(
                    "SELECT set_config('docstore.schema', :schema, true), "
                    "set_config('docstore.stamp', :stamp, true)"
                ),
                {"schema": self.names.schema, "stamp": self.names.stamp()},
            )
            await conn.execute(
                text(
                    "DO $$ BEGIN "
                    "EXECUTE format('CREATE SCHEMA %I', current_setting('docstore.schema')); "
                    "EXECUTE format('COMMENT ON SCHEMA %I IS %L', "
                    "current_setting('docstore.schema'), current_setting('docstore.stamp')); "
                    "END $$"
                )
            )
        return self

    async def assert_stamped(self, conn: AsyncConnection) -> None:
        """Refuse unless the schema carries this run's stamp."""
        row = (
            await conn.execute(
                text(
                    "SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace "
                    "WHERE nspname = :name"
                ),
                {"name": self.names.schema},
            )
        ).first()
        stamp: dict[str, Any] = {}
        if row is not None and row[0]:
            try:
                stamp = json.loads(row[0])
            except ValueError:
                stamp = {}
        if stamp.get("created_by") != STAMP_MARK or stamp.get("run") != self.names.run_id:
            raise JanitorRefusal(
                f"Refusing to clean schema {self.names.schema!r}: it does not carry this run's "
                f"stamp (found {row[0] if row else 'no such schema'!r}). Nothing was dropped."
            )

    async def truncate(self, conn: AsyncConnection, tables: Sequence[str]) -> None:
        """Empty the given tables of this run's schema (after a real-commit test)."""
        await self.assert_stamped(conn)
        quote = conn.dialect.identifier_preparer.quote_identifier
        schema = await self._quote(conn)
        names = ", ".join(f"{schema}.{quote(t)}" for t in tables)
        await conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.keep:
            return
        async with self._engine.begin() as conn:
            await self.assert_stamped(conn)
            # DROP SCHEMA waits for open transactions in it; the fixtures have
            # closed theirs by now, and the lock timeout turns a stuck one into an error.
            await conn.execute(text("SET LOCAL lock_timeout = '10s'"))
            await conn.execute(text(f"DROP SCHEMA {await self._quote(conn)} CASCADE"))


class BucketJanitor:
    """Creates the run's bucket; empties and deletes it (and only it) at exit."""

    def __init__(self, client: S3Client, names: RunNames, *, keep: bool = False) -> None:
        self._client = client
        self.bucket = names.bucket
        self.keep = keep

    def _create(self) -> None:
        self._client.create_bucket(Bucket=self.bucket)

    def empty(self) -> int:
        """Delete every object in the bucket; return how many there were."""
        removed = 0
        paginator = self._client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket):
            keys: list[ObjectIdentifierTypeDef] = [
                {"Key": obj["Key"]} for obj in page.get("Contents", [])
            ]
            if keys:
                self._client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys})
                removed += len(keys)
        return removed

    def _delete(self) -> None:
        self.empty()
        self._client.delete_bucket(Bucket=self.bucket)

    async def __aenter__(self) -> BucketJanitor:
        await asyncio.to_thread(self._create)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self.keep:
            await asyncio.to_thread(self._delete)
