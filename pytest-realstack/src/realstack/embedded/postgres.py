"""The PostgreSQL server of a run: initdb and postgres driven directly, a cached cluster (an
initdb'd data dir, copied) for fast starts, and readiness as a real TCP login with the test
credentials.

asyncio, asyncpg and pg_binaries are imported where used: the launcher imports this module
before it starts the wrapped command, whose start-up should not wait for them."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

from ..config import EmbeddedSettings
from ..process import free_port
from ..project import Credentials
from .pg_cluster import (
    INITDB_ARGS,
    bootstrap_roles,
    cached_templates,
    cluster_key,
    copy_cluster,
    database_dirs,
    drop_other_databases,
    migrated_templates,
    release_shared_memory,
    save_cluster,
    server_args,
)
from .procs import (
    Readiness,
    ServiceStartError,
    log_tail,
    spawn,
    stop_process,
    wait_until_ready,
)
from .rundir import RunDir

if TYPE_CHECKING:
    from .pg_binaries import PgBinaries

HOST = "127.0.0.1"
T = TypeVar("T")


def _run(coro: Coroutine[Any, Any, T]) -> T:
    import asyncio

    return asyncio.run(coro)


async def _login_over_tcp(port: int, creds: Credentials) -> None:
    import asyncpg

    conn = await asyncpg.connect(
        host=HOST,
        port=port,
        user=creds.pg_user,
        password=creds.pg_password,
        database=creds.pg_database,
        timeout=2,
    )
    try:
        await conn.fetchval("SELECT 1")
    finally:
        await conn.close()


class PostgresServer:
    """One PostgreSQL server in a run dir: prepare() and spawn() on the main thread,
    wait_ready() on any thread, stop() always."""

    name = "postgres"

    def __init__(
        self,
        run: RunDir,
        settings: EmbeddedSettings,
        *,
        use_cached_cluster: bool = True,
        port_chooser: Callable[[], int] = free_port,
        ready_probe: Callable[[], None] | None = None,
        report: TextIO | None = sys.stderr,
    ) -> None:
        self.run = run
        self.settings = settings
        self.creds = settings.credentials
        self.use_cached_cluster = use_cached_cluster
        self.port_chooser = port_chooser
        self.ready_probe = ready_probe
        self.report = report
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.binaries: PgBinaries | None = None
        self.origin = ""
        self.started = 0.0
        self.elapsed = 0.0
        self._needs_bootstrap = False
        self.datadir = run.path / "pg"
        self.cluster: Path | None = None  # the cached cluster this one was copied from
        self.cached: set[str] = set()  # the migrated templates that copy already held
        self._copied_databases: set[str] | None = None  # database_dirs() of that copy
        self.log = run.path / "postgres.log"

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def prepare(self) -> None:
        from .pg_binaries import locate_binaries

        self.started = time.monotonic()
        self.binaries = locate_binaries(self.settings, self.run.run_as, self.report)
        if self.use_cached_cluster:
            cluster = self._ensure_cached_cluster(self.binaries)
            copy_cluster(cluster / "data", self.datadir, self.run.run_as)
            self.cluster, self.cached = cluster, cached_templates(cluster)
            self._copied_databases = database_dirs(self.datadir)
            self.origin = "cached cluster"
        else:
            self._initdb(self.binaries, self.datadir)
            self._needs_bootstrap = True
            self.origin = "initdb"

    def spawn(self) -> None:
        assert self.binaries is not None, "prepare() first"
        self.port = self.port_chooser()
        argv = [
            str(self.binaries.tool("postgres")),
            *server_args(self.datadir, self.port, HOST, self.run.path),
        ]
        self.proc = spawn(argv, log_path=self.log, cwd=self.run.path, run_as=self.run.run_as)
        self.run.add_child(self.proc, "postgres")

    def wait_ready(self, deadline: float, timeout_s: float, cancel: threading.Event) -> None:
        assert self.proc is not None, "spawn() first"
        ready = Readiness(self.name, self.address, self.proc, [self.log], deadline, timeout_s)
        wait_until_ready(ready, self.ready_probe or self._probe, cancel)
        self.elapsed = time.monotonic() - self.started

    def _probe(self) -> None:
        if self._needs_bootstrap:
            _run(bootstrap_roles(self.run.path, self.port, self.creds))
            self._needs_bootstrap = False
        _run(_login_over_tcp(self.port, self.creds))

    def respawn(self) -> None:
        self._stop(keep_data=True)  # the next server starts on this data dir
        self.spawn()

    def stop(self) -> None:
        """Stop the server for good: its data dir is thrown away next (or saved first)."""
        self._stop(keep_data=False)

    def _stop(self, *, keep_data: bool) -> None:
        if self.proc is None:
            return
        new, held = self._new_migrated_templates()
        save = bool(new) and self.cluster is not None
        if keep_data or save:
            # Fast shutdown (~10 ms): the backends exit cleanly and a checkpoint leaves a
            # data dir that a copy or the next server starts from without recovery.
            stop_process(self.proc, signal.SIGINT)
        else:
            # Nobody reads this data dir again: immediate shutdown, no checkpoint. The
            # postmaster still ends every backend before it exits, so the wait covers them.
            stop_process(self.proc, signal.SIGQUIT)
        release_shared_memory(self.datadir)
        if save and self.cluster is not None and self.proc.returncode in (0, -signal.SIGINT):
            # A later cold start clones them instead of replaying the migrations.
            with contextlib.suppress(OSError):
                save_cluster(self.datadir, self.cluster, self.run.run_as, held)

    def _new_migrated_templates(self) -> tuple[set[str], set[str]]:
        """Templates this run built that the cached cluster lacks, or built again under the
        same name (TEST_REBUILD_TEMPLATE: a new OID), and all the server holds (not one a sweep
        dropped): ({}, {}) on any doubt. The run's other databases are dropped first, so the
        cache holds only templates."""
        if self.cluster is None or self.proc is None or self.proc.poll() is not None:
            return set(), set()
        copied, now = self._copied_databases, database_dirs(self.datadir)
        if copied is not None and now is not None and now <= copied:
            # No database was created since the copy (each gets a new base/<oid> dir), so
            # none is a new template: skip the query (~9 ms with its connection).
            return set(), set()
        import asyncpg

        socket_dir = self.run.path
        try:
            present = _run(migrated_templates(socket_dir, self.port))
            new = {
                name
                for name, oid in present.items()
                if name not in self.cached or (copied is not None and oid not in copied)
            }
            if new:
                keep = {*present, self.creds.pg_database}
                _run(drop_other_databases(socket_dir, self.port, keep))
        except (OSError, asyncpg.PostgresError, TimeoutError):
            return set(), set()
        return new, set(present)

    def ready_line(self) -> str:
        version = self.binaries.version if self.binaries else "?"
        return f"postgres {version} ready at {self.address} in {self.elapsed:.2f} s ({self.origin})"

    def _initdb(self, binaries: PgBinaries, datadir: Path) -> None:
        log = self.run.path / "initdb.log"
        argv = [str(binaries.tool("initdb")), "-D", str(datadir), *INITDB_ARGS]
        proc = spawn(argv, log_path=log, cwd=self.run.path, run_as=self.run.run_as)
        if proc.wait() != 0:
            raise ServiceStartError(
                f"postgres: initdb of {datadir} failed with code {proc.returncode}.\n"
                f"{log_tail([log])}"
            )

    def _ensure_cached_cluster(self, binaries: PgBinaries) -> Path:
        """An initdb'd cluster with the test user and database, built once per
        version and credentials, then copied: ~65 ms instead of ~300 ms for initdb."""
        from .pg_binaries import ensure_cache_dir

        cache = ensure_cache_dir(self.settings.cache_dir)
        final = cache / f"pg-cluster-{cluster_key(binaries.version_line, self.creds)}"
        if (final / "data").is_dir():
            return final
        build = Path(tempfile.mkdtemp(prefix=".build-", dir=cache))
        try:
            if self.run.run_as:
                os.chown(build, self.run.run_as.uid, self.run.run_as.gid)
            self._initdb(binaries, build / "data")
            self._bootstrap_cluster(binaries, build / "data")
            # Atomic: a concurrent run either sees no cached cluster or a complete one.
            with contextlib.suppress(OSError):
                os.rename(build, final)
        finally:
            shutil.rmtree(build, ignore_errors=True)
        return final

    def _bootstrap_cluster(self, binaries: PgBinaries, datadir: Path) -> None:
        # No TCP listener: the port only names the Unix socket in the private run dir.
        port = self.port_chooser()
        log = self.run.path / "cluster-build.log"
        argv = [str(binaries.tool("postgres")), *server_args(datadir, port, "", self.run.path)]
        proc = spawn(argv, log_path=log, cwd=self.run.path, run_as=self.run.run_as)
        self.run.add_child(proc, "postgres")
        timeout_s = self.settings.timeout_s
        try:
            ready = Readiness(
                "postgres (building the cached cluster)",
                f"{self.run.path}/.s.PGSQL.{port}",
                proc,
                [log],
                time.monotonic() + timeout_s,
                timeout_s,
            )
            wait_until_ready(
                ready,
                lambda: _run(bootstrap_roles(self.run.path, port, self.creds)),
                threading.Event(),
            )
        finally:
            # A clean shutdown writes a checkpoint, so copies start without recovery.
            stop_process(proc, signal.SIGINT)
        if proc.returncode not in (0, -signal.SIGINT):
            raise ServiceStartError(
                f"postgres: building the cached cluster failed with code {proc.returncode}.\n"
                f"{log_tail([log])}"
            )


def psql_path(settings: EmbeddedSettings, binaries: PgBinaries | None) -> Path:
    from .pg_binaries import configured_bindir

    return (binaries.bindir if binaries else configured_bindir(settings)[0]) / "psql"
