"""Starts the embedded PostgreSQL and S3 servers for a test run, exports the contract's
variables, and always cleans up; `python -m tests.harness.services run -- CMD` wraps a command."""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Protocol, TextIO
from urllib.parse import quote

from tests.harness import contract
from tests.harness.postgres import (
    PgCredentials,
    PostgresServer,
    psql_path,
    release_shared_memory,
)
from tests.harness.procs import (
    HarnessSetupError,
    PortTakenError,
    RunDir,
    ServiceStartError,
    exit_status,
    free_port,
    server_user,
    services_timeout,
    signals_blocked,
    stop_process,
)
from tests.harness.readiness import READY_FILE_VARIABLE, mark_ready
from tests.harness.s3 import S3Credentials, SeaweedServer

MAX_ATTEMPTS = 3  # per server, when its port is taken between choosing and binding it
READY_FILE = "services-ready.json"  # in the run dir; its path is the child's READY_FILE_VARIABLE
CHILD_GRACE_S = 3.0  # for the child to exit after SIGTERM (or the signal it already had)
# Exactly the variables tox-docker and tox set_env provide on the Docker path.
EXPORTED = tuple(
    v.name
    for v in contract.VARIABLES
    if v.set_by in (contract.SetBy.TOX_DOCKER, contract.SetBy.TOX_SET_ENV)
)
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Server(Protocol):
    name: str

    @property
    def address(self) -> str: ...
    def prepare(self) -> None: ...
    def spawn(self) -> None: ...
    def respawn(self) -> None: ...
    def wait_ready(self, deadline: float, timeout_s: float, cancel: threading.Event) -> None: ...
    def stop(self) -> None: ...
    def ready_line(self) -> str: ...


def launch(
    servers: Sequence[Server],
    timeout_s: float,
    report: TextIO | None,
    on_spawned: Callable[[], None] | None = None,
) -> None:
    """Spawn every server from this (main) thread, call `on_spawned` (their ports are known
    by then), then wait for all of them concurrently.

    The caller stops the servers if this raises.
    """
    deadline = time.monotonic() + timeout_s
    cancel = threading.Event()
    attempts = dict.fromkeys((s.name for s in servers), 1)
    with ThreadPoolExecutor(max(1, len(servers)), thread_name_prefix="readiness") as pool:
        try:
            pending: dict[Future[None], Server] = {}
            # Spawned in order: the slow S3 server boots while PostgreSQL is prepared.
            for server in servers:
                server.prepare()
                server.spawn()
                pending[pool.submit(server.wait_ready, deadline, timeout_s, cancel)] = server
            if on_spawned:
                on_spawned()
            while pending:
                # A timeout keeps the main thread responsive to Ctrl-C.
                done, _ = wait(pending, timeout=0.1, return_when=FIRST_COMPLETED)
                for future in done:
                    server = pending.pop(future)
                    try:
                        future.result()
                    except PortTakenError:
                        if attempts[server.name] >= MAX_ATTEMPTS:
                            raise ServiceStartError(
                                f"{server.name}: its port was taken by another process "
                                f"{MAX_ATTEMPTS} times in a row (last at {server.address})"
                            ) from None
                        attempts[server.name] += 1
                        server.respawn()  # on the main thread, for PR_SET_PDEATHSIG
                        pending[pool.submit(server.wait_ready, deadline, timeout_s, cancel)] = (
                            server
                        )
                        continue
                    if report:
                        print(server.ready_line(), file=report, flush=True)
        except BaseException:
            cancel.set()
            for server in servers:  # so probes blocked on a server fail at once
                server.stop()
            raise


def contract_env(pg: PostgresServer | None, s3: SeaweedServer | None) -> dict[str, str]:
    env: dict[str, str] = {}
    if pg:
        env |= {
            "POSTGRES_HOST": "127.0.0.1",
            "POSTGRES_PORT": str(pg.port),
            "POSTGRES_USER": pg.creds.user,
            "POSTGRES_PASSWORD": pg.creds.password,
            "POSTGRES_DB": pg.creds.database,
        }
    if s3:
        env |= {
            "MINIO_HOST": "127.0.0.1",
            "MINIO_PORT": str(s3.port),
            "MINIO_ROOT_USER": s3.creds.access_key,
            "MINIO_ROOT_PASSWORD": s3.creds.secret_key,
            "S3_REGION": s3.creds.region,
        }
    return env


