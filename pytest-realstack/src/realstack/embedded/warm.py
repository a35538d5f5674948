"""Warm services for the inner loop: `up` keeps the embedded servers running in a detached
supervisor and publishes them in the project's services file; a test run reads it
(load_warm_services); `down` stops them. Standard library only at import time: pytest
reads the file before collection.

The services file (EmbeddedSettings.services_file): JSON, written atomically, in the run base
(tmpfs where there is one: it goes with a reboot, as the servers do), one per project checkout:

    {"format": 1, "project": "/path/to/checkout",
     "supervisor": {"pid": 4242, "started": 123456},
     "variables": {"POSTGRES_HOST": "127.0.0.1", "POSTGRES_PORT": "40123", ...}}

Only the contract's known variables are read from it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TextIO

from ..config import EmbeddedSettings
from ..contract import POSTGRES_HOST, POSTGRES_PORT, VARIABLES
from ..process import (
    children,
    cmdline,
    connect_error,
    descendants,
    exclusive_lock,
    is_same_process,
    is_stopped,
    poll_until,
    resume_tree,
    start_time,
    write_atomic,
)
from ..project import Project
from ..services import kinds_of
from .rundir import ensure_base, pause_lock, tidy_base

STOP_TIMEOUT_S = 30.0
COMMAND = f"python -m {__package__}"
FORMAT = 1
_KNOWN = frozenset(variable.name for variable in VARIABLES)


class StaleServicesError(RuntimeError):
    """The services file names services that no longer run; str() says the fix."""


class ServicesFile:
    """What the services file says: the supervisor (pid and start time) and the variables."""

    def __init__(
        self, path: Path, supervisor: tuple[int, float] | None, variables: dict[str, str]
    ) -> None:
        self.path = path
        self.supervisor = supervisor
        self.variables = variables

    @classmethod
    def read(cls, path: Path, down: str = f"{COMMAND} down") -> ServicesFile | None:
        """None when there is no file; StaleServicesError when it is not one of ours (its
        message names `down`, the command that removes it)."""
        try:
            data: Any = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise StaleServicesError(
                f"{path} is not a services file the harness wrote ({type(exc).__name__}).\n"
                f"  fix:  `{down}` removes it, or delete it"
            ) from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise StaleServicesError(
                f"{path} is not a services file of this harness (format {FORMAT} expected).\n"
                f"  fix:  `{down}` removes it, or delete it"
            )
        supervisor = data.get("supervisor") or {}
        try:
            owner = (int(supervisor["pid"]), float(supervisor["started"]))
        except (KeyError, TypeError, ValueError):
            owner = None
        raw = data.get("variables") or {}
        variables = {
            str(k): str(v) for k, v in (raw.items() if isinstance(raw, dict) else ()) if k in _KNOWN
        }
        return cls(path, owner, variables)

    def supervisor_alive(self, settings: EmbeddedSettings | None = None) -> bool:
        """The named supervisor runs (and, given the settings, is this checkout's: a file
        naming some other live process is not believed)."""
        if self.supervisor is None or not is_same_process(*self.supervisor):
            return False
        if settings is None:
            return True
        tail = supervise_argv(settings)
        return cmdline(self.supervisor[0])[-len(tail) :] == tail


def write_services_file(path: Path, project: Project, env: Mapping[str, str]) -> None:
    pid = os.getpid()
    document = {
        "format": FORMAT,
        "written_by": f"`{COMMAND} up`; `{COMMAND} down` stops the services and removes it",
        "project": str(project.root),
        "supervisor": {"pid": pid, "started": start_time(pid)},
        "variables": {k: v for k, v in env.items() if k in _KNOWN},
    }
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomic(path, json.dumps(document, indent=2) + "\n")


def _port_answers(host: str, port: str) -> bool:
    return port.isdigit() and connect_error(host, int(port), timeout_s=1.0) is None


def _endpoints(project: Project) -> list[tuple[str, str]]:
    """(host key, port key) of each service the project uses."""
    return [(kind.host.name, kind.port.name) for kind in kinds_of(project)]


def ports_line(project: Project, values: Mapping[str, str]) -> str:
    """Each of the project's warm services and its port: "PostgreSQL on port 5432, S3 on
    port 9000"."""
    return ", ".join(
        f"{kind.describe} on port {values.get(kind.port.name, '?')}" for kind in kinds_of(project)
    )


