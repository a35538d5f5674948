"""The library: start the embedded servers of a project (PostgreSQL, and SeaweedFS as S3
when the project uses S3) on free loopback ports, wait until each answers, hand out the
service variables, and always clean up. The `run -- CMD` supervisor is built on it."""

from __future__ import annotations

import atexit
import contextlib
import shlex
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TextIO
from urllib.parse import quote

from ..config import EmbeddedSettings, service_variables
from ..process import free_port
from .pg_cluster import release_shared_memory
from .postgres import PostgresServer, psql_path
from .procs import PortTakenError, ServiceStartError, StartAgain, server_user, signals_blocked
from .rundir import RunDir
from .s3 import SeaweedServer

if TYPE_CHECKING:
    from concurrent.futures import Future

MAX_ATTEMPTS = 3  # per server, when its port is taken between choosing and binding it
READY_FILE = "services-ready.json"  # in the run dir


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
    check: Callable[[], None] | None = None,
) -> None:
    """Spawn every server from this (main) thread, then wait for all of them concurrently,
    respawning one on new ports when its port was taken, or prepared anew, once, when it asks
    to (StartAgain). One deadline covers it all.

    The caller stops the servers if this raises.
    """
    # Here, not at import time: the wrapped command starts before the servers.
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    deadline = time.monotonic() + timeout_s
    cancel = threading.Event()
    attempts = dict.fromkeys((s.name for s in servers), 1)
    started_again: set[str] = set()
    with ThreadPoolExecutor(max(1, len(servers)), thread_name_prefix="readiness") as pool:
        try:
            pending: dict[Future[None], Server] = {}
            # Spawned in order: the slow S3 server boots while PostgreSQL is prepared.
            for server in servers:
                if check:
                    check()
                server.prepare()
                server.spawn()
                pending[pool.submit(server.wait_ready, deadline, timeout_s, cancel)] = server
            while pending:
                # A timeout keeps the main thread responsive to Ctrl-C.
                done, _ = wait(pending, timeout=0.1, return_when=FIRST_COMPLETED)
                if check:
                    check()
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
                        future = pool.submit(server.wait_ready, deadline, timeout_s, cancel)
                        pending[future] = server
                        continue
                    except StartAgain as again:
                        if server.name in started_again:
                            raise again.failure from None
                        started_again.add(server.name)
                        again.restart()  # on the main thread, for PR_SET_PDEATHSIG
                        future = pool.submit(server.wait_ready, deadline, timeout_s, cancel)
                        pending[future] = server
                        continue
                    if report:
                        print(server.ready_line(), file=report, flush=True)
        except BaseException:
            cancel.set()
            for server in servers:  # so probes blocked on a server fail at once
                server.stop()
            raise


@dataclass
class RunningServices:
    """A run's servers; `env` holds their variables once start() returned."""

    settings: EmbeddedSettings
    run: RunDir
    postgres: PostgresServer
    s3: SeaweedServer | None
    _stopped: bool = field(default=False, init=False)

    @property
    def env(self) -> dict[str, str]:
        """The service variables (config.service_variables) for the servers' current ports."""
        s3_port = self.s3.port if self.s3 else None
        trace = self.s3.write_trace if self.s3 else None
        return service_variables(self.settings, self.postgres.port, s3_port, trace)

    @property
    def ready_file(self) -> Path:
        return self.run.path / READY_FILE

    def start(self, report: TextIO | None, check: Callable[[], None] | None = None) -> None:
        """Spawn the servers and wait until they answer (main thread); stop() cleans up.
        `check` (raising to stop the launch) is called before each spawn and every 0.1 s."""
        servers: list[Server] = [s for s in (self.s3, self.postgres) if s is not None]
        launch(servers, self.settings.timeout_s, report, check)

    def stop(self) -> None:
        """Stop the servers and remove the run dir; safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        atexit.unregister(self.stop)
        in_main = threading.current_thread() is threading.main_thread()
        with signals_blocked() if in_main else contextlib.nullcontext():
            if self.s3 is not None:
                self.s3.kill()  # it dies while PostgreSQL shuts down; s3.stop() reaps it
            self.postgres.stop()
            if self.s3 is not None:
                self.s3.stop()
            self.run.remove()

    def describe(self) -> str:
        """How to reach these services from another terminal."""
        pg, creds = self.postgres, self.settings.credentials
        user, db = quote(creds.pg_user, safe=""), quote(creds.pg_database, safe="")
        url = f"postgresql://{user}@{pg.address}/{db}"
        psql = psql_path(self.settings, pg.binaries)
        lines = [
            f"PostgreSQL {pg.binaries.version if pg.binaries else ''} at {pg.address}:",
            f"  PGPASSWORD={shlex.quote(creds.pg_password)} {shlex.quote(str(psql))} "
            f"{shlex.quote(url)}",
        ]
        if self.s3 is not None:
            lines.append(
                f"S3 (SeaweedFS {self.s3.version}) at {self.s3.endpoint}, access key "
                f"{creds.s3_access_key}, region {creds.s3_region}"
            )
        lines.append("Environment for the tests (paste into another shell):")
        lines += [f"  export {name}={shlex.quote(value)}" for name, value in self.env.items()]
        return "\n".join(lines)


def create_embedded_services(
    settings: EmbeddedSettings,
    *,
    use_cached_cluster: bool = True,
    port_chooser: Callable[[], int] = free_port,
    report: TextIO | None = sys.stderr,
) -> RunningServices:
    """The run dir and the servers, not started yet; the caller must call .stop().

    Sweeps the dead runs under settings.run_base first. S3 only if settings.with_s3.
    """
    run = RunDir.create(
        settings.run_base,
        server_user(),
        on_dead_run=lambda dead: release_shared_memory(dead / "pg"),
    )
    try:
        postgres = PostgresServer(
            run,
            settings,
            use_cached_cluster=use_cached_cluster,
            port_chooser=port_chooser,
            report=report,
        )
        s3 = SeaweedServer(run, settings, port_chooser=port_chooser) if settings.with_s3 else None
    except BaseException:
        run.remove()
        raise
    return RunningServices(settings, run, postgres, s3)


def start_embedded_services(
    settings: EmbeddedSettings,
    *,
    use_cached_cluster: bool = True,
    port_chooser: Callable[[], int] = free_port,
    report: TextIO | None = sys.stderr,
) -> RunningServices:
    """Start the servers (call from the main thread); the caller must call .stop()."""
    running = create_embedded_services(
        settings, use_cached_cluster=use_cached_cluster, port_chooser=port_chooser, report=report
    )
    try:
        running.start(report)
    except BaseException:
        running.stop()
        raise
    atexit.register(running.stop)  # in-process use: even a forgotten stop() cleans up
    return running


@contextlib.contextmanager
def embedded_services(
    settings: EmbeddedSettings,
    *,
    use_cached_cluster: bool = True,
    port_chooser: Callable[[], int] = free_port,
    report: TextIO | None = sys.stderr,
) -> Iterator[RunningServices]:
    """Running servers for the block (their variables in `.env`); then stop them and remove
    the run dir."""
    running = start_embedded_services(
        settings, use_cached_cluster=use_cached_cluster, port_chooser=port_chooser, report=report
    )
    try:
        yield running
    finally:
        running.stop()
