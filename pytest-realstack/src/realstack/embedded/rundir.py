"""One run's private directory and state file, and the sweep of what dead runs (a SIGKILLed
launcher, say) left behind. A process is identified by its pid and start time
(realstack/process.py), so a reused pid is never taken for one of ours."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..contract import TEST_HARNESS_RUN_BASE
from ..process import cmdline, exclusive_lock, is_same_process, start_time, write_atomic
from .procs import HarnessSetupError, RunAs

STATE_FILE = "state.json"
BASE_ATTEMPTS = 3  # making a run dir, should a finishing run remove the empty base meanwhile


@dataclass
class Child:
    pid: int
    start: float  # process.start_time
    program: str  # basename of argv[0]; checked again before the sweep kills anything


@dataclass
class RunState:
    owner_pid: int
    owner_start: float
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
            float(data["owner_start"]),
            [Child(int(c["pid"]), float(c["start"]), str(c["program"])) for c in data["children"]],
            [str(f) for f in data["files"]],
        )


class RunDir:
    """One run's private directory and its state file (owner, children, stray files)."""

    def __init__(self, path: Path, run_as: RunAs | None) -> None:
        self.path = path
        self.run_as = run_as
        me = os.getpid()
        self.state = RunState(me, start_time(me) or 0.0)
        self._lock = threading.Lock()
        self._save()

    @classmethod
    def create(
        cls, base: Path, run_as: RunAs | None, on_dead_run: Callable[[Path], None] | None = None
    ) -> RunDir:
        """A new run dir under `base`, after sweeping the dead runs found there."""
        sweep_dead_runs(base, on_dead_run=on_dead_run)
        for attempt in range(BASE_ATTEMPTS):
            ensure_base(base, run_as)
            try:
                path = Path(tempfile.mkdtemp(prefix="run-", dir=base))
                break
            except FileNotFoundError:  # another run's tidy_base removed it, empty, just now
                if attempt == BASE_ATTEMPTS - 1:
                    raise
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
            start = start_time(proc.pid) or 0.0
            self.state.children.append(Child(proc.pid, start, program))
            self._save()

    def add_files(self, paths: Sequence[Path]) -> None:
        with self._lock:
            self.state.files.extend(str(p) for p in paths)
            self._save()

    def remove(self) -> None:
        remove_stray_files(self.state.files)
        shutil.rmtree(self.path, ignore_errors=True)
        tidy_base(self.path.parent)

    def _save(self) -> None:
        write_atomic(self.path / STATE_FILE, self.state.dump(), 0o644)


def pause_lock(run_base: Path, leader: int) -> Path:
    """Held by the run that paused the server whose process group `leader` leads
    (server_faults), for as long as it is paused: a stopped server whose lock is free was left
    paused by a run that died (SIGKILL) before it could resume it."""
    return run_base / f"paused-{leader}.lock"


def tidy_base(base: Path) -> None:
    """Remove the lock files nobody holds (each while holding it: exclusive_lock then sees
    it gone) and then the base itself if that left it empty, so no empty
    /dev/shm/<project>-harness-<uid> outlives the last run."""
    with contextlib.suppress(OSError):
        for lock in base.glob("*.lock"):
            with exclusive_lock(lock) as free:
                if free:
                    lock.unlink(missing_ok=True)
        base.rmdir()


def ensure_base(base: Path, run_as: RunAs | None) -> None:
    """The run base, made 0755 if missing: the server user must traverse it."""
    if not base.exists():
        base.mkdir(parents=True, exist_ok=True)
        # 0755 whatever the umask: the server user must traverse it to reach its run dir.
        base.chmod(0o755)
    if run_as and base.stat().st_mode & 0o001 == 0:
        raise HarnessSetupError(
            f"user {run_as.name} cannot enter the run directory base {base} "
            f"(mode {base.stat().st_mode & 0o777:04o}); fix: chmod 755 {base}, "
            f"or set {TEST_HARNESS_RUN_BASE.name} to a directory others can traverse"
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
        if is_same_process(state.owner_pid, state.owner_start):
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
    if not is_same_process(child.pid, child.start):
        return
    argv = cmdline(child.pid)
    if argv and Path(argv[0]).name == child.program and any(str(run) in a for a in argv):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(child.pid, signal.SIGKILL)
