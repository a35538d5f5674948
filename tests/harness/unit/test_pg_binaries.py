"""The PostgreSQL binaries as root: the copy the server user can read."""

from __future__ import annotations

import dataclasses
import io
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from realstack.config import EmbeddedSettings
from realstack.embedded import pg_binaries
from realstack.embedded.pg_binaries import first_untraversable, locate_binaries
from realstack.embedded.procs import HarnessSetupError, server_user


@pytest.fixture
def locked_binaries() -> Iterator[tuple[Path, Path]]:
    """Fake PostgreSQL 18 binaries under a 0700 directory `nobody` cannot enter, and a cache."""
    locked = Path(tempfile.mkdtemp(prefix="locked-"))  # 0700, owned by root
    cache = Path(tempfile.mkdtemp(prefix="cache-"))
    cache.chmod(0o755)
    bindir = locked / "pkg" / "pginstall" / "bin"
    bindir.mkdir(parents=True)
    for tool in ("postgres", "initdb"):
        (bindir / tool).write_text("#!/bin/sh\necho 'postgres (PostgreSQL) 18.0'\n")
        (bindir / tool).chmod(0o755)
    try:
        yield bindir, cache
    finally:
        subprocess.run(["rm", "-rf", str(locked), str(cache)], check=False)


@pytest.mark.skipif(os.geteuid() != 0, reason="the copy is made only when running as root")
def test_the_copy_for_nobody_is_announced_once_naming_the_directory_nobody_cannot_enter(
    settings: EmbeddedSettings,
    locked_binaries: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bindir, cache = locked_binaries
    settings = dataclasses.replace(settings, pg_bindir=bindir, cache_dir=cache)
    run_as = server_user()
    assert run_as is not None
    locked = bindir.parents[2]
    assert first_untraversable(bindir, run_as) == (locked.resolve(), 0o700, "root")

    reports = []
    for _ in range(3):  # three runs, each a new process: nothing remembered in memory
        monkeypatch.setattr(pg_binaries, "_located", {})
        report = io.StringIO()
        binaries = locate_binaries(settings, run_as, report)
        reports.append(report.getvalue())

    assert binaries.bindir == cache / "pg-install-18.0" / "pkg" / "pginstall" / "bin"
    first, *later = reports
    assert f"cannot enter {locked.resolve()} (mode 0700, owner root)" in first
    assert "nobody" in first and str(cache / "pg-install-18.0") in first
    assert "/root" not in first  # no guessing: it names what is true
    assert later == ["", ""]


@pytest.mark.skipif(os.geteuid() != 0, reason="the server runs as another user only as root")
def test_a_cache_the_server_user_cannot_reach_is_refused_naming_the_folder_and_the_fix(
    settings: EmbeddedSettings,
    locked_binaries: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bindir, _ = locked_binaries
    locked = bindir.parents[2]  # 0700, owned by root
    cache = locked / "cache"
    settings = dataclasses.replace(settings, pg_bindir=bindir, cache_dir=cache)
    run_as = server_user()
    assert run_as is not None
    monkeypatch.setattr(pg_binaries, "_located", {})

    with pytest.raises(HarnessSetupError) as refused:
        locate_binaries(settings, run_as, io.StringIO())

    first, fix = str(refused.value).splitlines()
    assert f"the harness cache {cache} is out of reach of {run_as.name}" in first
    assert f"cannot enter {locked.resolve()} (mode 0700, owner root)" in first
    assert fix.startswith("  fix:  set TEST_HARNESS_CACHE_DIR to a directory")
    assert f"chmod o+x {locked.resolve()}" in fix
    assert not list(cache.iterdir())  # nothing copied where the server could not read it
