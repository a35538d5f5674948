"""A PostgreSQL cluster's data directory: the server settings, initdb's arguments, the key of
the cached cluster (an initdb'd data dir with the test role, copied at each start; not to be
confused with the migrated *template databases* of realstack/templates.py, which a cached
cluster may hold), a fast copy owned by the server user, freeing a killed server's shared
memory, and the superuser's SQL over the server's private Unix socket."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from ..process import remove_unattached_shared_memory
from ..project import Credentials
from .procs import RunAs

SUPERUSER = "postgres"
# Bump when what a cached cluster holds changes, so stale caches are not reused.
CLUSTER_FORMAT = "2"
SETTINGS = {
    # Test data is disposable: never wait for the disk.
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    # 1 MB WAL segments (initdb --wal-segsize=1), and few kept for reuse: a stopped cluster
    # then holds ~2 MB of WAL, not 64, so each run's copy and removal of it are cheaper.
    "min_wal_size": "2MB",
    # DSM segments as files in the data dir, not /dev/shm/PostgreSQL.*: a postmaster killed
    # by SIGKILL cannot remove them, and removing the run dir then frees them.
    "dynamic_shared_memory_type": "mmap",
}
INITDB_ARGS = (
    "--no-sync",
    "--wal-segsize=1",
    "-E",
    "UTF8",
    "--locale=C",
    "-U",
    SUPERUSER,
    "--auth-local=trust",  # the harness bootstraps over its private Unix socket
    "--auth-host=scram-sha-256",  # tests log in over TCP with a password, as with Docker
)


def cluster_key(version_line: str, creds: Credentials) -> str:
    import hashlib  # not at import time: the launcher imports this before starting the command

    password_hash = hashlib.sha256(creds.pg_password.encode()).hexdigest()
    fields = (CLUSTER_FORMAT, version_line, creds.pg_user, creds.pg_database, password_hash)
    return hashlib.sha256("\n".join(fields).encode()).hexdigest()[:16]


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


def release_shared_memory(datadir: Path) -> None:
    """Free the small SysV segment of a postmaster that died without shutting down (SIGKILL):
    normally the next start in the same data dir would, but the data dir is about to go."""
    try:
        key, shmid = (
            int(x) for x in (datadir / "postmaster.pid").read_text().split("\n")[6].split()
        )
    except (OSError, IndexError, ValueError):
        return
    remove_unattached_shared_memory(key, shmid)


def database_dirs(datadir: Path) -> set[str] | None:
    """The databases' directories (base/<oid>), None if unreadable: CREATE DATABASE always
    makes a new one, named for an OID never handed out before, and DROP removes it."""
    try:
        return set(os.listdir(datadir / "base"))
    except OSError:
        return None


# The harness's migrated template databases (realstack/templates.py) are named so.
MIGRATED_TEMPLATES = "tmpl\\_%"
TEMPLATES_FILE = "templates.txt"  # beside the cached cluster's data dir: what it holds


def cached_templates(cluster: Path) -> set[str]:
    try:
        return set((cluster / TEMPLATES_FILE).read_text().split())
    except OSError:
        return set()


def quote_ident(name: str) -> str:
    if not name or "\0" in name:
        raise ValueError(f"invalid SQL identifier {name!r}")
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    """A string literal; valid because standard_conforming_strings is on (the default)."""
    if "\0" in value:
        raise ValueError("a SQL literal cannot contain NUL")
    return "'" + value.replace("'", "''") + "'"


async def bootstrap_roles(socket_dir: Path, port: int, creds: Credentials) -> None:
    """As superuser over the Unix socket: the test user and its database. Idempotent."""
    import asyncpg

    conn = await asyncpg.connect(
        host=str(socket_dir), port=port, user=SUPERUSER, database="postgres", timeout=2
    )
    try:
        user, password = quote_ident(creds.pg_user), quote_literal(creds.pg_password)
        if await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", creds.pg_user):
            await conn.execute(f"ALTER ROLE {user} LOGIN PASSWORD {password}")
        else:
            await conn.execute(f"CREATE ROLE {user} LOGIN CREATEDB PASSWORD {password}")
        database = creds.pg_database
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database):
            await conn.execute(f"CREATE DATABASE {quote_ident(database)} OWNER {user}")
    finally:
        await conn.close()


async def migrated_templates(socket_dir: Path, port: int) -> dict[str, str]:
    """The migrated templates this server holds (over its private Unix socket), each with its
    OID as text: the name of its directory under base/ (see database_dirs)."""
    import asyncpg

    conn = await asyncpg.connect(
        host=str(socket_dir), port=port, user=SUPERUSER, database="postgres", timeout=2
    )
    try:
        rows = await conn.fetch(
            "SELECT datname, oid::text FROM pg_database WHERE datistemplate AND datname LIKE $1",
            MIGRATED_TEMPLATES,
        )
        return {row[0]: row[1] for row in rows}
    finally:
        await conn.close()


async def drop_other_databases(socket_dir: Path, port: int, keep: set[str]) -> None:
    """Before the cluster is cached: no run database a killed or kept run left, only what a
    later run may clone or needs (`keep`, the test database)."""
    import asyncpg

    conn = await asyncpg.connect(
        host=str(socket_dir), port=port, user=SUPERUSER, database="postgres", timeout=2
    )
    try:
        rows = await conn.fetch(
            "SELECT datname FROM pg_database WHERE NOT datistemplate AND datname <> ALL($1)",
            [*keep, "postgres"],
        )
        for (name,) in rows:
            await conn.execute(f"DROP DATABASE {quote_ident(name)} WITH (FORCE)")
    finally:
        await conn.close()


def save_cluster(datadir: Path, cluster: Path, run_as: RunAs | None, templates: set[str]) -> None:
    """Replace the cached cluster with a copy of a stopped one that holds more templates: a
    concurrent reader sees the old cache, no cache (and builds its own), or the new one."""
    cache = cluster.parent
    build = Path(tempfile.mkdtemp(prefix=".build-", dir=cache))
    trash = cache / f".old-{cluster.name}-{os.getpid()}"
    try:
        copy_cluster(datadir, build / "data", run_as)
        (build / TEMPLATES_FILE).write_text("\n".join(sorted(templates)) + "\n")
        build.chmod(0o755)
        with contextlib.suppress(OSError):
            os.rename(cluster, trash)
        os.rename(build, cluster)
    finally:
        shutil.rmtree(build, ignore_errors=True)
        shutil.rmtree(trash, ignore_errors=True)
