"""Helpers shared by the harness's own integration tests."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.harness.project import Project, load_project
from tests.harness.stamps import RunNames


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    probe = subprocess.Popen([sys.executable, "-c", "pass"])
    probe.wait()
    return probe.pid


def names_for(run_names: RunNames, label: str) -> RunNames:
    """Names of a made-up run beside this one (its schema and bucket are unique)."""
    run_id = f"{run_names.run_id}_{label}{uuid.uuid4().hex[:6]}"
    return RunNames(run_names.project, run_id, run_names.worker)


async def schema_exists(admin: AsyncEngine, name: str) -> bool:
    async with admin.connect() as conn:
        found = await conn.scalar(
            text("SELECT count(*) FROM pg_namespace WHERE nspname = :n"), {"n": name}
        )
    return bool(found == 1)


async def schemas_like(admin: AsyncEngine, pattern: str) -> list[str]:
    async with admin.connect() as conn:
        rows = await conn.execute(
            text("SELECT nspname FROM pg_namespace WHERE nspname LIKE :p ORDER BY 1"),
            {"p": pattern},
        )
        return list(rows.scalars())


async def drop_schema(admin: AsyncEngine, name: str) -> None:
    async with admin.begin() as conn:
        await conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))


def write_project(root: Path, services: tuple[str, ...] = ("postgres", "s3")) -> Project:
    """A minimal project named "sample" in `root`, for tests that need a Project."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text(
        "[tool.harness]\n"
        'name = "sample"\n'
        f"services = {json.dumps(list(services))}\n"
        'adapter = "sample.adapter"\n'
        'alembic_config = "pyproject.toml"\n'
    )
    return load_project(root / "pyproject.toml")
