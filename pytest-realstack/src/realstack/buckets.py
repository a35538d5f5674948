"""The life of one run's bucket: create, stamp (tags), empty, delete; and the sweep of buckets
that killed runs left. Imported only by projects whose [tool.harness] services include s3."""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from .contract import S3Target
from .project import Project
from .stamps import RunNames, Stamp

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

# Every call of the harness's own client has a deadline: a paused server cannot hang a run.
_CLIENT_CONFIG = BotoConfig(
    signature_version="s3v4",
    s3={"addressing_style": "path"},
    connect_timeout=5,
    read_timeout=30,
    retries={"max_attempts": 2, "mode": "standard"},
)


def s3_client_for(target: S3Target) -> S3Client:
    """A boto3 client for the harness's own S3 work: path-style addressing, SigV4, deadlines."""
    return boto3.client(
        "s3",
        endpoint_url=target.endpoint_url,
        region_name=target.region,
        aws_access_key_id=target.access_key,
        aws_secret_access_key=target.secret_key,
        config=_CLIENT_CONFIG,
    )


def object_keys(client: S3Client, bucket: str, prefix: str = "") -> list[str]:
    """Every key in the bucket (under `prefix`), in S3's order."""
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [obj["Key"] for obj in page.get("Contents", [])]
    return keys


def _bucket_stamp(client: S3Client, project: Project, bucket: str) -> Stamp | None:
    try:
        tags = client.get_bucket_tagging(Bucket=bucket)["TagSet"]
    except ClientError:
        return None  # no tags, or no such bucket
    return Stamp.parse(project, {tag["Key"]: tag["Value"] for tag in tags})


def _empty_bucket(client: S3Client, bucket: str) -> int:
    removed = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys: list[Any] = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys})
            removed += len(keys)
    return removed


class BucketJanitor:
    """Creates the run's bucket and tags it with the stamp; empties and deletes it (and only it)."""

    def __init__(self, client: S3Client, names: RunNames, *, keep: bool = False) -> None:
        self.client = client
        self.names = names
        self.bucket = names.bucket
        self.keep = keep
        self.stamp = names.stamp()

    def _create(self) -> None:
        self.client.create_bucket(Bucket=self.bucket)
        self._tag(self.stamp)

    def _tag(self, stamp: Stamp) -> None:
        tags: Any = stamp.to_tags()
        self.client.put_bucket_tagging(Bucket=self.bucket, Tagging={"TagSet": tags})

    def assert_stamped(self) -> None:
        stamp = _bucket_stamp(self.client, self.names.project, self.bucket)
        self.names.refuse_unless_ours(f"bucket {self.bucket!r}", stamp, stamp)

    def empty(self) -> int:
        """Delete every object in the bucket (stamp checked first); return how many there were.

        One listing when it is empty already: the stamp is checked only before a delete."""
        listed = self.client.list_objects_v2(Bucket=self.bucket, MaxKeys=1)
        if not listed.get("KeyCount"):
            return 0
        self.assert_stamped()
        return _empty_bucket(self.client, self.bucket)

    def _delete(self) -> None:
        if self.keep:
            self.assert_stamped()
            self._tag(self.stamp.marked_kept())
            return
        self.empty()
        self.client.delete_bucket(Bucket=self.bucket)

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


def sweep_dead_buckets(
    client: S3Client, project: Project, *, include_kept: bool = False
) -> list[str]:
    """Empty and delete the buckets of this project's dead runs on this machine."""
    deleted = []
    for bucket in client.list_buckets().get("Buckets", []):
        name = bucket["Name"]
        if not name.startswith("test-"):
            continue
        stamp = _bucket_stamp(client, project, name)
        if stamp is None or not stamp.owner_is_dead(include_kept=include_kept):
            continue
        _empty_bucket(client, name)
        client.delete_bucket(Bucket=name)
        deleted.append(name)
    return deleted
