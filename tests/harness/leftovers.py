"""`make clean-leftovers`: remove what killed runs left behind, and say what was removed.

Embedded runs: server processes and run directories of dead launchers (the same
sweep every start does). Schemas and buckets: those whose stamp names this
machine and a dead process, on the services the tests would use now (the
variables, or .services.env), kept ones included since you asked. Never a live
run's, never anything unstamped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys

from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from tests.harness import contract
from tests.harness.janitor import s3_client_for, sweep_dead_buckets, sweep_dead_schemas
from tests.harness.postgres import release_shared_memory
from tests.harness.procs import run_base_dir, sweep_dead_runs
from tests.harness.warm import StaleServicesError, load_warm_services


async def _sweep_database(url: str) -> list[str]:
    admin = create_async_engine(url, poolclass=NullPool)
    try:
        return await sweep_dead_schemas(admin, include_kept=True)
    finally:
        await admin.dispose()


def main() -> int:
    removed: list[str] = []
    base = run_base_dir()
    for run in sweep_dead_runs(base, on_dead_run=lambda d: release_shared_memory(d / "pg")):
        removed.append(f"embedded run directory {run} (and its servers)")
    # Stale warm services are gone already: nothing of theirs to clean.
    with contextlib.suppress(StaleServicesError):
        os.environ.update(load_warm_services() or {})
    database, s3 = contract.resolve_database_url(), contract.resolve_s3()
    if database.url is not None:
        schemas = asyncio.run(_sweep_database(database.url))
        removed += [f"schema {name}" for name in schemas]
    if s3.endpoint_url is not None:
        buckets = sweep_dead_buckets(s3_client_for(s3))
        removed += [f"bucket {name}" for name in buckets]
    if database.url is None and s3.endpoint_url is None:
        print(
            "clean-leftovers: no running services named (schemas and buckets die with "
            "embedded servers); checked embedded run directories only."
        )
    for line in removed:
        print(f"clean-leftovers: removed {line}")
    if not removed:
        print("clean-leftovers: nothing left behind.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
