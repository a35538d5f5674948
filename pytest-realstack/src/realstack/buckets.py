"""The life of one run's bucket: create, stamp (tags), empty, delete; and the sweep of buckets
that killed runs left. Imported only by projects whose [tool.harness] services include s3."""

from __future__ import annotations

import asyncio
import http.client
import os
import re
import ssl
import time
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError
from botocore.utils import get_environ_proxies

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
# The emptiness check's own deadline (one key listed, on a test server); past it, boto3 asks.
_LISTING_TIMEOUT_S = 5
# Its presigned URL is signed again once half of this has passed.
_LISTING_URL_LIFE_S = 900
# In the listing's XML; its keys come URL-encoded (encoding-type=url), so no key can forge it.
_KEY_COUNT = re.compile(rb"<KeyCount>(\d+)</KeyCount>")


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


def _connection_to(scheme: str, host: str, port: int | None) -> http.client.HTTPConnection:
    if scheme == "https":
        context = ssl.create_default_context()
        return http.client.HTTPSConnection(host, port, timeout=_LISTING_TIMEOUT_S, context=context)
    return http.client.HTTPConnection(host, port, timeout=_LISTING_TIMEOUT_S)


# What a leveldb store appends to on each write: its journals, and its manifests (which name
# the journal in use: a new journal shows there, and as a change of its folder's time).
_JOURNAL = re.compile(r"\d+\.log|MANIFEST-\d+")


