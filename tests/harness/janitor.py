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
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import boto3
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError
from sqlalchemy import MetaData, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tests.harness.contract import S3Target
from tests.harness.procs import proc_start_time

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import ObjectIdentifierTypeDef, TagTypeDef

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

    def stamp(self) -> Stamp:
        return Stamp(
            run=self.run_id,
            worker=self.worker,
            host=socket.gethostname(),
            pid=os.getpid(),
            created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )


@dataclass(frozen=True)
class Stamp:
    """What the harness writes on everything it creates, and checks before destroying it.

    Stored as JSON in COMMENT ON SCHEMA, and as tags on a bucket.
    """

    run: str
    worker: str
    host: str
    pid: int
    created_at: str
    kept: bool = False
    created_by: str = STAMP_MARK

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def to_tags(self) -> list[TagTypeDef]:
        return [{"Key": key, "Value": str(value)} for key, value in asdict(self).items()]

    @classmethod
    def parse(cls, fields: Mapping[str, Any]) -> Stamp | None:
        """The stamp in these fields, or None when they are not a harness stamp."""
        if fields.get("created_by") != STAMP_MARK:
            return None
        try:
            return cls(
                run=str(fields["run"]),
                worker=str(fields["worker"]),
                host=str(fields["host"]),
                pid=int(fields["pid"]),
                created_at=str(fields["created_at"]),
                kept=str(fields.get("kept", False)).lower() in {"true", "1"},
            )
        except (KeyError, ValueError):
            return None

    @classmethod
    def from_json(cls, text: str | None) -> Stamp | None:
        try:
            fields = json.loads(text or "")
        except ValueError:
            return None
        return cls.parse(fields) if isinstance(fields, dict) else None

    def owner_is_dead(self) -> bool:
        """True only for a stamp of this machine whose process is gone (never for kept ones)."""
        return (
            not self.kept
            and self.host == socket.gethostname()
            and proc_start_time(self.pid) is None
        )


def s3_client_for(target: S3Target) -> S3Client:
    """A boto3 client for the harness's own S3 work: path-style addressing, SigV4."""
    return boto3.client(
        "s3",
        endpoint_url=target.endpoint_url,
        region_name=target.region,
        aws_access_key_id=target.access_key,
        aws_secret_access_key=target.secret_key,
        config=BotoConfig(signature_version="s3v4", s3={"addressing_style": "path"}),
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


_SCHEMA_STAMP = text(
    "SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace WHERE nspname = :name"
)


async def stamp_schema(conn: AsyncConnection, schema: str, stamp: Stamp, *, create: bool) -> None:
    # COMMENT takes no bind parameters; format(%I, %L) quotes on the server.
    await conn.execute(
        text(
            "SELECT set_config('docstore.schema', :schema, true), "
            "set_config('docstore.stamp', :stamp, true)"
        ),
        {"schema": schema, "stamp": stamp.to_json()},
    )
    create_sql = (
        "EXECUTE format('CREATE SCHEMA %I', current_setting('docstore.schema')); " if create else ""
    )
    await conn.execute(
        text(
            "DO $$ BEGIN " + create_sql + "EXECUTE format('COMMENT ON SCHEMA %I IS %L', "
            "current_setting('docstore.schema'), current_setting('docstore.stamp')); "
            "END $$"
        )
    )


class SchemaJanitor:
    """Creates the run's schema, stamps it, migrates it; drops it (and only it) at exit."""

    def __init__(self, admin_engine: AsyncEngine, names: RunNames, *, keep: bool = False) -> None:
        self._engine = admin_engine
        self.names = names
        self.keep = keep
        self.stamp = names.stamp()

    async def _quote(self, conn: AsyncConnection) -> str:
        return conn.dialect.identifier_preparer.quote_identifier(self.names.schema)

    async def __aenter__(self) -> SchemaJanitor:
        async with self._engine.begin() as conn:
            await stamp_schema(conn, self.names.schema, self.stamp, create=True)
        return self

    async def assert_stamped(self, conn: AsyncConnection) -> None:
        """Refuse unless the schema carries this run's stamp."""
        found = (await conn.execute(_SCHEMA_STAMP, {"name": self.names.schema})).scalar()
        stamp = Stamp.from_json(found)
        if stamp is None or stamp.run != self.names.run_id:
            raise JanitorRefusal(
                f"Refusing to clean schema {self.names.schema!r}: it does not carry this run's "
                f"stamp (found {found or 'no stamp'!r}). Nothing was dropped."
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
        async with self._engine.begin() as conn:
            await self.assert_stamped(conn)
            if self.keep:
                # Kept for debugging: the sweep of dead runs must leave it alone.
                kept = replace(self.stamp, kept=True)
                await stamp_schema(conn, self.names.schema, kept, create=False)
                return
            # DROP SCHEMA waits for open transactions in it; the fixtures have
            # closed theirs by now, and the lock timeout turns a stuck one into an error.
            await conn.execute(text("SET LOCAL lock_timeout = '10s'"))
            await conn.execute(text(f"DROP SCHEMA {await self._quote(conn)} CASCADE"))


def _bucket_stamp(client: S3Client, bucket: str) -> Stamp | None:
    try:
        tags = client.get_bucket_tagging(Bucket=bucket)["TagSet"]
    except ClientError:
        return None  # no tags, or no such bucket
    return Stamp.parse({tag["Key"]: tag["Value"] for tag in tags})


def _empty_bucket(client: S3Client, bucket: str) -> int:
    removed = 0
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket):
        keys: list[ObjectIdentifierTypeDef] = [
            {"Key": obj["Key"]} for obj in page.get("Contents", [])
        ]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys})
            removed += len(keys)
    return removed


