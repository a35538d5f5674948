"""PostgreSQL killed mid-run: the run stops at the first test that found it gone, in one line,
teardown ends, no hang, and the launcher removes its run directory."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

from realstack.config import HarnessConfig, embedded_settings

from tests.harness.nested import EXAMPLES, REPO_ROOT, TIER_CONFIG, TIER_DIR, clean_environment

LIMIT_S = 90


async def test_a_run_whose_postgresql_dies_fails_clearly_and_cleans_up(
    harness_config: HarnessConfig,
) -> None:
    project = harness_config.project
    env = clean_environment(project)  # no services: the launcher below starts its own
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    run_base = embedded_settings(project, env).run_base
    before = set(run_base.glob("run-*"))
    pytest_cmd = [sys.executable, "-m", "pytest", "-c", str(TIER_CONFIG), "-p", "no:cacheprovider"]
    probe = str(EXAMPLES / "pgkill_probe.py")
    started = time.monotonic()
    # From this tier's folder, the launcher serves this tier's project (its ready-file variable).
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "realstack.embedded", "run", "--", *pytest_cmd, "-v", probe],
        env=env,
        cwd=TIER_DIR,
        capture_output=True,
        text=True,
        timeout=LIMIT_S,
    )
    elapsed = time.monotonic() - started
    output = result.stdout + result.stderr

    assert result.returncode == 2, output  # stopped (interrupted): not a crash, not a hang
    assert "test_1_kill_postgresql PASSED" in output
    assert "harness: PostgreSQL at 127.0.0.1:" in output
    assert "stopped answering during this test" in output  # the test's error, in one line
    # The run stops at the first failure that found the server gone, in one line, instead of
    # failing the 21 tests after it too; what it could not drop is said in one line as well.
    assert output.count("stopped answering during the run") == 1, output
    assert "test_2_after_the_kill" not in output and "test_3_and_more" not in output, output
    assert "was not dropped, as PostgreSQL at 127.0.0.1:" in output, output
    assert "INTERNALERROR" not in output and output.count("Traceback") == 0, output
    assert elapsed < LIMIT_S
    assert set(run_base.glob("run-*")) <= before  # the launcher removed its run dir
