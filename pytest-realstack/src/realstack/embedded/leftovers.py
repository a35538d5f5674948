"""`clean`: remove what killed runs left behind, and say what was removed.

Embedded runs: server processes and run directories of dead launchers (the same sweep every
start does). Schemas and buckets: those whose stamp names this machine and a dead process,
on the services the tests would use now (the variables, or the warm services file), kept
ones included since you asked. Never a live run's, never anything unstamped.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Mapping
from typing import TextIO

from .. import contract
from ..config import EmbeddedSettings
from ..guard import mask_url
from ..project import Project
from .pg_cluster import release_shared_memory
from .rundir import sweep_dead_runs
from .warm import StaleServicesError, load_warm_services

PREFIX = "clean-leftovers:"


async def _sweep_database(url: str, project: Project) -> list[str]:
    from ..sweeps import sweep_dead_stores

    return await sweep_dead_stores(url, project, include_kept=True)


def _sweep_buckets(target: contract.S3Target, project: Project) -> list[str]:
    from ..buckets import s3_client_for, sweep_dead_buckets  # boto3: S3 projects only

    return sweep_dead_buckets(s3_client_for(target), project, include_kept=True)


def service_targets(
    settings: EmbeddedSettings, env: Mapping[str, str]
) -> tuple[contract.DatabaseTarget, contract.S3Target | None]:
    """The services the tests would use now: `env`, with live warm services' values on top.

    Raises contract.ContractError on a malformed variable.
    """
    project = settings.project
    warm: dict[str, str] = {}
    # Stale warm services are gone already: nothing of theirs to clean.
    with contextlib.suppress(StaleServicesError):
        warm = load_warm_services(settings) or {}
    merged = {**env, **warm}
    s3 = contract.resolve_s3(project, merged) if project.uses_s3 else None
    return contract.resolve_database(project, merged), s3


def clean(settings: EmbeddedSettings, env: Mapping[str, str], report: TextIO = sys.stdout) -> int:
    """Sweep dead runs, then dead runs' schemas and buckets; 0, or 1 if a service failed."""
    project = settings.project
    removed = [
        f"embedded run directory {run} (and its servers)"
        for run in sweep_dead_runs(
            settings.run_base, on_dead_run=lambda d: release_shared_memory(d / "pg")
        )
    ]
    database, s3 = service_targets(settings, env)
    failed = False
    if database.url is not None:
        try:
            removed += asyncio.run(_sweep_database(database.url, project))
        except Exception as exc:  # a service that is down: say so, go on with the rest
            failed = True
            print(f"{PREFIX} could not check {mask_url(database.url)}: {exc}", file=report)
    if s3 is not None and s3.endpoint_url is not None:
        try:
            removed += [f"bucket {name}" for name in _sweep_buckets(s3, project)]
        except Exception as exc:
            failed = True
            print(f"{PREFIX} could not check {s3.endpoint_url}: {exc}", file=report)
    if database.url is None and (s3 is None or s3.endpoint_url is None):
        print(
            f"{PREFIX} no running services named (what embedded servers held dies with "
            "them); checked embedded run directories only.",
            file=report,
        )
    for line in removed:
        print(f"{PREFIX} removed {line}", file=report)
    if not removed and not failed:
        print(f"{PREFIX} nothing left behind.", file=report)
    return 1 if failed else 0