class WriteTrace:
    """A folder whose files change whenever the S3 server stores or deletes anything (the
    embedded SeaweedFS's filer store: leveldb journals and manifests, appended to on every
    write). Its signature, the size and time of those files, costs ~25 stat calls, no request;
    the same signature as before a LIST that found the bucket empty means it still is."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self._listed: dict[str, int] = {}  # each folder's mtime when its files were listed
        self._files: list[str] = []

    def signature(self) -> tuple[int, ...] | None:
        """None when the folder cannot be read (gone, moved): then nothing can be told."""
        try:
            if not self._listed or any(
                os.stat(folder).st_mtime_ns != when for folder, when in self._listed.items()
            ):
                self._list()
            stats = [os.stat(path) for path in self._files]
        except OSError:
            self._listed = {}
            return None
        return tuple(v for st in stats for v in (st.st_size, st.st_mtime_ns))

    def _list(self) -> None:
        listed, files = {self.folder: os.stat(self.folder).st_mtime_ns}, []
        with os.scandir(self.folder) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    listed[entry.path] = entry.stat().st_mtime_ns
                    with os.scandir(entry.path) as inner:
                        files += [f.path for f in inner if _JOURNAL.fullmatch(f.name)]
                elif _JOURNAL.fullmatch(entry.name):
                    files.append(entry.path)
        self._listed, self._files = listed, sorted(files)


class EmptinessCheck:
    """One bucket's emptiness check: a LIST (MaxKeys=1) through a presigned URL, on a kept-alive
    connection of its own, sent ahead of the moment its answer is read.

    Not a boto3 call: that costs ~2 ms of CPU here, and in a thread it only queues for the GIL
    behind the event loop. The presigned GET costs ~0.2 ms, and split in two (send, then read)
    the server answers while the caller does other work (the test's rollback). What it cannot
    do or read (a proxy in the environment, an expired URL, a dropped connection, TLS it cannot
    verify, a server that omits KeyCount) it leaves to boto3: answer() is None then."""

    def __init__(self, client: S3Client, bucket: str, trace: WriteTrace | None = None) -> None:
        self.client = client
        self.bucket = bucket
        self.trace = trace
        self._url: tuple[str, float] | None = None  # the presigned URL, when it was signed
        self._conn: http.client.HTTPConnection | None = None
        self._sent = False
        self._unchanged = False  # the trace showed no write since the bucket was found empty
        self._signature: tuple[int, ...] | None = None  # the trace's, as the LIST was sent
        self._empty_as_of: tuple[int, ...] | None = None  # ... of the last LIST found empty

    def send(self) -> None:
        """Send the LIST now, unless the trace shows that nothing was written or deleted since
        a LIST found the bucket empty. One sent before and never read goes with its
        connection: its answer may predate writes since."""
        if self._sent:
            self.close()
        self._signature = self.trace.signature() if self.trace else None
        self._unchanged = self._signature is not None and self._signature == self._empty_as_of
        if self._unchanged:
            return
        url = self._signed_url()
        parts = urlsplit(url)
        try:
            if self._conn is None:
                if get_environ_proxies(url):
                    return  # boto3 knows how to go through the proxy
                self._conn = _connection_to(parts.scheme, str(parts.hostname), parts.port)
            self._conn.request("GET", f"{parts.path}?{parts.query}")
            self._sent = True
        except (OSError, http.client.HTTPException):
            self.close()

    def answer(self) -> bool | None:
        """True when the bucket held no object, False when it held some, None when unknown.
        Reads the answer to the last send(), or sends the LIST now."""
        if not self._sent and not self._unchanged:
            self.send()
        if self._unchanged:
            self._unchanged = False
            return True
        self._empty_as_of = None
        if not self._sent or self._conn is None:
            return None
        self._sent = False
        try:
            response = self._conn.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException):
            self.close()
            return None
        if response.status == 200 and (count := _KEY_COUNT.search(body)):
            empty = count[1] == b"0"
            self._empty_as_of = self._signature if empty else None
            return empty
        self._url = None  # expired, or refused: signed again next time
        return None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn, self._sent = None, False

    def _signed_url(self) -> str:
        now = time.monotonic()
        if self._url is None or now - self._url[1] > _LISTING_URL_LIFE_S / 2:
            url = self.client.generate_presigned_url(
                "list_objects_v2",
                Params={"Bucket": self.bucket, "MaxKeys": 1},
                ExpiresIn=_LISTING_URL_LIFE_S,
            )
            self._url = (url, now)
        return self._url[0]


class BucketJanitor:
    """Creates the run's bucket and tags it with the stamp; empties and deletes it (and only it)."""

    def __init__(
        self,
        client: S3Client,
        names: RunNames,
        *,
        keep: bool = False,
        write_trace: str | None = None,
    ) -> None:
        self.client = client
        self.names = names
        self.bucket = names.bucket
        self.keep = keep
        self.stamp = names.stamp()
        trace = WriteTrace(write_trace) if write_trace else None
        self.emptiness = EmptinessCheck(client, self.bucket, trace)

    def _create(self) -> None:
        self.client.create_bucket(Bucket=self.bucket)
        self._tag(self.stamp)

    def _tag(self, stamp: Stamp) -> None:
        tags: Any = stamp.to_tags()
        self.client.put_bucket_tagging(Bucket=self.bucket, Tagging={"TagSet": tags})

    def assert_stamped(self) -> None:
        stamp = _bucket_stamp(self.client, self.names.project, self.bucket)
        self.names.refuse_unless_ours(f"bucket {self.bucket!r}", stamp, stamp)

    def is_empty(self) -> bool:
        """Whether the bucket holds no object: one LIST (MaxKeys=1), sent ahead by
        `emptiness.send()` or now; boto3 asks again where that LIST got no clear answer."""
        answer = self.emptiness.answer()
        if answer is None:
            answer = not self.client.list_objects_v2(Bucket=self.bucket, MaxKeys=1).get("KeyCount")
        return answer

    def empty(self) -> int:
        """Delete every object in the bucket (stamp checked first); return how many there were.

        One listing when it is empty already: the stamp is checked only before a delete."""
        if self.is_empty():
            return 0
        self.assert_stamped()
        return _empty_bucket(self.client, self.bucket)

    def _delete(self) -> None:
        try:
            if self.keep:
                self.assert_stamped()
                self._tag(self.stamp.marked_kept())
                return
            self.empty()
            self.client.delete_bucket(Bucket=self.bucket)
        finally:
            self.emptiness.close()

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
