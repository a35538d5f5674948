"""The lowest layer: processes, waits, ports and files, for everything above it.

psutil answers every question about a process (its identity across pid reuse, its tree, whether
it is stopped), so nothing else reads /proc; `poll_until` and its async twin are the one way to
wait for a condition with a deadline; free loopback ports; files written atomically; and the
parent-death signal a child server gets from the thread that started it.

psutil is imported where it is used: the guard's path imports this module, and must stay light
(psutil's import is ~13 ms).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
_PR_SET_PDEATHSIG = 1
# Loaded before any fork: a child must not dlopen between fork and exec.
LIBC = ctypes.CDLL(None, use_errno=True)
# Start times written as clock ticks since boot (before psutil): never above this.
_LEGACY_TICKS_BELOW = 1e9


class PortsExhaustedError(RuntimeError):
    """The kernel would not hand out enough distinct free ports."""


def start_time(pid: int) -> float | None:
    """When process `pid` started (seconds since the epoch), or None when there is none. With
    the pid it identifies a process: a reused pid has another start time."""
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def pid_alive(pid: int) -> bool:
    """A process with this pid exists (perhaps another user's). Standard library only: the
    guard and the Makefile's Docker check ask it without psutil."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_same_process(pid: int, started: float) -> bool:
    """True while the process that had this pid and start time runs (a zombie counts, until it
    is reaped). A start time in clock ticks, written before psutil, only checks the pid."""
    now = start_time(pid)
    if now is None:
        return False
    return True if started < _LEGACY_TICKS_BELOW else now == started


def cmdline(pid: int) -> list[str]:
    """The process's argv, [] when it is gone or hidden."""
    import psutil

    try:
        return psutil.Process(pid).cmdline()
    except psutil.Error:
        return []


def children(pid: int) -> set[int]:
    """The processes `pid` started itself (not their children)."""
    import psutil

    try:
        return {child.pid for child in psutil.Process(pid).children()}
    except psutil.Error:
        return set()


def descendants(pid: int) -> set[int]:
    """Every process below `pid` (PostgreSQL's backends lead process groups of their own)."""
    import psutil

    try:
        return {child.pid for child in psutil.Process(pid).children(recursive=True)}
    except psutil.Error:
        return set()


def is_stopped(pid: int) -> bool:
    """Stopped by a signal (state T or t); True on doubt, when the process cannot be read."""
    import psutil

    try:
        status = psutil.Process(pid).status()
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True
    return status in {psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP}


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


def pause_tree(leader: int) -> None:
    signal_tree(leader, signal.SIGSTOP)


def resume_tree(leader: int) -> None:
    signal_tree(leader, signal.SIGCONT)


def poll_until(
    condition: Callable[[], T],
    *,
    timeout_s: float,
    interval_s: float = 0.05,
    wait: Callable[[float], object] = time.sleep,
) -> T | None:
    """Call `condition` until it returns something truthy, which is returned; None once
    `timeout_s` has passed (it is called one last time at the deadline). `wait` sleeps between
    calls: an Event's wait ends the sleep early when the event is set."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if result:
            return result
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        wait(min(interval_s, remaining))


async def apoll_until(
    condition: Callable[[], Awaitable[T]], *, timeout_s: float, interval_s: float = 0.05
) -> T | None:
    """The async twin of poll_until: await `condition` until it returns something truthy."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = await condition()
        if result:
            return result
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        await asyncio.sleep(min(interval_s, remaining))


# /proc/net/tcp states: the server closed nothing yet although the client did.
_CLOSE_WAIT = "08"


def can_watch_sockets(pid: int) -> bool:
    """Whether the TCP sockets of `pid`'s network namespace are readable from here."""
    return os.access(f"/proc/{pid}/net/tcp", os.R_OK)


def queued_sockets(pid: int, port: int) -> int:
    """Sockets on `port`, in `pid`'s network namespace, holding what their server has not read
    yet: unread bytes, unaccepted connections (a listening socket's rx_queue), or a client's
    close not yet answered. (psutil's connections do not give the queues.)"""
    queued = 0
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) != port:
                continue
            rx_queue = int(fields[4].split(":")[1], 16)
            if rx_queue > 0 or fields[3] == _CLOSE_WAIT:
                queued += 1
    return queued


_IPC_RMID = 0


def remove_unattached_shared_memory(key: int, shmid: int) -> bool:
    """Remove the SysV shared memory segment (key, shmid) if no process is attached to it
    any more (a server killed by SIGKILL leaves it); True if it was removed."""
    try:
        rows = Path("/proc/sysvipc/shm").read_text().splitlines()[1:]
    except OSError:
        return False
    for row in rows:
        fields = row.split()
        # nattch (field 7) == 0: no process is still attached.
        if fields[:2] == [str(key), str(shmid)] and fields[6] == "0":
            return bool(LIBC.shmctl(shmid, _IPC_RMID, None) == 0)
    return False


# exclusive_lock's tries when the file it locked was replaced meanwhile (each try needs another
# process to have unlinked and made it again in between): a bound, not a spin.
LOCK_ATTEMPTS = 20


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[bool]:
    """Try to hold an exclusive lock on `path` (created if missing, in a folder that must
    exist) for the block; yields whether this process got it. The kernel drops it when the
    process dies, however it dies. Its holder may unlink the file before it lets go: a lock
    taken on a file that is no longer at `path` is let go and `path` taken again."""
    import fcntl

    for _ in range(LOCK_ATTEMPTS):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            yield False
            return
        try:
            current = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        os.close(fd)
    else:  # replaced under us every time: others are taking and letting go of it; not ours
        yield False
        return
    try:
        yield True
    finally:
        os.close(fd)


def processes_running(argv_tail: list[str]) -> list[int]:
    """The pids of this user's processes whose argv ends with `argv_tail`."""
    import psutil

    found = []
    for proc in psutil.process_iter(["cmdline", "uids"]):
        argv = proc.info["cmdline"] or []
        uids = proc.info["uids"]
        if uids is not None and uids.real != os.getuid():
            continue
        if len(argv) >= len(argv_tail) and argv[-len(argv_tail) :] == argv_tail:
            found.append(proc.pid)
    return found


def connect_error(host: str, port: int, timeout_s: float) -> str | None:
    """None when a TCP connection to host:port opens within `timeout_s`; else why not."""
    try:
        with socket.create_connection((host, port), timeout_s):
            return None
    except OSError as exc:
        return str(exc.strerror or exc)


def free_port() -> int:
    """A loopback port that is free now; a server may still lose it before it binds."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def choose_ports(count: int, chooser: Callable[[], int] = free_port) -> list[int]:
    """`count` distinct ports: the kernel may hand the same ephemeral port out twice."""
    ports: list[int] = []
    for _ in range(count * 20):
        port = chooser()
        if port not in ports:
            ports.append(port)
        if len(ports) == count:
            return ports
    raise PortsExhaustedError(f"could not find {count} distinct free ports on 127.0.0.1")


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


def die_with_parent(parent_pid: int, sig: signal.Signals = signal.SIGKILL) -> Callable[[], None]:
    """A preexec_fn: the child gets `sig` when the thread that started it exits."""

    def preexec() -> None:
        # subprocess switches user before calling this, so the setting survives the
        # switch (a credential change would clear it).
        LIBC.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec
