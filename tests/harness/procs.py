"""Server processes of one harness run: its private directory, the unprivileged user, the
parent-death signal, readiness polling, and the sweep of what dead runs left behind."""

from __future__ import annotations

import contextlib
import ctypes
import grp
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_TIMEOUT_S = 30.0
LOG_TAIL_LINES = 20
STATE_FILE = "state.json"
_PR_SET_PDEATHSIG = 1
# Loaded before any fork: the child must not dlopen between fork and exec.
_LIBC = ctypes.CDLL(None, use_errno=True)
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


def services_timeout() -> float:
    raw = os.environ.get("TEST_SERVICES_TIMEOUT", "").strip()
    if not raw:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise HarnessSetupError(
            f"TEST_SERVICES_TIMEOUT must be a positive number of seconds, got {raw!r}; "
            f"fix: export TEST_SERVICES_TIMEOUT={int(DEFAULT_TIMEOUT_S)}"
        )
    return value


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


def free_port() -> int:
    """A port that is free now; the server may still lose it (see PortTakenError)."""
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


def run_base_dir() -> Path:
    """Every run's directory lives here, so the sweep of dead runs looks in one place.

    tmpfs when there is one: initdb and the template copy are I/O bound.
    """
    explicit = os.environ.get("TEST_HARNESS_RUN_BASE", "").strip()
    if explicit:
        return Path(explicit)
    shm = Path("/dev/shm")
    parent = shm if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK) else None
    return Path(parent or tempfile.gettempdir()) / f"docstore-harness-{os.geteuid()}"


def proc_start_time(pid: int) -> int | None:
    """Clock ticks since boot: with the pid, it identifies a process across pid reuse."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return parse_start_time(stat)


def parse_start_time(stat: str) -> int:
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19])


def _proc_cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


@dataclass
class Child:
    pid: int
    start: int
    program: str  # basename of argv[0]; checked again before the sweep kills anything


@dataclass
class RunState:
    owner_pid: int
    owner_start: int
    children: list[Child] = field(default_factory=list)
    files: list[str] = field(default_factory=list)  # outside the run dir, e.g. weed's /tmp sockets

    def dump(self) -> str:
        return json.dumps(
            {
                "owner_pid": self.owner_pid,
                "owner_start": self.owner_start,
                "children": [vars(c) for c in self.children],
                "files": self.files,
            }
        )

    @classmethod
    def load(cls, text: str) -> RunState:
        data = json.loads(text)
        return cls(
            int(data["owner_pid"]),
            int(data["owner_start"]),
            [Child(int(c["pid"]), int(c["start"]), str(c["program"])) for c in data["children"]],
            [str(f) for f in data["files"]],
        )


class RunDir:
    """One run's private directory and its state file (owner, children, stray files)."""

    def __init__(self, path: Path, run_as: RunAs | None) -> None:
        self.path = path
        self.run_as = run_as
        me = os.getpid()
        self.state = RunState(me, proc_start_time(me) or 0)
        self._lock = threading.Lock()
        self._save()

    @classmethod
    def create(
        cls, run_as: RunAs | None, on_dead_run: Callable[[Path], None] | None = None
    ) -> RunDir:
        base = run_base_dir()
        sweep_dead_runs(base, on_dead_run=on_dead_run)
        _ensure_base(base, run_as)
        path = Path(tempfile.mkdtemp(prefix="run-", dir=base))
        if run_as:
            os.chown(path, run_as.uid, run_as.gid)
        return cls(path, run_as)

    def subdir(self, name: str) -> Path:
        """A directory the servers can write: owned by the server user."""
        path = self.path / name
        path.mkdir(mode=0o700, exist_ok=True)
        if self.run_as:
            os.chown(path, self.run_as.uid, self.run_as.gid)
        return path

    def add_child(self, proc: subprocess.Popen[bytes], program: str) -> None:
        with self._lock:
            start = proc_start_time(proc.pid) or 0
            self.state.children.append(Child(proc.pid, start, program))
            self._save()

    def add_files(self, paths: Sequence[Path]) -> None:
        with self._lock:
            self.state.files.extend(str(p) for p in paths)
            self._save()

    def remove(self) -> None:
        remove_stray_files(self.state.files)
        shutil.rmtree(self.path, ignore_errors=True)

    def _save(self) -> None:
        tmp = self.path / (STATE_FILE + ".tmp")
        tmp.write_text(self.state.dump())
        os.replace(tmp, self.path / STATE_FILE)


def _ensure_base(base: Path, run_as: RunAs | None) -> None:
    if not base.exists():
        base.mkdir(parents=True, exist_ok=True)
        # 0755 whatever the umask: the server user must traverse it to reach its run dir.
        base.chmod(0o755)
    if run_as and base.stat().st_mode & 0o001 == 0:
        raise HarnessSetupError(
            f"user {run_as.name} cannot enter the run directory base {base} "
            f"(mode {base.stat().st_mode & 0o777:o}); fix: chmod 755 {base}, "
            "or set TEST_HARNESS_RUN_BASE to a directory others can traverse"
        )


def remove_stray_files(paths: Sequence[str]) -> None:
    for name in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)


def sweep_dead_runs(
    base: Path, *, grace_s: float = 60.0, on_dead_run: Callable[[Path], None] | None = None
) -> list[Path]:
    """Remove run dirs whose owner died (e.g. SIGKILL), killing their leftover servers first.

    A live owner's dir is never touched; a dir still being created has no state file yet.
    """
    removed: list[Path] = []
    try:
        entries = sorted(base.glob("run-*"))
    except OSError:
        return removed
    for run in entries:
        try:
            state = RunState.load((run / STATE_FILE).read_text())
        except FileNotFoundError:
            with contextlib.suppress(OSError):
                if time.time() - run.stat().st_mtime > grace_s:
                    shutil.rmtree(run, ignore_errors=True)
                    removed.append(run)
            continue
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if proc_start_time(state.owner_pid) == state.owner_start:
            continue
        for child in state.children:
            _kill_if_still_ours(child, run)
        if on_dead_run:
            on_dead_run(run)
        remove_stray_files(state.files)
        shutil.rmtree(run, ignore_errors=True)
        removed.append(run)
    return removed


def _kill_if_still_ours(child: Child, run: Path) -> None:
    if proc_start_time(child.pid) != child.start:
        return
    argv = _proc_cmdline(child.pid)
    if argv and Path(argv[0]).name == child.program and any(str(run) in a for a in argv):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(child.pid, signal.SIGKILL)


def die_with_parent(parent_pid: int, sig: signal.Signals = signal.SIGKILL) -> Callable[[], None]:
    """A preexec_fn: the child gets `sig` when the thread that started it exits."""

    def preexec() -> None:
        # subprocess switches user before calling this, so the setting survives the
        # switch (a credential change would clear it).
        _LIBC.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
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


def stop_process(proc: subprocess.Popen[bytes], sig: signal.Signals, grace_s: float = 5.0) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
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
                "fix: if the machine is just slow, raise TEST_SERVICES_TIMEOUT (seconds)"
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
