"""`run -- CMD`: run a command against fresh embedded services and always clean up.

The command starts at once, with only the ready file's path added to its environment, and
reads the service variables from that file once the launcher writes it (readiness.py); it
is never restarted. With `--after-ready` it starts only then, with every variable in its
environment, for commands that know nothing of the ready file (psql, a shell script); with
`--migrated`, also with the app's URL variable on a database of its own at head (migrated.py).
Exit codes: the command's own; 128+N after signal N (130 SIGINT, 143 SIGTERM); 3 when a
service cannot start (or, with --migrated, the migrations fail); 127 when the command
cannot be run.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import TextIO

from ..config import EmbeddedSettings
from ..contract import resolve_database
from ..process import die_with_parent, free_port
from ..project import Project
from .launcher import RunningServices, create_embedded_services
from .migrated import MigrationsFailedError
from .procs import (
    HarnessSetupError,
    ServiceStartError,
    exit_status,
    signals_blocked,
    stop_process,
)
from .readiness import armed_marker, mark_ready

CHILD_GRACE_S = 3.0  # for the child to exit after SIGTERM (or the signal it already had)
EXIT_CANNOT_START = 3
EXIT_CANNOT_RUN = 127
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _Interrupted(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class _CannotRun(Exception):
    pass


def _terminal_already_signalled_child() -> bool:
    """A terminal's Ctrl-C reaches the whole foreground process group, child included;
    forwarding it again would interrupt the child's own cleanup."""
    try:
        return os.tcgetpgrp(sys.stdin.fileno()) == os.getpgrp()
    except (OSError, ValueError):
        return False


def _ignore_sigint() -> None:
    """preexec_fn: the command starts with Ctrl-C ignored until it arms (readiness.py)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class _Child:
    """The wrapped command, started once and never restarted."""

    def __init__(self, cmd: Sequence[str]) -> None:
        self.cmd = list(cmd)
        self.armed: Path | None = None  # the marker the command creates once it handles SIGINT
        self.proc: subprocess.Popen[bytes] | None = None
        self.received: list[int] = []
        # Until the child owns the outcome, a signal also stops the launcher's own work.
        self.handed_over = False

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        """Forward SIGINT/SIGTERM to the child; before the hand-over, the launch stops at its
        next check(). Never raises: a handler runs between any two bytecodes, also inside
        the import machinery's callbacks, where an exception is dropped ("Exception ignored")
        or leaves the import lock held, and the next import then hangs for ever."""
        self.received.append(signum)
        running = self.proc is not None and self.proc.poll() is None
        if running and self.armed is not None and not self.armed.exists():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)  # it ignores SIGINT until it can handle it
        elif running and not (signum == signal.SIGINT and _terminal_already_signalled_child()):
            assert self.proc is not None
            self.proc.send_signal(signum)

    def check(self) -> None:
        """Before the hand-over: raise _Interrupted if a signal came (the launch then stops
        and cleans up). The launch calls it at least every 0.1 s."""
        if self.received and not self.handed_over:
            raise _Interrupted(self.received[0])

    def start(self, added: Mapping[str, str]) -> None:
        """Start the command (on the main thread: it gets SIGTERM when this process dies, even
        by SIGKILL, as its services then do; it would otherwise go on against none)."""
        dies_with_us = die_with_parent(os.getpid(), signal.SIGTERM)
        ignores_sigint = self.armed is not None

        def preexec() -> None:
            dies_with_us()
            if ignores_sigint:
                _ignore_sigint()

        try:
            self.proc = subprocess.Popen(self.cmd, env={**os.environ, **added}, preexec_fn=preexec)
        except OSError as exc:
            raise _CannotRun(f"cannot run {shlex.join(self.cmd)}: {exc}") from None
        if self.received:  # a signal came while the child was being started
            unarmed = self.armed is not None and not self.armed.exists()
            self.proc.send_signal(signal.SIGTERM if unarmed else self.received[0])
            if not self.handed_over:
                raise _Interrupted(self.received[0])

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a grace; first a grace if it already had a signal."""
        if self.proc is None or self.proc.poll() is not None:
            return
        if self.received:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(CHILD_GRACE_S)
        stop_process(self.proc, signal.SIGTERM, CHILD_GRACE_S)


def _app_url(project: Project, env: Mapping[str, str]) -> dict[str, str]:
    """The app's own URL variable too, so `run --after-ready -- alembic ...` works as is."""
    url = resolve_database(project, env).url
    return {project.app_database_url_variable: url} if url else {}


@contextlib.contextmanager
def _app_database(
    project: Project, env: Mapping[str, str], migrated: bool
) -> Iterator[dict[str, str]]:
    """The app's URL variable for the command: the server's test database; with `--migrated`
    a database of its own, at head, dropped when the command ends (migrated.py)."""
    if not migrated:
        yield _app_url(project, env)
        return
    from .migrated import migrated_database

    with migrated_database(project, env) as url:
        yield {project.app_database_url_variable: url}


def _warm_services(settings: EmbeddedSettings, report: TextIO) -> dict[str, str] | None:
    """The variables of this project's warm services (`up`, make services-up) if they run."""
    from .warm import StaleServicesError, load_warm_services

    try:
        return load_warm_services(settings)
    except StaleServicesError as exc:
        print(f"embedded services: {exc}\n  This run starts services of its own.", file=report)
        return None


