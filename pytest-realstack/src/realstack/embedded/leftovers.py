"""`clean`: remove what killed runs left behind, and say what was removed.

Embedded runs: server processes and run directories of dead launchers (the same sweep every
start does). Schemas and buckets: those whose stamp names this machine and a dead process,
on the services the tests would use now (the variables, or the warm services file), kept
ones included since you asked. Never a live run's, never anything unstamped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Mapping
from typing import TextIO

from ..config import EmbeddedSettings
from ..process import is_same_process, poll_until, processes_running, start_time
from ..services import kinds_of
from .pg_cluster import release_shared_memory
from .rundir import sweep_dead_runs
from .warm import (
    STOP_TIMEOUT_S,
    ServicesFile,
    StaleServicesError,
    load_warm_services,
    supervise_argv,
)

PREFIX = "clean-leftovers:"


def service_variables(settings: EmbeddedSettings, env: Mapping[str, str]) -> dict[str, str]:
    """The services the tests would use now: `env`, with live warm services' values on top."""
    warm: dict[str, str] = {}
    # Stale warm services are gone already: nothing of theirs to clean.
    with contextlib.suppress(StaleServicesError):
        warm = load_warm_services(settings) or {}
    return {**env, **warm}


def _stop(pid: int) -> bool:
    """SIGTERM a supervisor and wait (bounded) until it is gone; True if it is."""
    started = start_time(pid)
    if started is None:
        return True
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    return bool(poll_until(lambda: not is_same_process(pid, started), timeout_s=STOP_TIMEOUT_S))


def stop_untracked_supervisors(settings: EmbeddedSettings) -> list[str]:
    """Stop the warm-services supervisors of this checkout that its services file does not name
    (two `up`s raced before the lock existed, or the file was deleted): they would keep their
    servers up forever, unseen by `down`."""
    tracked = None
    with contextlib.suppress(StaleServicesError):
        found = ServicesFile.read(settings.services_file)
        if found is not None and found.supervisor is not None and found.supervisor_alive():
            tracked = found.supervisor[0]
    stopped = []
    for pid in processes_running(supervise_argv(settings)):
        if pid in {tracked, os.getpid()}:
            continue
        if _stop(pid):
            stopped.append(f"untracked warm-services supervisor, pid {pid} (and its servers)")
    return stopped


def clean(settings: EmbeddedSettings, env: Mapping[str, str], report: TextIO = sys.stdout) -> int:
    """Sweep dead runs, then dead runs' schemas and buckets; 0, or 1 if a service failed."""
    project = settings.project
    removed = stop_untracked_supervisors(settings)
    removed += [
        f"embedded run directory {run} (and its servers)"
        for run in sweep_dead_runs(
            settings.run_base, on_dead_run=lambda d: release_shared_memory(d / "pg")
        )
    ]
    variables = service_variables(settings, env)
    failed = False
    named = []
    for kind in kinds_of(project):
        where = kind.where(project, variables)
        if not where:
            continue
        named.append(where)
        try:
            removed += asyncio.run(kind.sweep_dead(project, variables, True))
        except Exception as exc:  # a service that is down: say so, go on with the rest
            failed = True
            print(f"{PREFIX} could not check {kind.describe} at {where}: {exc}", file=report)
    if not named:
        print(
            f"{PREFIX} no running services named (what embedded servers held dies with "
            "them); checked embedded run directories only.",
            file=report,
        )
    for line in removed:
        print(f"{PREFIX} removed {line}", file=report)
    if not removed and not failed:
        print(f"{PREFIX} nothing left behind.", file=report)
    return 1 if failed else 0
