"""Wall times of `make test-integration`, with the tox env already created, measured from outside
as a user would see it, median of BENCH_RUNS (default 5):

- the whole suite, and how soon its first integration test starts (`python3 bench/bench_make.py`,
  or `make bench-services`);
- one test file, `make test-integration ARGS=tests/integration/test_tags.py` (`one_file`, part
  of `make bench`), as the inner loop runs it (warm services, `make services-up`: `run` uses
  them) and cold (the launcher starts and stops its own servers), with tox's own split of it
  (setup: the env checked against its lock; cmd: the launcher and pytest).

Started from inside a tox env (`make bench`), the command gets this environment without that
env's traces (VIRTUAL_ENV, TOX_*, its bin/ on PATH), so the tox it runs sees what a shell gives.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = int(os.environ.get("BENCH_RUNS", "5"))
# pytest -v prints a test's node id when the test starts, before its result.
FIRST_TEST = re.compile(rb"tests/integration/\S+::\S+ ")
ONE_FILE = "tests/integration/test_tags.py"
# As a user types it (BACKEND=auto: on a machine without Docker, the embedded services).
ONE_FILE_COMMAND = ("make", "test-integration", f"ARGS={ONE_FILE}")
SERVICES_UP = ("make", "services-up")
SERVICES_DOWN = ("make", "services-down")
PYTEST_HEADER = re.compile(rb"=+ test session starts =+")
PYTEST_SUMMARY = re.compile(rb"=+ .*\d+ passed.* in [\d.]+s")
# tox's summary line: "  integration-embedded: OK (4.59=setup[0.46]+cmd[4.13] seconds)"
TOX_SPLIT = re.compile(rb"OK \(([\d.]+)=setup\[([\d.]+)\]\+cmd\[([\d.]+)\] seconds\)")
# What the harness and its launcher read (the services of the caller must not leak in), and
# what a tox env sets for its commands.
_DROPPED_PREFIXES = ("TOX_", "POSTGRES_", "MINIO_", "S3_", "TEST_")
_DROPPED_SUFFIXES = ("_SERVICES_READY_FILE", "_TEST_RUN_ID")
_DROPPED = {"VIRTUAL_ENV", "PYTHONHOME", "PYTHONPATH", "UV_COMPILE_BYTECODE", "DATABASE_URL"}


class MakeFailure(RuntimeError):
    """The measured make command failed; str() has its output's tail."""


def shell_env() -> dict[str, str]:
    """This environment as a shell would have it, without a surrounding tox env's traces."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in _DROPPED
        and not k.startswith(_DROPPED_PREFIXES)
        and not k.endswith(_DROPPED_SUFFIXES)
    }
    venv = os.environ.get("VIRTUAL_ENV")
    if venv:
        own_bin = str(Path(venv) / "bin")
        env["PATH"] = os.pathsep.join(
            p for p in env.get("PATH", "").split(os.pathsep) if p and p != own_bin
        )
    return env


def _run(
    command: Sequence[str], marks: dict[str, re.Pattern[bytes]]
) -> tuple[float, dict[str, float], bytes]:
    """Run `command`; its wall time, when each of `marks` first appeared in its output (s from
    the start), and the output."""
    started = time.perf_counter()
    seen_at: dict[str, float] = {}
    seen = b""
    with subprocess.Popen(
        command, cwd=ROOT, env=shell_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    ) as p:
        assert p.stdout is not None
        while chunk := os.read(p.stdout.fileno(), 4096):
            seen += chunk
            for name, pattern in marks.items():
                if name not in seen_at and pattern.search(seen):
                    seen_at[name] = time.perf_counter() - started
        code = p.wait()
    wall = time.perf_counter() - started
    if code != 0:
        tail = seen[-3000:].decode(errors="replace")
        raise MakeFailure(f"`{' '.join(command)}` failed (exit {code}):\n{tail}")
    return wall, seen_at, seen


def one_run() -> tuple[float, float]:
    # ARGS replaces the default path, so name it: the same tests as a plain `make test-integration`.
    command = ["make", "test-integration", "BACKEND=embedded", "ARGS=-v tests/integration"]
    wall, seen_at, _ = _run(command, {"first_test": FIRST_TEST})
    if "first_test" not in seen_at:
        raise MakeFailure(f"`{' '.join(command)}` printed no test")
    return wall, seen_at["first_test"]


@dataclass(frozen=True)
class OneFile:
    """Medians, seconds."""

    wall_s: float  # the whole make command
    header_s: float  # pytest's "test session starts": make, tox, package, launcher, pytest up
    summary_s: float  # pytest's "N passed in" line: collection, the run's setup, the tests done
    tox_setup_s: float  # tox's own "setup" (the env checked against its lock)
    tox_cmd_s: float  # tox's own "cmd" (the launcher, the servers, pytest, the servers stopped)
    runs: int
    samples_s: list[float]


@contextmanager
def warm_services() -> Iterator[None]:
    """`make services-up` for the block, then `make services-down`."""
    _run(SERVICES_UP, {})
    try:
        yield
    finally:
        _run(SERVICES_DOWN, {})


def one_file(runs: int = RUNS) -> OneFile:
    """`make test-integration ARGS=tests/integration/test_tags.py`; one run first, not counted
    (it may create or update the tox env, or build a template)."""
    taken: dict[str, list[float]] = {}
    marks = {"header": PYTEST_HEADER, "summary": PYTEST_SUMMARY}
    for i in range(runs + 1):
        wall, seen_at, output = _run(ONE_FILE_COMMAND, marks)
        split = TOX_SPLIT.findall(output)
        if not i:
            continue
        taken.setdefault("wall", []).append(wall)
        for name, at in seen_at.items():
            taken.setdefault(name, []).append(at)
        if split:
            taken.setdefault("tox_setup", []).append(float(split[-1][1]))
            taken.setdefault("tox_cmd", []).append(float(split[-1][2]))

    def median(name: str) -> float:
        return statistics.median(taken[name]) if name in taken else float("nan")

    return OneFile(
        wall_s=median("wall"),
        header_s=median("header"),
        summary_s=median("summary"),
        tox_setup_s=median("tox_setup"),
        tox_cmd_s=median("tox_cmd"),
        runs=runs,
        samples_s=taken["wall"],
    )


def main() -> None:
    try:
        one_run()  # creates the tox env and warms caches; not counted
        samples = [one_run() for _ in range(RUNS)]
    except MakeFailure as exc:
        sys.exit(f"bench_make: {exc}")
    print(f"| make test-integration, env created (median of {RUNS}) | seconds |")
    print("| --- | ---: |")
    print(f"| first integration test starts | {statistics.median(s[1] for s in samples):.2f} |")
    print(f"| whole command (wall) | {statistics.median(s[0] for s in samples):.2f} |")


if __name__ == "__main__":
    main()