def _run_on_warm(
    child: _Child,
    settings: EmbeddedSettings,
    warm: Mapping[str, str],
    report: TextIO,
    *,
    migrated: bool = False,
) -> int:
    """The command against warm services: nothing to start, nothing to stop afterwards."""
    from .warm import ports_line

    print(
        f"embedded services: using the warm services of `{settings.warm_up_command}` "
        f"({ports_line(settings.project, warm)}); "
        f"`{settings.warm_down_command}` stops them, and later runs then start their own",
        file=report,
        flush=True,
    )
    with _app_database(settings.project, warm, migrated) as app:
        child.handed_over = True  # a signal now goes to the command alone
        child.start({**warm, **app})
        assert child.proc is not None
        code = exit_status(child.proc.wait())
    return 128 + child.received[0] if child.received else code


def _launch_and_run(
    child: _Child,
    running: RunningServices,
    *,
    after_ready: bool,
    migrated: bool,
    keep_on_failure: bool,
    report: TextIO,
) -> int:
    with contextlib.ExitStack() as stack:  # the migrated database lives as long as the command
        return _run_child(
            child,
            running,
            stack,
            after_ready=after_ready,
            migrated=migrated,
            keep_on_failure=keep_on_failure,
            report=report,
        )


def _run_child(
    child: _Child,
    running: RunningServices,
    stack: contextlib.ExitStack,
    *,
    after_ready: bool,
    migrated: bool,
    keep_on_failure: bool,
    report: TextIO,
) -> int:
    project = running.settings.project
    ready_variable = {project.ready_file_variable: str(running.ready_file)}
    if not after_ready:
        child.armed = armed_marker(running.ready_file)
        child.start(ready_variable)  # its start-up overlaps the servers'
    running.start(report, check=child.check)
    child.check()
    if not after_ready:
        child.handed_over = True
    mark_ready(running.ready_file, running.env)
    if after_ready:
        app = stack.enter_context(_app_database(project, running.env, migrated))
        child.start({**running.env, **ready_variable, **app})
        child.handed_over = True
    assert child.proc is not None
    code = exit_status(child.proc.wait())
    signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    try:
        if child.received:
            return 128 + child.received[0]
        if code != 0 and keep_on_failure:
            print(
                f"\nThe command failed with exit code {code}; the services stay up.\n"
                f"{running.describe()}\n"
                f"Press Ctrl-C (or kill -TERM {os.getpid()}) to stop them and clean up.",
                file=report,
                flush=True,
            )
            signal.sigwait(_SIGNALS)
        return code
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)


def run_command(
    settings: EmbeddedSettings,
    cmd: Sequence[str],
    *,
    after_ready: bool = False,
    migrated: bool = False,
    keep_on_failure: bool | None = None,
    use_cached_cluster: bool = True,
    port_chooser: Callable[[], int] = free_port,
    report: TextIO = sys.stderr,
) -> int:
    """Run `cmd` against fresh services of `settings.project`, then stop them; or, while the
    project's warm services run (`up`), against those, which stay up.

    `migrated` (which implies `after_ready`) gives the command a database of its own at head,
    in the app's URL variable. `keep_on_failure` None means settings.keep_on_failure. Call from
    the main thread: it installs SIGINT/SIGTERM handlers for the duration.
    """
    after_ready = after_ready or migrated
    keep = settings.keep_on_failure if keep_on_failure is None else keep_on_failure
    child = _Child(cmd)
    previous = {sig: signal.signal(sig, child.on_signal) for sig in _SIGNALS}
    try:
        warm = _warm_services(settings, report)
        if warm is not None:
            try:
                return _run_on_warm(child, settings, warm, report, migrated=migrated)
            finally:
                with signals_blocked():
                    child.stop()
        running = create_embedded_services(
            settings,
            use_cached_cluster=use_cached_cluster,
            port_chooser=port_chooser,
            report=report,
        )
        try:
            child.check()
            return _launch_and_run(
                child,
                running,
                after_ready=after_ready,
                migrated=migrated,
                keep_on_failure=keep,
                report=report,
            )
        finally:
            # A late signal must not cut the cleanup short: ignore it from here on.
            with signals_blocked():
                for sig in _SIGNALS:
                    signal.signal(sig, signal.SIG_IGN)
                child.stop()  # first: it must not see the run dir vanish while it waits
                running.stop()
    except _Interrupted as exc:
        return 128 + exc.signum
    except _CannotRun as exc:
        print(f"embedded services: {exc}", file=report)
        return EXIT_CANNOT_RUN
    except MigrationsFailedError as exc:
        print(f"embedded services: {exc}", file=report)
        return EXIT_CANNOT_START
    except (ServiceStartError, HarnessSetupError, OSError) as exc:  # OSError: run base, cache
        if child.received and not child.handed_over:
            # A terminal's Ctrl-C reaches the servers too: their exit is the interrupt's doing.
            return 128 + child.received[0]
        print(f"embedded services: {exc}", file=report)
        return EXIT_CANNOT_START
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
