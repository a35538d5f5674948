"""Fault injection against the real servers: pause one and always resume it.

`server_faults.paused("postgres")` (or `"s3"`) freezes the server the run's targets point at,
so connections to it open (the kernel still accepts them) but nothing answers, which is what
a stalled disk, a GC pause or a hung host look like to a client. Embedded: SIGSTOP/SIGCONT of
the server's process group and of its children (PostgreSQL's backends lead groups of their
own); the run directory's state file names the pid, which must also serve the target's port.
Docker: `docker pause`/`docker unpause` of the container publishing the port.

Resumed when the block ends, whatever happened in it, or by a watchdog at its deadline; then
the block waits (with a deadline) until the server has read what queued meanwhile. A server
the harness did not start is never paused, nor one shared with other xdist workers: the test
is skipped, saying why.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from .config import HarnessConfig, embedded_settings
from .embedded.readiness import ready_file_of
from .embedded.rundir import STATE_FILE, RunState, pause_lock
from .process import (
    can_watch_sockets,
    cmdline,
    exclusive_lock,
    is_same_process,
    pause_tree,
    poll_until,
    queued_sockets,
    resume_tree,
)
from .services import kinds_of, service_urls

DEFAULT_MAX_PAUSE_S = 30.0
DRAIN_TIMEOUT_S = 10.0
DOCKER_TIMEOUT_S = 15.0
POLL_S = 0.02
UNDER_XDIST = (
    "pausing the run's servers would stall the other xdist workers' tests too: "
    "run the tests that pause servers without -n"
)


class PauseUnavailableError(RuntimeError):
    """This service cannot be paused here; str() says why (the skip reason)."""


class PauseDeadlineError(AssertionError):
    """The block outlived its deadline: the watchdog resumed the server before the block ended."""


@dataclass(frozen=True)
class Pausable:
    """One server that can be frozen: how, and the port its clients use."""

    service: str
    port: int
    description: str  # e.g. "embedded postgres, process group 1234"
    pause: Callable[[], None] = field(repr=False)
    resume: Callable[[], None] = field(repr=False)
    # Where its listening socket can be watched: a process in its network namespace (None:
    # not visible from here), and the port it listens on there.
    # namespace, and the port it listens on there (None: not visible from here).
    net_pid: int | None = os.getpid()
    net_port: int = 0


def service_ports(config: HarnessConfig) -> dict[str, int]:
    """The port of each service the run's targets name."""
    ports = {}
    for service, url in service_urls(config).items():
        with contextlib.suppress(ValueError):
            port = urlsplit(url).port
            if port:
                ports[service] = port
    return ports


def _serves_port(pid: int, port: int) -> bool:
    text = str(port)
    return any(arg == text or arg.endswith("=" + text) for arg in cmdline(pid))


class _LockedPause:
    """SIGSTOP of an embedded server's process tree while holding its pause lock (rundir's
    pause_lock), so a later run can tell a server left paused by a run that died (the kernel
    drops the lock with the process) from one another live run has paused."""

    def __init__(self, leader: int, lock: Path) -> None:
        self.leader, self.lock = leader, lock
        self._held: contextlib.ExitStack | None = None

    def pause(self) -> None:
        held = contextlib.ExitStack()
        if not held.enter_context(exclusive_lock(self.lock)):
            held.close()
            raise PauseUnavailableError(f"another run holds {self.lock}: it has paused the server")
        self._held = held
        pause_tree(self.leader)

    def resume(self) -> None:
        resume_tree(self.leader)
        if self._held is not None:
            self.lock.unlink(missing_ok=True)
            self._held.close()
            self._held = None


def _run_base(config: HarnessConfig, env: Mapping[str, str]) -> Path | None:
    with contextlib.suppress(OSError, ValueError):
        return embedded_settings(config.project, env).run_base
    return None


def _run_dirs(config: HarnessConfig, env: Mapping[str, str]) -> list[Path]:
    dirs = []
    ready = ready_file_of(config.project, env)
    if ready is not None:
        dirs.append(ready.parent)
    base = _run_base(config, env)
    if base is not None:
        with contextlib.suppress(OSError):
            dirs += sorted(base.glob("run-*"))
    return dirs


def embedded_servers(config: HarnessConfig, env: Mapping[str, str]) -> dict[str, Pausable]:
    """The embedded servers (launcher, warm services or in-process) serving the run's ports:
    live children recorded in a run directory's state file whose command line names the port
    and that lead their own process group."""
    ports = service_ports(config)
    # The program each embedded service runs (rundir.Child.program), as the launcher records it.
    embedded_programs = {kind.name: kind.embedded_program for kind in kinds_of(config.project)}
    found: dict[str, Pausable] = {}
    base = _run_base(config, env) or Path(tempfile.gettempdir())
    for run in _run_dirs(config, env):
        try:
            state = RunState.load((run / STATE_FILE).read_text())
        except (OSError, ValueError, KeyError, TypeError):
            continue
        for child in reversed(state.children):  # the newest entry is the live server
            for service, program in embedded_programs.items():
                port = ports.get(service)
                if service in found or child.program != program or port is None:
                    continue
                if not is_same_process(child.pid, child.start) or not _serves_port(child.pid, port):
                    continue
                with contextlib.suppress(OSError):
                    if os.getpgid(child.pid) != child.pid:
                        continue
                    pgid = child.pid
                    locked = _LockedPause(pgid, pause_lock(base, pgid))
                    found[service] = Pausable(
                        service,
                        port,
                        f"embedded {service}, process group {pgid}",
                        pause=locked.pause,
                        resume=locked.resume,
                        net_port=port,
                    )
    return found


