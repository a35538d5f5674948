"""Helpers for the embedded launcher's own tests: a sample project in a temp dir, a private
run base and binaries cache, the environment for the command line, and leftover checks."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from realstack import embedded
from realstack.config import EmbeddedSettings, embedded_settings
from realstack.process import poll_until
from realstack.project import Project

PACKAGE = embedded.__name__  # what `python -m` runs
IMPORT_ROOT = Path(embedded.__file__).parents[len(PACKAGE.split("."))]
DEADLINE_S = 30.0
# Variables a surrounding run may have set; the commands under test get their own.
_INHERITED = ("POSTGRES_", "MINIO_", "S3_", "TEST_", "PG_BINDIR")


def settings_for(project: Project, run_base: Path, cache_dir: Path) -> EmbeddedSettings:
    return embedded_settings(
        project,
        {"TEST_HARNESS_RUN_BASE": str(run_base), "TEST_HARNESS_CACHE_DIR": str(cache_dir)},
    )


def cli_env(run_base: Path, cache_dir: Path, **extra: str) -> dict[str, str]:
    """The environment for `python -m <package>` run from a sample project's directory."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(_INHERITED)
        and not k.endswith("_SERVICES_READY_FILE")
        and k != "MAKELEVEL"  # messages name make targets under make: tests say when
    }
    env |= {
        "PYTHONPATH": str(IMPORT_ROOT),
        "TEST_HARNESS_RUN_BASE": str(run_base),
        "TEST_HARNESS_CACHE_DIR": str(cache_dir),
    }
    return env | extra


def python_in(
    project: Project, env: dict[str, str], *args: str, timeout_s: float = 2 * DEADLINE_S
) -> subprocess.CompletedProcess[str]:
    """`python ARGS` from the project's directory under `env` (`-m PACKAGE run ...` for the
    launcher's command line), its output captured; the exit code is the caller's to assert."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=project.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def shared_cache_dir() -> Iterator[Path]:
    """A binaries-and-template cache for the session, which `nobody` can read."""
    path = Path(tempfile.mkdtemp(prefix="harness-test-cache-", dir="/var/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        subprocess.run(["rm", "-rf", str(path)], check=False)


def private_run_base() -> Iterator[Path]:
    """A private base for run dirs, so assertions see only this test's runs.

    On tmpfs and 0755: as root, the servers run as nobody and must traverse it. Fails the
    test if a process of it survived.
    """
    parent = "/dev/shm" if os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()
    base = Path(tempfile.mkdtemp(prefix="harness-test-", dir=parent))
    base.chmod(0o755)
    yield base
    leftovers = processes_mentioning(base)
    for pid in leftovers:
        os.kill(pid, signal.SIGKILL)
    subprocess.run(["rm", "-rf", str(base)], check=False)
    assert not leftovers, f"processes of the run survived the test: {leftovers}"


def processes_mentioning(path: Path) -> list[int]:
    found = []
    for proc in psutil.process_iter():
        if proc.pid == os.getpid():
            continue
        try:
            argv = " ".join(proc.cmdline())
        except psutil.Error:
            continue
        if str(path) in argv and "pytest" not in argv:
            found.append(proc.pid)
    return found


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = DEADLINE_S) -> None:
    if not poll_until(condition, timeout_s=timeout_s, interval_s=0.02):
        pytest.fail(f"timed out after {timeout_s} s waiting for {what}")


def port_closed(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def runs_in(base: Path) -> list[Path]:
    return sorted(base.glob("run-*"))


def assert_nothing_left(base: Path, ports: list[int]) -> None:
    wait_for(lambda: not processes_mentioning(base), "the servers to exit", 10)
    wait_for(lambda: all(port_closed(p) for p in ports), "the ports to close", 10)
    assert runs_in(base) == []
