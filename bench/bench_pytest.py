"""Wall times of pytest subprocesses: the URL guard's early exit, pytest's own start-up, and the
integration suite against services that are already running.

All run with this interpreter (sys.executable) and with PYTHONDONTWRITEBYTECODE emptied, as
the tox envs do, so pyc files are cached like in a normal run.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GUARD_MESSAGE = "Integration tests require postgresql+asyncpg://"
GUARD_EXIT_CODE = 4  # pytest.ExitCode.USAGE_ERROR
SQLITE_URL = "sqlite+aiosqlite:///t.db"
# What the launcher and tox-docker export; the guard run must not see running services.
SERVICE_VARIABLES = ("POSTGRES_HOST", "POSTGRES_PORT", "MINIO_HOST", "MINIO_PORT")


class BenchFailure(RuntimeError):
    """A measured command did not behave as the bench requires."""


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "", **(extra or {})}
    return env


def timed(argv: Sequence[str], env: Mapping[str, str]) -> tuple[float, int, str]:
    started = time.perf_counter()
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    return time.perf_counter() - started, proc.returncode, proc.stdout + proc.stderr


def pytest_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "pytest", *args]


def guard_exit_s(runs: int, *, only_needed_plugins: bool = False) -> float:
    """`pytest tests/integration` on a SQLite URL: must exit 4 with the guard's message.

    only_needed_plugins: a diagnostic, with no installed plugin auto-loaded except
    pytest-asyncio (--strict-config needs it to accept the asyncio_* ini options).
    """
    env = child_env({"TEST_DATABASE_URL": SQLITE_URL})
    for name in SERVICE_VARIABLES:
        env.pop(name, None)
    argv = pytest_argv("tests/integration", "-p", "no:cacheprovider")
    if only_needed_plugins:
        env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
        argv += ["-p", "pytest_asyncio.plugin"]
    samples = []
    for i in range(runs + 1):  # the first run may compile and cache pyc files: not counted
        elapsed, code, output = timed(argv, env)
        if code != GUARD_EXIT_CODE or GUARD_MESSAGE not in output:
            raise BenchFailure(
                f"the guard did not refuse {SQLITE_URL}: `{' '.join(argv)}` exited {code} "
                f"(expected {GUARD_EXIT_CODE} and {GUARD_MESSAGE!r}); output:\n{output[-3000:]}"
            )
        if i:
            samples.append(elapsed)
    return statistics.median(samples)


def pytest_baseline_s(runs: int) -> float:
    """`pytest --version`: interpreter and pytest start-up, plugins included."""
    argv = pytest_argv("--version")
    env = child_env()
    samples = []
    for i in range(runs + 1):
        elapsed, code, output = timed(argv, env)
        if code != 0:
            raise BenchFailure(f"`{' '.join(argv)}` exited {code}:\n{output[-3000:]}")
        if i:
            samples.append(elapsed)
    return statistics.median(samples)


def suite_wall_s(runs: int, extra_args: Sequence[str] = ()) -> tuple[float, list[int], str]:
    """The integration suite against the running services (their variables in os.environ).

    Returns the median wall time, every run's exit code and the last failing output: a
    failing suite is reported next to its figure rather than losing the other figures.
    """
    argv = pytest_argv("-m", "integration", "-q", "-p", "no:cacheprovider", *extra_args)
    samples, codes, failure = [], [], ""
    for _ in range(runs):
        elapsed, code, output = timed(argv, child_env())
        samples.append(elapsed)
        codes.append(code)
        if code != 0:
            failure = output[-5000:]
    return statistics.median(samples), codes, failure