@dataclass
class RunningServices:
    run: RunDir
    postgres: PostgresServer | None
    s3: SeaweedServer | None
    env: dict[str, str] = field(init=False)
    _stopped: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.env = contract_env(self.postgres, self.s3)

    @property
    def ready_file(self) -> Path:
        return self.run.path / READY_FILE

    def start(
        self,
        timeout_s: float,
        report: TextIO | None,
        on_spawned: Callable[[], None] | None = None,
    ) -> None:
        """Spawn the servers and wait until they answer (main thread); stop() cleans up."""
        servers: list[Server] = [s for s in (self.s3, self.postgres) if s]
        launch(servers, timeout_s, report, on_spawned)
        self.env = contract_env(self.postgres, self.s3)

    def stop(self) -> None:
        """Stop the servers and remove the run dir; safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        atexit.unregister(self.stop)
        in_main = threading.current_thread() is threading.main_thread()
        with signals_blocked() if in_main else contextlib.nullcontext():
            for server in (self.s3, self.postgres):
                if server:
                    server.stop()
            self.run.remove()

    def describe(self) -> str:
        """How to reach these services from another terminal."""
        lines = []
        if self.postgres:
            pg = self.postgres
            user, db = quote(pg.creds.user, safe=""), quote(pg.creds.database, safe="")
            url = f"postgresql://{user}@{pg.address}/{db}"
            psql = psql_path(pg.binaries)
            lines += [
                f"PostgreSQL {pg.binaries.version if pg.binaries else ''} at {pg.address}:",
                f"  PGPASSWORD={shlex.quote(pg.creds.password)} {shlex.quote(str(psql))} "
                f"{shlex.quote(url)}",
            ]
        if self.s3:
            s3 = self.s3
            lines += [
                f"S3 (SeaweedFS {s3.version}) at {s3.endpoint}, access key "
                f"{s3.creds.access_key}, region {s3.creds.region}",
            ]
        lines.append("Environment for the tests (paste into another shell):")
        lines += [f"  export {name}={shlex.quote(value)}" for name, value in self.env.items()]
        return "\n".join(lines)


def create_embedded_services(
    *,
    postgres: bool = True,
    s3: bool = True,
    use_template: bool = True,
    port_chooser: Callable[[], int] = free_port,
    environ: Mapping[str, str] | None = None,
    report: TextIO | None = sys.stderr,
) -> RunningServices:
    """The run dir and the servers, not started yet; the caller must call .stop()."""
    environ = os.environ if environ is None else environ
    run = RunDir.create(server_user(), on_dead_run=lambda dead: release_shared_memory(dead / "pg"))
    s3_server = SeaweedServer(run, S3Credentials.from_env(environ), port_chooser=port_chooser)
    pg_server = PostgresServer(
        run,
        PgCredentials.from_env(environ),
        use_template=use_template,
        port_chooser=port_chooser,
        report=report,
    )
    return RunningServices(run, pg_server if postgres else None, s3_server if s3 else None)


def start_embedded_services(
    *,
    postgres: bool = True,
    s3: bool = True,
    use_template: bool = True,
    timeout_s: float | None = None,
    port_chooser: Callable[[], int] = free_port,
    environ: Mapping[str, str] | None = None,
    report: TextIO | None = sys.stderr,
) -> RunningServices:
    """Start the servers (call from the main thread); the caller must call .stop()."""
    timeout_s = timeout_s or services_timeout()
    running = create_embedded_services(
        postgres=postgres,
        s3=s3,
        use_template=use_template,
        port_chooser=port_chooser,
        environ=environ,
        report=report,
    )
    try:
        running.start(timeout_s, report)
    except BaseException:
        running.stop()
        raise
    atexit.register(running.stop)  # in-process use: even a forgotten stop() cleans up
    return running


@contextlib.contextmanager
def embedded_services(
    *,
    postgres: bool = True,
    s3: bool = True,
    use_template: bool = True,
    timeout_s: float | None = None,
    port_chooser: Callable[[], int] = free_port,
) -> Iterator[dict[str, str]]:
    """Yield the contract's variables for running servers; stop them and remove the run dir."""
    running = start_embedded_services(
        postgres=postgres,
        s3=s3,
        use_template=use_template,
        timeout_s=timeout_s,
        port_chooser=port_chooser,
    )
    try:
        yield dict(running.env)
    finally:
        running.stop()


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


