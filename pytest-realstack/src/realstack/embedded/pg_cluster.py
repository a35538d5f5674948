"""A PostgreSQL cluster's data directory: the server settings, initdb's arguments, the key of
the cached cluster (an initdb'd data dir with the test role, copied at each start; not to be
confused with the migrated *template databases* of realstack/templates.py, which a cached
cluster may hold), the cheap checks that find a cached cluster unusable (then it is discarded
and built again), a fast copy owned by the server user, freeing a killed server's shared
memory, and the superuser's SQL over the server's private Unix socket."""

from __future__ import annotations

import errno
import os
import re
import shutil
import stat
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


def initdb_args(version: str) -> list[str]:
    """INITDB_ARGS, and from PostgreSQL 16 (initdb --set) the DSM type for initdb's own
    servers too: its bootstrap and single-user postgres otherwise make /dev/shm/PostgreSQL.*
    segments, which stay behind when initdb is killed (a timeout, Ctrl-C)."""
    dsm = ["--set", f"dynamic_shared_memory_type={SETTINGS['dynamic_shared_memory_type']}"]
    major = major_version(version)
    return [*INITDB_ARGS, *(dsm if major.isdigit() and int(major) >= 16 else [])]


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


class _CopyFailed(Exception):
    """Carries a file's OSError out of copytree, which would otherwise go on with the other
    files and raise one shutil.Error without the errno."""

    def __init__(self, error: OSError) -> None:
        super().__init__(error)
        self.error = error


def copy_cluster(src: Path, dst: Path, run_as: RunAs | None) -> None:
    """Copy a stopped cluster's data dir, owned by the server user; stop at the first error,
    raised as the OSError it was. Only regular files are copied: opening a FIFO would block.

    copy2's per-file stat/utime/chmod made this ~2.5x slower for the ~1300 small files.
    """

    def copy_file(src_file: str, dst_file: str) -> str:
        try:
            return _copy_file(src_file, dst_file, run_as)
        except OSError as exc:
            raise _CopyFailed(exc) from None

    try:
        shutil.copytree(src, dst, symlinks=True, copy_function=copy_file)
    except _CopyFailed as failed:
        raise failed.error from None
    if run_as:
        for root, dirs, _ in os.walk(dst):
            for name in [".", *dirs]:
                os.chown(os.path.join(root, name), run_as.uid, run_as.gid)


