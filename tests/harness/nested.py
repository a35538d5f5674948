"""A second pytest run against the same services, for tests of the harness itself."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence

from tests.harness.contract import RUN_ID_VARIABLE
from tests.harness.janitor import PROJECT_ROOT

NESTED_TIMEOUT_S = 180


async def run_nested_pytest(
    args: Sequence[str], *, run_id: str, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run pytest in a subprocess under its own run id, with this run's service variables.

    pytest's and xdist's own variables are dropped so the child is a fresh run.
    """
    child_env = {
        k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "DOCSTORE_TEST"))
    }
    child_env |= {RUN_ID_VARIABLE: run_id, **(env or {})}
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        env=child_env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=NESTED_TIMEOUT_S,
    )
