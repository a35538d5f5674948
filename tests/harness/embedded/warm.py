"""Warm services for the inner loop: `up` keeps the embedded servers running in a detached
supervisor and writes their variables to the project's services file; a test run reads it
(load_warm_services); `down` stops them. Standard library only at import time: pytest
reads the file before collection.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from ..config import EmbeddedSettings
from ..project import Project
from .rundir import proc_start_time

STOP_TIMEOUT_S = 30.0
COMMAND = f"python -m {__package__}"


class StaleServicesError(RuntimeError):
    """The services file names services that no longer run; str() says the fix."""


def pid_keys(project: Project) -> tuple[str, str]:
    """The keys naming the supervisor (pid and start time) in the services file."""
    prefix = project.env_prefix
    return f"{prefix}_SERVICES_PID", f"{prefix}_SERVICES_PID_START"


def read_services_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip().removeprefix("export ")
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip().strip("'")
    return values


def _supervisor_alive(project: Project, values: Mapping[str, str]) -> bool:
    pid_key, start_key = pid_keys(project)
    try:
        pid, started = int(values[pid_key]), int(values[start_key])
    except (KeyError, ValueError):
        return False
    return proc_start_time(pid) == started  # same pid and not a reused one


def _port_answers(host: str, port: str) -> bool:
    try:
        with socket.create_connection((host, int(port)), timeout=1.0):
            return True
    except (OSError, ValueError):
        return False


def _endpoints(project: Project) -> list[tuple[str, str]]:
    """(host key, port key) of each service the project uses."""
    pairs = [("POSTGRES_HOST", "POSTGRES_PORT")]
    return [*pairs, ("MINIO_HOST", "MINIO_PORT")] if project.uses_s3 else pairs


def load_warm_services(project: Project, path: Path | None = None) -> dict[str, str] | None:
    """The service variables of live warm services; None without a services file.

    Raises StaleServicesError when the file names services that no longer run. Changes
    nothing: the caller decides whether the values apply.
    """
    path = project.services_file if path is None else path
    if not path.exists():
        return None
    values = read_services_file(path)
    pid_key, start_key = pid_keys(project)
    alive = _supervisor_alive(project, values)
    dead = [] if alive else [f"supervisor pid {values.get(pid_key, '?')}"]
    for host_key, port_key in _endpoints(project):
        if not _port_answers(values.get(host_key, "127.0.0.1"), values.get(port_key, "")):
            dead.append(f"{port_key}={values.get(port_key, '?')}")
    if dead:
        raise StaleServicesError(
            f"{path} names warm services that are not running ({', '.join(dead)} not "
            f"answering).\n  fix:  `{COMMAND} up` to start them again, or `{COMMAND} down` to "
            "remove the file and use a fresh set per run."
        )
    return {k: v for k, v in values.items() if k not in {pid_key, start_key}}


def _write_services_file(project: Project, env: Mapping[str, str], path: Path) -> None:
    pid = os.getpid()
    pid_key, start_key = pid_keys(project)
    lines = [
        f"# Written by `{COMMAND} up`; removed by `{COMMAND} down`.",
        "# The tests use these services while this file exists.",
        *(f"export {key}='{value}'" for key, value in env.items()),
        f"export {pid_key}={pid}",
        f"export {start_key}={proc_start_time(pid)}",
    ]
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write("\n".join(lines) + "\n")
    os.replace(tmp, path)


def _supervise(report_fd: int, settings: EmbeddedSettings, path: Path) -> None:
    """The detached process: start the servers, publish the file, wait for `down`."""
    from .launcher import start_embedded_services

    with os.fdopen(report_fd, "w") as report:
        try:
            running = start_embedded_services(settings, report=report)
        except Exception as error:
            report.write(f"ERROR {error}\n")
            return
        # Blocked only now: the servers must not inherit a blocked mask.
        stop_signals = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
        signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
        _write_services_file(settings.project, running.env, path)
        report.write(f"READY {path}\n")
    try:
        signal.sigwait(stop_signals)
    finally:
        path.unlink(missing_ok=True)
        running.stop()


def services_up(settings: EmbeddedSettings, path: Path | None = None) -> int:
    """Start warm services in a detached supervisor; 0 once they answer, 3 if they cannot."""
    path = settings.project.services_file if path is None else path
    try:
        if load_warm_services(settings.project, path) is not None:
            print(f"services up: already running ({path}); `{COMMAND} down` stops them.")
            return 0
    except StaleServicesError:
        path.unlink()
    read_fd, write_fd = os.pipe()
    if os.fork() == 0:  # the supervisor: its own session, so the terminal's Ctrl-C spares it
        os.close(read_fd)
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        try:
            _supervise(write_fd, settings, path)
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd) as report:
        for line in report:
            if line.startswith("READY"):
                print(f"services up: ready; the tests use them while {path.name} exists.")
                print(f"  `{COMMAND} down` stops them.")
                return 0
            if line.startswith("ERROR"):
                print(f"services up: {line.removeprefix('ERROR ').strip()}", file=sys.stderr)
                return 3
            print(line, end="", file=sys.stderr)
    print("services up: the supervisor exited before the services were ready", file=sys.stderr)
    return 3


def services_down(project: Project, path: Path | None = None) -> int:
    """Stop the warm services and remove the services file; 1 if they would not stop."""
    path = project.services_file if path is None else path
    if not path.exists():
        print(f"services down: no warm services (no {path.name}).")
        return 0
    values = read_services_file(path)
    if not _supervisor_alive(project, values):
        path.unlink()
        print("services down: the services were already gone; removed the stale file.")
        return 0
    pid = int(values[pid_keys(project)[0]])
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while proc_start_time(pid) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    if proc_start_time(pid) is not None:
        print(
            f"services down: supervisor {pid} did not stop in {STOP_TIMEOUT_S:g} s", file=sys.stderr
        )
        return 1
    print("services down: stopped; the tests start their own services again.")
    return 0