def _docker(*args: str) -> str:
    docker = shutil.which("docker")
    if docker is None:
        raise PauseUnavailableError("no docker command")
    done = subprocess.run(
        [docker, *args], capture_output=True, text=True, timeout=DOCKER_TIMEOUT_S, check=False
    )
    if done.returncode != 0:
        raise PauseUnavailableError(f"docker {args[0]} failed: {done.stderr.strip()[:300]}")
    return done.stdout


def _docker_do(command: str, container: str) -> None:
    _docker(command, container)


def docker_containers(config: HarnessConfig, env: Mapping[str, str]) -> dict[str, Pausable]:
    """The containers publishing the run's ports (tox-docker's), paused with `docker pause`."""
    ports = service_ports(config)
    local_daemon = env.get("DOCKER_HOST", "unix://").startswith("unix://")
    found: dict[str, Pausable] = {}
    for line in _docker("ps", "--format", "{{.ID}}\t{{.Ports}}").splitlines():
        container, _, published = line.partition("\t")  # "0.0.0.0:49153->5432/tcp, ..."
        inside = dict(re.findall(r":(\d+)->(\d+)/tcp", published))
        for service, port in ports.items():
            if str(port) in inside and service not in found:
                pid = _docker("inspect", "-f", "{{.State.Pid}}", container).strip()
                found[service] = Pausable(
                    service,
                    port,
                    f"docker container {container}",
                    pause=functools.partial(_docker_do, "pause", container),
                    resume=functools.partial(_docker_do, "unpause", container),
                    net_pid=int(pid) if local_daemon and can_watch_sockets(int(pid)) else None,
                    net_port=int(inside[str(port)]),
                )
    return found


def wait_drained(server: Pausable, timeout_s: float = DRAIN_TIMEOUT_S) -> None:
    """Wait until `server` has read everything queued for it (while it was paused), when its
    sockets are visible from here; AssertionError at the deadline."""
    watched = server.net_pid
    if watched is None:
        return
    if not poll_until(
        lambda: queued_sockets(watched, server.net_port) == 0,
        timeout_s=timeout_s,
        interval_s=POLL_S,
    ):
        queued = queued_sockets(watched, server.net_port)
        raise AssertionError(
            f"{server.description} still had {queued} socket(s) with unread input "
            f"{timeout_s:g} s after it was resumed"
        )


class ServerFaults:
    """Pause and resume the run's servers; see the module docstring."""

    def __init__(self, config: HarnessConfig, env: Mapping[str, str]) -> None:
        self._config = config
        self._env = env
        self._found: dict[str, Pausable] | None = None
        self._why_not = ""
        self._active: list[Callable[[], None]] = []

    def target(self, service: str) -> Pausable:
        """The pausable server of `service`; PauseUnavailableError says why there is none."""
        known = [kind.name for kind in kinds_of(self._config.project)]
        if service not in known:
            raise ValueError(f"service must be one of {known}, not {service!r}")
        if self._found is None:
            self._found = embedded_servers(self._config, self._env)
            if len(self._found) < len(service_ports(self._config)):
                try:
                    self._found = docker_containers(self._config, self._env) | self._found
                except (PauseUnavailableError, OSError, subprocess.SubprocessError) as exc:
                    self._why_not = f" ({exc})"
        if service not in self._found:
            raise PauseUnavailableError(
                f"{service}: pausing needs a server the harness started, embedded (launcher, "
                f"warm services, TEST_EMBEDDED_SERVICES=1) or a Docker container publishing "
                f"port {service_ports(self._config).get(service, '?')}; none was found"
                f"{self._why_not}"
            )
        return self._found[service]

    @contextlib.contextmanager
    def paused(self, service: str, *, max_s: float = DEFAULT_MAX_PAUSE_S) -> Iterator[Pausable]:
        """Freeze `service` for the block (skip the test if it cannot be paused here). It is
        resumed at the block's end, or by a watchdog after `max_s` seconds (then the block
        fails with PauseDeadlineError); then this waits until it has drained its queue."""
        try:
            server = self.target(service)
            server.pause()
        except PauseUnavailableError as exc:
            pytest.skip(str(exc))
        lock = threading.Lock()
        state = {"resumed": False, "by_watchdog": False}

        def resume(by_watchdog: bool = False) -> None:
            with lock:
                if not state["resumed"]:
                    state["resumed"], state["by_watchdog"] = True, by_watchdog
                    server.resume()

        watchdog = threading.Timer(max_s, resume, kwargs={"by_watchdog": True})
        watchdog.daemon = True
        self._active.append(resume)
        watchdog.start()
        failed = True
        try:
            yield server
            failed = False
        finally:
            watchdog.cancel()
            resume()
            self._active.remove(resume)
            try:
                wait_drained(server)
            except AssertionError:
                if not failed:  # never hide the block's own failure behind this one
                    raise
        if state["by_watchdog"]:
            raise PauseDeadlineError(
                f"{server.description} was paused longer than {max_s:g} s; the watchdog resumed it"
            )

    def resume_all(self) -> None:
        """Resume whatever is still paused (the fixture's teardown)."""
        for resume in list(self._active):
            resume()


@pytest.fixture
def server_faults(
    request: pytest.FixtureRequest, harness_config: HarnessConfig
) -> Iterator[ServerFaults]:
    """Pause and resume the run's real servers: `with server_faults.paused("s3"): ...`."""
    if hasattr(request.config, "workerinput"):
        pytest.skip(UNDER_XDIST)
    faults = ServerFaults(harness_config, dict(os.environ))
    try:
        yield faults
    finally:
        faults.resume_all()
