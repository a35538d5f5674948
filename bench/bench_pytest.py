"""Wall times of pytest subprocesses: the URL guard's early exit, pytest's own start-up, and a
test tier against services that are already running: the app's (tests/integration, the repo's
pytest config) or the harness's own (its config in tests/harness/tests/pyproject.toml).

All run with this interpreter (sys.executable) and with PYTHONDONTWRITEBYTECODE emptied, as
the tox envs do, so pyc files are cached like in a normal run. None of the harness's variables
of this process reach them, only the services' variables they are given.
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
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.harness import contract  # noqa: E402

GUARD_MESSAGE = "Integration tests require postgresql+asyncpg://"
GUARD_EXIT_CODE = 4  # pytest.ExitCode.USAGE_ERROR
SQLITE_URL = "sqlite+aiosqlite:///t.db"
# The two tiers, as pytest arguments from the repo root.
APP_TIER: tuple[str, ...] = ("tests/integration",)
HARNESS_TIER: tuple[str, ...] = ("-c", "tests/harness/tests/pyproject.toml", "tests/harness/tests")
# What tells a pytest run where services are: none of this process's may leak into a child.
_HARNESS_VARIABLES = {variable.name for variable in contract.VARIABLES}
_HARNESS_SUFFIXES = ("_SERVICES_READY_FILE", "_TEST_RUN_ID")


class BenchFailure(RuntimeError):
    """A measured command did not behave as the bench requires."""


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This environment without the harness's variables, plus `extra` (e.g. the services')."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in _HARNESS_VARIABLES and not name.endswith(_HARNESS_SUFFIXES)
    }
    return {**env, "PYTHONDONTWRITEBYTECODE": "", **(extra or {})}


def timed(argv: Sequence[str], env: Mapping[str, str]) -> tuple[float, int, str]:
    started = time.perf_counter()
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    return time.perf_counter() - started, proc.returncode, proc.stdout + proc.stderr


def pytest_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "pytest", *args]


def guard_exit_s(
    runs: int, *, only_needed_plugins: bool = False, tier: Sequence[str] = APP_TIER
) -> float:
    """`pytest <tier>` on a SQLite URL: must exit 4 with the guard's message.

    only_needed_plugins: a diagnostic, with no installed plugin auto-loaded except
    pytest-asyncio (--strict-config needs it to accept the asyncio_* ini options).
    """
    env = child_env({"TEST_DATABASE_URL": SQLITE_URL})
    argv = pytest_argv(*tier, "-p", "no:cacheprovider")
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


def suite_wall_s(
    runs: int,
    services: Mapping[str, str],
    extra_args: Sequence[str] = (),
    *,
    tier: Sequence[str] = APP_TIER,
) -> tuple[float, list[int], str]:
    """A tier's integration tests against running services (`services`: their variables).

    Returns the median wall time, every run's exit code and the last failing output: a
    failing suite is reported next to its figure rather than losing the other figures.
    """
    argv = pytest_argv(*tier, "-m", "integration", "-q", "-p", "no:cacheprovider", *extra_args)
    samples, codes, failure = [], [], ""
    for _ in range(runs):
        elapsed, code, output = timed(argv, child_env(services))
        samples.append(elapsed)
        codes.append(code)
        if code != 0:
            failure = output[-5000:]
    return statistics.median(samples), codes, failure