class BucketJanitor:
    """Creates the run's bucket and tags it with the stamp; empties and deletes it (and only it)."""

    def __init__(self, client: S3Client, names: RunNames, *, keep: bool = False) -> None:
        self._client = client
        self.names = names
        self.bucket = names.bucket
        self.keep = keep
        self.stamp = names.stamp()

    def _create(self) -> None:
        self._client.create_bucket(Bucket=self.bucket)
        self._client.put_bucket_tagging(
            Bucket=self.bucket, Tagging={"TagSet": self.stamp.to_tags()}
        )

    def assert_stamped(self) -> None:
        stamp = _bucket_stamp(self._client, self.bucket)
        if stamp is None or stamp.run != self.names.run_id:
            raise JanitorRefusal(
                f"Refusing to empty bucket {self.bucket!r}: it does not carry this run's stamp "
                f"(found {stamp!r}). Nothing was deleted."
            )

    def empty(self) -> int:
        """Delete every object in the bucket (stamp checked first); return how many there were."""
        self.assert_stamped()
        return _empty_bucket(self._client, self.bucket)

    def _delete(self) -> None:
        if self.keep:
            kept = replace(self.stamp, kept=True)
            self._client.put_bucket_tagging(Bucket=self.bucket, Tagging={"TagSet": kept.to_tags()})
            return
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
        await asyncio.to_thread(self._delete)


async def sweep_dead_schemas(admin: AsyncEngine, *, include_kept: bool = False) -> list[str]:
    """Drop the schemas of harness runs on this machine whose process is gone."""
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
        stamp = Stamp.from_json(comment)
        if stamp is None or not _dead(stamp, include_kept):
            continue
        async with admin.begin() as conn:
            quoted = conn.dialect.identifier_preparer.quote_identifier(name)
            await conn.execute(text(f"DROP SCHEMA IF EXISTS {quoted} CASCADE"))
        dropped.append(name)
    return dropped


def sweep_dead_buckets(client: S3Client, *, include_kept: bool = False) -> list[str]:
    """Empty and delete the buckets of harness runs on this machine whose process is gone."""
    deleted = []
    for bucket in client.list_buckets().get("Buckets", []):
        name = bucket["Name"]
        if not name.startswith("test-"):
            continue
        stamp = _bucket_stamp(client, name)
        if stamp is None or not _dead(stamp, include_kept):
            continue
        _empty_bucket(client, name)
        client.delete_bucket(Bucket=name)
        deleted.append(name)
    return deleted


def _dead(stamp: Stamp, include_kept: bool) -> bool:
    return replace(stamp, kept=False).owner_is_dead() if include_kept else stamp.owner_is_dead()
