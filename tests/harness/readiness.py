"""The hand-over between the embedded launcher and the command it runs.

The launcher starts the command while the servers are still booting, so pytest's own
start-up (~2 s of imports) overlaps theirs. Once both servers answer, it creates the file
named by DOCSTORE_SERVICES_READY_FILE; the command waits for that file before it touches
them. Standard library only: this runs in pytest_configure.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from tests.harness.procs import services_timeout

READY_FILE_VARIABLE = "DOCSTORE_SERVICES_READY_FILE"
# The launcher's readiness deadline is TEST_SERVICES_TIMEOUT; this covers a port retry's
# respawn and a loaded machine.
MARGIN_S = 10.0
POLL_INTERVAL_S = 0.02

if TYPE_CHECKING:
    import pytest


class ServicesNotReadyError(RuntimeError):
    """The ready file did not appear in time, or the launcher is gone."""


def mark_ready(path: Path, env: Mapping[str, str]) -> None:
    """Create the ready file atomically: a reader sees no file or a complete one."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(dict(env), out)
    os.replace(tmp, path)


def wait_for_ready_file(path: Path, timeout_s: float, interval_s: float = POLL_INTERVAL_S) -> None:
    """Return once `path` exists; raise ServicesNotReadyError at the deadline."""
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if not path.parent.is_dir():
            raise ServicesNotReadyError(
                f"the embedded launcher is gone: its run directory {path.parent} (from "
                f"{READY_FILE_VARIABLE}) no longer exists, so the services never became ready"
            )
        if time.monotonic() >= deadline:
            raise ServicesNotReadyError(
                f"the embedded services were not ready within {timeout_s:g} s: {path} (named by "
                f"{READY_FILE_VARIABLE}) did not appear. The launcher (python -m "
                "tests.harness.services run) creates it once PostgreSQL and S3 answer; see its "
                "messages above. If you start the services yourself, unset "
                f"{READY_FILE_VARIABLE}; if the machine is just slow, raise TEST_SERVICES_TIMEOUT."
            )
        time.sleep(interval_s)


def wait_for_services_ready(environ: Mapping[str, str] | None = None) -> None:
    """Wait for the launcher's ready file if there is one to wait for; else return at once.

    Unset on the Docker path, with user-provided URLs, and with TEST_EMBEDDED_SERVICES (which
    starts the services in-process, ready before pytest goes on).
    """
    environ = os.environ if environ is None else environ
    name = environ.get(READY_FILE_VARIABLE, "").strip()
    if name:
        wait_for_ready_file(Path(name), services_timeout() + MARGIN_S)


def wait_for_services_or_exit(config: pytest.Config) -> None:
    """pytest_configure's side of the hand-over: exit with a clear message at the deadline.

    xdist workers skip it: their controller waited before it started them.
    """
    if hasattr(config, "workerinput"):
        return
    try:
        wait_for_services_ready()
    except ServicesNotReadyError as exc:
        import pytest  # already loaded in pytest; the launcher never calls this

        pytest.exit(str(exc), returncode=pytest.ExitCode.USAGE_ERROR)
