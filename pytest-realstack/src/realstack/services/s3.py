"""S3, for projects whose [tool.harness] services include it. Its target is TEST_S3_ENDPOINT_URL
or MINIO_HOST/MINIO_PORT (contract.resolve_s3), refused unless guard.check_s3_target passes;
each run gets its own stamped bucket (buckets.py), emptied after each test that could have
written to it (realstack.s3_fixtures), and buckets of killed runs are swept. boto3 is imported
only when a bucket is touched: a Postgres-only project never loads it."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from ..contract import MINIO_HOST, MINIO_PORT, resolve_s3
from ..project import Project
from . import ServiceKind


async def sweep_dead(project: Project, env: Mapping[str, str], include_kept: bool) -> list[str]:
    target = resolve_s3(project, env)
    if target.endpoint_url is None:
        return []
    from ..buckets import s3_client_for, sweep_dead_buckets

    client = s3_client_for(target)
    deleted = await asyncio.to_thread(
        sweep_dead_buckets, client, project, include_kept=include_kept
    )
    return [f"bucket {name}" for name in deleted]


def where(project: Project, env: Mapping[str, str]) -> str:
    return resolve_s3(project, env).endpoint_url or ""


KIND = ServiceKind(
    name="s3",
    describe="S3",
    host=MINIO_HOST,
    port=MINIO_PORT,
    embedded_program="weed",
    fixtures="realstack.s3_fixtures",
    sweep_dead=sweep_dead,
    where=where,
    endpoint=lambda config: config.s3.endpoint_url if config.s3 else None,
)