def load_warm_services(
    settings: EmbeddedSettings, tell: Callable[[str], None] | None = None
) -> dict[str, str] | None:
    """The service variables of live warm services; None without a services file.

    Raises StaleServicesError when the file names services that no longer run. Changes
    nothing: the caller decides whether the values apply.
    """
    found = ServicesFile.read(settings.services_file, settings.warm_down_command)
    if found is None:
        return None
    values = found.variables
    alive = found.supervisor_alive(settings)
    dead = [] if alive else [f"supervisor {found.supervisor or '?'}"]
    if alive and found.supervisor is not None:
        resumed = resume_left_paused(settings.run_base, found.supervisor[0])
        if resumed:
            (tell or _to_stderr)(
                f"harness: resumed the warm server(s) {', '.join(resumed)}: a run that was "
                "killed while server_faults paused them left them stopped (SIGSTOP)"
            )
    for host_key, port_key in _endpoints(settings.project):
        if not _port_answers(values.get(host_key, "127.0.0.1"), values.get(port_key, "")):
            dead.append(f"{port_key}={values.get(port_key, '?')}")
    if dead:
        raise StaleServicesError(
            f"{found.path} names warm services that are not running ({', '.join(dead)} not "
            f"answering).\n  fix:  `{settings.warm_up_command}` to start them again, or "
            f"`{settings.warm_down_command}` to remove the file and use a fresh set per run."
        )
    return values


def warm_services_named(settings: EmbeddedSettings, env: Mapping[str, str]) -> dict[str, str]:
    """Those variables of this checkout's live warm services that `env` holds unchanged, when
    it names their PostgreSQL (POSTGRES_HOST/POSTGRES_PORT), as `run -- CMD` on warm services
    hands them to CMD; else {}. Reads the file, changes nothing."""
    try:
        found = ServicesFile.read(settings.services_file, settings.warm_down_command)
    except StaleServicesError:
        return {}
    if found is None or not found.supervisor_alive(settings):
        return {}
    keys = (POSTGRES_HOST.name, POSTGRES_PORT.name)
    same = {k: v for k, v in found.variables.items() if env.get(k, "").strip() == v}
    return same if all(key in same for key in keys) else {}


def warm_hint(settings: EmbeddedSettings, postgres_port: int | None) -> str:
    """For a server that did not answer: when it is this checkout's warm PostgreSQL, a line
    naming the services file and the commands that replace it; else ""."""
    try:
        found = ServicesFile.read(settings.services_file, settings.warm_down_command)
    except StaleServicesError:
        return ""
    if found is None or found.variables.get(POSTGRES_PORT.name) != str(postgres_port):
        return ""
    return (
        f"\n  note: that is the warm PostgreSQL of {found.path}; "
        f"`{settings.warm_down_command}` stops the warm services and removes the file (runs "
        f"then start their own), `{settings.warm_up_command}` afterwards starts fresh ones"
    )


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def resume_left_paused(run_base: Path, supervisor: int) -> list[str]:
    """SIGCONT the supervisor's servers that are stopped while nobody holds their pause lock
    (a run killed while it paused them); a server another live run has paused is left alone.
    Returns what was resumed, e.g. ["postgres (pid 4242)"]."""
    resumed = []
    for leader in sorted(children(supervisor)):
        tree = {leader, *descendants(leader)}
        if not any(is_stopped(pid) for pid in tree):
            continue
        lock = pause_lock(run_base, leader)
        with exclusive_lock(lock) as free:
            if free:
                resume_tree(leader)
                lock.unlink(missing_ok=True)
                name = (cmdline(leader)[:1] or ["server"])[0].rsplit("/", 1)[-1]
                resumed.append(f"{name} (pid {leader})")
    return resumed