def _copy_file(src_file: str, dst_file: str, run_as: RunAs | None) -> str:
    fin = os.open(src_file, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    try:
        if not stat.S_ISREG(os.fstat(fin).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", src_file)
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
MIGRATED_TEMPLATE_PREFIX = "tmpl_"
MIGRATED_TEMPLATES = MIGRATED_TEMPLATE_PREFIX.replace("_", "\\_") + "%"  # for LIKE
TEMPLATES_FILE = "templates.txt"  # beside the cached cluster's data dir: what it holds
TEMPLATES_FILE_LIMIT = 64 * 1024  # a thousand names: far more than a cluster ever holds
NAME_LIMIT = 63  # bytes: PostgreSQL cuts longer names (NAMEDATALEN - 1)
PG_CONTROL_SIZE = 8192  # PG_CONTROL_FILE_SIZE: global/pg_control is always this long


class UnusableClusterError(Exception):
    """A cached cluster that no server should start from; the message says why, in a few
    words that fit in parentheses."""


def major_version(version: str) -> str:
    """What initdb writes to PG_VERSION: '18.6' -> '18'; before PostgreSQL 10, '9.6.24' -> '9.6'."""
    match = re.match(r"(\d+)(\.\d+)?", version)
    if match is None:
        return version
    return match.group(1) if int(match.group(1)) >= 10 else match.group(0)


def _shown(text: str, limit: int = 24) -> str:
    """`text` quoted on one line, cut to `limit` characters."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _why(exc: OSError | ValueError) -> str:
    if isinstance(exc, OSError):
        return f"cannot be read ({exc.strerror or exc})"
    return str(exc)


def read_small_file(path: Path, limit: int) -> bytes:
    """A regular file of at most `limit` bytes; ValueError for anything else (opening a FIFO
    would block for ever, a symlink could lead anywhere), FileNotFoundError when none is there.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError("is not a regular file")
        data = os.read(fd, limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise ValueError(f"is longer than {limit} bytes")
    return data


def read_templates(cluster: Path) -> set[str]:
    """The migrated templates the cached cluster's list names (none before a run saved one);
    UnusableClusterError for a list save_cluster did not write."""
    try:
        raw = read_small_file(cluster / TEMPLATES_FILE, TEMPLATES_FILE_LIMIT)
    except FileNotFoundError:
        return set()
    except (OSError, ValueError) as exc:
        raise UnusableClusterError(f"{TEMPLATES_FILE} {_why(exc)}") from None
    try:
        names = raw.decode().split()
    except UnicodeDecodeError:
        raise UnusableClusterError(f"{TEMPLATES_FILE} is not UTF-8 text") from None
    for name in names:
        if not name.startswith(MIGRATED_TEMPLATE_PREFIX) or len(name.encode()) > NAME_LIMIT:
            raise UnusableClusterError(
                f"{TEMPLATES_FILE} lists {_shown(name)}, not the name of a migrated template"
            )
    return set(names)


# /proc/self/fd/N names the directory N is open on, even after it was renamed or replaced.
_PROC_FDS = Path("/proc/self/fd")


class CachedCluster:
    """One entry of the cache, held open while it is checked and copied: its files are read
    through the open directory, so they all come from this entry even if another run replaces
    or discards it meanwhile (then reading fails), never from two entries.

    Raises FileNotFoundError when there is no entry, another OSError when it is no directory.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        st = os.fstat(self._fd)
        self.identity = (st.st_dev, st.st_ino)
        self._dir = _PROC_FDS / str(self._fd) if _PROC_FDS.is_dir() else path

    def __enter__(self) -> CachedCluster:
        return self

    def __exit__(self, *exc_info: object) -> None:
        os.close(self._fd)

    def check(self, major: str) -> set[str]:
        """The migrated templates it holds; UnusableClusterError when no server could start
        from a copy of it, as far as cheap checks tell (no server is started here)."""
        data = self._dir / "data"
        try:
            with os.scandir(data) as entries:
                if next(entries, None) is None:
                    raise UnusableClusterError("its data directory is empty")
        except FileNotFoundError:
            raise UnusableClusterError("it has no data directory") from None
        except OSError as exc:
            raise UnusableClusterError(f"its data directory {_why(exc)}") from None
        try:
            version = read_small_file(data / "PG_VERSION", 16).decode(errors="replace").strip()
        except FileNotFoundError:
            raise UnusableClusterError("data/PG_VERSION is missing") from None
        except (OSError, ValueError) as exc:
            raise UnusableClusterError(f"data/PG_VERSION {_why(exc)}") from None
        if version != major:
            raise UnusableClusterError(
                f"data/PG_VERSION says {_shown(version)}, the binaries are PostgreSQL {major}"
            )
        try:
            control = os.lstat(data / "global" / "pg_control")
        except FileNotFoundError:
            raise UnusableClusterError("data/global/pg_control is missing") from None
        except OSError as exc:
            raise UnusableClusterError(f"data/global/pg_control {_why(exc)}") from None
        if not stat.S_ISREG(control.st_mode) or control.st_size != PG_CONTROL_SIZE:
            raise UnusableClusterError(
                f"data/global/pg_control is not a file of {PG_CONTROL_SIZE} bytes"
            )
        return read_templates(self._dir)

    def copy_data(self, dst: Path, run_as: RunAs | None) -> None:
        """copy_cluster of its data dir; OSError when that fails (this entry was discarded
        meanwhile, or a file of it cannot be read, or `dst` is full)."""
        copy_cluster(self._dir / "data", dst, run_as)


def entry_identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def discard_cluster(cluster: Path, identity: tuple[int, int] | None = None) -> bool:
    """Remove a cache entry whole: renamed at once into a new .build- dir (a concurrent run
    then sees it complete or not at all, and ensure_cache_dir sweeps it should this run be
    killed), then removed. With `identity`, only if it is still that entry: another run may
    have put a good one in its place. Whether this call removed it."""
    holder = Path(tempfile.mkdtemp(prefix=".build-", dir=cluster.parent))
    try:
        if identity is not None and entry_identity(cluster) != identity:
            return False
        os.rename(cluster, holder / "discarded")
        return True
    except OSError:
        return False
    finally:
        shutil.rmtree(holder, ignore_errors=True)


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
    build = Path(tempfile.mkdtemp(prefix=".build-", dir=cluster.parent))
    try:
        copy_cluster(datadir, build / "data", run_as)
        (build / TEMPLATES_FILE).write_text("\n".join(sorted(templates)) + "\n")
        build.chmod(0o755)
        discard_cluster(cluster)
        os.rename(build, cluster)
    finally:
        shutil.rmtree(build, ignore_errors=True)
