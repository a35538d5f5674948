"""PostgreSQL killed mid-run: the affected tests fail with a clear error, teardown ends, no hang."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

from tests.harness.janitor import PROJECT_ROOT
from tests.harness.procs import run_base_dir

PROBE = "tests/integration/pgkill_probe.py"
LIMIT_S = 90


async def test_a_run_whose_postgresql_dies_fails_clearly_and_cleans_up() -> None:
    before = set(run_base_dir().glob("run-*"))
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTEST_", "DOCSTORE_", "POSTGRES_", "MINIO_", "TEST_DATABASE"))
    }
    started = time.monotonic()
    result = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "tests.harness.services",
            "run",
            "--",
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-v",
            PROBE,
        ],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=LIMIT_S,
    )
    elapsed = time.monotonic() - started
    output = result.stdout + result.stderr

    assert result.returncode == 1, output  # tests failed; not a crash, not a hang
    assert "test_1_kill_postgresql PASSED" in output
    assert ("test_2_after_the_kill" in output and "FAILED" in output) or "ERROR" in output
    assert "the underlying connection is closed" in output or "Connect call failed" in output
    assert elapsed < LIMIT_S
    assert set(run_base_dir().glob("run-*")) <= before  # the launcher removed its run dir
