"""Server processes: the unprivileged user, free ports, spawning with the parent-death signal,
stopping, readiness polling with a deadline, and the errors the launcher reports."""

from __future__ import annotations

import contextlib
import ctypes
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

LOG_TAIL_LINES = 20
_PR_SET_PDEATHSIG = 1
# Loaded before any fork: the child must not dlopen between fork and exec.
LIBC = ctypes.CDLL(None, use_errno=True)
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


def write_atomic(path: Path, text: str, mode: int = 0o600) -> None:
    """Write a file so that a reader sees no file or the whole of it, never a part."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def free_port() -> int:
    """A port that is free now; the server may still lose it (see PortTakenError)."""
    import socket  # not at import time: the launcher imports this before starting the command

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def choose_ports(count: int, chooser: Callable[[], int]) -> list[int]:
    """`count` distinct ports: the kernel may hand the same ephemeral port out twice."""
    ports: list[int] = []
    for _ in range(count * 20):
        port = chooser()
        if port not in ports:
            ports.append(port)
        if len(ports) == count:
            return ports
    raise HarnessSetupError(f"could not find {count} distinct free ports on 127.0.0.1")


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


def die_with_parent(parent_pid: int, sig: signal.Signals = signal.SIGKILL) -> Callable[[], None]:
    """A preexec_fn: the child gets `sig` when the thread that started it exits."""

    def preexec() -> None:
        # subprocess switches user before calling this, so the setting survives the
        # switch (a credential change would clear it).
        LIBC.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


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


def descendants(root: int) -> set[int]:
    """Every process below `root` (PostgreSQL's backends lead process groups of their own)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def signal_tree(leader: int, sig: signal.Signals) -> None:
    """`sig` to the leader's process group and to every process below it; for SIGSTOP the
    leader first (it forks no more), for SIGCONT the leader last."""
    targets = sorted(descendants(leader))
    if sig == signal.SIGSTOP:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(leader, sig)
        targets = sorted(descendants(leader))  # now a fixed set: the leader is stopped
    for pid in targets:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    if sig != signal.SIGSTOP:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(leader, sig)


def is_stopped(pid: int) -> bool:
    """Stopped by a signal (state T or t); True on doubt, when /proc cannot say."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rindex(")") + 2] in "Tt"
    except (OSError, ValueError, IndexError):
        return True


def stop_process(proc: subprocess.Popen[bytes], sig: signal.Signals, grace_s: float = 5.0) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        # A server paused by a fault test (realstack/faults.py) must run to handle `sig`,
        # and so must its children (PostgreSQL's backends, in groups of their own). A pause
        # stops the leader first and a resume continues it last, so a running leader means
        # nothing of its tree is stopped: skip the walk over /proc (~2 ms, more on busy hosts).
        paused = is_stopped(proc.pid)
        proc.send_signal(sig)
        if paused and os.getpgid(proc.pid) == proc.pid:
            signal_tree(proc.pid, signal.SIGCONT)
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
    last_error = "none yet"
    while True:
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
            return
        except Exception as exc:  # any failure of the probe means "not ready yet"
            last_error = f"{type(exc).__name__}: {exc}"
        if time.monotonic() >= ready.deadline:
            raise ServiceStartError(
                f"{ready.name} was not ready at {ready.address} within {ready.timeout_s:g} s; "
                f"last probe error: {last_error}.\n{log_tail(ready.logs)}\n"
                f"fix: if the machine is just slow, raise {TEST_SERVICES_TIMEOUT.name} (seconds)"
            )
        cancel.wait(ready.interval_s)


@contextlib.contextmanager
def signals_blocked() -> Iterator[None]:
    """Let cleanup finish even if a second Ctrl-C or SIGTERM arrives meanwhile."""
    sigs = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