def supervise(settings: EmbeddedSettings, report: TextIO) -> int:
    """The detached supervisor (`python -m realstack.embedded supervise`, started by `up`):
    start the servers, publish the services file, say READY on `report` (then close it), and
    wait for `down` (SIGTERM), SIGINT or SIGHUP."""
    # One supervisor per checkout: a second `up` started at the same time finds the lock held
    # and changes nothing; the lock goes with this process, however it ends.
    lock = supervisor_lock(settings)
    ensure_base(settings.run_base, None)  # 0755: the servers' user checks it in RunDir.create
    try:
        with exclusive_lock(lock) as mine:
            if not mine:
                report.write("ALREADY\n")
                return 0
            try:
                return _supervise_locked(settings, report)
            finally:
                lock.unlink(missing_ok=True)  # while held: the next `up` takes a new one
    finally:
        tidy_base(settings.run_base)


def supervisor_lock(settings: EmbeddedSettings) -> Path:
    return settings.services_file.with_suffix(".lock")


def supervise_argv(settings: EmbeddedSettings) -> list[str]:
    """The supervisor's command line after the interpreter: how `clean` recognises one."""
    pyproject = settings.project.root / "pyproject.toml"
    return ["-m", __package__, "--project", str(pyproject), "supervise"]


def _supervise_locked(settings: EmbeddedSettings, report: TextIO) -> int:
    from .launcher import start_embedded_services

    try:
        running = start_embedded_services(settings, report=report)
    except Exception as error:
        report.write(f"ERROR {error}\n")
        return 3
    # Blocked only now: the servers must not inherit a blocked mask.
    stop_signals = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    try:
        write_services_file(settings.services_file, settings.project, running.env)
        report.write(f"READY {settings.services_file}\n")
        report.flush()
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, report.fileno())  # `up` has what it needed; it may exit now
        signal.sigwait(stop_signals)
    finally:
        _remove_if_ours(settings.services_file)
        running.stop()
    return 0


def _remove_if_ours(path: Path) -> None:
    """Remove the services file only if it names this supervisor: never another's."""
    try:
        found = ServicesFile.read(path)
    except StaleServicesError:
        return
    if found is not None and found.supervisor is not None and found.supervisor[0] == os.getpid():
        path.unlink(missing_ok=True)


def services_up(settings: EmbeddedSettings) -> int:
    """Start warm services in a detached supervisor; 0 once they answer, 3 if they cannot."""
    path = settings.services_file
    try:
        if load_warm_services(settings) is not None:
            print(
                f"services up: already running ({path}); `{settings.warm_down_command}` stops them."
            )
            return 0
    except StaleServicesError:
        path.unlink(missing_ok=True)
    # Its own session, so the terminal's Ctrl-C spares it; it outlives this command.
    supervisor = subprocess.Popen(
        [sys.executable, *supervise_argv(settings)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        text=True,
    )
    assert supervisor.stdout is not None
    with supervisor.stdout as report:
        for line in report:
            if line.startswith("READY"):
                print(f"services up: ready; the tests use them while {path} exists.")
                print(f"  `{settings.warm_down_command}` stops them.")
                return 0
            if line.startswith("ALREADY"):
                print(f"services up: already running (another `up` started them); {path}.")
                return 0
            if line.startswith("ERROR"):
                print(f"services up: {line.removeprefix('ERROR ').strip()}", file=sys.stderr)
                return 3
            print(line, end="", file=sys.stderr)
    print("services up: the supervisor exited before the services were ready", file=sys.stderr)
    return 3


def services_down(settings: EmbeddedSettings) -> int:
    """Stop the warm services and remove the services file; 1 if they would not stop."""
    path = settings.services_file
    try:
        found = ServicesFile.read(path)
    except StaleServicesError:
        found = ServicesFile(path, None, {})
    if found is None:
        print(f"services down: no warm services (no {path}).")
        return 0
    if found.supervisor is None or not found.supervisor_alive():
        path.unlink(missing_ok=True)
        print("services down: the services were already gone; removed the stale file.")
        return 0
    pid, started = found.supervisor
    os.kill(pid, signal.SIGTERM)
    if not poll_until(lambda: not is_same_process(pid, started), timeout_s=STOP_TIMEOUT_S):
        print(
            f"services down: supervisor {pid} did not stop in {STOP_TIMEOUT_S:g} s", file=sys.stderr
        )
        return 1
    print("services down: stopped; the tests start their own services again.")
    return 0
