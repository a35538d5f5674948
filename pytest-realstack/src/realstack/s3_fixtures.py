"""The S3 fixtures, registered only for projects whose [tool.harness] services include s3."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio

from .buckets import BucketJanitor, s3_client_for, sweep_dead_buckets
from .clients import requests_served
from .config import HarnessConfig
from .contract import S3Target
from .fixtures import (
    bucket_to_empty,
    keep_on_failure,
    left_with_the_server,
    report_removed,
    sweeps,
)
from .stamps import RunNames
from .stash import RUN_BUCKET

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


@pytest.fixture(scope="session")
def s3_target(harness_config: HarnessConfig) -> S3Target:
    """The run's S3 endpoint and keys (realstack.S3Target)."""
    assert harness_config.s3 is not None  # this module is registered only with S3
    return harness_config.s3


@pytest_asyncio.fixture(scope="session")
async def _run_bucket(
    request: pytest.FixtureRequest,
    harness_config: HarnessConfig,
    s3_target: S3Target,
    run_names: RunNames,
) -> AsyncIterator[BucketJanitor]:
    client = s3_client_for(s3_target)
    if sweeps(run_names):
        removed = await asyncio.to_thread(sweep_dead_buckets, client, harness_config.project)
        report_removed(request, "bucket", removed)
    janitor = BucketJanitor(client, run_names, write_trace=harness_config.s3_write_trace)
    yielded = False
    try:
        async with janitor:
            request.config.stash[RUN_BUCKET] = janitor
            try:
                yielded = True
                yield janitor
            finally:
                del request.config.stash[RUN_BUCKET]
            janitor.keep = keep_on_failure(request, harness_config)
    except Exception:
        bucket = f"bucket {janitor.bucket!r}"
        if not yielded or not left_with_the_server(request, harness_config, bucket):
            raise


@pytest.fixture(scope="session")
def s3_client(_run_bucket: BucketJanitor) -> S3Client:
    """A boto3 S3 client for the test's own checks: path-style addressing, SigV4."""
    return _run_bucket.client


@pytest.fixture(scope="session")
def s3_bucket(_run_bucket: BucketJanitor) -> str:
    """The run's bucket, empty at the start of every test that can see it: it is emptied after
    each test that could have written to it, through any client (fixtures.py, bucket_to_empty)."""
    return _run_bucket.bucket


@pytest.fixture
def _after_s3_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a test that used the run's bucket but not its database (those get
    _after_db_test): the bucket emptied. The plugin puts it first in such a test's fixtures."""
    served = requests_served()
    yield
    bucket = bucket_to_empty(request, served)
    if bucket is not None:
        bucket.empty()
