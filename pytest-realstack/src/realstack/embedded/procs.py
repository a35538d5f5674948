"""Launching the servers: the unprivileged user, spawning with the parent-death signal, stopping,
readiness polling with a deadline, and the errors the launcher reports. What a process is, and
waits in general, belong to the process layer (realstack/process.py)."""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..contract import TEST_SERVICES_TIMEOUT
from ..process import die_with_parent, is_stopped, poll_until, resume_tree

LOG_TAIL_LINES = 20
_PORT_CONFLICT = re.compile(
    r"could not bind|address already in use|Port allocation failed", re.IGNORECASE
)


class ServiceStartError(RuntimeError):
    """A server exited early or was not ready before the deadline."""


class HarnessSetupError(RuntimeError):
    """The machine cannot run the embedded services (binaries, user, directories)."""


class PortTakenError(RuntimeError):
    """The server lost its port to another process between choosing and binding it."""


class CancelledError(RuntimeError):
    """Another service failed, so this one stopped waiting."""


class StartAgain(RuntimeError):
    """A server failed as prepared but may start when prepared another way: launch() calls
    `restart` on the main thread (spawn needs it), then waits for the server once more."""

    def __init__(self, failure: ServiceStartError, restart: Callable[[], None]) -> None:
        super().__init__(str(failure))
        self.failure = failure
        self.restart = restart


@dataclass(frozen=True)
class RunAs:
    """The unprivileged user servers run as when the harness runs as root."""

    name: str
    uid: int
    gid: int

    def popen_kwargs(self) -> dict[str, Any]:
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


def server_user() -> RunAs | None:
    """None when not root: servers then run as the current user."""
    if os.geteuid() != 0:
        return None
    try:
        user = pwd.getpwnam("nobody")
    except KeyError:
        raise HarnessSetupError(
            "running as root, and PostgreSQL refuses to run as root, but there is no user "
            "'nobody' to run it as; fix: run the tests as an ordinary user"
        ) from None
    gid = user.pw_gid
    for group in ("nogroup", "nobody"):
        with contextlib.suppress(KeyError):
            gid = grp.getgrnam(group).gr_gid
            break
    return RunAs("nobody", user.pw_uid, gid)


def is_port_conflict(log_text: str) -> bool:
    return bool(_PORT_CONFLICT.search(log_text))


def exit_status(returncode: int) -> int:
    """Shell convention: a child killed by signal N counts as 128+N."""
    return 128 - returncode if returncode < 0 else returncode


def log_tail(paths: Sequence[Path], lines: int = LOG_TAIL_LINES) -> str:
    chunks = []
    for path in paths:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        tail = [line for line in text.splitlines() if line.strip()][-lines:]
        if tail:
            chunks.append(f"last lines of {path}:\n" + "\n".join("  " + t for t in tail))
    return "\n".join(chunks) or "(the log is empty)"


def spawn(
    argv: Sequence[str],
    *,
    log_path: Path,
    cwd: Path,
    run_as: RunAs | None,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start a server that dies with this process, in its own session so a terminal's
    Ctrl-C reaches the test command, not the servers under it."""
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError(
            "start the embedded services from the main thread: their parent-death signal "
            "(PR_SET_PDEATHSIG) fires when the starting *thread* exits, not the process"
        )
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=None if env is None else dict(env),
            start_new_session=True,
            preexec_fn=die_with_parent(os.getpid()),
            **(run_as.popen_kwargs() if run_as else {}),
        )


def stop_process(proc: subprocess.Popen[bytes], sig: signal.Signals, grace_s: float = 5.0) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        # A server paused by a fault test (realstack/faults.py) must run to handle `sig`,
        # and so must its children (PostgreSQL's backends, in groups of their own). A pause
        # stops the leader first and a resume continues it last, so a running leader means
        # nothing of its tree is stopped: skip the walk over the process table (~2 ms).
        paused = is_stopped(proc.pid)
        proc.send_signal(sig)
        if paused and os.getpgid(proc.pid) == proc.pid:
            resume_tree(proc.pid)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass
class Readiness:
    """What a service needs to poll for readiness and explain a failure."""

    name: str
    address: str
    proc: subprocess.Popen[bytes]
    logs: Sequence[Path]
    deadline: float  # time.monotonic() value
    timeout_s: float
    interval_s: float = 0.02


def wait_until_ready(ready: Readiness, probe: Callable[[], None], cancel: threading.Event) -> None:
    """Call `probe` until it stops raising; raise ServiceStartError or PortTakenError otherwise."""
    last_error = ["none yet"]

    def answered() -> bool:
        code = ready.proc.poll()
        if code is not None:
            tail = log_tail(ready.logs)
            if is_port_conflict(tail):
                raise PortTakenError(f"{ready.name}: port taken at {ready.address}")
            raise ServiceStartError(
                f"{ready.name} exited with code {code} before it was ready at {ready.address} "
                f"(deadline {ready.timeout_s:g} s).\n{tail}"
            )
        if cancel.is_set():
            raise CancelledError(ready.name)
        try:
            probe()
        except Exception as exc:  # any failure of the probe means "not ready yet"
            last_error[0] = f"{type(exc).__name__}: {exc}"
            return False
        return True

    remaining = max(0.0, ready.deadline - time.monotonic())
    if not poll_until(answered, timeout_s=remaining, interval_s=ready.interval_s, wait=cancel.wait):
        raise ServiceStartError(
            f"{ready.name} was not ready at {ready.address} within {ready.timeout_s:g} s; "
            f"last probe error: {last_error[0]}.\n{log_tail(ready.logs)}\n"
            f"fix: if the machine is just slow, raise {TEST_SERVICES_TIMEOUT.name} (seconds)"
        )


@contextlib.contextmanager
def signals_blocked() -> Iterator[None]:
    """Let cleanup finish even if a second Ctrl-C or SIGTERM arrives meanwhile."""
    sigs = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
