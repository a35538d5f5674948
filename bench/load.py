"""Load: concurrent uploads and downloads against the API served by uvicorn on real services.

Run from the repo root: `.venv/bin/python bench/load.py [--clients 50 --size-kb 256]
[--idle-uploads 40]`.
It starts the embedded PostgreSQL and S3 in-process, takes a migrated schema and a bucket
from the harness's sandbox, serves the API with uvicorn on a free 127.0.0.1 port, lets every
client upload one random file and download it again (all at once, bounded in count and time),
then checks that every download matches its sha256 and that the rows and the objects agree one
to one. With --idle-uploads N, N raw-socket uploads go quiet first (half in the middle of their
file, half right after it), stay so through the load, then hang up: the clients must still see
no error, and nothing of the idle uploads may stay stored. It prints a small table, stops
uvicorn and the services, and exits 1 on any failure.

The code lives in tests/load_client.py; tests/integration/test_load.py runs it small.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/load.py` puts bench/, not the repo, on the path
    sys.path.insert(0, str(REPO))

from realstack import (  # noqa: E402  # noqa: E402
    HarnessConfig,
    embedded_settings,
    find_pyproject,
    load_project,
    resolve_config,
    sandbox,
    start_embedded_services,
)

from tests.app_adapter import MAX_UPLOAD_BYTES, environment_of, settings_for  # noqa: E402
from tests.load_client import OWNER, run_load, serve, verify  # noqa: E402


async def _main_async(
    config: HarnessConfig, clients: int, size_kb: int, timeout_s: float, idle_uploads: int
) -> int:
    token = secrets.token_urlsafe(24)
    size_bytes = size_kb * 1024
    async with sandbox(config, "load") as run:
        settings = settings_for(
            run, tokens={OWNER: token}, max_upload_bytes=max(size_bytes, MAX_UPLOAD_BYTES)
        )
        async with serve(environment_of(settings)) as served:
            report = await run_load(
                served.base_url,
                token,
                clients=clients,
                size_bytes=size_bytes,
                timeout_s=timeout_s,
                idle_uploads=idle_uploads,
            )
            await verify(report, settings)
    print(report.table(), flush=True)
    return 0 if report.ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients (50)")
    parser.add_argument("--size-kb", type=int, default=256, help="file size in KiB (256)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds for the load (120)")
    parser.add_argument(
        "--idle-uploads", type=int, default=0, help="idle slow uploads beside the clients (0)"
    )
    args = parser.parse_args(argv)
    if not 1 <= args.clients <= 1000 or not 1 <= args.size_kb <= 100 * 1024:
        parser.error("--clients must be 1-1000 and --size-kb 1-102400")
    if not 0 <= args.idle_uploads <= 1000:
        parser.error("--idle-uploads must be 0-1000")

    project = load_project(find_pyproject(REPO))
    running = start_embedded_services(embedded_settings(project, os.environ))
    try:
        # Only the launcher's variables: a TEST_DATABASE_URL of yours is not the load's target.
        config = resolve_config(project, running.env)
        return asyncio.run(
            _main_async(config, args.clients, args.size_kb, args.timeout, args.idle_uploads)
        )
    except Exception as exc:
        print(f"load: failed: {exc}", file=sys.stderr)
        return 1
    finally:
        running.stop()


if __name__ == "__main__":
    sys.exit(main())
