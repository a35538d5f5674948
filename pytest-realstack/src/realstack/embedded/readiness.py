"""The hand-over between the launcher and the command it runs: the ready file.

The launcher starts the command at once, with only the ready file's path in its environment
(`project.ready_file_variable`), so the command's own start-up (pytest's imports, say)
overlaps the servers'. Once every server answers, the launcher writes the file atomically:
a JSON object of the service variables. The command reads them from it, so it never holds
a port that was retried. Standard library only: pytest reads it before collection.
"""

from __future__ import annotations

import contextlib
import json
import signal
from collections.abc import Mapping
from pathlib import Path

from ..config import EmbeddedSettings
from ..contract import TEST_SERVICES_TIMEOUT
from ..process import is_same_process, poll_until, write_atomic
from ..project import Project
from .rundir import STATE_FILE, RunState

# The launcher's own deadline is settings.timeout_s (and the template build's); this covers
# the copy of the binaries, a port retry and a loaded machine.
MARGIN_S = 10.0
POLL_INTERVAL_S = 0.02
LAUNCHER = f"python -m {__package__} run"


class ServicesNotReadyError(RuntimeError):
    """The ready file did not appear in time, or the launcher is gone; str() says the fix."""


def armed_marker(ready_file: Path) -> Path:
    """Created by the command once it handles Ctrl-C itself (see arm_interrupts)."""
    return ready_file.with_name(ready_file.name + ".armed")


def arm_interrupts(ready_file: Path) -> None:
    """The launcher starts its command with SIGINT ignored, so a Ctrl-C while the command is
    still importing cannot end it in a traceback (the launcher stops it with SIGTERM instead).
    A command that can handle Ctrl-C from here on restores it and tells the launcher."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    with contextlib.suppress(OSError):  # the launcher may be gone already: it will say so
        armed_marker(ready_file).touch()


def mark_ready(path: Path, env: Mapping[str, str]) -> None:
    """Write the ready file atomically: a reader sees no file or a complete one."""
    write_atomic(path, json.dumps(dict(env)))


def wait_timeout(settings: EmbeddedSettings) -> float:
    """How long a command should wait for the ready file of a launcher with these settings."""
    return settings.timeout_s + MARGIN_S


def _launcher_gone(run_dir: Path) -> str | None:
    """Why the launcher that owns `run_dir` can no longer make the file; None if it still may."""
    if not run_dir.is_dir():
        return f"its run directory {run_dir} no longer exists"
    try:
        state = RunState.load((run_dir / STATE_FILE).read_text())
    except (OSError, ValueError, KeyError, TypeError):
        return None  # not a launcher's run dir, or one being written: rely on the deadline
    if not is_same_process(state.owner_pid, state.owner_start):
        return f"its process {state.owner_pid} is dead (its run directory {run_dir} remains)"
    return None


def _parse(path: Path, text: str) -> dict[str, str]:
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise ServicesNotReadyError(
            f"the ready file {path} does not hold a JSON object of variables; it was not "
            f"written by the launcher ({LAUNCHER}). fix: unset the variable that names it"
        )
    return data


def read_ready_file(
    path: Path,
    timeout_s: float,
    *,
    variable: str = "the ready-file variable",
    interval_s: float = POLL_INTERVAL_S,
) -> dict[str, str]:
    """Wait for the launcher's ready file and return the variables in it.

    Raises ServicesNotReadyError at once when the launcher is gone, or at the deadline.
    """

    def written() -> dict[str, str] | None:
        try:
            return _parse(path, path.read_text())
        except FileNotFoundError:
            pass
        gone = _launcher_gone(path.parent)
        if gone:
            raise ServicesNotReadyError(
                f"the embedded launcher is gone: {gone}, so the services it was starting never "
                f"became ready ({path}, named by {variable}, was not written). "
                f"fix: read the launcher's messages above, then run `{LAUNCHER} -- CMD` again"
            )
        return None

    found = poll_until(written, timeout_s=timeout_s, interval_s=interval_s)
    if found is None:
        raise ServicesNotReadyError(
            f"the embedded services were not ready within {timeout_s:g} s: {path} (named "
            f"by {variable}) did not appear. The launcher ({LAUNCHER}) writes it once every "
            "server answers; see its messages above. fix: if the machine is just slow, "
            f"raise {TEST_SERVICES_TIMEOUT.name}; if you start the services yourself, "
            f"unset {variable}"
        )
    return found


def ready_file_of(project: Project, env: Mapping[str, str]) -> Path | None:
    """The ready file named in `env`, if the command runs under the launcher."""
    name = env.get(project.ready_file_variable, "").strip()
    return Path(name) if name else None


def wait_for_services(settings: EmbeddedSettings, env: Mapping[str, str]) -> dict[str, str]:
    """The service variables from the launcher's ready file, after waiting for it; {} when
    `env` names no ready file (the Docker path, your own URLs, in-process services)."""
    path = ready_file_of(settings.project, env)
    if path is None:
        return {}
    arm_interrupts(path)
    variable = settings.project.ready_file_variable
    return read_ready_file(path, wait_timeout(settings), variable=variable)