class _Child:
    """The wrapped command. It starts while the servers boot, so its own start-up overlaps
    theirs, and waits for the ready file (tests/harness/readiness.py) before using them."""

    def __init__(self, cmd: Sequence[str]) -> None:
        self.cmd = list(cmd)
        self.proc: subprocess.Popen[bytes] | None = None
        self.env: dict[str, str] = {}
        self.received: list[int] = []
        self.services_ready = False
        self._starting = False

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        """Forward SIGINT/SIGTERM to the child; before the services are ready, also stop
        waiting for them."""
        self.received.append(signum)
        if (
            self.proc is not None
            and self.proc.poll() is None
            and not (signum == signal.SIGINT and _terminal_already_signalled_child())
        ):
            self.proc.send_signal(signum)
        if not (self.services_ready or self._starting):
            raise _Interrupted(signum)

    def start(self, env: dict[str, str]) -> None:
        self.env = env
        self._starting = True  # raising inside Popen could lose track of the process
        try:
            self.proc = subprocess.Popen(self.cmd, env={**os.environ, **env})
        except OSError as exc:
            raise _CannotRun(f"cannot run {shlex.join(self.cmd)}: {exc}") from None
        finally:
            self._starting = False
        if self.received:  # a signal came while the child was being started
            self.proc.send_signal(self.received[0])
            if not self.services_ready:
                raise _Interrupted(self.received[0])

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a grace; first a grace if it already had a signal."""
        if self.proc is None or self.proc.poll() is not None:
            return
        if self.received:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(CHILD_GRACE_S)
        stop_process(self.proc, signal.SIGTERM, CHILD_GRACE_S)


def _child_env(running: RunningServices) -> dict[str, str]:
    return {
        **contract_env(running.postgres, running.s3),
        READY_FILE_VARIABLE: str(running.ready_file),
    }


def _run_child(child: _Child, running: RunningServices, keep_on_failure: bool) -> int:
    running.start(
        services_timeout(), sys.stderr, on_spawned=lambda: child.start(_child_env(running))
    )
    child.services_ready = True
    assert child.proc is not None
    if _child_env(running) != child.env and child.proc.poll() is None:
        # A port was retried: the child holds stale values, and has not used them (it waits).
        child.stop()
        child.start(_child_env(running))
    mark_ready(running.ready_file, running.env)
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
                file=sys.stderr,
                flush=True,
            )
            signal.sigwait(_SIGNALS)
        return code
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)


def run_command(
    cmd: Sequence[str], *, keep_on_failure: bool, port_chooser: Callable[[], int] = free_port
) -> int:
    """Run `cmd` against fresh services; the exit code is the child's (130 after SIGINT)."""
    child = _Child(cmd)
    previous = {sig: signal.signal(sig, child.on_signal) for sig in _SIGNALS}
    try:
        running = create_embedded_services(port_chooser=port_chooser)
        try:
            return _run_child(child, running, keep_on_failure)
        finally:
            # A late signal must not cut the cleanup short: ignore it from here on.
            with signals_blocked():
                for sig in _SIGNALS:
                    signal.signal(sig, signal.SIG_IGN)
                child.stop()
                running.stop()
    except _Interrupted as exc:
        return 128 + exc.signum
    except _CannotRun as exc:
        print(f"embedded services: {exc}", file=sys.stderr)
        return 127
    except (ServiceStartError, HarnessSetupError) as exc:
        print(f"embedded services: {exc}", file=sys.stderr)
        return 3
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.harness.services",
        description="Real PostgreSQL and S3 servers from PyPI wheels for the integration tests.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run", help="start the services, run CMD with their variables, then clean up"
    )
    run.add_argument(
        "--keep-on-failure",
        action="store_true",
        help="if CMD fails, keep the services up until Ctrl-C (also: TEST_KEEP_ON_FAILURE=1)",
    )
    run.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    args = parser.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        parser.error("give the command after --, e.g.: run -- pytest -m integration")
    keep = args.keep_on_failure or os.environ.get("TEST_KEEP_ON_FAILURE", "").lower() in {
        "1",
        "true",
        "yes",
    }
    return run_command(cmd, keep_on_failure=keep)


if __name__ == "__main__":
    sys.exit(main())
