"""Wall times of pytest subprocesses: the URL guard's early exit, pytest's own start-up, the
import of the app's stack, how soon one test file's first test runs against services that are
already running, and a test tier against them: the app's (tests/integration, the repo's pytest
config) or the harness's own (its config in tests/harness/pyproject.toml).

All run with this interpreter (sys.executable) and with PYTHONDONTWRITEBYTECODE emptied, as
the tox envs do, so pyc files are cached like in a normal run. None of the harness's variables
of this process reach them, only the services' variables they are given.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from realstack import contract  # noqa: E402

GUARD_MESSAGE = "Integration tests require postgresql+asyncpg://"
GUARD_EXIT_CODE = 4  # pytest.ExitCode.USAGE_ERROR
SQLITE_URL = "sqlite+aiosqlite:///t.db"
# The two tiers, as pytest arguments from the repo root.
APP_TIER: tuple[str, ...] = ("tests/integration",)
HARNESS_TIER: tuple[str, ...] = ("-c", "tests/harness/pyproject.toml", "tests/harness")
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


def timed(argv: Sequence[str], env: Mapping[str, str], cwd: Path = ROOT) -> tuple[float, int, str]:
    started = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)
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
    return median_wall(pytest_argv("--version"), runs)


def median_wall(argv: list[str], runs: int) -> float:
    """The median wall time of `runs` runs of `argv` (after one uncounted warm-up run)."""
    env = child_env()
    samples = []
    for i in range(runs + 1):
        elapsed, code, output = timed(argv, env)
        if code != 0:
            raise BenchFailure(f"`{' '.join(argv)}` exited {code}:\n{output[-3000:]}")
        if i:
            samples.append(elapsed)
    return statistics.median(samples)


STACK_IMPORT = "import fastapi, sqlalchemy, boto3, httpx, alembic, asyncpg"
# The app tier's file for the first-test figure; its first test posts three documents first.
FIRST_TEST_FILE = "tests/integration/test_tags.py"
TIMING_PLUGIN = ("-p", "bench.pytest_timing")
FIXTURE_SHARE = 0.05  # first_test() names the fixtures taking this share of the setup or more


def stack_import_s(runs: int) -> float:
    """`python -c "import fastapi, sqlalchemy, boto3, httpx, alembic, asyncpg"`: the app's stack."""
    return median_wall([sys.executable, "-c", STACK_IMPORT], runs)


@dataclass(frozen=True)
class FirstTest:
    """Medians, seconds from the start of `pytest FILE` (a new process)."""

    body_s: float  # the first test's body is called: the run's and its own fixtures set up
    announced_s: float  # the first test is announced (pytest -v), before any fixture
    first_setup_s: float  # the first test's setup phase alone (session fixtures included)
    wall_s: float  # the whole command
    collect_only_s: float  # `pytest FILE --collect-only`: start-up, guard, imports, collection
    runs: int
    # The fixtures of the first test's setup phase taking FIXTURE_SHARE of it or more (median
    # seconds each, slowest first; a fixture's time includes those it requests in its body).
    first_setup_fixtures: list[tuple[str, str, float]]


def timing_of(
    argv: Sequence[str], env: Mapping[str, str], cwd: Path = ROOT
) -> tuple[float, float, dict[str, Any]]:
    """Run a pytest command with bench/pytest_timing.py loaded; its start (wall clock), its
    wall time and the plugin's findings (empty if it wrote none)."""
    with tempfile.TemporaryDirectory(prefix="bench-timing-") as folder:
        target = Path(folder) / "timing.json"
        started_at = time.time()
        elapsed, code, output = timed(argv, {**env, "BENCH_TIMING_FILE": str(target)}, cwd)
        if code != 0:
            raise BenchFailure(f"`{' '.join(argv)}` exited {code}:\n{output[-5000:]}")
        found: dict[str, Any] = json.loads(target.read_text()) if target.exists() else {}
    return started_at, elapsed, found


def first_test(runs: int, services: Mapping[str, str], path: str = FIRST_TEST_FILE) -> FirstTest:
    """`pytest FILE` against running services, as in the warm-services loop. One run first,
    not counted: on a fresh server it builds the migrated template, which later runs clone."""
    argv = pytest_argv(path, "-v", "-p", "no:cacheprovider", *TIMING_PLUGIN)
    env = child_env(services)
    collect_argv = pytest_argv(path, "--collect-only", "-q", "-p", "no:cacheprovider")
    body, announced, setup, wall, collect = [], [], [], [], []
    fixtures: dict[tuple[str, str], list[float]] = {}
    for i in range(runs + 1):
        started_at, elapsed, found = timing_of(argv, env)
        if "first_call" not in found:
            raise BenchFailure(f"`{' '.join(argv)}` ran no test")
        collect_s, code, output = timed(collect_argv, env)
        if code != 0:
            raise BenchFailure(f"`{' '.join(collect_argv)}` exited {code}:\n{output[-3000:]}")
        if i:
            collect.append(collect_s)
            first = next(iter(found["tests"].values()))
            body.append(found["first_call"] - started_at)
            announced.append(found["first_logstart"] - started_at)
            setup.append(first.get("setup", 0.0))
            wall.append(elapsed)
            for name, scope, seconds in found.get("first_setup", []):
                fixtures.setdefault((name, scope), []).append(seconds)
    median = statistics.median
    slowest = sorted(
        ((name, scope, median(taken)) for (name, scope), taken in fixtures.items()),
        key=lambda f: -f[2],
    )
    shown = [f for f in slowest if f[2] >= FIXTURE_SHARE * median(setup)]
    return FirstTest(
        median(body), median(announced), median(setup), median(wall), median(collect), runs, shown
    )


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
